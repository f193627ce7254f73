"""The per-sample table: one row per (split, index)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from lightning_difficulty.storage.atomic import atomic_path

LEADING_COLUMNS = ("split", "index", "label", "prediction", "correct")


def build_table(columns: Mapping[str, Mapping[str, np.ndarray]]) -> pd.DataFrame:
    """Stack ``split -> column -> (N,) array`` into one frame with ``split`` and ``index`` first.

    Example::

        >>> t = build_table({"val": {"confusion": np.array([0.1, 0.7])}})
        >>> t[["split", "index", "confusion"]].values.tolist()
        [['val', 0, 0.1], ['val', 1, 0.7]]
    """
    frames = []
    for split, cols in columns.items():
        sizes = {name: len(values) for name, values in cols.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"Columns of split {split!r} have different lengths: {sizes}.")
        n = next(iter(sizes.values()), 0)
        frame = pd.DataFrame({"split": split, "index": np.arange(n, dtype=np.int64)})
        for name, values in cols.items():  # pandas' nullable arrays stay nullable (never Python objects)
            frame[name] = values if isinstance(values, pd.api.extensions.ExtensionArray) else np.asarray(values)
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["split", "index"])
    ordered = [c for c in LEADING_COLUMNS if c in table.columns]
    return table[ordered + [c for c in table.columns if c not in ordered]]


COLUMNS_METADATA_KEY = b"lightning_difficulty.columns"


def write_table(table: pd.DataFrame, path: str | Path, *, columns: Mapping[str, Any] | None = None) -> Path:
    """Write ``scores.parquet`` atomically; ``columns`` (the column dictionary) goes into the schema metadata.

    Example::

        >>> import tempfile
        >>> path = write_table(pd.DataFrame({"index": [0]}), Path(tempfile.mkdtemp()) / "t.parquet",
        ...                    columns={"index": {"description": "dataset index"}})
        >>> json.loads(pq.read_schema(path).metadata[COLUMNS_METADATA_KEY])["index"]["description"]
        'dataset index'
    """
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    if columns is not None:
        metadata = dict(arrow.schema.metadata or {})
        metadata[COLUMNS_METADATA_KEY] = json.dumps(columns, allow_nan=False).encode()
        arrow = arrow.replace_schema_metadata(metadata)
    with atomic_path(path) as tmp:
        pq.write_table(arrow, tmp)
    return Path(path)


def read_scores(run_dir: str | Path) -> pd.DataFrame:
    """Read a run's ``scores.parquet`` (``run_dir`` may be the file itself).

    Example::

        table = read_scores("runs/demo/difficulty")
        table[table.split == "val"].nlargest(10, "confusion")
    """
    path = Path(run_dir)
    if path.is_dir():
        path = path / "scores.parquet"
    if not path.exists():
        raise FileNotFoundError(
            f"No scores table at {path}. Pass the run's difficulty directory (with scores.parquet)."
        )
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError, pa.ArrowException) as err:  # truncated, damaged, or not a parquet file
        raise ValueError(
            f"Could not read {path} as a scores table ({type(err).__name__}: {err}). The file is truncated or damaged"
            " (a copy or a write that did not finish?): write it again (rerun the run's report or command)."
        ) from None
