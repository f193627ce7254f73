"""Human perspective: annotator counts, human difficulty and its agreement with other perspectives.

Human difficulty follows Peterson et al. (2019, CIFAR-10H) and DifficultyEyes: ``counts[n, c]`` is the
number of annotators who chose class ``c`` for sample ``n`` and ``p_h = counts / counts.sum(1)``.
Every score here is one value per sample; higher = harder.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal, TypeAlias

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special, stats

__all__ = [
    "annotations_to_counts",
    "human_difficulty",
    "human_entropy",
    "human_max_disagreement",
    "load_annotations",
    "perspective_correlations",
]

AnnotationKind: TypeAlias = Literal["auto", "counts", "labels"]
_KINDS: tuple[str, ...] = ("auto", "counts", "labels")
_NPZ_KEYS: tuple[str, ...] = ("counts", "labels")


def annotations_to_counts(
    annotations: ArrayLike, *, num_classes: int, kind: AnnotationKind = "auto", allow_unannotated: bool = False
) -> NDArray[np.int64]:
    """Turn human annotations into an annotator-count matrix.

    Two layouts are accepted:

    * ``kind="counts"``: ``(N, C)`` non-negative integers, ``annotations[n, c]`` = number of annotators
      who chose class ``c`` for sample ``n`` (the CIFAR-10H ``counts`` file).
    * ``kind="labels"``: ``(N, A)`` integers, ``annotations[n, a]`` = the class annotator ``a`` chose for
      sample ``n``, or ``-1`` when that annotator did not label it. ``A`` may be any width.

    ``kind="auto"`` decides as follows, in this order:

    1. any value equals ``-1`` -> ``"labels"`` (a count cannot be -1);
    2. ``annotations.shape[1] != num_classes`` -> ``"labels"`` (a counts matrix has one column per class);
    3. some value is ``>= num_classes`` -> ``"counts"`` (no label can be that large);
    4. otherwise both readings are valid (``C`` columns, every value in ``[0, C - 1]``), so it raises and
       asks for an explicit ``kind``. Real count matrices rarely hit this case: with many annotators per
       sample, some count is at least ``C``.

    Args:
        annotations: ``(N, C)`` counts or ``(N, A)`` per-annotator labels, integer valued.
        num_classes: number of classes ``C``.
        kind: ``"counts"``, ``"labels"`` or ``"auto"`` (see above).
        allow_unannotated: keep rows without any annotation (all-zero counts) instead of refusing them.

    Returns:
        ``(N, C)`` int64 counts; every row has at least one annotation unless ``allow_unannotated``.

    Raises:
        ValueError: on a wrong ``kind`` or ``num_classes``, an array that is not 2-D or not integer valued,
            negative counts, labels outside ``[-1, C - 1]``, rows without any annotation, or an
            ambiguous ``"auto"`` case.

    Example::

        >>> annotations_to_counts([[0, 0, 1], [2, -1, 2]], num_classes=3).tolist()
        [[2, 1, 0], [0, 0, 2]]
    """
    _check_num_classes(num_classes)
    if kind not in _KINDS:
        raise ValueError(f"Expected argument `kind` to be one of {_KINDS}, but got {kind!r}.")
    array = _as_integer_matrix(annotations, "annotations")
    resolved = _resolve_kind(array, num_classes) if kind == "auto" else kind
    if resolved == "counts":
        counts = _counts_from_count_matrix(array, num_classes)
    else:
        counts = _counts_from_label_matrix(array, num_classes)
    if not allow_unannotated:
        _check_every_row_annotated(counts, "annotations")
    return counts


def load_annotations(
    source: ArrayLike | str | os.PathLike[str],
    *,
    num_classes: int,
    kind: AnnotationKind = "auto",
    key: str | None = None,
    allow_unannotated: bool = False,
) -> NDArray[np.int64]:
    """Load human annotations from an array, an ``.npy`` file or an ``.npz`` file as a count matrix.

    For ``.npz`` files the array is chosen as follows: ``key`` when given; else the array stored under
    ``"counts"`` or ``"labels"`` (whichever exists; that name also sets ``kind`` when ``kind="auto"``);
    else the only array in the file. Anything else raises with the path and the keys found.

    Args:
        source: an array (see :func:`annotations_to_counts`) or a path to ``.npy`` / ``.npz``.
        num_classes: number of classes ``C``.
        kind: ``"counts"``, ``"labels"`` or ``"auto"``, as in :func:`annotations_to_counts`.
        key: name of the array inside an ``.npz`` file.
        allow_unannotated: as in :func:`annotations_to_counts`.

    Returns:
        ``(N, C)`` int64 counts.

    Raises:
        FileNotFoundError: if the path does not exist.
        ValueError: on an unsupported suffix, a missing or ambiguous ``.npz`` key, a ``kind`` that
            contradicts the key name, or invalid annotations.

    Example::

        >>> load_annotations([[3, 0], [1, 2]], num_classes=2, kind="counts").tolist()
        [[3, 0], [1, 2]]
    """
    if not isinstance(source, (str, os.PathLike)):
        if key is not None:
            raise ValueError(f"Argument `key` ({key!r}) only applies to `.npz` files, but an array was given.")
        return annotations_to_counts(source, num_classes=num_classes, kind=kind, allow_unannotated=allow_unannotated)
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"Expected argument `source` to be an existing file, but {str(path)!r} does not exist.")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        if key is not None:
            raise ValueError(f"Argument `key` ({key!r}) only applies to `.npz` files, but got {str(path)!r}.")
        array = np.load(path, allow_pickle=False)
    elif suffix == ".npz":
        array, kind = _read_npz(path, key, kind)
    else:
        raise ValueError(
            f"Expected argument `source` to be a `.npy` or `.npz` file, but got {str(path)!r}. "
            "Save the annotations with `np.save` or `np.savez`, or pass the array itself."
        )
    return annotations_to_counts(array, num_classes=num_classes, kind=kind, allow_unannotated=allow_unannotated)


def human_difficulty(counts: ArrayLike, labels: ArrayLike) -> NDArray[np.float64]:
    """Human difficulty ``1 - p_h[label]``: the share of annotators who did not choose the dataset label.

    One score per sample in ``[0, 1]``; higher = harder (0: every annotator agrees with the label).

    Args:
        counts: ``(N, C)`` annotator counts (any non-negative weights work, e.g. CIFAR-10H probabilities),
            every row with a positive sum.
        labels: ``(N,)`` dataset labels in ``[0, C - 1]``.

    Returns:
        ``(N,)`` float64 human difficulty.

    Example::

        >>> human_difficulty([[3, 1, 0], [0, 2, 2]], [0, 2]).tolist()
        [0.25, 0.5]
    """
    probs = _human_probabilities(counts)
    label_array = _check_labels(labels, probs.shape[0], probs.shape[1], "labels")
    return 1.0 - probs[np.arange(probs.shape[0]), label_array]


def human_entropy(counts: ArrayLike) -> NDArray[np.float64]:
    """Entropy of the annotators' label distribution, ``-sum_c p_h[c] log p_h[c]``, in nats.

    Label-free ambiguity: one score per sample in ``[0, log C]``; higher = harder. ``0 log 0 = 0``.

    Args:
        counts: ``(N, C)`` annotator counts or non-negative weights, every row with a positive sum.

    Returns:
        ``(N,)`` float64 entropies.

    Example::

        >>> human_entropy([[4, 0], [2, 2]]).round(4).tolist()
        [0.0, 0.6931]
    """
    probs = _human_probabilities(counts)
    return special.entr(probs).sum(axis=1)


def human_max_disagreement(counts: ArrayLike) -> NDArray[np.float64]:
    """``1 - max_c p_h[c]``: the share of annotators who did not choose the most popular class.

    Label-free: one score per sample in ``[0, 1 - 1/C]``; higher = harder.

    Args:
        counts: ``(N, C)`` annotator counts or non-negative weights, every row with a positive sum.

    Returns:
        ``(N,)`` float64 scores.

    Example::

        >>> human_max_disagreement([[3, 1, 0], [0, 2, 2]]).tolist()
        [0.25, 0.5]
    """
    return 1.0 - _human_probabilities(counts).max(axis=1)


def perspective_correlations(
    table: Mapping[str, ArrayLike],
    *,
    reference: str = "human_difficulty",
    others: Sequence[str] | None = None,
) -> dict[str, dict[str, float]]:
    """Rank correlation of one difficulty column against the others (Spearman rho and Kendall tau-b).

    Each pair is computed on the rows where both columns are finite (NaN rows are dropped per pair), with
    :func:`scipy.stats.spearmanr` and :func:`scipy.stats.kendalltau`. A pair with fewer than two such rows,
    or where either column is constant on them, has NaN statistics (``n`` is still reported).

    Args:
        table: column name -> ``(N,)`` array; a ``dict`` or a ``pandas.DataFrame``.
        reference: the column compared against every other one.
        others: the columns to compare; by default every other column with a numeric (not boolean) dtype,
            e.g. ``confusion``, ``prediction_depth``, ``kdn``.

    Returns:
        ``{other: {"spearman", "spearman_p", "kendall", "kendall_p", "n"}}`` with plain Python floats
        (``n`` as a float count of rows used), ready for ``json.dump``.

    Example::

        >>> out = perspective_correlations({"human_difficulty": [0.0, 0.1, 0.5], "kdn": [0.2, 0.4, 0.8]})
        >>> out["kdn"]["spearman"], out["kdn"]["n"]
        (1.0, 3.0)
    """
    columns = list(table.keys())
    if reference not in columns:
        raise ValueError(
            f"Expected argument `reference` to name a column of `table`, but got {reference!r}; "
            f"available columns: {columns}."
        )
    ref_values = _as_float_column(table[reference], reference)
    names = _select_other_columns(table, columns, reference, others)
    result: dict[str, dict[str, float]] = {}
    for name in names:
        values = _as_float_column(table[name], name)
        if values.shape != ref_values.shape:
            raise ValueError(
                f"Expected column {name!r} to have the same length as {reference!r} ({ref_values.shape[0]}), "
                f"but got shape {values.shape}."
            )
        result[name] = _rank_correlations(ref_values, values)
    return result


def _rank_correlations(x: NDArray[np.float64], y: NDArray[np.float64]) -> dict[str, float]:
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = int(keep.sum())
    if n < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        nan = math.nan
        return {"spearman": nan, "spearman_p": nan, "kendall": nan, "kendall_p": nan, "n": float(n)}
    spearman = stats.spearmanr(x, y)
    kendall = stats.kendalltau(x, y)
    return {
        "spearman": float(spearman.statistic),
        "spearman_p": float(spearman.pvalue),
        "kendall": float(kendall.statistic),
        "kendall_p": float(kendall.pvalue),
        "n": float(n),
    }


def _select_other_columns(
    table: Mapping[str, ArrayLike], columns: list[str], reference: str, others: Sequence[str] | None
) -> list[str]:
    if others is None:
        return [name for name in columns if name != reference and _is_numeric_column(table[name])]
    missing = [name for name in others if name not in columns]
    if missing:
        raise ValueError(
            f"Expected argument `others` to name columns of `table`, but {missing} are missing; "
            f"available columns: {columns}."
        )
    return [name for name in others if name != reference]


def _is_numeric_column(values: ArrayLike) -> bool:
    array = np.asarray(values)
    return array.ndim == 1 and array.dtype.kind in "iuf"


def _as_float_column(values: ArrayLike, name: str) -> NDArray[np.float64]:
    array = np.asarray(values)
    if array.ndim != 1 or array.dtype.kind not in "iufb":
        raise ValueError(
            f"Expected column {name!r} to be a 1-D numeric array, but got shape {array.shape} and dtype {array.dtype}."
        )
    return array.astype(np.float64)


def _human_probabilities(counts: ArrayLike) -> NDArray[np.float64]:
    array = np.asarray(counts)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(
            f"Expected argument `counts` to be a non-empty (N, C) matrix, but got shape {array.shape}. "
            "Convert per-annotator labels with `annotations_to_counts` first."
        )
    if array.dtype.kind not in "iuf":
        raise ValueError(f"Expected argument `counts` to be numeric, but got dtype {array.dtype}.")
    array = array.astype(np.float64)
    if not np.isfinite(array).all() or (array < 0).any():
        raise ValueError("Expected argument `counts` to hold finite non-negative values, but found negative or NaN.")
    _check_every_row_annotated(array, "counts")
    return array / array.sum(axis=1, keepdims=True)


def _check_labels(labels: ArrayLike, num_samples: int, num_classes: int, name: str) -> NDArray[np.int64]:
    array = np.asarray(labels)
    if array.shape != (num_samples,):
        raise ValueError(f"Expected argument `{name}` to have shape ({num_samples},), but got {array.shape}.")
    if array.dtype.kind not in "iu":
        raise ValueError(f"Expected argument `{name}` to hold integer class indices, but got dtype {array.dtype}.")
    if num_samples and (array.min() < 0 or array.max() >= num_classes):
        raise ValueError(
            f"Expected argument `{name}` to hold class indices in [0, {num_classes - 1}], "
            f"but got values in [{array.min()}, {array.max()}]."
        )
    return array.astype(np.int64)


def _check_num_classes(num_classes: int) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"Expected argument `num_classes` to be a positive integer, but got {num_classes!r}.")


def _as_integer_matrix(values: ArrayLike, name: str) -> NDArray[np.int64]:
    array = np.asarray(values)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"Expected argument `{name}` to be a non-empty 2-D array, but got shape {array.shape}.")
    if array.dtype.kind == "f":
        if not (np.isfinite(array).all() and (array == np.round(array)).all()):
            raise ValueError(f"Expected argument `{name}` to hold integer values, but found non-integer floats.")
    elif array.dtype.kind not in "iu":
        raise ValueError(f"Expected argument `{name}` to hold integers, but got dtype {array.dtype}.")
    return array.astype(np.int64)


def _resolve_kind(array: NDArray[np.int64], num_classes: int) -> str:
    if (array == -1).any() or array.shape[1] != num_classes:
        return "labels"
    if array.max() >= num_classes:
        return "counts"
    raise ValueError(
        f"Cannot tell whether argument `annotations` of shape {array.shape} holds counts or per-annotator "
        f"labels: it has num_classes={num_classes} columns and every value lies in [0, {num_classes - 1}]. "
        "Pass kind='counts' or kind='labels'."
    )


def _counts_from_count_matrix(array: NDArray[np.int64], num_classes: int) -> NDArray[np.int64]:
    if array.shape[1] != num_classes:
        raise ValueError(
            f"Expected a counts matrix with num_classes={num_classes} columns, but got shape {array.shape}. "
            "For per-annotator labels pass kind='labels'."
        )
    if (array < 0).any():
        rows = np.flatnonzero((array < 0).any(axis=1))
        raise ValueError(f"Expected non-negative counts, but rows {_preview(rows)} hold negative values.")
    return array


def _counts_from_label_matrix(array: NDArray[np.int64], num_classes: int) -> NDArray[np.int64]:
    bad = (array < -1) | (array >= num_classes)
    if bad.any():
        raise ValueError(
            f"Expected per-annotator labels in [0, {num_classes - 1}] or -1 for 'no label', but rows "
            f"{_preview(np.flatnonzero(bad.any(axis=1)))} hold values such as {array[bad][0]}. "
            "If this is a counts matrix, pass kind='counts'."
        )
    rows = np.broadcast_to(np.arange(array.shape[0])[:, None], array.shape)
    given = array >= 0
    flat = rows[given] * num_classes + array[given]
    counts = np.bincount(flat, minlength=array.shape[0] * num_classes)
    return counts.reshape(array.shape[0], num_classes).astype(np.int64)


def _check_every_row_annotated(counts: NDArray[np.int64] | NDArray[np.float64], name: str) -> None:
    empty = np.flatnonzero(counts.sum(axis=1) <= 0)
    if empty.size:
        raise ValueError(
            f"Expected every sample in `{name}` to have at least one annotation, but rows {_preview(empty)} "
            "have none. Drop those samples first."
        )


def _read_npz(path: Path, key: str | None, kind: AnnotationKind) -> tuple[NDArray[np.generic], AnnotationKind]:
    with np.load(path, allow_pickle=False) as archive:
        found = list(archive.files)
        chosen = _choose_npz_key(path, found, key)
        array = archive[chosen]
    if chosen in _NPZ_KEYS:
        implied: AnnotationKind = "counts" if chosen == "counts" else "labels"
        if kind == "auto":
            kind = implied
        elif kind != implied:
            raise ValueError(
                f"Argument kind={kind!r} contradicts the array name {chosen!r} in {str(path)!r}; "
                f"use kind={implied!r} or kind='auto'."
            )
    return array, kind


def _choose_npz_key(path: Path, found: list[str], key: str | None) -> str:
    if key is not None:
        if key not in found:
            raise ValueError(f"Expected key {key!r} in {str(path)!r}, but the file holds keys {found}.")
        return key
    named = [name for name in _NPZ_KEYS if name in found]
    if len(named) == 1:
        return named[0]
    if not named and len(found) == 1:
        return found[0]
    raise ValueError(
        f"Cannot choose the annotations in {str(path)!r}: it holds keys {found}. "
        "Store them under 'counts' or 'labels', or pass `key`."
    )


def _preview(indices: NDArray[np.intp], limit: int = 5) -> str:
    shown = ", ".join(str(int(i)) for i in indices[:limit])
    more = f", ... ({indices.size} in total)" if indices.size > limit else ""
    return f"[{shown}{more}]"
