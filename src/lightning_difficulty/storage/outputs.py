"""A run's report files, written as one set: staged in a private folder, then swapped in.

Every file of a run carries the same ``run_id``. :meth:`RunOutputs.commit` first removes the files an
earlier run left that this run does not write (only names this package writes: a user's files in the
folder are never touched), then moves each staged file into place with an atomic rename, ``summary.json``
last. A crash before ``commit`` leaves the previous run's set as it was.
"""

from __future__ import annotations

import os
import shutil
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
