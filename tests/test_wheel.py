"""The wheel installs into an existing environment and works there, without downloading torch.

One test, in stages: build the wheel from a copy of the sources (``pip wheel --no-deps``, no network, no build
isolation), check that it holds the dashboard's static files, the shipped resources and the entry points;
install it with ``--no-deps --no-index`` into a fresh virtual environment whose dependencies (torch,
Lightning, ...) come from this environment through a ``.pth`` line; run the Quickstart page's script there
and check its table against the digits it was made from; and check that the demo's follow-up commands fit
that environment (it has no ``tensorboard`` script of its own).
"""

from __future__ import annotations

import configparser
import io
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import load_digits
from torch.utils.data import random_split

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "lightning_difficulty"
_QUIET = {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    return {**env, **_QUIET}


def _run(args: list[str | Path], cwd: Path, *, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env or _env(), capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _build_wheel(tmp: Path) -> Path:
    """The wheel of a copy of the sources, so that the build leaves nothing in the working tree."""
    source = tmp / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    wheels = tmp / "wheels"
    build = ["wheel", "--quiet", "--no-deps", "--no-index", "--no-build-isolation", "--wheel-dir", wheels, source]
    _run([sys.executable, "-m", "pip", *build], tmp)
    (wheel,) = wheels.glob("lightning_difficulty-*.whl")
    return wheel


def _check_contents(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        points = configparser.ConfigParser()
        points.read_file(io.StringIO(archive.read(entry_points).decode()))
    static = sorted(p.name for p in (PACKAGE / "dashboard" / "static").iterdir() if p.suffix in (".js", ".css"))
    assert any(s.endswith(".js") for s in static) and any(s.endswith(".css") for s in static)
    for name in static:
        assert f"lightning_difficulty/dashboard/static/{name}" in names
    for resource in (PACKAGE / "resources").glob("*.json"):
        assert f"lightning_difficulty/resources/{resource.name}" in names
    assert "lightning_difficulty/py.typed" in names
    assert points["tensorboard_plugins"]["difficulty"] == "lightning_difficulty.dashboard.plugin:DifficultyPlugin"
    assert points["console_scripts"]["lightning-difficulty"] == "lightning_difficulty.cli:main"


def _fresh_environment(tmp: Path, wheel: Path) -> tuple[Path, Path]:
    """A new virtual environment with the wheel installed and this environment's packages visible behind it."""
    env_dir = tmp / "env"
    _run([sys.executable, "-m", "venv", "--without-pip", env_dir], tmp)
    python = env_dir / "bin" / "python"
    # pip of this environment installs into the new one; --no-deps --no-index: nothing is downloaded
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", "--no-index", wheel], tmp)
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp).strip())
    # written after the install, so that pip never sees (and never replaces) the editable install of this checkout;
    # a plain path line: the .pth files over there (that editable install's among them) are not run
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    return python, site


def _quickstart_script() -> str:
    page = (ROOT / "docs" / "quickstart.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```python\n(.*?)^```", page, re.MULTILINE | re.DOTALL)
    assert "class DigitsData(L.LightningDataModule)" in blocks[0]
    return blocks[0]


def _expected_split() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The digits, and the validation part and the simulated votes as the Quickstart page describes them."""
    digits = load_digits()
    _, val = random_split(range(len(digits.target)), [0.8, 0.2], generator=torch.Generator().manual_seed(0))
    labels = digits.target
    rng = np.random.default_rng(0)
    votes = np.where(rng.random((len(labels), 5)) < 0.9, labels[:, None], rng.integers(0, 10, (len(labels), 5)))
    return labels, np.asarray(val.indices), votes


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_environment_and_runs_the_quickstart(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    (version,) = re.findall(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(encoding="utf-8"), re.M)
    assert wheel.name == f"lightning_difficulty-{version}-py3-none-any.whl"
    _check_contents(wheel)

    python, site = _fresh_environment(tmp_path, wheel)
    cli = python.parent / "lightning-difficulty"
    # one process: what the environment imports, and the demo's follow-up commands there, first as an environment
    # that is not activated, then as an activated one (its bin/ first on PATH). It has its own lightning-difficulty
    # script but no tensorboard script: tensorboard is importable through the .pth line only.
    probe = (
        "import json, os, importlib.metadata as m, importlib.resources as r, importlib.util\n"
        "import lightning_difficulty, torch\n"
        "from pathlib import Path\n"
        "from lightning_difficulty.demo.run import _next_steps\n"
        "(plugin,) = m.entry_points(group='tensorboard_plugins', name='difficulty')\n"
        "static = r.files('lightning_difficulty') / 'dashboard' / 'static'\n"
        "steps = [_next_steps(Path('runs/demo/difficulty'), 0)]\n"
        f"os.environ['PATH'] = {str(python.parent)!r} + os.pathsep + os.environ['PATH']\n"
        "steps.append(_next_steps(Path('runs/demo/difficulty'), 0))\n"
        "print(json.dumps({'package': lightning_difficulty.__file__, 'torch': torch.__file__,\n"
        "    'plugin': plugin.load().__name__, 'static': sorted(p.name for p in static.iterdir()),\n"
        "    'version': m.version('lightning-difficulty'), 'steps': steps,\n"
        "    'tensorboard_main': importlib.util.find_spec('tensorboard.main') is not None}))\n"
    )
    work = tmp_path / "work"
    work.mkdir()
    found = json.loads(_run([python, "-c", probe], work))
    assert Path(found["package"]).is_relative_to(site)  # the installed wheel, not this checkout's src/
    assert Path(found["torch"]).is_relative_to(sysconfig.get_paths()["purelib"])  # torch was not downloaded
    assert found["plugin"] == "DifficultyPlugin"
    assert found["version"] == version
    assert {n for n in found["static"] if n.endswith((".js", ".css"))} == {
        p.name for p in (PACKAGE / "dashboard" / "static").iterdir() if p.suffix in (".js", ".css")
    }
    assert _run([cli, "--version"], tmp_path).strip() == f"lightning-difficulty {version}"

    for activated, steps in zip((False, True), found["steps"], strict=True):
        lines = "\n".join(steps).split("\nNext:\n", 1)[1].splitlines()
        shown_python, shown_cli = ("python", "lightning-difficulty") if activated else (str(python), str(cli))
        assert lines[0].split("#")[0].split() == [shown_python, "-m", "tensorboard.main", "--logdir", "runs"]
        assert [line.split()[:2] for line in lines[1:4]] == [[shown_cli, c] for c in ("demo", "compare", "combine")]
    assert found["tensorboard_main"]  # what the printed `python -m tensorboard.main` runs is there

    # the Quickstart page's script, as printed, in the fresh environment
    (work / "quickstart.py").write_text(_quickstart_script(), encoding="utf-8")
    printed = _run([python, "quickstart.py"], work)
    results = work / "runs" / "quickstart_datamodule" / "lightning_logs" / "version_0" / "difficulty"
    assert f"Results: {results.relative_to(work)}" in printed
    table = pd.read_parquet(results / "scores.parquet")
    labels, val_indices, votes = _expected_split()
    assert len(table) == len(labels)
    for column in ("confusion", "human_difficulty", "label_issue_score"):
        assert table[column].notna().all(), column
    train = table[table["split"] == "train"]
    assert len(train) == len(labels) - len(val_indices)
    for column in ("dm_confidence", "aum", "el2n", "forgetting"):  # TrainingDynamics reads the training loop
        assert train[column].notna().all(), column
    val = table[table["split"] == "val"].sort_values("index")
    np.testing.assert_array_equal(val["index"].to_numpy(), np.arange(len(val_indices)))
    # row i of the validation split is image val.indices[i] of the digits: its label and its annotators' votes
    np.testing.assert_array_equal(val["label"].to_numpy(), labels[val_indices])
    share = (votes[val_indices] == labels[val_indices, None]).mean(axis=1)
    np.testing.assert_allclose(val["human_difficulty"].to_numpy(), 1.0 - share, rtol=0, atol=1e-12)
