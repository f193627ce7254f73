"""Error taxonomy after Peychev, Mueller, Fischer & Vechev (2023), "Automated Classification of Model Errors".

Every misclassified sample (``prediction != label``) gets the first category that applies, in the paper's
order (``ERROR_CATEGORIES[1:]``):

1. ``ambiguous``: the prediction is one of the sample's valid labels (not really an error);
2. ``fine_grained``: the prediction shares a superclass with one of the sample's valid labels;
3. ``fine_grained_oov``: an optional out-of-vocabulary scorer says the image shows a class outside the
   label set that is close to the prediction;
4. ``spurious``: the prediction commonly co-occurs with one of the sample's valid labels;
5. ``non_prototypical``: the sample is in a user-given list of non-prototypical samples;
6. ``model_failure``: none of the above.

Correctly classified samples get ``"correct"``. A sample's valid labels are its dataset label plus, when
given, the classes of ``valid_labels[n]`` (e.g. from annotator counts with :func:`valid_labels_from_counts`).
A check whose input is not given (superclasses, OOV scorer, co-occurrence, non-prototypical list) never fires.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, TypeAlias, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

from lightning_difficulty.functional.human import _check_labels, _human_probabilities

__all__ = [
    "CIFAR10_CLASSES",
    "ERROR_CATEGORIES",
    "OovScorer",
    "cifar10_superclasses",
    "classify_errors",
    "cooccurrence_from_multilabels",
    "cooccurrence_rates",
    "error_category_summary",
    "load_superclass_map",
    "valid_labels_from_counts",
]

ERROR_CATEGORIES: tuple[str, ...] = (
    "correct",
    "ambiguous",
    "fine_grained",
    "fine_grained_oov",
    "spurious",
    "non_prototypical",
    "model_failure",
)
CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

OovScorer: TypeAlias = Callable[[NDArray[np.int64], NDArray[np.int64]], ArrayLike]
"""``scorer(indices, predictions) -> (len(indices),) bool``: True where sample ``indices[i]`` is a
fine-grained out-of-vocabulary error given its prediction ``predictions[i]``."""

_CATEGORY_DTYPE = f"<U{max(len(name) for name in ERROR_CATEGORIES)}"
_INDEX_KEY = re.compile(r"^\d+$")


def classify_errors(
    labels: ArrayLike,
    predictions: ArrayLike,
    *,
    valid_labels: ArrayLike | None = None,
    superclass: ArrayLike | Mapping[Any, Any] | None = None,
    oov_scorer: OovScorer | None = None,
    cooccurrence: ArrayLike | None = None,
    cooccurrence_threshold: float = 2.0,
    non_prototypical: ArrayLike | None = None,
) -> NDArray[np.str_]:
    """Error category of every sample, the first that applies in the order of ``ERROR_CATEGORIES``.

    With ``V(n)`` = {dataset label} + {c : ``valid_labels[n, c]``} and ``p`` the prediction, a sample with
    ``p != label`` is

    * ``ambiguous`` if ``p`` is in ``V(n)``;
    * ``fine_grained`` if ``superclass[v] == superclass[p]`` for some ``v`` in ``V(n)``;
    * ``fine_grained_oov`` if ``oov_scorer`` returns True for it (called once, with the indices and
      predictions of the errors still unclassified at that point);
    * ``spurious`` if ``(v, p)`` is a common pair for some ``v`` in ``V(n)``: ``cooccurrence[v, p]`` is True
      for a bool matrix, or ``>= cooccurrence_threshold`` for a count/rate matrix;
    * ``non_prototypical`` if ``n`` is in ``non_prototypical``;
    * ``model_failure`` otherwise.

    This is a categorical label, not a score: no "higher = harder" ordering beyond the paper's severity.

    Args:
        labels: ``(N,)`` dataset labels.
        predictions: ``(N,)`` predicted classes.
        valid_labels: ``(N, C)`` bool mask of further valid labels per sample (e.g.
            :func:`valid_labels_from_counts`); the dataset label is always valid.
        superclass: ``(C,)`` int superclass id per class, or a dict ``{class index: superclass}`` covering
            every class (see :func:`load_superclass_map`).
        oov_scorer: optional out-of-vocabulary hook (off by default), see :data:`OovScorer`.
        cooccurrence: ``(C, C)`` bool matrix of common pairs, or counts/rates (e.g.
            :func:`cooccurrence_from_multilabels`). Counting on the same samples that are classified adds no
            leak: a sample's own pairs only involve its valid labels, and a prediction among those is
            already ``ambiguous``.
        cooccurrence_threshold: a count/rate pair is common when ``>=`` this. The default 2 follows the
            reference code (a pair seen together at least twice, among ImageNet's 1000 classes). With few
            classes almost every pair reaches 2 (32 of the 45 CIFAR-10 pairs in CIFAR-10H's 10% valid
            labels), so pass :func:`cooccurrence_rates` with a share instead. Ignored for a bool matrix.
        non_prototypical: sample indices, or an ``(N,)`` bool mask, of non-prototypical samples.

    Returns:
        ``(N,)`` array of category names from ``ERROR_CATEGORIES``.

    Example::

        >>> classify_errors([0, 0, 1, 2], [0, 1, 2, 3], superclass=[0, 0, 1, 1]).tolist()
        ['correct', 'fine_grained', 'model_failure', 'fine_grained']
    """
    label_array = _as_class_vector(labels, "labels")
    prediction_array = _as_class_vector(predictions, "predictions")
    if prediction_array.shape != label_array.shape:
        raise ValueError(
            f"Expected arguments `labels` and `predictions` to share one length, but got {label_array.shape} "
            f"and {prediction_array.shape}."
        )
    num_samples = label_array.shape[0]
    num_classes = _infer_num_classes(label_array, prediction_array, valid_labels, superclass, cooccurrence)
    _check_labels(label_array, num_samples, num_classes, "labels")
    _check_labels(prediction_array, num_samples, num_classes, "predictions")
    valid = _valid_mask(valid_labels, label_array, num_classes)

    categories = np.full(num_samples, "model_failure", dtype=_CATEGORY_DTYPE)
    pending = prediction_array != label_array
    categories[~pending] = "correct"
    rows = np.arange(num_samples)

    def settle(candidates: ArrayLike, category: str) -> None:
        hit = pending & np.asarray(candidates, dtype=bool)
        categories[hit] = category
        pending[hit] = False

    settle(valid[rows, prediction_array], "ambiguous")
    if superclass is not None:
        ids = _superclass_ids(superclass, num_classes)
        same = ids[None, :] == ids[prediction_array][:, None]
        settle((valid & same).any(axis=1), "fine_grained")
    if oov_scorer is not None:
        settle(_oov_hits(oov_scorer, pending, prediction_array), "fine_grained_oov")
    if cooccurrence is not None:
        common = _common_pairs(cooccurrence, cooccurrence_threshold, num_classes)
        settle((valid & common[:, prediction_array].T).any(axis=1), "spurious")
    if non_prototypical is not None:
        settle(_sample_mask(non_prototypical, num_samples), "non_prototypical")
    return categories


def valid_labels_from_counts(counts: ArrayLike, labels: ArrayLike, *, min_share: float = 0.1) -> NDArray[np.bool_]:
    """Valid labels per sample: classes chosen by at least ``min_share`` of its annotators, plus its label.

    Args:
        counts: ``(N, C)`` annotator counts (or non-negative weights), every row with a positive sum.
        labels: ``(N,)`` dataset labels (always valid).
        min_share: smallest share of annotators that makes a class valid, in ``(0, 1]`` (compared with a
            ``1e-12`` tolerance so that e.g. 5 of 50 votes reach 0.1).

    Returns:
        ``(N, C)`` bool mask.

    Example::

        >>> valid_labels_from_counts([[45, 5, 0], [50, 0, 0]], [0, 2]).astype(int).tolist()
        [[1, 1, 0], [1, 0, 1]]
    """
    if isinstance(min_share, bool) or not isinstance(min_share, (int, float)) or not 0 < min_share <= 1:
        raise ValueError(f"Expected argument `min_share` to be a number in (0, 1], but got {min_share!r}.")
    probs = _human_probabilities(counts)
    label_array = _check_labels(labels, probs.shape[0], probs.shape[1], "labels")
    valid = probs >= min_share - 1e-12
    valid[np.arange(probs.shape[0]), label_array] = True
    return valid


def cooccurrence_from_multilabels(valid_labels: ArrayLike) -> NDArray[np.int64]:
    """``(C, C)`` counts of samples in which two classes are both valid labels; the diagonal is zero.

    Args:
        valid_labels: ``(N, C)`` bool mask of the valid labels of each sample (include the dataset label,
            as :func:`valid_labels_from_counts` does).

    Returns:
        Symmetric ``(C, C)`` int64 matrix.

    Example::

        >>> cooccurrence_from_multilabels([[1, 1, 0], [1, 1, 1]]).tolist()
        [[0, 2, 1], [2, 0, 1], [1, 1, 0]]
    """
    mask = _as_bool_matrix(valid_labels, "valid_labels").astype(np.int64)
    pairs = mask.T @ mask
    np.fill_diagonal(pairs, 0)
    return pairs


def cooccurrence_rates(valid_labels: ArrayLike) -> NDArray[np.float64]:
    """``rates[a, b]``: share of the samples with ``a`` as a valid label that also have ``b`` as one.

    A row whose class is never valid is all zeros; the diagonal is zero. Not symmetric.

    Args:
        valid_labels: ``(N, C)`` bool mask of the valid labels of each sample.

    Returns:
        ``(C, C)`` float64 matrix in ``[0, 1]``.

    Example::

        >>> cooccurrence_rates([[1, 1, 0], [1, 0, 0]]).tolist()
        [[0.0, 0.5, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    """
    mask = _as_bool_matrix(valid_labels, "valid_labels")
    occurrences = mask.sum(axis=0).astype(np.float64)
    pairs = cooccurrence_from_multilabels(mask).astype(np.float64)
    return np.divide(pairs, occurrences[:, None], out=np.zeros_like(pairs), where=occurrences[:, None] > 0)


def load_superclass_map(
    mapping: Mapping[Any, Any] | str | os.PathLike[str],
    *,
    class_names: Sequence[str] | None = None,
    num_classes: int | None = None,
) -> tuple[NDArray[np.int64], list[str]]:
    """Read a class -> superclass map and check that it covers every class exactly once.

    Keys are class names (when ``class_names`` is given) or class indices (ints or digit strings, as in
    JSON); keys starting with ``"_"`` (e.g. ``"_doc"``) are skipped. Values are superclass names (strings,
    or ints that are turned into strings).

    Args:
        mapping: the dict, or a path to a JSON file holding one object.
        class_names: the class names in index order; gives ``C``.
        num_classes: ``C`` when there are no names (must match ``len(class_names)`` when both are given).

    Returns:
        ``(ids, names)``: ``(C,)`` int64 superclass id per class, and the superclass names, numbered in the
        order in which they first appear along the classes.

    Raises:
        ValueError: listing every unknown key, unmapped class, conflicting entry or bad value at once.

    Example::

        >>> ids, names = load_superclass_map({"cat": "pet", "dog": "pet", "car": "vehicle"},
        ...                                  class_names=["car", "cat", "dog"])
        >>> ids.tolist(), names
        ([0, 1, 1], ['vehicle', 'pet'])
    """
    entries = _read_mapping(mapping)
    names = _class_names(class_names, num_classes)
    index_of = {name: index for index, name in enumerate(names)}
    assigned: dict[int, str] = {}
    problems: list[str] = []
    for key, value in entries.items():
        index = _resolve_class_key(key, index_of, len(names))
        if index is None:
            problems.append(f"unknown class {key!r}")
        elif isinstance(value, bool) or not isinstance(value, (str, int)):
            problems.append(f"class {key!r} maps to {value!r}, which is not a string")
        elif index in assigned and assigned[index] != str(value):
            problems.append(f"class {names[index]!r} maps to both {assigned[index]!r} and {str(value)!r}")
        else:
            assigned[index] = str(value)
    unmapped = [names[index] for index in range(len(names)) if index not in assigned]
    if unmapped:
        problems.append(f"unmapped classes {unmapped}")
    if problems:
        raise ValueError("Invalid superclass map: " + "; ".join(problems) + ". Map every class to one superclass.")
    superclass_names = list(dict.fromkeys(assigned[index] for index in range(len(names))))
    position = {name: number for number, name in enumerate(superclass_names)}
    ids = np.array([position[assigned[index]] for index in range(len(names))], dtype=np.int64)
    return ids, superclass_names


def cifar10_superclasses() -> tuple[NDArray[np.int64], list[str]]:
    """The shipped CIFAR-10 superclass map (``resources/cifar10_superclasses.json``).

    Six groups of visually and semantically close classes: road vehicles (automobile, truck), aircraft and
    watercraft (airplane, ship), domestic carnivores (cat, dog), hoofed mammals (deer, horse), and the
    singletons bird and frog. The JSON's ``_doc`` entry gives the reasons.

    Returns:
        ``(ids, names)`` as in :func:`load_superclass_map`, indexed like ``CIFAR10_CLASSES``.

    Example::

        >>> ids, names = cifar10_superclasses()
        >>> names[ids[3]] == names[ids[5]]  # cat and dog
        True
    """
    text = resources.files("lightning_difficulty").joinpath("resources/cifar10_superclasses.json").read_text()
    return load_superclass_map(json.loads(text), class_names=CIFAR10_CLASSES)


@overload
def error_category_summary(categories: ArrayLike, *, by: None = None) -> dict[str, dict[str, float]]: ...


@overload
def error_category_summary(categories: ArrayLike, *, by: ArrayLike) -> dict[str, dict[str, dict[str, float]]]: ...


def error_category_summary(
    categories: ArrayLike, *, by: ArrayLike | None = None
) -> dict[str, dict[str, float]] | dict[str, dict[str, dict[str, float]]]:
    """Count and shares per error category, all of ``ERROR_CATEGORIES`` listed (zeros included).

    Args:
        categories: ``(N,)`` output of :func:`classify_errors`.
        by: optional ``(N,)`` group of each sample (e.g. a confusion band or a taxonomy pattern); the summary
            is then made per group, keyed by ``str(group)`` in sorted group order.

    Returns:
        ``{category: {"count", "share", "error_share"}}``: samples in the category, their share of all
        samples, and their share of the misclassified samples (0.0 for ``"correct"`` and when there is no
        error). With ``by``: ``{str(group): that dict}``. Plain Python numbers, ready for ``json.dump``.

    Example::

        >>> error_category_summary(["correct", "ambiguous", "model_failure", "correct"])["ambiguous"]
        {'count': 1, 'share': 0.25, 'error_share': 0.5}
    """
    names = np.asarray(categories).astype(str)
    if names.ndim != 1:
        raise ValueError(f"Expected argument `categories` to be 1-D, but got shape {names.shape}.")
    unknown = sorted(set(names.tolist()) - set(ERROR_CATEGORIES))
    if unknown:
        raise ValueError(f"Expected argument `categories` to hold names from {ERROR_CATEGORIES}, but found {unknown}.")
    if by is None:
        return _category_counts(names)
    groups = np.asarray(by)
    if groups.shape != names.shape:
        raise ValueError(
            f"Expected argument `by` to have the same shape as `categories` {names.shape}, but got {groups.shape}."
        )
    return {str(group): _category_counts(names[groups == group]) for group in np.unique(groups)}


def _category_counts(names: NDArray[np.str_]) -> dict[str, dict[str, float]]:
    total = names.size
    total_errors = int((names != "correct").sum())
    summary: dict[str, dict[str, float]] = {}
    for category in ERROR_CATEGORIES:
        count = int((names == category).sum())
        is_error = category != "correct"
        summary[category] = {
            "count": count,
            "share": count / total if total else 0.0,
            "error_share": count / total_errors if is_error and total_errors else 0.0,
        }
    return summary


def _as_class_vector(values: ArrayLike, name: str) -> NDArray[np.int64]:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"Expected argument `{name}` to be 1-D, but got shape {array.shape}.")
    if array.size and array.dtype.kind not in "iu":
        raise ValueError(f"Expected argument `{name}` to hold integer class indices, but got dtype {array.dtype}.")
    return array.astype(np.int64)


def _as_bool_matrix(values: ArrayLike, name: str) -> NDArray[np.bool_]:
    array = np.asarray(values)
    if array.ndim != 2:
        raise ValueError(f"Expected argument `{name}` to be an (N, C) mask, but got shape {array.shape}.")
    if array.dtype != np.bool_ and not (array.dtype.kind in "iu" and np.isin(array, (0, 1)).all()):
        raise ValueError(f"Expected argument `{name}` to hold booleans (or 0/1), but got dtype {array.dtype}.")
    return array.astype(bool)


def _infer_num_classes(
    labels: NDArray[np.int64],
    predictions: NDArray[np.int64],
    valid_labels: ArrayLike | None,
    superclass: ArrayLike | Mapping[Any, Any] | None,
    cooccurrence: ArrayLike | None,
) -> int:
    sizes: dict[str, int] = {}
    if valid_labels is not None:
        sizes["valid_labels.shape[1]"] = int(np.shape(valid_labels)[-1])
    if cooccurrence is not None:
        sizes["cooccurrence.shape[0]"] = int(np.shape(cooccurrence)[0])
    if superclass is not None:
        sizes["superclass"] = (
            len(_mapping_entries(superclass)) if isinstance(superclass, Mapping) else np.size(superclass)
        )
    if len(set(sizes.values())) > 1:
        raise ValueError(f"Expected one number of classes across the arguments, but got {sizes}.")
    if sizes:
        return next(iter(sizes.values()))
    return int(max(labels.max(initial=0), predictions.max(initial=0))) + 1


def _valid_mask(valid_labels: ArrayLike | None, labels: NDArray[np.int64], num_classes: int) -> NDArray[np.bool_]:
    if valid_labels is None:
        valid = np.zeros((labels.shape[0], num_classes), dtype=bool)
    else:
        valid = _as_bool_matrix(valid_labels, "valid_labels").copy()
        if valid.shape != (labels.shape[0], num_classes):
            raise ValueError(
                f"Expected argument `valid_labels` to have shape ({labels.shape[0]}, {num_classes}), "
                f"but got {valid.shape}."
            )
    valid[np.arange(labels.shape[0]), labels] = True
    return valid


def _superclass_ids(superclass: ArrayLike | Mapping[Any, Any], num_classes: int) -> NDArray[np.int64]:
    if isinstance(superclass, Mapping):
        return load_superclass_map(superclass, num_classes=num_classes)[0]
    ids = np.asarray(superclass)
    if ids.shape != (num_classes,) or ids.dtype.kind not in "iu":
        raise ValueError(
            f"Expected argument `superclass` to be ({num_classes},) integer superclass ids or a dict, "
            f"but got shape {ids.shape} and dtype {ids.dtype}."
        )
    return ids.astype(np.int64)


def _oov_hits(scorer: OovScorer, pending: NDArray[np.bool_], predictions: NDArray[np.int64]) -> NDArray[np.bool_]:
    hits = np.zeros(pending.shape, dtype=bool)
    indices = np.flatnonzero(pending).astype(np.int64)
    if indices.size == 0:
        return hits
    answer = np.asarray(scorer(indices, predictions[indices]))
    if answer.shape != indices.shape or answer.dtype != np.bool_:
        raise ValueError(
            f"Expected `oov_scorer` to return a bool array of shape {indices.shape}, but got shape "
            f"{answer.shape} and dtype {answer.dtype}."
        )
    hits[indices] = answer
    return hits


def _common_pairs(cooccurrence: ArrayLike, threshold: float, num_classes: int) -> NDArray[np.bool_]:
    matrix = np.asarray(cooccurrence)
    if matrix.shape != (num_classes, num_classes) or matrix.dtype.kind not in "biuf":
        raise ValueError(
            f"Expected argument `cooccurrence` to be a numeric ({num_classes}, {num_classes}) matrix, "
            f"but got shape {matrix.shape} and dtype {matrix.dtype}."
        )
    if matrix.dtype == np.bool_:
        return matrix
    return matrix >= threshold


def _sample_mask(selection: ArrayLike, num_samples: int) -> NDArray[np.bool_]:
    array = np.asarray(selection)
    if array.dtype == np.bool_:
        if array.shape != (num_samples,):
            raise ValueError(
                f"Expected argument `non_prototypical` as a bool mask to have shape ({num_samples},), "
                f"but got {array.shape}."
            )
        return array
    if array.size == 0:
        return np.zeros(num_samples, dtype=bool)
    if array.ndim != 1 or array.dtype.kind not in "iu" or array.min() < 0 or array.max() >= num_samples:
        raise ValueError(
            f"Expected argument `non_prototypical` to be sample indices in [0, {num_samples - 1}] or a bool "
            f"mask, but got shape {array.shape}, dtype {array.dtype}."
        )
    mask = np.zeros(num_samples, dtype=bool)
    mask[array] = True
    return mask


def _read_mapping(mapping: Mapping[Any, Any] | str | os.PathLike[str]) -> dict[Any, Any]:
    if isinstance(mapping, Mapping):
        return _mapping_entries(mapping)
    path = Path(mapping)
    if not path.is_file():
        raise FileNotFoundError(
            f"Expected argument `mapping` to be a dict or a JSON file, but {str(path)!r} does not exist."
        )
    loaded = json.loads(path.read_text())
    if not isinstance(loaded, dict):
        raise ValueError(f"Expected {str(path)!r} to hold a JSON object, but got {type(loaded).__name__}.")
    return _mapping_entries(loaded)


def _mapping_entries(mapping: Mapping[Any, Any]) -> dict[Any, Any]:
    return {key: value for key, value in mapping.items() if not (isinstance(key, str) and key.startswith("_"))}


def _class_names(class_names: Sequence[str] | None, num_classes: int | None) -> list[str]:
    if class_names is None and num_classes is None:
        raise ValueError("Pass `class_names` or `num_classes` so that the superclass map can be checked.")
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
    ):
        raise ValueError(f"Expected argument `num_classes` to be a positive integer, but got {num_classes!r}.")
    names = [str(index) for index in range(num_classes or 0)] if class_names is None else list(map(str, class_names))
    if class_names is not None and num_classes is not None and num_classes != len(names):
        raise ValueError(f"Expected `num_classes` ({num_classes}) to equal len(class_names) ({len(names)}).")
    if len(set(names)) != len(names):
        raise ValueError(f"Expected argument `class_names` to hold distinct names, but got {names}.")
    return names


def _resolve_class_key(key: object, index_of: dict[str, int], num_classes: int) -> int | None:
    if isinstance(key, str) and key in index_of:
        return index_of[key]
    is_int = isinstance(key, (int, np.integer)) and not isinstance(key, bool)
    is_digits = isinstance(key, str) and _INDEX_KEY.match(key) is not None
    if not (is_int or is_digits):
        return None
    index = int(str(key))
    return index if 0 <= index < num_classes else None
