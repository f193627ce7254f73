"""The embedded demo: a small CNN on scikit-learn's bundled digits with every difficulty callback."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

from lightning_difficulty.callbacks import (
    ConfusionScore,
    DataDifficulty,
    DifficultyReport,
    PredictionDepth,
    TrainingDynamics,
)
from lightning_difficulty.data import IndexedDataset
from lightning_difficulty.demo.datasets import load_digits_splits
from lightning_difficulty.demo.models import SmallCNN
from lightning_difficulty.runs.summary import measure_summary
from lightning_difficulty.storage.outputs import OutputFolder


@dataclass
class DemoResult:
    run_dir: Path
    table: pd.DataFrame
    summary: dict[str, Any]
    seed: int = 0


def run_demo(
    out: str | Path = "runs/demo", *, epochs: int = 30, seed: int = 0, progress: bool | None = None
) -> DemoResult:
    """Train on the digits and write ``<out>/difficulty/scores.parquet`` plus TensorBoard logs.

    The train/val split is fixed (the same 1,438 / 359 images for every ``seed``); ``seed`` sets only
    the training (initial weights, shuffling), so runs with different seeds can be compared and
    combined. ``out`` must be new, empty, or a previous demo run: then only the files that run wrote
    are removed, anything else in the folder is refused, never deleted.

    Args:
        out: output folder; TensorBoard logs go there, the table and summaries to ``out/difficulty``.
        epochs: training epochs, >= 1.
        seed: training seed.
        progress: progress bars; default: only when stdout is a terminal.

    Example::

        result = run_demo("runs/demo", epochs=5)
        result.table.nlargest(10, "confusion")
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"Expected argument `epochs` to be an integer >= 1, but got {epochs!r}.")
    out = Path(out)
    folder = OutputFolder.claim(out, command="demo", option="--out")  # a folder with other files is refused
    folder.clear()  # an earlier demo run's files go, nothing else
    folder.prepare()
    torch.set_num_threads(1)  # convolutions this small run several times faster on one thread
    splits = load_digits_splits()  # fixed split, whatever the seed
    L.seed_everything(seed, verbose=False)
    train = DataLoader(IndexedDataset(splits.train), batch_size=64, shuffle=True)
    val = DataLoader(IndexedDataset(splits.val), batch_size=256)
    report = DifficultyReport(class_names=splits.class_names)
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=TensorBoardLogger(save_dir=str(out.parent), name=out.name, version=""),
        callbacks=[*_analysis_callbacks(), report],
        enable_progress_bar=sys.stdout.isatty() if progress is None else progress,
        enable_model_summary=False,
        enable_checkpointing=False,
        deterministic=True,
        log_every_n_steps=5,
    )
    trainer.fit(SmallCNN(in_channels=1, num_classes=10, width=16, max_epochs=epochs), train, val)
    folder.commit()  # lists every file of this run: the next demo run may replace them
    assert report.table is not None
    return DemoResult(report.run_dir(trainer), report.table, report.summary, seed)


# what each printed program runs, for an environment that has no script of that name
_MODULES = {"tensorboard": "tensorboard.main", "lightning-difficulty": "lightning_difficulty.cli"}


def follow_up_command(program: str) -> str:
    """How to call ``program`` of the running interpreter's environment from the working directory.

    The bare name where ``PATH`` finds that environment's own script (an activated environment, a ``--user``
    install); the script's path where the environment is not activated (e.g. ``.venv/bin/tensorboard``);
    ``<python> -m <module>`` where the environment has no such script (a package installed without its
    scripts, or importable only through a ``.pth`` file).

    Example::

        print(f"{follow_up_command('tensorboard')} --logdir runs")
    """
    script = _environment_script(program)
    if script is None:
        python = Path(sys.executable)
        found = shutil.which("python")
        shown = "python" if found is not None and Path(os.path.abspath(found)) == python.absolute() else _shown(python)
        return f"{shown} -m {_MODULES[program]}"
    found = shutil.which(program)
    if found is not None and Path(found).resolve() == script.resolve():
        return program
    return _shown(script)


def _environment_script(program: str) -> Path | None:
    """``program``'s script in this interpreter's script folders (its own, the install scheme's, the user's)."""
    folders = [Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))]
    with contextlib.suppress(KeyError, ValueError):  # no user scheme on this platform
        folders.append(Path(sysconfig.get_path("scripts", sysconfig.get_preferred_scheme("user"))))
    for folder in folders:
        candidate = folder / program
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it (``./`` kept), else absolute."""
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)
    if relative.startswith(".."):
        return str(path.absolute())
    return relative if os.sep in relative else f".{os.sep}{relative}"


def _analysis_callbacks() -> list[Any]:
    return [ConfusionScore(), TrainingDynamics(), PredictionDepth(layers="auto", k=30), DataDifficulty(k=10)]


def format_summary(result: DemoResult, *, top: int = 10) -> str:
    """The demo's printed summary."""
    lines = [f"Per-sample table: {result.run_dir / 'scores.parquet'}"]
    for split, entry in result.summary["splits"].items():
        lines.append(f"\n[{split}] {entry['num_samples']} samples, accuracy {entry.get('accuracy', float('nan')):.3f}")
        if "confusion_quartiles" in entry:
            q = entry["confusion_quartiles"]
            q1, q2, q3 = q["q25"], q["median"], q["q75"]
            lines.append(f"  confusion (nats) quartiles: 25% {q1:.3f} | median {q2:.3f} | 75% {q3:.3f}")
        band = entry.get("error_by_confusion_band")
        if band:
            rho = band["pearson_rho"]
            rho_text = f"{rho:.3f}" if rho == rho else "n/a"
            if "pearson_rho_note" in band:
                rho_text += f"; {band['pearson_rho_note']}"
            lines.append(f"  error rate by confusion band (Pearson rho = {rho_text}):")
            for row in band["bands"]:
                if row["count"]:
                    lines.append(
                        f"    [{row['low']:.3f}, {row['high']:.3f}]  n={row['count']:5d}  error={row['error_rate']:.3f}"
                    )
    depth = measure_summary(result.summary, "PredictionDepth")
    lines.append("")
    for split in ("train", "val"):
        if split in depth:
            probes = ", ".join(f"{p} {a:.2f}" for p, a in depth[split]["probe_accuracy"].items())
            mean_depth = depth[split]["mean_prediction_depth"]
            lines.append(f"[{split}] mean prediction depth {mean_depth:.2f}; k-NN probe accuracy: {probes}")
    kdn = measure_summary(result.summary, "DataDifficulty")
    for split, entry in kdn.items():
        if split == "callback":
            continue
        lines.append(f"[{split}] mean kDN (k={entry['k']}) {entry['mean_kdn']:.3f}")
    if "hard_subset" in result.summary:
        hard = result.summary["hard_subset"]
        where = f"{hard['size']} {hard['split']} samples, confusion >= {hard['threshold']:.3f}"
        lines.append(f"\nHard subset: {where} (hard_subset.json)")
    if "groups" in result.summary:
        lines.append(f"GroupDRO groups: sizes {result.summary['groups']['sizes']} in groups.json")
    val = result.table[result.table["split"] == "val"]
    hardest = val.nlargest(top, "confusion")
    columns = [
        c for c in ("index", "label", "prediction", "correct", "confusion", "prediction_depth", "kdn") if c in val
    ]
    lines.append(f"\n{top} hardest validation samples:\n{hardest[columns].to_string(index=False)}")
    lines += _label_issue_lines(result.table, top)
    lines += _next_steps(result.run_dir, result.seed)
    return "\n".join(lines)


LABEL_ISSUE_COLUMNS = ("index", "label", "prediction", "correct", "aum", "label_issue_score", "forgetting", "dm_region")


def _label_issue_lines(table: pd.DataFrame, top: int) -> list[str]:
    """The training dynamics in one line, and the ``top`` training samples most likely mislabelled (lowest AUM)."""
    train = table[table["split"] == "train"]
    if "aum" not in train or not train["aum"].notna().any():
        return []
    regions = train["dm_region"].value_counts() if "dm_region" in train else pd.Series(dtype=int)
    shown = ", ".join(f"{int(regions[r])} {r}" for r in ("easy", "ambiguous", "hard") if r in regions)
    lines = [
        f"\n[train] training dynamics: mean AUM {train['aum'].mean():.3f} logit; "
        f"{int(train['forgetting'].sum())} forgetting events; data-map regions: {shown}"
    ]
    candidates = train.nsmallest(top, "aum").copy()
    if "forgetting" in candidates and candidates["forgetting"].notna().all():
        candidates["forgetting"] = candidates["forgetting"].astype(int)  # a count of events
    columns = [c for c in LABEL_ISSUE_COLUMNS if c in train]
    lines.append(
        f"\n{top} label-issue candidates (training samples with the lowest AUM; label_issue_score = 1 - p(label) of "
        f"the final model):\n{candidates[columns].to_string(index=False)}"
    )
    return lines


def _next_steps(run_dir: Path, seed: int) -> list[str]:
    """The commands to look further, as they run from the working directory in the environment the demo ran in."""
    tensorboard, cli = follow_up_command("tensorboard"), follow_up_command("lightning-difficulty")
    out = run_dir.parent
    log_root = out.parent
    base = re.sub(r"_seed\d+$", "", out.name)
    other = out.with_name(f"{base}_seed{seed + 1}")
    other_run = other / run_dir.name
    return [
        f"\nResults: {run_dir} (scores.parquet, summary.json, hard_subset.json, groups.json)",
        "Next:",
        f"  {tensorboard} --logdir {log_root}    # then open http://localhost:6006, run '{out.name}'",
        f"  {cli} demo --seed {seed + 1} --out {other}    # same data, another training seed",
        f"  {cli} compare {run_dir} {other_run}",
        f"  {cli} combine {run_dir} {other_run} -o {log_root / 'ensemble'}",
    ]
