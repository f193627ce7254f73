"""DifficultyEyes taxonomy (Meng et al., Table 1): three binarised difficulty perspectives plus correctness.

Each perspective is split into low/high with a strict ``score > threshold``:

* human: :func:`~lightning_difficulty.functional.human.human_difficulty` (``1 - p_h[label]``);
* data: kDN on raw inputs;
* model: prediction depth, or the confusion score when prediction depth is not available.

Pattern ids (``PATTERN_IDS``), from Table 1:

=====  =====  =====  =====  =======
id     human  data   model  correct
=====  =====  =====  =====  =======
1a/1b  low    low    low    yes/no
2a/2b  low    high   low    yes/no
3a/3b  low    low    high   yes/no
4a/4b  low    high   high   yes/no
5a/5b  high   high   any    yes/no
6      high   low    any    any
=====  =====  =====  =====  =======
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Literal, NamedTuple, TypeAlias

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "PATTERN_IDS",
    "BinarisedPerspectives",
    "TaxonomyThresholds",
    "assign_patterns",
    "binarise_perspectives",
    "difficulty_pattern",
    "pattern_summary",
    "resolve_threshold",
]

PATTERN_IDS: tuple[str, ...] = ("1a", "1b", "2a", "2b", "3a", "3b", "4a", "4b", "5a", "5b", "6")

ModelPerspective: TypeAlias = Literal["prediction_depth", "confusion"]
_MODEL_PERSPECTIVES: tuple[str, ...] = ("prediction_depth", "confusion")

# _PATTERN_TABLE[number, is_error] -> id; row 0 is unused.
_PATTERN_TABLE = np.array(
    [["", ""], ["1a", "1b"], ["2a", "2b"], ["3a", "3b"], ["4a", "4b"], ["5a", "5b"], ["6", "6"]], dtype="<U2"
)


@dataclass(frozen=True)
class TaxonomyThresholds:
    """Thresholds that split each perspective into low / high (high means ``score > threshold``).

    Each field is either an absolute value (a float) or a share of the observed scores written as a
    string ``"q<p>"`` with ``0 <= p <= 1``, e.g. ``"q0.8"``: the threshold becomes the cut between two
    observed values whose high share is closest to ``1 - p`` (the ``p``-quantile when scores do not tie), so
    a perspective whose scores take two values or more is always split, however they tie: with prediction
    depth, often a fifth or more of the samples never settle and share the largest depth, and a plain
    ``p``-quantile would then mark no sample high.

    Defaults and why:

    * ``human = 0.2``: high when more than one annotator in five rejects the dataset label. On CIFAR-10H
      (about 51 annotators per image) the median human difficulty is 0.019 and disagreement from
      attention lapses alone stays far below 0.2; 6.1% of the test images exceed 0.2 (12.1% exceed 0.1,
      3.5% exceed 0.3).
    * ``data = 0.5``: high when most of the k nearest neighbours carry another label, i.e. the label is no
      longer the majority of its raw-pixel neighbourhood. Ties at exactly 0.5 (even k) count as low.
    * ``prediction_depth = "q0.8"`` and ``confusion = "q0.8"``: the scale of both depends on the model
      (the number of probes for prediction depth, ``log C`` and the training run for confusion), so no
      absolute value carries across models; by default the hardest fifth for the model is high. Use an
      absolute value (e.g. ``prediction_depth=4.0``) to compare models on one scale.

    Only one of ``prediction_depth`` / ``confusion`` is used, chosen by ``model_perspective`` in
    :func:`binarise_perspectives`.

    Example::

        >>> TaxonomyThresholds(human=0.1, prediction_depth="q0.9").prediction_depth
        'q0.9'
    """

    human: float | str = 0.2
    data: float | str = 0.5
    prediction_depth: float | str = "q0.8"
    confusion: float | str = "q0.8"

    def __post_init__(self) -> None:
        for field in fields(self):
            _check_threshold(getattr(self, field.name), field.name)


class BinarisedPerspectives(NamedTuple):
    """Low/high flags per perspective, with the absolute thresholds that produced them."""

    human_high: NDArray[np.bool_]
    data_high: NDArray[np.bool_]
    model_high: NDArray[np.bool_]
    human_threshold: float
    data_threshold: float
    model_threshold: float


def resolve_threshold(threshold: float | str, scores: ArrayLike) -> float:
    """Absolute threshold for ``scores``: the float itself, or for ``"q<p>"`` the observed value ``t`` (below the
    largest) whose share of scores ``> t`` is closest to ``1 - p``, ties going to the larger ``t``.

    Args:
        threshold: a float, or a share string such as ``"q0.8"``.
        scores: the scores the threshold will be applied to (NaN values are ignored for shares).

    Returns:
        The threshold as a float (the largest score when all scores are equal: nothing can be split).

    Example::

        >>> resolve_threshold("q0.5", [0.0, 1.0, 2.0, 3.0, 4.0])
        2.0
        >>> resolve_threshold("q0.8", [0, 1, 1, 2, 2, 3, 3, 3, 3, 3])  # half never settle: 3 would mark none
        2.0
    """
    _check_threshold(threshold, "threshold")
    if not isinstance(threshold, str):
        return float(threshold)
    values = np.asarray(scores, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValueError(f"Cannot resolve quantile threshold {threshold!r}: argument `scores` has no finite value.")
    distinct, counts = np.unique(values, return_counts=True)
    if distinct.size == 1 or float(threshold[1:]) == 1.0:  # nothing to split, or nothing asked to be high
        return float(distinct[-1])
    high_share = 1.0 - np.cumsum(counts)[:-1] / values.size  # share strictly above each value but the largest
    target = 1.0 - float(threshold[1:])
    gap = np.abs(high_share - target)
    best = np.flatnonzero(gap <= gap.min() + 1e-12)[-1]  # ties to the larger threshold (fewer high)
    return float(distinct[best])


def difficulty_pattern(
    human_high: ArrayLike, data_high: ArrayLike, model_high: ArrayLike, correct: ArrayLike
) -> NDArray[np.str_]:
    """Table 1 pattern id per sample from the three binarised perspectives and model correctness.

    Human low: ``1`` (data low, model low), ``2`` (data high, model low), ``3`` (data low, model high),
    ``4`` (data high, model high), suffixed ``a`` if correct and ``b`` if not. Human high: ``5a``/``5b``
    when data is high (model ignored), ``6`` when data is low (model and correctness ignored).

    Args:
        human_high: bool flags, one per sample.
        data_high: bool flags, same shape.
        model_high: bool flags, same shape.
        correct: bool flags (prediction == label), same shape.

    Returns:
        Array of pattern ids (dtype ``<U2``), same shape as the inputs.

    Example::

        >>> human, data = [False, True, True], [True, True, False]
        >>> difficulty_pattern(human, data, [False, False, True], [True, False, True])
        array(['2a', '5b', '6'], dtype='<U2')
    """
    human = _as_flags(human_high, "human_high")
    data = _as_flags(data_high, "data_high")
    model = _as_flags(model_high, "model_high")
    right = _as_flags(correct, "correct")
    shapes = {human.shape, data.shape, model.shape, right.shape}
    if len(shapes) != 1:
        raise ValueError(
            "Expected arguments `human_high`, `data_high`, `model_high` and `correct` to share one shape, "
            f"but got {human.shape}, {data.shape}, {model.shape} and {right.shape}."
        )
    number = np.where(human, np.where(data, 5, 6), 1 + data.astype(np.int64) + 2 * model.astype(np.int64))
    return _PATTERN_TABLE[number, (~right).astype(np.int64)]


def binarise_perspectives(
    human_difficulty: ArrayLike,
    kdn: ArrayLike,
    model_difficulty: ArrayLike,
    *,
    thresholds: TaxonomyThresholds | None = None,
    model_perspective: ModelPerspective = "prediction_depth",
) -> BinarisedPerspectives:
    """Split human difficulty, kDN and model difficulty into low/high (high = ``score > threshold``).

    All scores follow "higher = harder". Quantile thresholds are resolved on the scores passed here, so
    pass the same population you want to analyse (e.g. the test split).

    Args:
        human_difficulty: ``(N,)`` values in ``[0, 1]``.
        kdn: ``(N,)`` kDN values in ``[0, 1]``.
        model_difficulty: ``(N,)`` non-negative prediction depths or confusion scores.
        thresholds: the thresholds; defaults to ``TaxonomyThresholds()``.
        model_perspective: ``"prediction_depth"`` or ``"confusion"``: what ``model_difficulty`` holds, and
            so which threshold field applies.

    Returns:
        :class:`BinarisedPerspectives` with the three bool arrays and the absolute thresholds used.

    Raises:
        ValueError: on mismatched shapes, NaN values (select the rows where all perspectives exist first),
            values out of range, or an unknown ``model_perspective``.

    Example::

        >>> flags = binarise_perspectives([0.0, 0.4], [0.6, 0.2], [1.0, 5.0],
        ...                               thresholds=TaxonomyThresholds(prediction_depth=2.0))
        >>> flags.human_high.tolist(), flags.data_high.tolist(), flags.model_high.tolist()
        ([False, True], [True, False], [False, True])
    """
    if model_perspective not in _MODEL_PERSPECTIVES:
        raise ValueError(
            f"Expected argument `model_perspective` to be one of {_MODEL_PERSPECTIVES}, but got {model_perspective!r}."
        )
    chosen = thresholds if thresholds is not None else TaxonomyThresholds()
    human = _as_scores(human_difficulty, "human_difficulty", upper=1.0)
    data = _as_scores(kdn, "kdn", upper=1.0)
    model = _as_scores(model_difficulty, "model_difficulty", upper=math.inf)
    if not human.shape == data.shape == model.shape:
        raise ValueError(
            "Expected arguments `human_difficulty`, `kdn` and `model_difficulty` to share one length, "
            f"but got shapes {human.shape}, {data.shape} and {model.shape}."
        )
    human_cut = resolve_threshold(chosen.human, human)
    data_cut = resolve_threshold(chosen.data, data)
    model_cut = resolve_threshold(getattr(chosen, model_perspective), model)
    return BinarisedPerspectives(human > human_cut, data > data_cut, model > model_cut, human_cut, data_cut, model_cut)


def assign_patterns(
    human_difficulty: ArrayLike,
    kdn: ArrayLike,
    model_difficulty: ArrayLike,
    correct: ArrayLike,
    *,
    thresholds: TaxonomyThresholds | None = None,
    model_perspective: ModelPerspective = "prediction_depth",
) -> NDArray[np.str_]:
    """Binarise the three perspectives and return the Table 1 pattern id of every sample.

    Combines :func:`binarise_perspectives` and :func:`difficulty_pattern`; see those for the arguments.

    Example::

        >>> assign_patterns([0.0, 0.5], [0.0, 0.8], [0.0, 3.0], [True, False],
        ...                 thresholds=TaxonomyThresholds(prediction_depth=2.0)).tolist()
        ['1a', '5b']
    """
    flags = binarise_perspectives(
        human_difficulty, kdn, model_difficulty, thresholds=thresholds, model_perspective=model_perspective
    )
    return difficulty_pattern(flags.human_high, flags.data_high, flags.model_high, correct)


def pattern_summary(patterns: ArrayLike, correct: ArrayLike) -> dict[str, dict[str, float]]:
    """Count and shares per pattern id, for all 11 ids in Table 1 order (zero counts included).

    Args:
        patterns: ``(N,)`` pattern ids as returned by :func:`assign_patterns`.
        correct: ``(N,)`` bool flags (prediction == label).

    Returns:
        ``{id: {"count", "share", "errors", "error_share"}}``: samples with the pattern, their share of all
        samples, the misclassified ones among them, and their share of all misclassified samples (0.0 for
        every id when there is no error at all). Plain Python numbers, ready for ``json.dump``.

    Example::

        >>> summary = pattern_summary(["1a", "1b", "6", "6"], [True, False, True, False])
        >>> summary["6"]
        {'count': 2, 'share': 0.5, 'errors': 1, 'error_share': 0.5}
    """
    ids = np.asarray(patterns).astype(str)
    right = _as_flags(correct, "correct")
    if ids.ndim != 1 or right.shape != ids.shape:
        raise ValueError(
            "Expected arguments `patterns` and `correct` to be 1-D of one length, "
            f"but got shapes {ids.shape} and {right.shape}."
        )
    unknown = sorted(set(ids.tolist()) - set(PATTERN_IDS))
    if unknown:
        raise ValueError(f"Expected argument `patterns` to hold ids from {PATTERN_IDS}, but found {unknown}.")
    total = ids.size
    total_errors = int((~right).sum())
    summary: dict[str, dict[str, float]] = {}
    for pattern in PATTERN_IDS:
        member = ids == pattern
        count = int(member.sum())
        errors = int((member & ~right).sum())
        summary[pattern] = {
            "count": count,
            "share": count / total if total else 0.0,
            "errors": errors,
            "error_share": errors / total_errors if total_errors else 0.0,
        }
    return summary


def _check_threshold(value: object, name: str) -> None:
    if isinstance(value, str):
        if not _is_quantile_string(value):
            raise ValueError(
                f"Expected threshold `{name}` to be a float or a quantile string like 'q0.8' "
                f"(q followed by a number in [0, 1]), but got {value!r}."
            )
        return
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"Expected threshold `{name}` to be a float or a string like 'q0.8', but got {value!r}.")
    if not math.isfinite(float(value)):
        raise ValueError(f"Expected threshold `{name}` to be finite, but got {value!r}.")


def _is_quantile_string(value: str) -> bool:
    if not value.startswith("q"):
        return False
    try:
        level = float(value[1:])
    except ValueError:
        return False
    return 0.0 <= level <= 1.0


def _as_flags(values: ArrayLike, name: str) -> NDArray[np.bool_]:
    array = np.asarray(values)
    if array.dtype == np.bool_:
        return array
    if array.dtype.kind in "iu" and np.isin(array, (0, 1)).all():
        return array.astype(bool)
    raise ValueError(f"Expected argument `{name}` to hold booleans (or 0/1), but got dtype {array.dtype}.")


def _as_scores(values: ArrayLike, name: str, *, upper: float) -> NDArray[np.float64]:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"Expected argument `{name}` to be 1-D, but got shape {array.shape}.")
    missing = int(np.isnan(array).sum())
    if missing:
        raise ValueError(
            f"Expected argument `{name}` to have no NaN, but found {missing}. Select the samples where every "
            "perspective is available (e.g. the CIFAR-10H test split) before binarising."
        )
    if array.size and (array.min() < 0 or array.max() > upper):
        raise ValueError(
            f"Expected argument `{name}` to lie in [0, {upper}], but got values in [{array.min()}, {array.max()}]."
        )
    return array
