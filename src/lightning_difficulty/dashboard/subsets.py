"""Saved selections: safe names and manifests under a run's ``difficulty/subsets/``."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lightning_difficulty.storage.manifest import HardSubsetManifest, label_fingerprint

__all__ = ["MAX_NAME_LENGTH", "SubsetError", "check_subset_name", "list_subsets", "save_subset"]

MAX_NAME_LENGTH = 64
_INT64_MAX = int(np.iinfo(np.int64).max)
SELECTION_SCORE = "selection"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class SubsetError(ValueError):
    """A refused subset request; ``status`` is the HTTP status code that fits it."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def check_subset_name(name: object) -> str:
    """Return the file stem for ``name`` or raise :class:`SubsetError`.

    Accepted: 1 to 64 characters among letters, digits, ``_``, ``-`` and ``.``, starting with a letter
    or digit, without ``..``; a trailing ``.json`` is dropped.

    Example::

        >>> check_subset_name("hard_cats.json")
        'hard_cats'
    """
    if not isinstance(name, str) or not name:
        raise SubsetError(f"Expected `name` to be a non-empty string, but got {name!r}.")
    stem = name[: -len(".json")] if name.endswith(".json") else name
    if len(stem) > MAX_NAME_LENGTH:
        raise SubsetError(
            f"Expected `name` to have at most {MAX_NAME_LENGTH} characters, but got {len(stem)}. Choose a shorter name."
        )
    if "/" in stem or "\\" in stem or stem.startswith(("~", ".")) or ".." in stem or not _NAME.fullmatch(stem):
        raise SubsetError(
            f"Expected `name` to use only letters, digits, '_', '-' and '.', start with a letter or digit and"
            f" contain no '..' or path separator, but got {name!r}. Use a plain file name such as 'hard_cats'."
        )
    return stem


def subsets_dir(run_dir: Path) -> Path:
    """``<run_dir>/subsets``: the only folder the dashboard writes to."""
    return Path(run_dir) / "subsets"


def save_subset(
    run_dir: Path,
    table: pd.DataFrame,
    *,
    name: object,
    split: object,
    indices: object,
    overwrite: bool = False,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Save the dataset ``indices`` of ``split`` as a :class:`HardSubsetManifest` in ``<run_dir>/subsets/``.

    The manifest's ``score`` is ``"selection"`` (1 for a chosen sample) and ``threshold`` is 1.0, so
    :class:`~lightning_difficulty.storage.manifest.HardSubset` reads it like ``hard_subset.json``.

    Example::

        save_subset(run_dir, table, name="odd_cats", split="val", indices=[3, 5])
    """
    stem = check_subset_name(name)
    splits = [str(s) for s in table["split"].unique()]
    if not isinstance(split, str) or split not in splits:
        raise SubsetError(f"Expected `split` to be one of {splits}, but got {split!r}.")
    chosen = _check_indices(indices)
    rows = table[table["split"] == split].sort_values("index")
    size = len(rows)
    if chosen.max() >= size:
        raise SubsetError(f"Expected `indices` of split {split!r} to lie in [0, {size}), but got {int(chosen.max())}.")
    if not isinstance(overwrite, bool):
        raise SubsetError(f"Expected `overwrite` to be true or false, but got {overwrite!r}.")
    target = subsets_dir(run_dir) / f"{stem}.json"
    base = subsets_dir(run_dir).resolve()
    if target.resolve().parent != base:
        raise SubsetError(f"Expected `name` {name!r} to stay inside {base}.")
    if target.exists() and not overwrite:
        raise SubsetError(
            f"A subset named {stem!r} already exists in {base}."
            " Pass overwrite=true to replace it or choose another name.",
            status=409,
        )
    labels = rows["label"].to_numpy() if "label" in rows else None
    fingerprint = label_fingerprint(labels) if labels is not None and labels.dtype.kind in "iu" else None
    info = {"source": "difficulty-dashboard", "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    manifest = HardSubsetManifest(
        split=split,
        indices=tuple(int(i) for i in chosen),
        score=SELECTION_SCORE,
        threshold=1.0,
        dataset_size=size,
        label_fingerprint=fingerprint,
        metadata={**info, **(metadata or {})},
    )
    manifest.to_json(target)
    return target


def _check_indices(indices: object) -> np.ndarray:
    if not isinstance(indices, Sequence) or isinstance(indices, (str, bytes)) or len(indices) == 0:
        raise SubsetError("Expected `indices` to be a non-empty list of dataset indices; select some samples first.")
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in indices):
        raise SubsetError("Expected `indices` to hold integers only.")
    low, high = min(indices), max(indices)
    if low < 0:
        raise SubsetError(f"Expected `indices` to be non-negative, but got {low}.")
    if high > _INT64_MAX:  # checked on Python ints, before numpy would overflow
        raise SubsetError(f"Expected `indices` to be dataset indices, but got {high}, beyond any dataset's size.")
    return np.unique(np.asarray(indices, dtype=np.int64))


def list_subsets(run_dir: Path) -> list[dict[str, Any]]:
    """Name, split and size of every readable manifest in ``<run_dir>/subsets/`` (sorted by name)."""
    folder = subsets_dir(run_dir)
    found: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            manifest = HardSubsetManifest.from_json(path)
        except (ValueError, KeyError, OSError):
            continue
        found.append(
            {
                "name": path.stem,
                "split": manifest.split,
                "size": len(manifest.indices),
                "score": manifest.score,
                "description": str(manifest.metadata.get("description", "")),
            }
        )
    return found


def read_subset(run_dir: Path, name: object) -> HardSubsetManifest:
    """The manifest saved as ``name`` (checked like :func:`check_subset_name`)."""
    stem = check_subset_name(name)
    path = subsets_dir(run_dir) / f"{stem}.json"
    if not path.is_file():
        raise SubsetError(f"No subset named {stem!r} in {subsets_dir(run_dir)}.", status=404)
    try:
        return HardSubsetManifest.from_json(path)
    except (ValueError, OSError) as err:  # the message names the file and the fix
        raise SubsetError(str(err), status=500) from None
