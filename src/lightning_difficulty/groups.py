"""From a finished run to per-sample groups for a retraining (GroupDRO, a balanced sampler, JTT).

:func:`groups_from_run` reads one split of a run folder written by ``DifficultyReport`` and returns one
group id per dataset index. The groups come from the run's ``groups.json`` bands (``score="group"``),
from the final model's errors (``score="errors"``, the error set of JTT, Liu et al. 2021), or from any
score column of its table, cut into a hard group by the column's direction (``columns.json``:
``higher_is_harder``; AUM is harder when lower, confusion and ``label_issue_score`` when higher).

Before anything is returned, the dataset is checked against the run: its length against the split's
rows, and its labels against the split's ``label`` column and, where one was recorded, the label
fingerprint of ``groups.json``. A dataset in another order, another split or another version is refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from numpy.typing import ArrayLike

from lightning_difficulty.functional.bands import select_hard
from lightning_difficulty.storage.manifest import GroupsManifest, _readable_labels, label_fingerprint
from lightning_difficulty.storage.table import COLUMNS_METADATA_KEY, read_scores

__all__ = ["groups_from_run"]

_SOURCES = ("group", "errors")
_NOT_SCORES = ("split", "index", "label", "prediction", "correct")  # `correct`: use score="errors"


def groups_from_run(
    run_dir: str | os.PathLike[str],
    dataset: Any,
    *,
    score: str = "confusion",
    split: str = "train",
    hard_fraction: float | None = None,
    threshold: float | None = None,
    higher_is_harder: bool | None = None,
    by_class: bool = True,
    labels: ArrayLike | None = None,
) -> np.ndarray:
    """One group id per sample of ``dataset`` (indexed by dataset index), from a finished run.

    Sources (``score``):

    - ``"group"``: the run's confusion bands (``group`` column, edges in ``groups.json``), band 0 = easiest;
    - ``"errors"``: 1 where the run's final model got the sample wrong (``correct == False``), else 0;
    - any other column: 1 for the hard samples, else 0, in the column's direction from ``columns.json`` (or
      ``higher_is_harder``). A numeric column is cut by ``hard_fraction`` (the hardest share, default 0.1)
      or ``threshold`` (hard at or beyond it); a boolean column is hard where True (False when lower is harder).

    With ``by_class=True`` (the default) the id is ``label * k + g`` (``k`` = the source's number of
    groups), so each class is split on its own, as the groups of a spurious correlation are (class x
    attribute). The defaults, the hardest 10 % by confusion split by class, are the grouping that measured
    best in ``examples/spurious.py`` (GroupDRO on them recovered the oracle's worst-group accuracy there).

    Args:
        run_dir: the run's folder (with ``scores.parquet``).
        dataset: the dataset the groups are for (map-style; e.g. the ``IndexedDataset`` of a retraining).
        score: ``"group"``, ``"errors"`` or a column of the table.
        split: the split of the table the dataset is (``"train"`` for a retraining).
        hard_fraction: share of the split in the hard group, in (0, 1) (numeric columns only).
        threshold: hard at ``score >= threshold`` (``<=`` when lower is harder) instead of a share.
        higher_is_harder: direction of a column whose ``columns.json`` entry does not say it.
        by_class: split every class into its own groups (``False``: the source's groups as they are).
        labels: the dataset's labels in index order (else read from ``dataset``).

    Returns:
        ``(N,)`` int64 group ids, ready for ``GroupDROModule`` and ``group_balanced_sampler``.

    Raises:
        ValueError: unknown split or column, unscored samples, a dataset whose length or labels differ from
            the run's, or a hard group that is empty or holds every sample.

    Example::

        groups = groups_from_run("runs/first/difficulty", train_set)  # top 10 % confusion of each class
        module = GroupDROModule(model, groups)
    """
    folder = Path(run_dir)
    rows = _split_rows(read_scores(folder), split, folder)
    truth = _dataset_labels(dataset, labels, len(rows), split, folder)
    _check_labels(rows["label"].to_numpy(), truth, split, folder)
    if score == "group":
        groups, count = _band_groups(rows, folder, split, truth)
    else:
        hard = _hard_flags(rows, folder, score, hard_fraction, threshold, higher_is_harder)
        _check_hard(hard, score, split)
        groups, count = hard.astype(np.int64), 2
    return truth * count + groups if by_class else groups


def _split_rows(table: pd.DataFrame, split: str, folder: Path) -> pd.DataFrame:
    splits = sorted(table["split"].unique().tolist())
    if split not in splits:
        raise ValueError(
            f"Expected argument `split` to be one of {splits} (the splits of {folder}), but got {split!r}."
        )
    rows = table[table["split"] == split].sort_values("index")
    if not np.array_equal(rows["index"].to_numpy(), np.arange(len(rows))):
        raise ValueError(f"The {split!r} rows of {folder} do not cover dataset indices 0..{len(rows) - 1} once each.")
    return rows.reset_index(drop=True)


def _dataset_labels(dataset: Any, labels: ArrayLike | None, size: int, split: str, folder: Path) -> np.ndarray:
    if len(dataset) != size:
        raise ValueError(
            f"Expected argument `dataset` to hold the {size} samples of split {split!r} of {folder}, but got"
            f" {len(dataset)}. Pass the same split, unfiltered and in the same order, as in that run."
        )
    found = labels if labels is not None else _readable_labels(dataset)
    if found is None:
        raise ValueError(
            f"Could not read the labels of argument `dataset` ({type(dataset).__name__}) to check it against"
            f" {folder}. Pass `labels=` (the labels in index order)."
        )
    arr = np.asarray(found)
    if arr.shape != (size,) or arr.dtype.kind not in "iu":
        raise ValueError(
            f"Expected argument `labels` to be {size} integer class labels, but got shape {arr.shape} and dtype"
            f" {arr.dtype}."
        )
    return arr.astype(np.int64)


def _check_labels(recorded: np.ndarray, truth: np.ndarray, split: str, folder: Path) -> None:
    wrong = np.flatnonzero(recorded.astype(np.int64) != truth)
    if wrong.size:
        first = int(wrong[0])
        raise ValueError(
            f"The labels of argument `dataset` differ from the {split!r} labels of {folder} at {wrong.size} of"
            f" {truth.size} indices (first: index {first}, label {int(truth[first])} here,"
            f" {int(recorded[first])} in the run). Pass the dataset the run was trained on, in the same order."
        )


def _band_groups(rows: pd.DataFrame, folder: Path, split: str, truth: np.ndarray) -> tuple[np.ndarray, int]:
    path = folder / "groups.json"
    if "group" not in rows or not path.exists():
        raise ValueError(
            f"{folder} holds no confusion bands (groups.json and a `group` column). Train with"
            " DifficultyReport(group_bands=...), or pass `score=` another column."
        )
    manifest = GroupsManifest.from_json(path)
    groups = rows["group"].to_numpy(np.int64)
    if (groups < 0).any():
        raise ValueError(
            f"{int((groups < 0).sum())} samples of split {split!r} of {folder} have no band (never scored)."
            " Score every sample, or pass `score=` another column."
        )
    if split == manifest.split:
        if manifest.label_fingerprint is not None and label_fingerprint(truth) != manifest.label_fingerprint:
            raise ValueError(
                f"The labels of argument `dataset` (fingerprint {label_fingerprint(truth)}) differ from those {path}"
                f" was made from ({manifest.label_fingerprint}). Pass the dataset the run was trained on, in the same"
                " order."
            )
        if tuple(np.bincount(groups, minlength=manifest.num_groups).tolist()) != manifest.sizes:
            raise ValueError(
                f"The `group` column of {folder} does not match the band sizes {list(manifest.sizes)} of {path}:"
                " the table and groups.json come from different runs. Rerun the report into an empty folder."
            )
    return groups, manifest.num_groups


def _hard_flags(
    rows: pd.DataFrame,
    folder: Path,
    score: str,
    fraction: float | None,
    threshold: float | None,
    higher_is_harder: bool | None,
) -> np.ndarray:
    if score == "errors":
        return ~rows["correct"].to_numpy(bool)
    if score not in rows or score in _NOT_SCORES:
        numeric = [c for c in rows.columns if c not in (*_SOURCES, *_NOT_SCORES) and _is_score(rows[c])]
        raise ValueError(
            f"Expected argument `score` to be one of {[*_SOURCES, *numeric]} (the scores of {folder}), but got"
            f" {score!r}."
        )
    values = rows[score]
    if not _is_score(values):
        raise ValueError(
            f"Expected argument `score` to name a numeric or boolean column, but {score!r} is {values.dtype}."
        )
    harder = _direction(folder, score) if higher_is_harder is None else higher_is_harder
    if pd.api.types.is_bool_dtype(values):  # numpy bool or pandas' nullable "boolean"
        if values.isna().any():
            raise ValueError(
                f"{int(values.isna().sum())} samples have no {score!r} value in {folder} (never seen)."
                " Score every sample of the split, or pass `score=` another column."
            )
        if fraction is not None or threshold is not None:
            raise ValueError(
                f"Column {score!r} is boolean: its True (or False) samples are the hard group. Pass neither"
                f" `hard_fraction` nor `threshold`, but got hard_fraction={fraction!r}, threshold={threshold!r}."
            )
        flags = values.to_numpy(bool)
        return flags if harder else ~flags
    arr = values.to_numpy(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(
            f"{int((~np.isfinite(arr)).sum())} samples have no {score!r} score in {folder} (NaN: never seen)."
            " Score every sample of the split, or pass `score=` another column."
        )
    return _cut(arr if harder else -arr, fraction, None if threshold is None else (threshold if harder else -threshold))


def _cut(signed: np.ndarray, fraction: float | None, threshold: float | None) -> np.ndarray:
    """Hard flags of scores where higher = harder: at or above ``threshold``, else the top ``fraction``."""
    if threshold is not None:
        if fraction is not None:
            raise ValueError(
                f"Expected one of `hard_fraction` and `threshold`, but got hard_fraction={fraction!r} and"
                f" threshold={threshold!r}."
            )
        return signed >= threshold
    fraction = 0.1 if fraction is None else fraction
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise ValueError(f"Expected argument `hard_fraction` to lie in (0, 1), but got {fraction!r}.")
    hard = np.zeros(signed.size, dtype=bool)
    hard[select_hard(signed, fraction=fraction).indices] = True
    return hard


def _is_score(values: pd.Series) -> bool:
    return pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values)


def _direction(folder: Path, score: str) -> bool:
    columns = _column_dictionary(folder)
    harder = columns.get(score, {}).get("higher_is_harder")
    if harder is None:
        raise ValueError(
            f"The column dictionary of {folder} does not say whether a higher (or True) {score!r} is harder."
            " Pass `higher_is_harder=True` or `False`."
        )
    return bool(harder)


def _column_dictionary(folder: Path) -> dict[str, Any]:
    path = folder / "columns.json"
    if path.exists():
        return dict(json.loads(path.read_text(encoding="utf-8")).get("columns", {}))
    metadata = pq.read_schema(folder / "scores.parquet").metadata or {}
    raw = metadata.get(COLUMNS_METADATA_KEY)
    return dict(json.loads(raw)) if raw else {}


def _check_hard(hard: np.ndarray, score: str, split: str) -> None:
    if not hard.any() or hard.all():
        what = "no" if not hard.any() else "every"
        raise ValueError(
            f"The {score!r} grouping puts {what} sample of split {split!r} in the hard group, so there is one group"
            " only. Use a continuous score with `hard_fraction` (e.g. score='aum'), or a shorter first run."
        )
