"""Training dynamics per sample: data maps, forgetting events, AUM, EL2N, and label-noise scores.

Three layers, all pure:

1. **Per presentation** (torch, one batch ``logits (B, C)``, ``target (B,)`` int64 -> ``(B,)``):
   :func:`label_probability`, :func:`is_correct`, :func:`logit_margin`, :func:`el2n`. Half-precision logits
   are upcast to float32; float32/float64 stay as they are. No device synchronisation (safe in a training step).
2. **Epoch folds** (numpy, O(N) state): once per epoch, a state and the epoch's per-sample values ``(N,)``
   (the mean over the sample's presentations in that epoch) with a ``seen`` mask ``(N,)`` give a new state.
   Samples not seen in an epoch keep their state (their values, NaN or not, are ignored). The AUM state holds
   sums and counts only, so states folded on disjoint epochs add up; the data map keeps its variance as Welford's
   sum of squared deviations, and :func:`merge_data_maps` combines two states exactly (Chan et al.'s update).
   Field names are unique across the states, so one dict of named arrays can hold all of them:
   ``states.update(fold_aum(AumState.from_states(states), margin, seen).as_states())``.
   :class:`DataMapState` / :func:`fold_data_map` -> :func:`dm_confidence`, :func:`dm_variability`,
   :func:`dm_correctness`, :func:`data_map_regions`; :class:`ForgettingState` / :func:`fold_forgetting` ->
   :func:`forgetting`, :func:`never_learned`; :class:`AumState` / :func:`fold_aum` -> :func:`aum`.
3. **Label noise** (numpy): AUM threshold samples (:func:`make_threshold_samples`, :func:`aum_threshold`,
   :func:`aum_flags`), cleanlab's :func:`self_confidence_score`, and the benchmark metric :func:`precision_at_k`
   (AUROC is scikit-learn's ``roc_auc_score``).

Papers: Swayamdipta et al. 2020 (data maps), Toneva et al. 2019 (forgetting), Pleiss et al. 2020 (AUM),
Paul, Ganguli & Dziugaite 2021 (EL2N), Northcutt et al. 2021 / cleanlab (self-confidence).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from torch import Tensor
from typing_extensions import Self

__all__ = [
    "DATA_MAP_REGIONS",
    "AumState",
    "DataMapState",
    "ForgettingState",
    "aum",
    "aum_flags",
    "aum_threshold",
    "data_map_regions",
    "dm_confidence",
    "dm_correctness",
    "dm_variability",
    "el2n",
    "fold_aum",
    "fold_data_map",
    "fold_forgetting",
    "forgetting",
    "forgetting_sort_key",
    "is_correct",
    "label_probability",
    "logit_margin",
    "make_threshold_samples",
    "merge_data_maps",
    "never_learned",
    "precision_at_k",
    "self_confidence_score",
]

DATA_MAP_REGIONS: tuple[str, ...] = ("easy", "ambiguous", "hard")
"""Region names of :func:`data_map_regions` (samples never seen get ``"unseen"``)."""


# -- 1. per presentation (torch) --------------------------------------------------------------------


def label_probability(logits: Tensor, target: Tensor) -> Tensor:
    """Softmax probability of the label, ``p(label)`` per row (data-map confidence of one presentation).

    One value per sample in ``[0, 1]``; higher = easier. Computed from ``log_softmax``, so ``-inf``-masked
    logits give probability 0 for their class.

    Example::

        >>> label_probability(torch.tensor([[0.0, 0.0], [2.0, float("-inf")]]), torch.tensor([1, 0])).tolist()
        [0.5, 1.0]
    """
    z, target = _checked_batch(logits, target)
    return torch.log_softmax(z, dim=1).gather(1, target[:, None]).squeeze(1).exp()


def is_correct(logits: Tensor, target: Tensor) -> Tensor:
    """1.0 where ``argmax(logits) == label``, else 0.0 (ties go to the lowest class index, as ``argmax``).

    One value per sample; higher = easier. Returned in the (upcast) float dtype of ``logits``, ready for
    averaging.

    Example::

        >>> is_correct(torch.tensor([[1.0, 3.0], [1.0, 0.0]]), torch.tensor([1, 1])).tolist()
        [1.0, 0.0]
    """
    z, target = _checked_batch(logits, target)
    return (z.argmax(dim=1) == target).to(z.dtype)


def logit_margin(logits: Tensor, target: Tensor) -> Tensor:
    """AUM margin of one presentation (Pleiss et al. 2020): ``z[label] - max_{j != label} z[j]``, on logits.

    One value per sample; higher = easier (negative = the model prefers another class). ``-inf``-masked
    classes drop out of the max; the result is finite whenever the label logit and at least one other logit
    are finite (``+inf`` when every other class is masked, ``-inf`` when only the label is masked).

    Raises:
        ValueError: if there are fewer than 2 classes (no other class to compare with).

    Example::

        >>> logit_margin(torch.tensor([[3.0, 1.0, 2.0], [3.0, float("-inf"), 2.0]]), torch.tensor([1, 0])).tolist()
        [-2.0, 1.0]
    """
    z, target = _checked_batch(logits, target)
    if z.shape[1] < 2:
        raise ValueError(f"Expected `logits` with at least 2 classes for a margin, but got shape {tuple(z.shape)}.")
    label_logit = z.gather(1, target[:, None]).squeeze(1)
    others = z.scatter(1, target[:, None], float("-inf"))
    return label_logit - others.max(dim=1).values


def el2n(logits: Tensor, target: Tensor) -> Tensor:
    """EL2N (Paul, Ganguli & Dziugaite 2021): ``|| softmax(logits) - onehot(label) ||_2`` per row.

    One value per sample in ``[0, sqrt(2)]``; higher = harder. ``1 - p(label)`` is taken as the sum of the
    other classes' probabilities, so a saturated softmax keeps its small error instead of rounding to 0.

    Example::

        >>> round(float(el2n(torch.tensor([[0.0, 0.0]]), torch.tensor([0]))[0]), 4)  # sqrt(0.5^2 + 0.5^2)
        0.7071
    """
    z, target = _checked_batch(logits, target)
    others = torch.softmax(z, dim=1).scatter(1, target[:, None], 0.0)
    missing = others.sum(dim=1)  # 1 - p(label)
    return torch.sqrt((others * others).sum(dim=1) + missing * missing)


def _checked_batch(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Validate shapes and dtypes (no value checks: they would synchronise the device); upcast AMP logits."""
    if logits.ndim != 2:
        raise ValueError(f"Expected `logits` of shape (batch, classes), but got shape {tuple(logits.shape)}.")
    if target.shape != logits.shape[:1]:
        raise ValueError(
            f"Expected `target` of shape ({logits.shape[0]},) to match `logits` {tuple(logits.shape)}, "
            f"but got shape {tuple(target.shape)}."
        )
    if target.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise ValueError(f"Expected `target` to hold integer class indices, but got dtype {target.dtype}.")
    if not logits.is_floating_point():
        raise ValueError(f"Expected floating-point `logits`, but got dtype {logits.dtype}.")
    z = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    return z, target.long()


# -- 2. epoch folds (numpy) ---------------------------------------------------------------------------


class _FoldState:
    """Bridge between a fold state and a dict of named per-sample arrays (field names are unique across states)."""

    @classmethod
    def from_states(cls, states: Mapping[str, NDArray[Any]]) -> Self:
        """Pick this state's fields out of ``states`` (which may hold other arrays too)."""
        names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        missing = [name for name in names if name not in states]
        if missing:
            raise KeyError(f"Expected `states` to hold {names}, but {missing} are missing. Start from `zeros(N)`.")
        return cls(**{name: states[name] for name in names})

    def as_states(self) -> dict[str, NDArray[Any]]:
        """``{field name: array}``, e.g. for ``states.update(new.as_states())``."""
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]


@dataclass(frozen=True)
class DataMapState(_FoldState):
    """Running sums for data maps (Swayamdipta et al. 2020), one entry per sample.

    Attributes:
        dm_epochs: ``(N,)`` int64, epochs in which the sample was seen.
        dm_confidence_sum: ``(N,)`` float64, sum over those epochs of the epoch's mean ``p(label)``.
        dm_confidence_m2: ``(N,)`` float64, sum of squared deviations of those values from their running mean
            (Welford's update: the variance never cancels catastrophically, as ``E[p^2] - E[p]^2`` does).
        dm_correct_sum: ``(N,)`` float64, sum of the epoch's share of correct presentations.
    """

    dm_epochs: NDArray[np.int64]
    dm_confidence_sum: NDArray[np.float64]
    dm_confidence_m2: NDArray[np.float64]
    dm_correct_sum: NDArray[np.float64]

    @classmethod
    def zeros(cls, num_samples: int) -> DataMapState:
        """The state before the first epoch."""
        n = _num_samples(num_samples)
        return cls(np.zeros(n, np.int64), np.zeros(n), np.zeros(n), np.zeros(n))


def fold_data_map(state: DataMapState, confidence: ArrayLike, correct: ArrayLike, seen: ArrayLike) -> DataMapState:
    """Add one epoch to the data-map sums (a new state; the old one is unchanged).

    Args:
        state: the sums so far.
        confidence: ``(N,)`` the epoch's mean ``p(label)`` per sample (:func:`label_probability`).
        correct: ``(N,)`` the epoch's share of correct presentations per sample (:func:`is_correct`), or bools.
        seen: ``(N,)`` bool, samples presented in this epoch; the others are left as they are.

    Example::

        >>> s = fold_data_map(DataMapState.zeros(2), [0.9, np.nan], [1.0, np.nan], [True, False])
        >>> s.dm_epochs.tolist(), s.dm_confidence_sum.tolist()
        ([1, 0], [0.9, 0.0])
    """
    n = state.dm_epochs.shape[0]
    mask = _seen_mask(seen, n)
    p = _epoch_values(confidence, mask, n, "confidence")
    c = _epoch_values(correct, mask, n, "correct")
    epochs, total = state.dm_epochs + mask, state.dm_confidence_sum + p
    old_mean = _mean(state.dm_confidence_sum, state.dm_epochs)
    new_mean = _mean(total, epochs)
    # Welford: M2 += (p - old mean) * (p - new mean); zero for a sample's first epoch and for unseen samples
    step = np.where(mask & (state.dm_epochs > 0), (p - np.nan_to_num(old_mean)) * (p - np.nan_to_num(new_mean)), 0.0)
    return DataMapState(epochs, total, state.dm_confidence_m2 + step, state.dm_correct_sum + c)


def merge_data_maps(a: DataMapState, b: DataMapState) -> DataMapState:
    """The state of the epochs of ``a`` and ``b`` together (Chan et al.'s pairwise update of the variance).

    Example::

        >>> one = fold_data_map(DataMapState.zeros(1), [0.2], [0.0], [True])
        >>> two = fold_data_map(DataMapState.zeros(1), [0.6], [1.0], [True])
        >>> dm_variability(merge_data_maps(one, two)).round(6).tolist()
        [0.2]
    """
    epochs = a.dm_epochs + b.dm_epochs
    delta = np.nan_to_num(_mean(b.dm_confidence_sum, b.dm_epochs) - _mean(a.dm_confidence_sum, a.dm_epochs))
    between = np.divide(delta * delta * a.dm_epochs * b.dm_epochs, epochs, out=np.zeros(delta.shape), where=epochs > 0)
    return DataMapState(
        epochs,
        a.dm_confidence_sum + b.dm_confidence_sum,
        a.dm_confidence_m2 + b.dm_confidence_m2 + between,
        a.dm_correct_sum + b.dm_correct_sum,
    )


def dm_confidence(state: DataMapState) -> NDArray[np.float64]:
    """Data-map confidence: mean over epochs of ``p(label)`` (NaN if never seen).

    One score per sample in ``[0, 1]``; higher = easier (negate it to rank suspected mislabels).

    Example::

        >>> s = fold_data_map(DataMapState.zeros(1), [0.2], [0.0], [True])
        >>> dm_confidence(fold_data_map(s, [0.6], [1.0], [True])).tolist()
        [0.4]
    """
    return _mean(state.dm_confidence_sum, state.dm_epochs)


def dm_variability(state: DataMapState) -> NDArray[np.float64]:
    """Data-map variability: standard deviation over epochs of ``p(label)`` (ddof = 0; NaN if never seen).

    One score per sample in ``[0, 0.5]``; higher = more ambiguous (neither easier nor harder).

    Example::

        >>> s = fold_data_map(DataMapState.zeros(1), [0.2], [0.0], [True])
        >>> dm_variability(fold_data_map(s, [0.6], [1.0], [True])).round(6).tolist()
        [0.2]
    """
    return np.sqrt(np.maximum(_mean(state.dm_confidence_m2, state.dm_epochs), 0.0))


def dm_correctness(state: DataMapState) -> NDArray[np.float64]:
    """Data-map correctness: share of epochs in which ``argmax == label`` (NaN if never seen).

    One score per sample in ``[0, 1]``; higher = easier.

    Example::

        >>> s = fold_data_map(DataMapState.zeros(1), [0.2], [0.0], [True])
        >>> dm_correctness(fold_data_map(s, [0.6], [1.0], [True])).tolist()
        [0.5]
    """
    return _mean(state.dm_correct_sum, state.dm_epochs)


CONFIDENCE_THRESHOLD = 0.5
"""Data maps: ``easy`` at or above this mean ``p(label)`` (unless ambiguous)."""
VARIABILITY_THRESHOLD = 0.2
"""Data maps: ``ambiguous`` at or above this standard deviation of ``p(label)`` over epochs."""


def data_map_regions(
    confidence: ArrayLike,
    variability: ArrayLike,
    *,
    confidence_threshold: float = CONFIDENCE_THRESHOLD,
    variability_threshold: float = VARIABILITY_THRESHOLD,
) -> NDArray[np.str_]:
    """Data-map region per sample, the paper's reading of the confidence/variability scatter.

    Swayamdipta et al. read the regions off the plot and give no thresholds; these are ours:

    * ``"ambiguous"``: ``variability >= variability_threshold`` (default 0.2: ``p(label)`` swings by about
      0.4 between epochs, e.g. half the epochs at 0.3 and half at 0.7);
    * ``"easy"`` (easy-to-learn): otherwise, ``confidence >= confidence_threshold`` (default 0.5: on average
      the label holds most of the probability);
    * ``"hard"`` (hard-to-learn): low confidence and low variability;
    * ``"unseen"``: confidence or variability is NaN (a sample never trained on).

    Example::

        >>> data_map_regions([0.9, 0.5, 0.1, np.nan], [0.05, 0.3, 0.05, np.nan]).tolist()
        ['easy', 'ambiguous', 'hard', 'unseen']
    """
    conf = np.asarray(confidence, dtype=np.float64)
    var = np.asarray(variability, dtype=np.float64)
    if conf.ndim != 1 or var.shape != conf.shape:
        raise ValueError(
            f"Expected `confidence` and `variability` of the same shape (N,), but got {conf.shape} and {var.shape}."
        )
    for name, value, high in (("confidence", confidence_threshold, 1.0), ("variability", variability_threshold, 0.5)):
        if not 0.0 <= value <= high:
            raise ValueError(f"Expected `{name}_threshold` in [0, {high}], but got {value!r}.")
    regions = np.where(conf >= confidence_threshold, "easy", "hard").astype("<U9")
    regions[var >= variability_threshold] = "ambiguous"
    regions[np.isnan(conf) | np.isnan(var)] = "unseen"
    return regions


@dataclass(frozen=True)
class ForgettingState(_FoldState):
    """Forgetting events (Toneva et al. 2019) so far, one entry per sample.

    Attributes:
        previous_correct: ``(N,)`` bool, correct at the latest presentation (False before the first).
        forgetting_count: ``(N,)`` int64, correct-to-wrong transitions between consecutive presentations.
        ever_correct: ``(N,)`` bool, correct in at least one presentation.
    """

    previous_correct: NDArray[np.bool_]
    forgetting_count: NDArray[np.int64]
    ever_correct: NDArray[np.bool_]

    @classmethod
    def zeros(cls, num_samples: int) -> ForgettingState:
        """The state before the first epoch."""
        n = _num_samples(num_samples)
        return cls(np.zeros(n, bool), np.zeros(n, np.int64), np.zeros(n, bool))


def fold_forgetting(state: ForgettingState, correct: ArrayLike, seen: ArrayLike) -> ForgettingState:
    """Add one epoch's correctness to the forgetting counts (a new state; the old one is unchanged).

    Presentations are consecutive per sample: an epoch in which a sample is not seen is skipped, not
    counted as wrong. The first presentation cannot be a forgetting event.

    Args:
        state: the counts so far.
        correct: ``(N,)`` bools, or the epoch's share of correct presentations, read as correct when ``> 0.5``
            (with one presentation per epoch, exactly the presentation's correctness).
        seen: ``(N,)`` bool, samples presented in this epoch.

    Example::

        >>> s = ForgettingState.zeros(1)
        >>> for c in ([True], [False], [True], [False]):
        ...     s = fold_forgetting(s, c, [True])
        >>> s.forgetting_count.tolist()
        [2]
    """
    n = state.forgetting_count.shape[0]
    mask = _seen_mask(seen, n)
    now = _epoch_values(correct, mask, n, "correct") > 0.5
    forgotten = mask & state.previous_correct & ~now
    return ForgettingState(
        np.where(mask, now, state.previous_correct),
        state.forgetting_count + forgotten,
        state.ever_correct | (mask & now),
    )


def forgetting(state: ForgettingState) -> NDArray[np.int64]:
    """Forgetting events per sample: correct-to-wrong transitions between consecutive presentations.

    One score per sample, an integer >= 0; higher = harder. Samples never correct have 0 here and are
    reported by :func:`never_learned` instead (Toneva et al. count them apart).

    Example::

        >>> s = fold_forgetting(fold_forgetting(ForgettingState.zeros(1), [True], [True]), [False], [True])
        >>> forgetting(s).tolist()
        [1]
    """
    return state.forgetting_count.copy()


def never_learned(state: ForgettingState) -> NDArray[np.bool_]:
    """True for samples never correct in any presentation (also True for samples never seen).

    Example::

        >>> never_learned(fold_forgetting(ForgettingState.zeros(2), [True, False], [True, True])).tolist()
        [False, True]
    """
    return ~state.ever_correct


def forgetting_sort_key(forgetting_count: ArrayLike, never_learned_mask: ArrayLike) -> NDArray[np.float64]:
    """Toneva et al.'s ranking key: the forgetting count, with never-learned samples at ``+inf``.

    One score per sample; higher = harder (never-learned samples rank above every forgetting count).

    Example::

        >>> forgetting_sort_key([0, 2, 0], [False, False, True]).tolist()
        [0.0, 2.0, inf]
    """
    count = np.asarray(forgetting_count, dtype=np.float64)
    never = np.asarray(never_learned_mask)
    if never.shape != count.shape or never.dtype != np.bool_:
        raise ValueError(
            f"Expected `never_learned_mask` as bools of shape {count.shape} (like `forgetting_count`), "
            f"but got shape {never.shape} and dtype {never.dtype}."
        )
    return np.where(never, np.inf, count)


@dataclass(frozen=True)
class AumState(_FoldState):
    """Running sum for the area under the margin (Pleiss et al. 2020), one entry per sample.

    Attributes:
        aum_epochs: ``(N,)`` int64, epochs in which the sample was seen.
        aum_margin_sum: ``(N,)`` float64, sum over those epochs of the epoch's mean :func:`logit_margin`.
    """

    aum_epochs: NDArray[np.int64]
    aum_margin_sum: NDArray[np.float64]

    @classmethod
    def zeros(cls, num_samples: int) -> AumState:
        """The state before the first epoch."""
        n = _num_samples(num_samples)
        return cls(np.zeros(n, np.int64), np.zeros(n))


def fold_aum(state: AumState, margin: ArrayLike, seen: ArrayLike) -> AumState:
    """Add one epoch's mean margin per sample (a new state; the old one is unchanged).

    Example::

        >>> s = fold_aum(fold_aum(AumState.zeros(1), [2.0], [True]), [-1.0], [True])
        >>> s.aum_epochs.tolist(), s.aum_margin_sum.tolist()
        ([2], [1.0])
    """
    n = state.aum_epochs.shape[0]
    mask = _seen_mask(seen, n)
    return AumState(state.aum_epochs + mask, state.aum_margin_sum + _epoch_values(margin, mask, n, "margin"))


def aum(state: AumState) -> NDArray[np.float64]:
    """Area under the margin: mean over epochs of ``z[label] - max_{j != label} z[j]`` (NaN if never seen).

    One score per sample; higher = easier, low or negative = suspected mislabel (negate it to rank).

    Example::

        >>> aum(fold_aum(fold_aum(AumState.zeros(1), [2.0], [True]), [-1.0], [True])).tolist()
        [0.5]
    """
    return _mean(state.aum_margin_sum, state.aum_epochs)


def _num_samples(num_samples: int) -> int:
    if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 0:
        raise ValueError(f"Expected argument `num_samples` to be a non-negative integer, but got {num_samples!r}.")
    return int(num_samples)


def _seen_mask(seen: ArrayLike, n: int) -> NDArray[np.bool_]:
    mask = np.asarray(seen)
    if mask.shape != (n,) or mask.dtype != np.bool_:
        raise ValueError(
            f"Expected argument `seen` to be a bool array of shape ({n},), but got shape {mask.shape} "
            f"and dtype {mask.dtype}."
        )
    return mask


def _epoch_values(values: ArrayLike, mask: NDArray[np.bool_], n: int, name: str) -> NDArray[np.float64]:
    """The epoch's values as float64 with unseen entries set to 0 (whatever they held, NaN included)."""
    array = np.asarray(values, dtype=np.float64)
    if array.shape != (n,):
        raise ValueError(f"Expected argument `{name}` of shape ({n},) like the state, but got {array.shape}.")
    return np.where(mask, array, 0.0)


def _mean(total: NDArray[np.float64], count: NDArray[np.int64]) -> NDArray[np.float64]:
    out = np.full(total.shape, np.nan)
    np.divide(total, count, out=out, where=count > 0)
    return out


# -- 3. label noise (numpy) ---------------------------------------------------------------------------


def make_threshold_samples(
    labels: ArrayLike, num_classes: int, *, seed: int
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """AUM threshold samples (Pleiss et al. 2020, Sec. 3): relabel a random ``N // (C + 1)`` into a fake class.

    Train a model with ``C + 1`` outputs on the returned labels; the threshold samples are mislabelled by
    construction, so their AUM shows what a mislabelled sample looks like. Then
    ``aum_flags(aum, aum_threshold(aum[threshold_indices]))`` flags the real samples. (The paper repeats
    this with a second, disjoint set so that every sample gets an AUM from a run where it kept its label.)

    Args:
        labels: ``(N,)`` integer labels in ``[0, C)``.
        num_classes: ``C``; the fake class is ``C``.
        seed: seed of the random subset.

    Returns:
        ``(new_labels, threshold_indices)``: a copy of ``labels`` with ``C`` at the sorted ``threshold_indices``.

    Example::

        >>> new, idx = make_threshold_samples(np.zeros(6, dtype=np.int64), 2, seed=0)
        >>> len(idx), sorted(set(new[idx].tolist())), int((new == 2).sum())
        (2, [2], 2)
    """
    y = _labels(labels, num_classes)
    count = y.shape[0] // (num_classes + 1)
    chosen = np.sort(np.random.default_rng(seed).choice(y.shape[0], size=count, replace=False)).astype(np.int64)
    new_labels = y.copy()
    new_labels[chosen] = num_classes
    return new_labels, chosen


def aum_threshold(aum_of_threshold_samples: ArrayLike, percentile: float = 99.0) -> float:
    """The AUM threshold: the ``percentile`` of the threshold samples' AUM (NaNs ignored; linear interpolation).

    Pleiss et al. use the 99th percentile: 99 % of the known-mislabelled threshold samples score at or below it.

    Example::

        >>> aum_threshold(np.arange(101.0), percentile=99)
        99.0
    """
    values = np.asarray(aum_of_threshold_samples, dtype=np.float64)
    if values.ndim != 1 or not np.isfinite(values).any():
        raise ValueError(
            "Expected `aum_of_threshold_samples` to be a 1-D array with at least one finite AUM, "
            f"but got shape {values.shape}. Pass aum[threshold_indices] from make_threshold_samples."
        )
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"Expected argument `percentile` in [0, 100], but got {percentile!r}.")
    return float(np.nanpercentile(values, percentile))


def aum_flags(aum_values: ArrayLike, threshold: float) -> NDArray[np.bool_]:
    """``aum_flag``: True where a sample's AUM is below ``threshold`` (suspected mislabel; NaN -> False).

    Example::

        >>> aum_flags([-1.0, 0.5, np.nan], 0.0).tolist()
        [True, False, False]
    """
    values = np.asarray(aum_values, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return values < threshold


def self_confidence_score(probs: ArrayLike, labels: ArrayLike) -> NDArray[np.float64]:
    """Label-issue score ``1 - p(label)`` (cleanlab's self-confidence, reversed).

    One score per sample in ``[0, 1]``; higher = more likely mislabelled. ``probs`` should be out-of-sample
    or final-model probabilities.

    Example::

        >>> self_confidence_score([[0.9, 0.1], [0.7, 0.3]], [0, 1]).round(6).tolist()
        [0.1, 0.7]
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"Expected `probs` of shape (N, C), but got shape {p.shape}.")
    y = _labels(labels, p.shape[1])
    if y.shape[0] != p.shape[0]:
        raise ValueError(f"Expected `labels` of shape ({p.shape[0]},) like `probs`, but got {y.shape}.")
    return 1.0 - p[np.arange(p.shape[0]), y]


def precision_at_k(scores: ArrayLike, is_positive: ArrayLike, k: int) -> float:
    """Share of positives among the ``k`` highest scores, ties at the cut shared out evenly.

    When the ``k``-th highest score is tied, the tied samples fill the remaining places in proportion
    (the expected precision under a random order of ties), so integer scores such as forgetting counts are
    not favoured or penalised by the sample order.

    Example::

        >>> precision_at_k([0.9, 0.5, 0.5, 0.1], [True, True, False, False], k=2)
        0.75
    """
    s, positive = _scores_and_labels(scores, is_positive)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= s.shape[0]:
        raise ValueError(f"Expected argument `k` to be an integer in [1, {s.shape[0]}], but got {k!r}.")
    cut = np.sort(s)[s.shape[0] - k]  # the k-th highest score
    above, tied = s > cut, s == cut
    remaining = k - int(above.sum())
    hits = positive[above].sum() + remaining * positive[tied].mean()
    return float(hits / k)


def _scores_and_labels(scores: ArrayLike, is_positive: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    s = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(is_positive)
    if s.ndim != 1 or positive.shape != s.shape or positive.dtype != np.bool_:
        raise ValueError(
            f"Expected `scores` (N,) and bool `is_positive` of the same shape, but got {s.shape} and "
            f"{positive.shape} ({positive.dtype})."
        )
    if np.isnan(s).any():
        raise ValueError(
            f"Expected `scores` without NaN, but got {int(np.isnan(s).sum())} NaN values. Drop those samples first."
        )
    return s, positive


def _labels(labels: ArrayLike, num_classes: int) -> NDArray[np.int64]:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"Expected argument `num_classes` to be a positive integer, but got {num_classes!r}.")
    y = np.asarray(labels)
    if y.ndim != 1 or (y.size and not np.issubdtype(y.dtype, np.integer)):
        raise ValueError(f"Expected `labels` as 1-D integer class indices, but got shape {y.shape}, dtype {y.dtype}.")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(
            f"Expected `labels` in [0, {num_classes - 1}], but got values from {y.min()} to {y.max()}. "
            "Check `num_classes`."
        )
    return y.astype(np.int64)
