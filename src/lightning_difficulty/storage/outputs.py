"""A run's report files, written as one set: staged in a private folder, then swapped in.

Every file of a run carries the same ``run_id``. :meth:`RunOutputs.commit` first removes the files an
earlier run left that this run does not write (only names this package writes: a user's files in the
folder are never touched), then moves each staged file into place with an atomic rename, ``summary.json``
last. A crash before ``commit`` leaves the previous run's set as it was.

:class:`OutputFolder` guards the folders the command line writes into (``combine -o``, ``evaluate --logdir``):
never a run's folder, never over files the package did not write there.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from lightning_difficulty.storage.atomic import write_json
from lightning_difficulty.storage.table import write_table

REPORT_FILES = ("scores.parquet", "columns.json", "hard_subset.json", "groups.json", "summary.json")
"""Every file the report writes; ``summary.json`` is the last one in place."""


class RunOutputs:
    """Collects a run's report files in ``<run_dir>/.staging-<run_id>/`` until :meth:`commit`.

    Example::

        >>> import tempfile
        >>> out = RunOutputs(Path(tempfile.mkdtemp()), run_id="r1")
        >>> out.json("summary.json", {"run_id": "r1"})
        >>> out.commit()
        >>> sorted(p.name for p in out.run_dir.iterdir())
        ['summary.json']
    """

    def __init__(self, run_dir: Path, *, run_id: str) -> None:
        self.run_dir = Path(run_dir)
        self.run_id = run_id
        self.staging = self.run_dir / f".staging-{run_id}"
        self.staging.mkdir(parents=True, exist_ok=True)

    def table(self, table: pd.DataFrame, columns: dict[str, Any]) -> None:
        """``scores.parquet`` with the column dictionary in its schema metadata."""
        write_table(table, self.staging / "scores.parquet", columns=columns)

    def json(self, name: str, payload: Any) -> None:
        write_json(self.staging / name, payload)

    def manifest(self, name: str, manifest: Any) -> None:
        """A hard-subset or groups manifest (anything with ``to_json(path)``)."""
        manifest.to_json(self.staging / name)

    def commit(self) -> None:
        """Swap the staged set in: stale report files first removed, ``summary.json`` moved last."""
        staged = {p.name for p in self.staging.iterdir()}
        for name in REPORT_FILES:
            if name not in staged:
                (self.run_dir / name).unlink(missing_ok=True)
        for name in sorted(staged, key=lambda n: n == "summary.json"):
            os.replace(self.staging / name, self.run_dir / name)
        shutil.rmtree(self.staging, ignore_errors=True)


OUTPUT_MARKER = ".lightning-difficulty-output.json"
"""File in a command's output folder listing the files that command wrote there (and nothing else)."""
_MARKER_FORMAT = "lightning-difficulty/output"
_RUN_FILES = ("scores.parquet", "summary.json", "columns.json")


def _is_run_file(name: str) -> bool:
    """Whether a relative path is one of a run's files (its table, summary or per-epoch records)."""
    parts = name.split("/")
    return parts[-1] in _RUN_FILES or "records" in parts[:-1]


def files_under(folder: Path) -> list[str]:
    """Every file under ``folder`` (recursively, as relative POSIX paths, sorted), the output marker left out.

    Example::

        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> _ = (root / "a.txt").write_text("x")
        >>> files_under(root)
        ['a.txt']
    """
    return sorted(
        p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != OUTPUT_MARKER
    )


class OutputFolder:
    """The folder a command writes into: new, empty, or written before by the same command (then only its files go).

    A folder that holds anything else (a training run, a user's own files, another command's output) is
    refused by :meth:`claim` before anything is computed or written; nothing is ever deleted that this
    command did not write. Protocol: :meth:`claim` (checks only), optionally :meth:`clear` (removes the
    earlier output's files first), :meth:`prepare` (creates the folder and records the files about to be
    written, so an interrupted command is still recognised), write, :meth:`commit` (removes the earlier
    output's files that were not written again, lists the new ones).

    Example::

        >>> import tempfile
        >>> out = OutputFolder.claim(Path(tempfile.mkdtemp()) / "ens", command="combine")
        >>> out.prepare(["scores.parquet"])
        >>> _ = (out.path / "scores.parquet").write_text("table")
        >>> out.commit(["scores.parquet"])
        >>> OutputFolder.claim(out.path, command="combine").previous  # a rerun may replace it
        ('scores.parquet',)
    """

    def __init__(self, path: Path, *, command: str, previous: tuple[str, ...]) -> None:
        self.path = path
        self.command = command
        self.previous = previous

    @classmethod
    def claim(cls, path: str | os.PathLike[str], *, command: str, option: str = "output folder") -> OutputFolder:
        """Check that ``command`` may write into ``path``; raises ``FileExistsError`` naming the folder and the fix.

        ``option`` names the argument in messages (e.g. ``"-o/--out"``).
        """
        folder = Path(path)
        new = f"pass a new or empty folder (e.g. {option} {folder}_2)"
        if folder.exists() and not folder.is_dir():
            raise FileExistsError(f"{option} {folder} is a file, not a folder: {new}.")
        if not folder.exists():
            return cls(folder, command=command, previous=())
        owner, ours = _read_marker(folder / OUTPUT_MARKER)
        present = files_under(folder)
        foreign = present if owner not in (None, command) else [name for name in present if name not in ours]
        if foreign:
            shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            what = "a run" if any(_is_run_file(name) for name in foreign) else "files"
            whose = f"`{owner}` wrote" if owner not in (None, command) else f"`{command}` did not write"
            raise FileExistsError(
                f"{option} {folder} holds {what}: {len(foreign)} file(s) {whose} ({shown}). `{command}` never writes "
                f"into a run or over files it did not write: {new}, or move those files away."
            )
        return cls(folder, command=command, previous=tuple(name for name in present if name in ours))

    def clear(self) -> None:
        """Remove the earlier output's files now (before writing anew), with the folders they leave empty."""
        self._remove(self.previous)
        self.previous = ()

    def prepare(self, planned: Iterable[str] = ()) -> None:
        """Create the folder and list the earlier files and ``planned`` ones in its marker (before writing)."""
        self.path.mkdir(parents=True, exist_ok=True)
        self._write_marker([*self.previous, *planned])

    def commit(self, written: Iterable[str] | None = None) -> None:
        """After writing: remove the earlier output's files not in ``written`` and list ``written`` in the marker.

        ``written`` defaults to every file now in the folder that the earlier output did not hold.
        """
        present = files_under(self.path)
        names = [n for n in present if n not in self.previous] if written is None else [str(n) for n in written]
        self._remove([name for name in self.previous if name not in names])
        self._write_marker(names)

    def _remove(self, names: Iterable[str]) -> None:
        names = list(names)
        for name in names:
            (self.path / name).unlink(missing_ok=True)
        folders = {parent for name in names for parent in Path(name).parents if parent != Path(".")}
        for folder in sorted(folders, key=lambda f: len(f.parts), reverse=True):  # deepest first
            path = self.path / folder
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()

    def _write_marker(self, names: Iterable[str]) -> None:
        payload = {"format": _MARKER_FORMAT, "version": 1, "command": self.command, "files": sorted(set(names))}
        write_json(self.path / OUTPUT_MARKER, payload)


def _read_marker(path: Path) -> tuple[str | None, set[str]]:
    """``(command, files)`` of an output marker; ``(None, set())`` when it is missing or damaged (nothing is ours)."""
    if not path.exists():
        return None, set()
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        if payload.get("format") != _MARKER_FORMAT:
            raise ValueError(payload.get("format"))
        return str(payload["command"]), {str(name) for name in payload["files"]}
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return None, set()
