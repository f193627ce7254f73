"""Confusion bands, hard subsets and per-band accuracy.

All functions take one score per sample where **higher = harder** (e.g. the confusion score in nats).

Band convention (used everywhere in this module): with inner edges ``t_1 < ... < t_{B-1}`` the band of a
score ``s`` is

    band b  <=>  t_b <= s < t_{b+1}        (with t_0 = -inf and t_B = +inf),

so band 0 is the easiest, every edge belongs to the band above it, and equal scores always share a band.
This matches Albiero et al.'s two GroupDRO bands "< 5" and ">= 5" for ``thresholds=[5.0]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "BandAccuracy",
    "BandErrorCorrelation",
    "HardSelection",
    "accuracy_by_band",
    "band_edges",
    "band_error_correlation",
    "quantile_bands",
    "select_hard",
    "threshold_bands",
]


@dataclass(frozen=True)
class HardSelection:
    """The hardest samples chosen by :func:`select_hard`.

    Attributes:
        indices: positions of the selected samples, ascending (int64).
        threshold: the lowest selected score; every sample scoring above it is selected, and samples
            scoring exactly ``threshold`` are selected lowest index first.
    """

    indices: np.ndarray
    threshold: float


@dataclass(frozen=True)
class BandAccuracy:
    """Per-band accuracy table; arrays of length ``num_bands``, position ``b`` = band ``b``.

    Attributes:
        count: number of samples in each band (int64).
        accuracy: fraction correct; NaN for an empty band.
        error: ``1 - accuracy``; NaN for an empty band.
    """

    count: np.ndarray
    accuracy: np.ndarray
    error: np.ndarray


@dataclass(frozen=True)
class BandErrorCorrelation:
    """Result of :func:`band_error_correlation`.

    Attributes:
        rho: Pearson correlation between ``mean_score`` and ``table.error`` over the non-empty bands
            (NaN when fewer than two non-empty bands or when either side is constant).
        edges: the ``num_bands - 1`` inner edges used.
        mean_score: mean score per band; NaN for an empty band.
        table: per-band count, accuracy and error.
    """

    rho: float
    edges: np.ndarray
    mean_score: np.ndarray
    table: BandAccuracy


def _check_scores(scores: ArrayLike) -> np.ndarray:
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"Expected argument `scores` to be a non-empty 1-D array, but got shape {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise ValueError(
            f"Expected argument `scores` to be finite, but got {arr[bad]} at position {bad}."
            " Drop or fill unscored samples first."
        )
    return arr


def _check_num_bands(num_bands: int) -> int:
    if isinstance(num_bands, bool) or not isinstance(num_bands, (int, np.integer)) or num_bands < 1:
        raise ValueError(f"Expected argument `num_bands` to be a positive integer, but got {num_bands!r}.")
    return int(num_bands)


def _check_thresholds(thresholds: ArrayLike) -> np.ndarray:
    arr = np.asarray(thresholds, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"Expected argument `thresholds` to be a 1-D sequence, but got shape {arr.shape}.")
    if not np.all(np.isfinite(arr)) or np.any(np.diff(arr) <= 0):
        raise ValueError(
            "Expected argument `thresholds` to be finite and strictly increasing,"
            f" but got {arr.tolist()}. Sort them and remove duplicates."
        )
    return arr


def band_edges(scores: ArrayLike, *, num_bands: int) -> np.ndarray:
    """Inner edges of ``num_bands`` quantile bands (one score per sample; higher = harder).

    Edge ``b - 1`` is the ``b / num_bands`` quantile of ``scores`` (numpy's default linear
    interpolation), for ``b = 1 .. num_bands - 1``. Repeated edges (many tied scores) are kept, so
    some bands can then be empty; bands never split a group of equal scores.

    Args:
        scores: one finite score per sample.
        num_bands: number of bands ``B``.

    Returns:
        float64 array of length ``B - 1``; band ``b`` is ``edges[b-1] <= s < edges[b]``.

    Example::

        >>> band_edges([0.0, 1.0, 2.0, 3.0, 4.0], num_bands=2).tolist()
        [2.0]
    """
    arr = _check_scores(scores)
    num_bands = _check_num_bands(num_bands)
    probs = np.arange(1, num_bands) / num_bands
    return np.quantile(arr, probs).astype(np.float64)


def threshold_bands(scores: ArrayLike, *, thresholds: ArrayLike) -> np.ndarray:
    """Band id of each sample for fixed inner edges (one score per sample; higher = harder).

    Band ``b`` holds the scores with ``thresholds[b-1] <= s < thresholds[b]``; band 0 is below
    ``thresholds[0]`` and band ``len(thresholds)`` is at or above ``thresholds[-1]``.

    Args:
        scores: one finite score per sample.
        thresholds: strictly increasing inner edges (may be empty: one band).

    Returns:
        int64 band id per sample, 0 = easiest.

    Example::

        >>> threshold_bands([1.0, 5.0, 6.5], thresholds=[5.0]).tolist()
        [0, 1, 1]
    """
    arr = _check_scores(scores)
    edges = _check_thresholds(thresholds)
    return np.searchsorted(edges, arr, side="right").astype(np.int64)


def quantile_bands(scores: ArrayLike, *, num_bands: int) -> np.ndarray:
    """Band id of each sample for ``num_bands`` quantile bands (one score per sample; higher = harder).

    The edges are :func:`band_edges`; bands are applied with :func:`threshold_bands`' convention, so
    sizes are close to ``N / num_bands`` but tied scores always share a band.

    Args:
        scores: one finite score per sample.
        num_bands: number of bands.

    Returns:
        int64 band id per sample, 0 = easiest.

    Example::

        >>> quantile_bands([0.1, 0.4, 0.2, 0.9], num_bands=2).tolist()
        [0, 1, 0, 1]
    """
    arr = _check_scores(scores)
    edges = band_edges(arr, num_bands=num_bands)
    return np.searchsorted(edges, arr, side="right").astype(np.int64)


def _hard_count(n: int, fraction: float | None, top_k: int | None) -> int:
    if (fraction is None) == (top_k is None):
        raise ValueError(
            f"Expected exactly one of `fraction` and `top_k`, but got fraction={fraction!r}, top_k={top_k!r}."
        )
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or not 1 <= top_k <= n:
            raise ValueError(f"Expected argument `top_k` to be an integer in [1, {n}], but got {top_k!r}.")
        return int(top_k)
    assert fraction is not None
    if not 0.0 < float(fraction) <= 1.0:
        raise ValueError(f"Expected argument `fraction` to be in (0, 1], but got {fraction!r}.")
    # Round away float noise such as 0.1 * 30 = 3.0000000000000004 before taking the ceiling.
    return max(1, math.ceil(round(float(fraction) * n, 6)))


def select_hard(scores: ArrayLike, *, fraction: float | None = None, top_k: int | None = None) -> HardSelection:
    """Select the hardest samples (one score per sample; higher = harder).

    Exactly one of ``fraction`` and ``top_k`` is given; ``fraction`` selects
    ``k = max(1, ceil(fraction * N))`` samples. Samples are ranked by descending score, ties by
    ascending index, and the first ``k`` are kept, so the result is deterministic.

    Args:
        scores: one finite score per sample.
        fraction: share of samples to keep, in (0, 1].
        top_k: number of samples to keep, in [1, N].

    Returns:
        :class:`HardSelection` with the ascending indices and the lowest selected score.

    Example::

        >>> sel = select_hard([0.5, 2.0, 0.1, 2.0, 1.0], top_k=2)
        >>> sel.indices.tolist(), sel.threshold
        ([1, 3], 2.0)
    """
    arr = _check_scores(scores)
    k = _hard_count(arr.size, fraction, top_k)
    order = np.lexsort((np.arange(arr.size), -arr))
    chosen = order[:k]
    return HardSelection(indices=np.sort(chosen).astype(np.int64), threshold=float(arr[chosen[-1]]))


def _check_bands(bands: ArrayLike, num_bands: int | None) -> tuple[np.ndarray, int]:
    arr = np.asarray(bands)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise ValueError(
            f"Expected argument `bands` to be a 1-D integer array, but got shape {arr.shape} and dtype {arr.dtype}."
        )
    if arr.size and arr.min() < 0:
        raise ValueError(f"Expected argument `bands` to be non-negative, but got {int(arr.min())}.")
    needed = int(arr.max()) + 1 if arr.size else 1
    if num_bands is None:
        return arr.astype(np.int64), needed
    num_bands = _check_num_bands(num_bands)
    if needed > num_bands:
        raise ValueError(f"Expected argument `bands` to be below `num_bands`={num_bands}, but got band {needed - 1}.")
    return arr.astype(np.int64), num_bands


def accuracy_by_band(correct: ArrayLike, bands: ArrayLike, *, num_bands: int | None = None) -> BandAccuracy:
    """Count, accuracy and error of each band.

    Args:
        correct: 1-D booleans (or 0/1), whether each sample was classified correctly.
        bands: 1-D band id per sample (e.g. from :func:`threshold_bands`).
        num_bands: number of bands; defaults to ``max(bands) + 1``. Empty bands get NaN accuracy.

    Returns:
        :class:`BandAccuracy`.

    Example::

        >>> t = accuracy_by_band([1, 1, 0, 0], [0, 0, 1, 1])
        >>> t.count.tolist(), t.error.tolist()
        ([2, 2], [0.0, 1.0])
    """
    hits = np.asarray(correct)
    band_ids, num_bands = _check_bands(bands, num_bands)
    if hits.shape != band_ids.shape:
        raise ValueError(
            f"Expected arguments `correct` and `bands` to have the same shape, but got {hits.shape}"
            f" and {band_ids.shape}."
        )
    if hits.size and not np.all((hits == 0) | (hits == 1)):
        raise ValueError("Expected argument `correct` to hold booleans or 0/1 values.")
    count = np.bincount(band_ids, minlength=num_bands).astype(np.int64)
    right = np.bincount(band_ids, weights=hits.astype(np.float64), minlength=num_bands)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.where(count > 0, right / np.maximum(count, 1), np.nan)
    return BandAccuracy(count=count, accuracy=accuracy, error=1.0 - accuracy)


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    xc, yc = x - x.mean(), y - y.mean()
    return float((xc @ yc) / math.sqrt(float(xc @ xc) * float(yc @ yc)))


def band_error_correlation(
    scores: ArrayLike, correct: ArrayLike, *, num_bands: int, binning: str = "width", edges: ArrayLike | None = None
) -> BandErrorCorrelation:
    """Pearson correlation between band mean score and band error rate (Albiero et al., Fig. 2).

    One score per sample; higher = harder. The scores are cut into ``num_bands`` bands, either of
    equal width over ``[min(scores), max(scores)]`` (``binning="width"``, the histogram bins of the
    paper's figures) or of equal count (``binning="quantile"``, :func:`band_edges`). Empty bands are
    left out of the correlation.

    Args:
        scores: one finite score per sample.
        correct: 1-D booleans, whether each sample was classified correctly.
        num_bands: number of bands.
        binning: ``"width"`` or ``"quantile"``.
        edges: ``num_bands - 1`` inner edges to use instead of ``binning`` (e.g. fitted on another split, so
            that band ``b`` means the same score range in every split).

    Returns:
        :class:`BandErrorCorrelation` with ``rho`` and the per-band table.

    Example::

        >>> res = band_error_correlation([0.1, 0.2, 1.0, 1.1, 2.0, 2.1], [1, 1, 1, 0, 0, 0], num_bands=3)
        >>> round(res.rho, 4), res.table.error.tolist()
        (0.9995, [0.0, 0.5, 1.0])
    """
    arr = _check_scores(scores)
    num_bands = _check_num_bands(num_bands)
    if edges is not None:
        edges = np.asarray(edges, dtype=np.float64)
        if edges.shape != (num_bands - 1,) or np.any(np.diff(edges) < 0):
            raise ValueError(
                f"Expected argument `edges` to hold {num_bands - 1} ascending values, but got {edges.tolist()}."
            )
    elif binning == "width":
        edges = np.linspace(arr.min(), arr.max(), num_bands + 1)[1:-1]
    elif binning == "quantile":
        edges = band_edges(arr, num_bands=num_bands)
    else:
        raise ValueError(f"Expected argument `binning` to be 'width' or 'quantile', but got {binning!r}.")
    band_ids = np.searchsorted(edges, arr, side="right").astype(np.int64)
    table = accuracy_by_band(correct, band_ids, num_bands=num_bands)
    sums = np.bincount(band_ids, weights=arr, minlength=num_bands)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_score = np.where(table.count > 0, sums / np.maximum(table.count, 1), np.nan)
    filled = table.count > 0
    rho = _pearson(mean_score[filled], table.error[filled])
    return BandErrorCorrelation(rho=rho, edges=edges, mean_score=mean_score, table=table)
