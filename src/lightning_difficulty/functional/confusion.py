"""Confusion score (Simsek et al. 2022; Albiero et al.): entropy of the softmax averaged over epochs.

One score per sample, in nats, in ``[0, log C]``; higher = harder. With M models (seeds)
the per-epoch probability vectors are averaged first (Eq. 1), then the entropy is taken (Eq. 2),
then averaged over epochs (Eq. 3).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def softmax_entropy(logits: Tensor) -> Tensor:
    """Entropy (nats) of ``softmax(logits)`` per row, computed in float32 or wider.

    Logits from AMP (float16/bfloat16) are upcast first. With ``m`` the row maximum, ``e = exp(z - m)`` and
    ``s = sum(e)``, the entropy is ``log s - sum(e * (z - m)) / s``: one exponential pass and one dot product
    per row, about 2 ``log_softmax`` times at 1,000 classes (``benchmarks/scale_confusion.py``), with no
    host-device synchronisation. Saturated logits give exact zeros; ``-inf`` logits (masked classes)
    contribute nothing; a row with a NaN or ``+inf`` logit, or only ``-inf`` logits, gives NaN.

    Example::

        >>> round(float(softmax_entropy(torch.zeros(1, 4))[0]), 4)  # uniform over 4 classes
        1.3863
        >>> round(float(softmax_entropy(torch.tensor([[0.0, 0.0, -float("inf")]]))[0]), 4)  # a masked class
        0.6931
    """
    if logits.ndim != 2:
        raise ValueError(f"Expected `logits` of shape (batch, classes), but got shape {tuple(logits.shape)}.")
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    # masked (-inf) classes shift to the dtype's lowest finite value: exp gives 0 and 0 * lowest = 0, so there is
    # no 0 * -inf and no data-dependent branch (a branch would synchronise the device at every training step)
    shifted = (logits - logits.amax(dim=-1, keepdim=True)).clamp(min=torch.finfo(logits.dtype).min)
    weights = shifted.exp()
    total = weights.sum(dim=-1)
    return total.log() - torch.linalg.vecdot(weights, shifted) / total


def entropy(probs: np.ndarray, axis: int = -1) -> np.ndarray:
    """Shannon entropy in nats of probability vectors along ``axis`` (``0 log 0 = 0``; NaN stays NaN).

    Example::

        >>> float(entropy(np.array([0.5, 0.5, 0.0])).round(4))
        0.6931
    """
    p = np.asarray(probs, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(np.where(p > 0, p, 1.0)), np.where(np.isnan(p), np.nan, 0.0))
    return terms.sum(axis=axis)


def confusion_score(probs_per_epoch: np.ndarray) -> np.ndarray:
    """Confusion score from per-epoch probabilities of shape (T, N, C) or, for M models, (T, M, N, C).

    Rows that are NaN (a sample not seen in an epoch) are skipped in the epoch average;
    a sample never seen gets NaN.

    Example::

        >>> p = np.array([[[1.0, 0.0]], [[0.5, 0.5]]])   # T=2 epochs, N=1 sample, C=2
        >>> float(confusion_score(p)[0].round(4))         # (0 + log 2) / 2
        0.3466
    """
    p = np.asarray(probs_per_epoch, dtype=np.float64)
    if p.ndim == 4:
        p = p.mean(axis=1)
    if p.ndim != 3:
        raise ValueError(f"Expected `probs_per_epoch` of shape (T, N, C) or (T, M, N, C), but got {p.shape}.")
    per_epoch = entropy(p)  # (T, N); NaN rows stay NaN
    seen = ~np.isnan(per_epoch)
    total = np.where(seen, per_epoch, 0.0).sum(axis=0)
    count = seen.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def mean_over_epochs(entropy_sum: np.ndarray, epochs_seen: np.ndarray) -> np.ndarray:
    """Average per-sample entropy sums over the epochs each sample was seen (NaN if never seen)."""
    total = np.asarray(entropy_sum, dtype=np.float64)
    count = np.asarray(epochs_seen)
    out = np.full(total.shape, np.nan)
    np.divide(total, count, out=out, where=count > 0)
    return out
