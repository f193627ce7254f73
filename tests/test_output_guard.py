"""File modes follow the umask, and output folders never swallow a run or a user's files (issue 19)."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lightning_difficulty.runs.combine import combine_runs
from lightning_difficulty.storage.atomic import write_json, write_npy
from lightning_difficulty.storage.outputs import OUTPUT_MARKER, OutputFolder, RunOutputs
from lightning_difficulty.storage.records import write_epoch_record
from lightning_difficulty.storage.table import write_table


@contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path: Path, mask: int, expected: int) -> None:
    with _umask(mask):
        table = write_table(pd.DataFrame({"split": ["val"], "index": [0]}), tmp_path / "scores.parquet")
        summary = write_json(tmp_path / "summary.json", {"a": 1})
        array = write_npy(tmp_path / "a.npy", np.zeros(3))
        outputs = RunOutputs(tmp_path / "run", run_id="r1")
        outputs.json("summary.json", {"run_id": "r1"})
        outputs.commit()
        record = write_epoch_record(tmp_path / "rec", np.eye(2), split="val", epoch=0)
        reference = tmp_path / "plain.txt"
        reference.write_text("x")  # what open() makes under this umask: the package must match it
    assert _mode(reference) == expected
    for path in (
        table,
        summary,
        array,
        tmp_path / "run" / "summary.json",
        record,
        record.parent / "epoch_0000.probs.npy",
    ):
        assert _mode(path) == expected, f"{path.name}: {oct(_mode(path))} under umask {oct(mask)}"
    assert not list(tmp_path.rglob("*.tmp"))  # no temporary file left behind


def _run(root: Path, name: str, probs: np.ndarray) -> Path:
    run = root / name
    for epoch in range(2):
        write_epoch_record(run, probs, split="val", epoch=epoch)
    return run


@pytest.fixture()
def two_runs(tmp_path: Path) -> list[Path]:
    return [_run(tmp_path, "a", np.array([[0.9, 0.1], [0.4, 0.6]])), _run(tmp_path, "b", np.eye(2))]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_combine_refuses_to_write_into_one_of_its_runs(two_runs: list[Path]) -> None:
    run_a = two_runs[0]
    pd.DataFrame({"split": ["val"] * 2, "index": [0, 1], "label": [0, 1], "hard": [False, True]}).to_parquet(
        run_a / "scores.parquet"
    )
    before = _snapshot(run_a)
    with pytest.raises(FileExistsError) as err:
        combine_runs(two_runs, run_a)
    message = str(err.value)
    assert f"{run_a} holds a run" in message and "records/val/manifest.json" in message
    assert f"{run_a}_2" in message and "new or empty folder" in message  # the fix
    assert _snapshot(run_a) == before  # nothing written, nothing removed


def test_combine_refuses_a_folder_holding_a_users_table(two_runs: list[Path], tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "scores.parquet").write_bytes(b"my own table")
    with pytest.raises(FileExistsError, match=r"mine holds a run: 1 file\(s\) `combine` did not write \(scores"):
        combine_runs(two_runs, mine)
    assert (mine / "scores.parquet").read_bytes() == b"my own table"
    assert sorted(p.name for p in mine.iterdir()) == ["scores.parquet"]


def test_combine_replaces_its_own_earlier_output_only(two_runs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "ensemble"
    first = combine_runs(two_runs, out)
    marker = json.loads((out / OUTPUT_MARKER).read_text())
    assert marker["command"] == "combine" and marker["files"] == ["scores.parquet", "summary.json"]
    second = combine_runs(two_runs[::-1], out)  # an earlier combine output: replaced
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_MARKER, "scores.parquet", "summary.json"]
    np.testing.assert_allclose(second["confusion"], first["confusion"], rtol=1e-12)  # same ensemble, other order
    assert json.loads((out / "summary.json").read_text())["runs"][0].endswith("b")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"1 file\(s\) `combine` did not write \(notes.txt\)"):
        combine_runs(two_runs, out)
    assert (out / "notes.txt").read_text() == "mine"


def test_output_folder_protocol(tmp_path: Path) -> None:
    out = OutputFolder.claim(tmp_path / "new", command="evaluate", option="--logdir")
    assert out.previous == () and not out.path.exists()  # claim only checks
    out.prepare()
    (out.path / "events.1").write_text("first")
    out.commit()
    again = OutputFolder.claim(out.path, command="evaluate", option="--logdir")
    assert again.previous == ("events.1",)
    again.prepare()
    (out.path / "events.2").write_text("second")
    again.commit()  # the earlier output's file goes, the new one is listed
    assert sorted(p.name for p in out.path.iterdir()) == [OUTPUT_MARKER, "events.2"]
    # another command's output is not this command's to replace
    with pytest.raises(FileExistsError, match=r"--logdir .*new holds files: 1 file\(s\) `evaluate` wrote"):
        OutputFolder.claim(out.path, command="combine", option="--logdir")
    # a damaged marker makes nothing ours
    (out.path / OUTPUT_MARKER).write_text("{broken")
    with pytest.raises(FileExistsError, match=r"events\.2"):
        OutputFolder.claim(out.path, command="evaluate")
    # a file is not a folder; an empty folder is fine
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match=r"file is a file, not a folder: pass a new or empty folder"):
        OutputFolder.claim(tmp_path / "file", command="combine", option="-o")
    (tmp_path / "empty").mkdir()
    assert OutputFolder.claim(tmp_path / "empty", command="combine").previous == ()


def test_an_interrupted_output_is_still_recognised(tmp_path: Path) -> None:
    out = OutputFolder.claim(tmp_path / "ens", command="combine")
    out.prepare(["scores.parquet", "summary.json"])
    (out.path / "scores.parquet").write_text("half")  # then the command dies before commit
    assert OutputFolder.claim(out.path, command="combine").previous == ("scores.parquet",)


def test_clear_removes_only_the_earlier_output_and_its_empty_folders(tmp_path: Path) -> None:
    out = OutputFolder.claim(tmp_path / "demo", command="demo")
    out.prepare()
    (out.path / "difficulty" / "dashboard").mkdir(parents=True)
    (out.path / "difficulty" / "dashboard" / "a.npy").write_text("a")
    (out.path / "events.1").write_text("e")
    out.commit()
    rerun = OutputFolder.claim(out.path, command="demo")
    assert rerun.previous == ("difficulty/dashboard/a.npy", "events.1")
    rerun.clear()
    assert [p.name for p in out.path.iterdir()] == [OUTPUT_MARKER] and rerun.previous == ()
