"""Entropy of probability vectors known only by their top-k entries (records of kind ``"topk"``).

A top-k record keeps the ``k`` largest probabilities of each vector. :func:`topk_reconstruct`
completes a vector with the maximum-entropy choice (the remaining mass spread evenly over the other
``C - k`` classes); :func:`topk_entropy_bounds` brackets the true entropy and
:func:`max_entropy_error` is the worst-case width of that bracket over all vectors. Entropies are in
nats; higher = harder. Pure numpy (and one scalar root from scipy), no Lightning.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import brentq

from lightning_difficulty.functional.confusion import entropy

__all__ = ["EntropyBounds", "max_entropy_error", "seen_rows", "topk_entropy_bounds", "topk_reconstruct"]


def seen_rows(block: np.ndarray, where: str) -> np.ndarray:
    """Rows (last axis) without NaN: the samples seen; a row that is only partly NaN is refused.

    Args:
        block: ``(..., C)`` probabilities (or top-k values); a row of NaN marks a sample not seen.
        where: how the error message names ``block``.

    Returns:
        bool ``block.shape[:-1]``.

    Example::

        >>> seen_rows(np.array([[0.5, 0.5], [np.nan, np.nan]]), "`probs`").tolist()
        [True, False]
    """
    nan = np.isnan(block)
    some, every = nan.any(axis=-1), nan.all(axis=-1)
    if np.any(some & ~every):
        raise ValueError(
            f"Expected every row of {where} to be all finite (seen) or all NaN (unseen), but found"
            " rows that are only partly NaN. The record is corrupt."
        )
    return ~every


class EntropyBounds(NamedTuple):
    """Entropy of a distribution known only by its top-k probabilities (nats, per row)."""

    estimate: np.ndarray
    lower: np.ndarray
    upper: np.ndarray


def _check_topk_values(values: ArrayLike, num_classes: int) -> np.ndarray:
    vals = np.asarray(values, dtype=np.float64)
    if vals.ndim < 1 or vals.shape[-1] < 1:
        raise ValueError(f"Expected argument `values` to be (..., k) with k >= 1, but got shape {vals.shape}.")
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise ValueError(f"Expected argument `num_classes` to be an integer, but got {num_classes!r}.")
    if vals.shape[-1] > num_classes:
        raise ValueError(
            f"Expected at most `num_classes`={num_classes} top-k values per row, but got {vals.shape[-1]}."
        )
    finite = vals[~np.isnan(vals)]
    if finite.size and (finite.min() < 0 or finite.max() > 1):
        raise ValueError("Expected argument `values` to hold probabilities in [0, 1] (or NaN rows).")
    return vals


def topk_entropy_bounds(values: ArrayLike, num_classes: int) -> EntropyBounds:
    """Bounds on the entropy of a probability vector of which only the top-k entries are known.

    With the top-k probabilities ``v`` (any order), ``a = min(v)``, the remaining mass
    ``r = max(0, 1 - sum(v))`` and ``m = C - k`` other classes, each holding at most ``a``:

    - ``upper = H(v) + r log(m / r)``: ``r`` spread evenly (``r / m <= a``, so it is feasible), the
      most uniform completion;
    - ``lower = H(v) + j a log(1/a) + rho log(1/rho)`` with ``j = floor(r / a)``, ``rho = r - j a``:
      the greedy completion that fills classes up to the cap ``a``; it majorizes every other
      completion, so by Schur-concavity its entropy is the minimum;
    - ``estimate = upper``, i.e. the entropy of the even-spread reconstruction
      (:func:`topk_reconstruct`), so that a single run's top-k confusion equals the ``M = 1``
      ensemble.

    The true entropy lies in ``[lower, upper]``. Per row, since every completion term satisfies
    ``x log(1/x) >= x log(1/a)``::

        upper - lower <= r log(m a / r)

    and over all inputs (see :func:`max_entropy_error`)::

        max_entropy_error(C, k) = (C - k) / (k u*),  u* the root of  ln u = 1 + (C - k) / (k u),  u >= e.

    Float32 rounding that makes ``r > m a`` is absorbed by raising the cap to ``r / m``. NaN rows
    give NaN. Higher entropy = harder.

    Args:
        values: ``(..., k)`` top-k probabilities.
        num_classes: ``C``.

    Returns:
        :class:`EntropyBounds` ``(estimate, lower, upper)``, each of shape ``values.shape[:-1]``.

    Example::

        >>> b = topk_entropy_bounds([0.5, 0.3], num_classes=4)  # r = 0.2 over 2 classes, cap 0.3
        >>> round(float(b.lower), 4), round(float(b.upper), 4)
        (1.0297, 1.1683)
    """
    vals = _check_topk_values(values, num_classes)
    m = int(num_classes) - vals.shape[-1]
    head = entropy(vals)
    rest = np.clip(1.0 - vals.sum(axis=-1), 0.0, None)
    if m == 0:
        return EntropyBounds(estimate=head, lower=head.copy(), upper=head.copy())
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = np.where(rest > 0, rest * np.log(m / np.where(rest > 0, rest, 1.0)), 0.0)
        cap = np.maximum(vals.min(axis=-1), rest / m)
        safe_cap = np.where(cap > 0, cap, 1.0)
        full = np.where(rest > 0, np.floor(rest / safe_cap), 0.0)
        rem = np.where(rest > 0, rest - full * safe_cap, 0.0)
        greedy = full * safe_cap * -np.log(safe_cap) + np.where(
            rem > 0, -rem * np.log(np.where(rem > 0, rem, 1.0)), 0.0
        )
    upper = head + spread
    lower = np.minimum(head + greedy, upper)  # equal up to rounding when the completion is forced
    return EntropyBounds(estimate=upper, lower=lower, upper=upper)


def max_entropy_error(num_classes: int, topk: int) -> float:
    """Worst case of ``upper - lower`` in :func:`topk_entropy_bounds` over all probability vectors.

    With ``m = C - k``: ``upper - lower <= r log(m a / r)``; maximising over the cap ``a`` and the
    remaining mass ``r`` (subject to ``r <= m a`` and ``r <= 1 - k a``) gives, with ``u = m a / r``,
    ``max_{u >= e} m ln(u) / (m + k u)``, attained at the root ``u*`` of ``ln u = 1 + m / (k u)``,
    where it equals::

        max_entropy_error(C, k) = (C - k) / (k u*)        (0 when k = C)

    It is an upper bound on the gap of every row (tight up to the rounding of ``r / a`` to whole
    classes). E.g. C = 1000, k = 10 gives about 2.63 nats; C = 10, k = 1 about 1.10 nats.

    Example::

        >>> round(max_entropy_error(10, 1), 3)
        1.101
    """
    if isinstance(topk, bool) or not isinstance(topk, int) or not 1 <= topk <= num_classes:
        raise ValueError(f"Expected argument `topk` to be an integer in [1, {num_classes}], but got {topk!r}.")
    m, k = num_classes - topk, topk
    if m == 0:
        return 0.0
    root = brentq(lambda u: math.log(u) - 1.0 - m / (k * u), math.e, math.e * (1.0 + m / k))
    return m / (k * float(root))


def topk_reconstruct(values: ArrayLike, indices: ArrayLike, *, num_classes: int) -> np.ndarray:
    """Approximate full probability vectors from top-k records (maximum-entropy completion).

    Each row gets its top-k values at ``indices`` and the remaining mass ``max(0, 1 - sum(values))``
    spread evenly over the other ``C - k`` classes. NaN rows (unseen samples) stay NaN; their
    indices are ignored.

    Args:
        values: ``(n, k)`` top-k probabilities.
        indices: ``(n, k)`` their class indices.
        num_classes: ``C``.

    Returns:
        float64 ``(n, C)``.

    Example::

        >>> topk_reconstruct([[0.6]], [[2]], num_classes=3).tolist()
        [[0.2, 0.2, 0.6]]
    """
    vals = _check_topk_values(values, num_classes)
    idx = np.asarray(indices)
    if vals.ndim != 2 or idx.shape != vals.shape:
        raise ValueError(
            f"Expected `values` and `indices` to be (n, k) of one shape, but got {vals.shape} and {idx.shape}."
        )
    seen = seen_rows(vals, "`values`")
    if np.any(seen[:, None] & ((idx < 0) | (idx >= num_classes))):
        raise ValueError(f"Expected argument `indices` to lie in [0, {num_classes}) on seen rows.")
    n, k = vals.shape
    m = num_classes - k
    rest = np.clip(1.0 - vals.sum(axis=1), 0.0, None)
    out = np.repeat((rest / m if m else np.zeros(n))[:, None], num_classes, axis=1)
    rows = np.flatnonzero(seen)
    out_rows = out[rows]
    np.put_along_axis(out_rows, idx[rows].astype(np.int64), vals[rows], axis=1)
    out[rows] = out_rows
    out[~seen] = np.nan
    return out
