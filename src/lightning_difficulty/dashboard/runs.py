"""Find the runs of a logdir that hold difficulty outputs, and serve their data to the plugin."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from lightning_difficulty.dashboard.assets import ASSETS_FORMAT
from lightning_difficulty.dashboard.encoding import encode_columns

__all__ = ["MAX_DEPTH", "RunData", "RunFileError", "find_runs", "perspective_columns", "score_columns"]

MAX_DEPTH = 5
TABLE = "scores.parquet"
_NOT_SCORES = {"index", "label", "prediction", "correct", "group", "confusion_band", "hard"}
_PERSPECTIVE_FALLBACK = (("human_difficulty",), ("kdn", "kdn:input"), ("confusion", "prediction_depth"))


class RunFileError(ValueError):
    """A run's file that cannot be read (truncated, damaged, another format); answered with HTTP 500 and the message."""

    status = 500


def _damaged(run: str, path: Path, err: BaseException) -> RunFileError:
    return RunFileError(
        f"Run {run!r}: could not read {path} ({type(err).__name__}: {err}). The file is truncated or damaged (a copy or"
        " a write that did not finish?): rerun the run's report, or move the run out of the log folder."
    )


def find_runs(logdir: str | os.PathLike[str], *, max_depth: int = MAX_DEPTH) -> dict[str, Path]:
    """Run name -> difficulty folder for every ``<run>/difficulty/scores.parquet`` under ``logdir``.

    The run name is the run folder relative to ``logdir`` (``"."`` for ``logdir`` itself), as in
    TensorBoard's run selector. Hidden folders are skipped; runs lie at most ``max_depth`` levels down.

    Example::

        find_runs("runs")  # {"demo": PosixPath("runs/demo/difficulty")}
    """
    root = Path(logdir)
    found: dict[str, Path] = {}
    if not root.is_dir():
        return found
    for current, dirs, _files in os.walk(root):
        here = Path(current)
        depth = len(here.relative_to(root).parts)
        if "difficulty" in dirs and (here / "difficulty" / TABLE).is_file():
            rel = here.relative_to(root).as_posix()
            found[rel if rel else "."] = here / "difficulty"
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "difficulty") if depth < max_depth else []
    return dict(sorted(found.items()))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return payload if isinstance(payload, dict) else None


def score_columns(table: pd.DataFrame, info: dict[str, dict[str, Any]]) -> list[str]:
    """Numeric columns shown as distributions: those ``columns.json`` marks as scores, else by dtype.

    Example::

        >>> t = pd.DataFrame({"split": ["a"], "index": [0], "label": [1], "confusion": [0.2], "knn:input": [3]})
        >>> score_columns(t, {})
        ['confusion']
    """
    numeric = [
        str(c)
        for c in table.columns
        if pd.api.types.is_numeric_dtype(table[c].dtype) and not pd.api.types.is_bool_dtype(table[c].dtype)
    ]
    if info:
        marked = [
            c
            for c in numeric
            if c in info and (info[c].get("higher_is_harder") is not None or info[c].get("perspective"))
        ]
        if marked:
            return marked
    return [c for c in numeric if c not in _NOT_SCORES and not c.startswith("knn:")]


def perspective_columns(table: pd.DataFrame, info: dict[str, dict[str, Any]]) -> list[str]:
    """Columns compared pairwise in the summary: ``perspective`` in ``columns.json``, else human, data, model.

    Example::

        >>> t = pd.DataFrame({"kdn": [0.1], "confusion": [0.3], "prediction_depth": [2]})
        >>> perspective_columns(t, {})
        ['kdn', 'confusion']
    """
    present = set(map(str, table.columns))
    marked = [c for c, v in info.items() if v.get("perspective") and c in present]
    if marked:
        return marked
    chosen = []
    for candidates in _PERSPECTIVE_FALLBACK:
        hit = next((c for c in candidates if c in present and table[c].notna().any()), None)
        if hit is not None:
            chosen.append(hit)
    return chosen


@dataclass
class RunData:
    """One run's table and dashboard assets, read lazily and re-read when the files change."""

    name: str
    folder: Path
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _stamp: tuple[float, float, float] | None = field(default=None, repr=False)
    _table: pd.DataFrame | None = field(default=None, repr=False)
    _columns_info: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    _assets: dict[str, Any] | None = field(default=None, repr=False)
    _encoded: dict[str, bytes] = field(default_factory=dict, repr=False)
    _rows: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)

    def _mtime(self, name: str) -> float:
        try:
            return (self.folder / name).stat().st_mtime
        except OSError:
            return -1.0

    def refresh(self) -> None:
        """Re-read the table and descriptors when ``scores.parquet``, ``columns.json`` or assets changed."""
        stamp = (self._mtime(TABLE), self._mtime("columns.json"), self._mtime("dashboard/dashboard.json"))
        with self._lock:
            if stamp == self._stamp:
                return
            table = self._read_table()
            columns = _read_json(self.folder / "columns.json") or {}
            info = columns.get("columns") if isinstance(columns.get("columns"), dict) else {}
            assets = _read_json(self.folder / "dashboard" / "dashboard.json")
            if assets is not None and (assets.get("format") != ASSETS_FORMAT or assets.get("version") != 1):
                assets = None
            self._table, self._columns_info, self._assets = table, info or {}, assets
            self._rows = {
                str(s): rows.sort_values("index", kind="stable").reset_index(drop=True)
                for s, rows in table.groupby("split", sort=False)
            }
            self._encoded = {}
            self._stamp = stamp

    def _read_table(self) -> pd.DataFrame:
        path = self.folder / TABLE
        try:
            table = pd.read_parquet(path)
        except (OSError, ValueError, pa.ArrowException) as err:
            raise _damaged(self.name, path, err) from None
        missing = sorted({"split", "index"} - set(map(str, table.columns)))
        if missing:
            raise _damaged(self.name, path, KeyError(f"no column {', '.join(missing)}"))
        return table

    def _load(self, name: str, *, mmap: bool = False) -> np.ndarray:
        """An array of the run's ``dashboard/`` folder; a missing or damaged file raises :class:`RunFileError`."""
        path = self.folder / "dashboard" / name
        try:
            return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise _damaged(self.name, path, err) from None

    @property
    def table(self) -> pd.DataFrame:
        self.refresh()
        assert self._table is not None
        return self._table

    def rows(self, split: str) -> pd.DataFrame:
        """The rows of ``split`` sorted by dataset index (``KeyError`` for an unknown split)."""
        self.refresh()
        return self._rows[split]

    def _split_assets(self, split: str) -> dict[str, Any]:
        assets = self._assets or {}
        entry = assets.get("splits", {}).get(split)
        return entry if isinstance(entry, dict) else {}

    def class_names(self) -> list[str]:
        names = (self._assets or {}).get("class_names")
        if isinstance(names, list) and names:
            return [str(n) for n in names]
        table = self.table
        top = max((int(table[c].max()) for c in ("label", "prediction") if c in table and len(table)), default=0)
        return [str(c) for c in range(top + 1)]

    def probes(self) -> list[str]:
        """Probe names in forward order: from the assets, else the table's ``knn:<probe>`` columns."""
        probes = (self._assets or {}).get("probes")
        if isinstance(probes, list) and probes:
            return [str(p) for p in probes]
        return [str(c)[4:] for c in self.table.columns if str(c).startswith("knn:")]

    def meta(self) -> dict[str, Any]:
        """Everything the frontend needs before the columns: splits, classes, probes, column roles."""
        table = self.table
        splits = {}
        for split, rows in self._rows.items():
            entry = self._split_assets(split)
            projection = entry.get("projection") or {}
            splits[split] = {
                "num_samples": len(rows),
                "projection": projection.get("method"),
                "thumbnails": bool(entry.get("thumbnails")),
                "neighbours": bool(entry.get("neighbours")),
            }
        thumbs = (self._assets or {}).get("thumbnails") or {}
        return {
            "run": self.name,
            "splits": splits,
            "class_names": self.class_names(),
            "probes": self.probes(),
            "columns": self._columns_info,
            "score_columns": score_columns(table, self._columns_info),
            "perspectives": perspective_columns(table, self._columns_info),
            "thumbnail_side": thumbs.get("side"),
        }

    def encoded_columns(self, split: str) -> bytes:
        """The split's columns in :func:`encode_columns` form, with ``projection:x`` / ``projection:y``."""
        rows = self.rows(split)
        with self._lock:
            cached = self._encoded.get(split)
        if cached is not None:
            return cached
        extra = {}
        projection = self._split_assets(split).get("projection")
        if projection:
            coords = self._load(str(projection["file"]))
            order = rows["index"].to_numpy(dtype=np.int64)
            extra = {"projection:x": coords[order, 0], "projection:y": coords[order, 1]}
        payload = encode_columns(rows, extra)
        with self._lock:
            self._encoded[split] = payload
        return payload

    def thumbnails(self, split: str, indices: list[int]) -> bytes:
        """Concatenated ``(side, side, 3)`` uint8 thumbnails of ``indices`` (``LookupError`` without)."""
        self.rows(split)
        entry = self._split_assets(split).get("thumbnails")
        thumbs = (self._assets or {}).get("thumbnails")
        if not entry or not thumbs:
            raise LookupError(f"Run {self.name!r} has no thumbnails for split {split!r}.")
        if any(not 0 <= i < entry["count"] for i in indices):  # Python ints: no overflow past int64
            raise IndexError(f"Expected indices of split {split!r} in [0, {entry['count']}), got {indices[:5]}...")
        idx = np.asarray(indices, dtype=np.int64)
        sheet = self._load(str(thumbs["file"]), mmap=True)
        return np.ascontiguousarray(sheet[entry["offset"] + idx]).tobytes()

    def instance(self, split: str, index: int) -> dict[str, Any]:
        """One sample: every column's value and its nearest training neighbours at each probe."""
        rows = self.rows(split)
        if not 0 <= index < len(rows) or int(rows["index"].iloc[index]) != index:
            raise IndexError(f"Expected `index` of split {split!r} in [0, {len(rows)}), but got {index}.")
        row = rows.iloc[index]
        values = {str(c): _plain(row[c]) for c in rows.columns}
        return {
            "split": split,
            "index": index,
            "values": values,
            "thumbnail": bool(self._split_assets(split).get("thumbnails")),
            "neighbours": self._neighbours(split, index),
        }

    def _neighbours(self, split: str, index: int) -> list[dict[str, Any]]:
        entry = self._split_assets(split).get("neighbours")
        if not entry:
            return []
        ids = self._load(str(entry["ids"]), mmap=True)[index]
        dist = self._load(str(entry["distances"]), mmap=True)[index]
        ref = str(entry.get("reference_split", "train"))
        ref_rows = self._rows.get(ref)
        labels = ref_rows["label"].to_numpy() if ref_rows is not None and "label" in ref_rows else None
        out = []
        for p, probe in enumerate(entry["probes"]):
            items = []
            for j in range(ids.shape[1]):
                i = int(ids[p, j])
                if i < 0:
                    continue
                label = int(labels[i]) if labels is not None and i < labels.size else None
                items.append({"split": ref, "index": i, "label": label, "distance": _plain(dist[p, j])})
            out.append({"probe": probe, "items": items})
        return out


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if value is pd.NA or value is None:
        return None
    return value if isinstance(value, (bool, int, float, str)) else str(value)
