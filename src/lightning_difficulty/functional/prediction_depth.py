"""Prediction depth (Baldock, Maennel & Neyshabur 2021) and layer-wise kDN (DifficultyEyes).

Probes ``l = 0..L``: probe 0 is a k-NN classifier on the inputs, probes ``1..L`` on the chosen layers
in forward order. ``PD(x) = min{l : probe_m(x) == yhat(x) for every m >= l}``, with ``yhat`` the
network's own final prediction. One score per sample, an integer in ``[0, L + 1]``; higher = harder.
Conventions: a sample that every probe classifies as ``yhat`` has depth 0; a sample whose last probe
disagrees with ``yhat`` "never settles" and gets ``L + 1``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from lightning_difficulty.functional.knn import neighbour_disagreement

__all__ = ["layer_kdn", "prediction_depth"]


def prediction_depth(probe_predictions: ArrayLike, final_prediction: ArrayLike) -> NDArray[np.int64]:
    """Prediction depth of every sample from its probe votes.

    Args:
        probe_predictions: ``(L + 1, N)`` integer classes; row 0 is the input probe, rows ``1..L`` the
            layer probes in forward order.
        final_prediction: ``(N,)`` the network's own final prediction ``yhat``.

    Returns:
        ``(N,)`` int64 depth in ``[0, L + 1]``: one past the last probe that disagrees with ``yhat``
        (0 when none does, ``L + 1`` when the last probe does). Higher = harder.

    Example::

        >>> probes = np.array([[1, 0, 2], [1, 1, 2], [1, 1, 0]])  # L = 2, N = 3
        >>> prediction_depth(probes, np.array([1, 1, 2])).tolist()
        [0, 1, 3]
    """
    probes = np.asarray(probe_predictions)
    final = np.asarray(final_prediction)
    if probes.ndim != 2 or probes.shape[0] == 0 or not np.issubdtype(probes.dtype, np.integer):
        raise ValueError(
            "Expected `probe_predictions` to be an integer array of shape (L + 1, N) with at least one "
            f"probe, but got shape {probes.shape} and dtype {probes.dtype}."
        )
    if final.shape != (probes.shape[1],) or not np.issubdtype(final.dtype, np.integer):
        raise ValueError(
            f"Expected `final_prediction` to be {probes.shape[1]} integers (one per column of "
            f"`probe_predictions`), but got shape {final.shape} and dtype {final.dtype}."
        )
    disagrees_backwards = probes[::-1] != final[None, :]
    n_probes = probes.shape[0]
    # argmax finds the first disagreement counted from the last probe: probe index n_probes - 1 - argmax.
    last_disagreement = n_probes - 1 - disagrees_backwards.argmax(axis=0)
    return np.where(disagrees_backwards.any(axis=0), last_disagreement + 1, 0).astype(np.int64)


def layer_kdn(neighbour_labels: ArrayLike, reference_prediction: ArrayLike) -> NDArray[np.float64]:
    """Layer-wise kDN: share of a query's k neighbours (at one layer) not labelled ``reference_prediction``.

    DifficultyEyes uses the model's prediction as ``reference_prediction``; with the true label and
    input-space neighbours it is classic kDN. Neighbours should be found leave-one-out for training
    samples (``knn_search(..., exclude_self=True)``). One score per query in ``[0, 1]``; higher = harder.

    Args:
        neighbour_labels: ``(Nq, k)`` true labels of each query's neighbours.
        reference_prediction: ``(Nq,)`` class each query is compared against.

    Returns:
        ``(Nq,)`` float64 disagreement share.

    Example::

        >>> layer_kdn(np.array([[3, 3, 1, 3]]), np.array([3])).tolist()
        [0.25]
    """
    return neighbour_disagreement(neighbour_labels, reference_prediction)
