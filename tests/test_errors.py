"""Error taxonomy (Peychev et al. 2023): categories, precedence, multi-label helpers and superclass maps."""

from __future__ import annotations

import itertools
import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from lightning_difficulty.functional.errors import (
    CIFAR10_CLASSES,
    ERROR_CATEGORIES,
    cifar10_superclasses,
    classify_errors,
    cooccurrence_from_multilabels,
    cooccurrence_rates,
    error_category_summary,
    load_superclass_map,
    valid_labels_from_counts,
)

# Six classes in superclasses {0, 1}, {2, 3}, {4}, {5}.
SUPERCLASS = np.array([0, 0, 1, 1, 2, 3])


def _cooccurrence(pairs: list[tuple[int, int, int]], num_classes: int = 6) -> np.ndarray:
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    for a, b, count in pairs:
        matrix[a, b] = matrix[b, a] = count
    return matrix


# Seen together: 0 & 4 three times, 2 & 5 twice (both common at the default threshold 2), 1 & 5 once (not).
COOCCURRENCE = _cooccurrence([(0, 4, 3), (2, 5, 2), (1, 5, 1)])


def _valid(rows: list[list[int]], num_classes: int = 6) -> np.ndarray:
    mask = np.zeros((len(rows), num_classes), dtype=bool)
    for n, classes in enumerate(rows):
        mask[n, classes] = True
    return mask


# (label, prediction, extra valid labels, expected category)
HAND_CASE = [
    (0, 0, [], "correct"),
    (0, 2, [2], "ambiguous"),  # the prediction is a valid label
    (0, 1, [], "fine_grained"),  # 0 and 1 share superclass 0
    (4, 3, [], "fine_grained_oov"),  # the OOV scorer flags sample 3
    (2, 5, [], "spurious"),  # 2 and 5 co-occur twice
    (3, 4, [], "non_prototypical"),  # sample 5 is in the non-prototypical list
    (1, 5, [], "model_failure"),  # 1 and 5 co-occur only once
    (4, 3, [2], "fine_grained"),  # via the extra valid label 2, which shares superclass 1 with 3
    (3, 4, [0], "spurious"),  # via the extra valid label 0, which co-occurs with 4
]


def test_every_category_on_a_hand_built_case() -> None:
    labels, predictions, extra, expected = (list(column) for column in zip(*HAND_CASE, strict=True))
    calls: list[tuple[list[int], list[int]]] = []

    def oov_scorer(indices: np.ndarray, preds: np.ndarray) -> np.ndarray:
        calls.append((indices.tolist(), preds.tolist()))
        return indices == 3

    categories = classify_errors(
        labels,
        predictions,
        valid_labels=_valid(extra),
        superclass=SUPERCLASS,
        oov_scorer=oov_scorer,
        cooccurrence=COOCCURRENCE,
        non_prototypical=[5],
    )
    assert categories.tolist() == expected
    # The scorer sees only the errors left after the ambiguous and fine-grained checks, once.
    assert calls == [([3, 4, 5, 6, 8], [3, 5, 4, 5, 4])]


def test_precedence_follows_the_paper_order() -> None:
    # Every sample qualifies for its expected category and for every later one.
    labels = [0, 0, 0, 2, 3]
    predictions = [1, 1, 4, 5, 4]
    cooccurrence = _cooccurrence([(0, 1, 5), (0, 4, 5), (2, 5, 5)])
    categories = classify_errors(
        labels,
        predictions,
        valid_labels=_valid([[1], [], [], [], []]),
        superclass=SUPERCLASS,
        oov_scorer=lambda indices, preds: indices <= 2,  # samples 0-2 qualify; 0 and 1 are settled before
        cooccurrence=cooccurrence,
        non_prototypical=np.ones(5, dtype=bool),
    )
    assert categories.tolist() == [
        "ambiguous",
        "fine_grained",
        "fine_grained_oov",
        "spurious",
        "non_prototypical",
    ]
    assert tuple(ERROR_CATEGORIES) == (
        "correct",
        "ambiguous",
        "fine_grained",
        "fine_grained_oov",
        "spurious",
        "non_prototypical",
        "model_failure",
    )


def test_checks_without_their_input_never_fire() -> None:
    labels, predictions = [0, 0, 2, 3], [1, 4, 5, 3]
    assert classify_errors(labels, predictions).tolist() == ["model_failure"] * 3 + ["correct"]
    only_superclass = classify_errors(labels, predictions, superclass=SUPERCLASS)
    assert only_superclass.tolist() == ["fine_grained", "model_failure", "model_failure", "correct"]


def test_superclass_dict_bool_cooccurrence_and_mask_inputs() -> None:
    labels, predictions = [0, 2, 3], [1, 5, 4]
    superclass = {0: "a", 1: "a", 2: "b", 3: "b", 4: "c", 5: "d"}
    common = np.zeros((6, 6), dtype=bool)
    common[2, 5] = True  # one direction only: label 2 -> prediction 5
    categories = classify_errors(
        labels, predictions, superclass=superclass, cooccurrence=common, non_prototypical=[False, False, True]
    )
    assert categories.tolist() == ["fine_grained", "spurious", "non_prototypical"]
    reverse = classify_errors([5], [2], cooccurrence=common)
    assert reverse.tolist() == ["model_failure"]


def test_cooccurrence_threshold_applies_to_counts_and_rates() -> None:
    labels, predictions = [1, 0], [5, 4]
    assert classify_errors(labels, predictions, cooccurrence=COOCCURRENCE).tolist() == [
        "model_failure",
        "spurious",
    ]
    lowered = classify_errors(labels, predictions, cooccurrence=COOCCURRENCE, cooccurrence_threshold=1)
    assert lowered.tolist() == ["spurious", "spurious"]
    rates = COOCCURRENCE / 10.0
    by_rate = classify_errors(labels, predictions, cooccurrence=rates, cooccurrence_threshold=0.25)
    assert by_rate.tolist() == ["model_failure", "spurious"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"labels": [0, 1], "predictions": [0]}, "share one length"),
        ({"labels": [[0]], "predictions": [[0]]}, "`labels` to be 1-D"),
        ({"labels": [0.0], "predictions": [1.0]}, "integer class indices"),
        ({"valid_labels": np.zeros((2, 6), bool)}, r"`valid_labels` to have shape \(3, 6\)"),
        ({"valid_labels": np.zeros((3, 5), bool), "superclass": SUPERCLASS}, "one number of classes"),
        ({"superclass": [0, 0, 1, 1, 2, 3, 3], "cooccurrence": COOCCURRENCE}, "one number of classes"),
        ({"superclass": [0, 1]}, r"`labels` to hold class indices in \[0, 1\]"),
        ({"labels": [0, 1, 1], "superclass": [0, 1]}, r"`predictions` to hold class indices in \[0, 1\]"),
        ({"superclass": np.zeros(6)}, "integer superclass ids"),
        ({"superclass": {0: "a", 1: "a"}, "cooccurrence": COOCCURRENCE}, "one number of classes"),
        ({"cooccurrence": np.zeros((6, 5))}, r"numeric \(6, 6\) matrix"),
        ({"cooccurrence": np.zeros((6, 6), dtype=object)}, "dtype object"),
        ({"oov_scorer": lambda i, p: np.ones(1, bool)}, "bool array of shape"),
        ({"oov_scorer": lambda i, p: np.ones(i.shape, int)}, "bool array of shape"),
        ({"non_prototypical": [3]}, r"indices in \[0, 2\]"),
        ({"non_prototypical": np.ones(2, bool)}, r"shape \(3,\)"),
    ],
)
def test_classify_errors_validation(kwargs: dict[str, object], match: str) -> None:
    arguments: dict[str, object] = {"labels": [0, 2, 3], "predictions": [1, 5, 4]}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=match):
        classify_errors(**arguments)  # type: ignore[arg-type]


# --- multi-label helpers ---------------------------------------------------------------------------


def test_valid_labels_from_counts_hand_case() -> None:
    counts = [[45, 5, 0], [50, 0, 0], [30, 14, 6]]
    labels = [0, 2, 1]
    # 5/50 = 0.1 reaches the default share; row 1's label 2 is valid without votes; 6/50 = 0.12.
    assert valid_labels_from_counts(counts, labels).astype(int).tolist() == [[1, 1, 0], [1, 0, 1], [1, 1, 1]]
    stricter = valid_labels_from_counts(counts, labels, min_share=0.2)
    assert stricter.astype(int).tolist() == [[1, 0, 0], [1, 0, 1], [1, 1, 0]]
    for bad in (0, 1.5, True, "0.1"):
        with pytest.raises(ValueError, match="`min_share`"):
            valid_labels_from_counts(counts, labels, min_share=bad)  # type: ignore[arg-type]


def test_cooccurrence_counts_match_a_pair_loop() -> None:
    rng = np.random.default_rng(3)
    mask = rng.random((50, 7)) < 0.3
    expected = np.zeros((7, 7), dtype=np.int64)
    for row in mask:
        for a, b in itertools.permutations(np.flatnonzero(row).tolist(), 2):
            expected[a, b] += 1
    got = cooccurrence_from_multilabels(mask)
    np.testing.assert_array_equal(got, expected)
    assert np.diag(got).tolist() == [0] * 7


def test_cooccurrence_rates_hand_case() -> None:
    mask = [[1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 1, 0]]
    expected = [
        [0.0, 2 / 3, 2 / 3, 0.0],
        [1.0, 0.0, 0.5, 0.0],
        [1.0, 0.5, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.0],  # class 3 is never valid
    ]
    np.testing.assert_allclose(cooccurrence_rates(mask), expected)
    with pytest.raises(ValueError, match="booleans"):
        cooccurrence_rates([[0, 2]])
    with pytest.raises(ValueError, match=r"\(N, C\) mask"):
        cooccurrence_from_multilabels([1, 0])


# --- superclass maps -------------------------------------------------------------------------------


def test_load_superclass_map_names_indices_and_doc_keys(tmp_path: Path) -> None:
    names = ["car", "cat", "dog", "truck"]
    by_name = {"_doc": "ignored", "cat": "pet", "car": "vehicle", "dog": "pet", "truck": "vehicle"}
    ids, superclasses = load_superclass_map(by_name, class_names=names)
    assert ids.tolist() == [0, 1, 1, 0]
    assert superclasses == ["vehicle", "pet"]
    by_index = {"0": "vehicle", 1: "pet", "2": "pet", 3: "vehicle"}
    ids, superclasses = load_superclass_map(by_index, num_classes=4)
    assert (ids.tolist(), superclasses) == ([0, 1, 1, 0], ["vehicle", "pet"])
    path = tmp_path / "map.json"
    path.write_text(json.dumps(by_name))
    ids, _ = load_superclass_map(path, class_names=names, num_classes=4)
    assert ids.tolist() == [0, 1, 1, 0]
    ids, superclasses = load_superclass_map({0: 7, 1: 7, 2: 3}, num_classes=3)
    assert (ids.tolist(), superclasses) == ([0, 0, 1], ["7", "3"])


def test_load_superclass_map_reports_every_problem_at_once() -> None:
    names = ["car", "cat", "dog", "truck"]
    mapping = {"cat": "pet", "dog": ["pet"], "horse": "animal", "1": "animal"}
    with pytest.raises(ValueError) as info:
        load_superclass_map(mapping, class_names=names)
    message = str(info.value)
    assert "unknown class 'horse'" in message
    assert "'dog' maps to ['pet']" in message
    assert "'cat' maps to both 'pet' and 'animal'" in message
    assert "unmapped classes ['car', 'dog', 'truck']" in message


def test_load_superclass_map_argument_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unmapped classes \['2'\]"):
        load_superclass_map({0: "a", 1: "a"}, num_classes=3)
    with pytest.raises(ValueError, match="unknown class 5"):
        load_superclass_map({0: "a", 5: "a"}, num_classes=1)
    with pytest.raises(ValueError, match="`class_names` or `num_classes`"):
        load_superclass_map({0: "a"})
    with pytest.raises(ValueError, match=r"num_classes` \(3\) to equal len\(class_names\) \(2\)"):
        load_superclass_map({"a": "x", "b": "x"}, class_names=["a", "b"], num_classes=3)
    with pytest.raises(ValueError, match="distinct"):
        load_superclass_map({"a": "x"}, class_names=["a", "a"])
    with pytest.raises(FileNotFoundError, match=r"nothere\.json"):
        load_superclass_map(tmp_path / "nothere.json", num_classes=2)
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        load_superclass_map(tmp_path / "list.json", num_classes=2)


def test_cifar10_superclasses() -> None:
    ids, names = cifar10_superclasses()
    group = {cls: names[ids[index]] for index, cls in enumerate(CIFAR10_CLASSES)}
    assert len(names) == 6
    assert group["cat"] == group["dog"] == "domestic_carnivore"
    assert group["deer"] == group["horse"] == "hoofed_mammal"
    assert group["automobile"] == group["truck"] == "road_vehicle"
    assert group["airplane"] == group["ship"] == "aircraft_and_watercraft"
    assert len({group["bird"], group["frog"], group["cat"], group["deer"], group["truck"], group["ship"]}) == 6
    raw = json.loads(
        resources.files("lightning_difficulty").joinpath("resources/cifar10_superclasses.json").read_text()
    )
    assert raw["_doc"].strip()
    assert set(raw) - {"_doc"} == set(CIFAR10_CLASSES)


# --- summary ---------------------------------------------------------------------------------------


def test_error_category_summary_hand_counts() -> None:
    categories = ["correct", "correct", "ambiguous", "fine_grained", "fine_grained", "model_failure"]
    summary = error_category_summary(categories)
    assert list(summary) == list(ERROR_CATEGORIES)
    assert summary["correct"] == {"count": 2, "share": 2 / 6, "error_share": 0.0}
    assert summary["fine_grained"] == {"count": 2, "share": 2 / 6, "error_share": 0.5}
    assert summary["ambiguous"] == {"count": 1, "share": 1 / 6, "error_share": 0.25}
    assert summary["spurious"] == {"count": 0, "share": 0.0, "error_share": 0.0}
    json.dumps(summary)


def test_error_category_summary_by_group() -> None:
    categories = ["correct", "ambiguous", "model_failure", "model_failure", "correct"]
    bands = [1, 0, 1, 1, 0]
    nested = error_category_summary(categories, by=bands)
    assert list(nested) == ["0", "1"]
    assert nested["0"]["correct"] == {"count": 1, "share": 0.5, "error_share": 0.0}
    assert nested["0"]["ambiguous"] == {"count": 1, "share": 0.5, "error_share": 1.0}
    assert nested["1"]["model_failure"] == {"count": 2, "share": 2 / 3, "error_share": 1.0}
    assert nested["1"]["non_prototypical"]["count"] == 0
    with pytest.raises(ValueError, match="same shape"):
        error_category_summary(categories, by=[0, 1])
    with pytest.raises(ValueError, match=r"found \['typo'\]"):
        error_category_summary(["correct", "typo"])
