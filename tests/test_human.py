"""Human perspective: annotation conversion, loading, human difficulty scores and rank correlations."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lightning_difficulty.functional.human import (
    annotations_to_counts,
    human_difficulty,
    human_entropy,
    human_max_disagreement,
    load_annotations,
    perspective_correlations,
)

# Three samples, three classes, 50 annotators each.
COUNTS = np.array([[45, 5, 0], [10, 20, 20], [0, 0, 50]])
LABELS = np.array([0, 1, 0])


def _counts_by_loop(labels: np.ndarray, num_classes: int) -> np.ndarray:
    out = np.zeros((labels.shape[0], num_classes), dtype=np.int64)
    for n, row in enumerate(labels.tolist()):
        for label in row:
            if label != -1:
                out[n, label] += 1
    return out


# --- annotations_to_counts -------------------------------------------------------------------------


def test_per_annotator_labels_hand_case() -> None:
    labels = [[0, 2, 2, -1], [1, 1, 1, 1], [-1, -1, 0, 2]]
    counts = annotations_to_counts(labels, num_classes=3)
    assert counts.dtype == np.int64
    assert counts.tolist() == [[1, 0, 2], [0, 4, 0], [1, 0, 1]]


def test_per_annotator_labels_match_python_loop() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(-1, 7, size=(40, 13))
    labels[:, 0] = rng.integers(0, 7, size=40)  # every row keeps at least one label
    expected = _counts_by_loop(labels, 7)
    np.testing.assert_array_equal(annotations_to_counts(labels, num_classes=7, kind="labels"), expected)
    np.testing.assert_array_equal(annotations_to_counts(labels, num_classes=7), expected)  # auto: has -1


def test_counts_pass_through_and_auto_detects_counts() -> None:
    out = annotations_to_counts(COUNTS, num_classes=3)  # 45 >= 3 cannot be a label
    assert out.tolist() == COUNTS.tolist()
    assert annotations_to_counts(COUNTS.astype(float), num_classes=3, kind="counts").dtype == np.int64


def test_auto_reads_labels_when_width_differs_from_num_classes() -> None:
    assert annotations_to_counts([[0, 1, 1, 0, 1]], num_classes=3).tolist() == [[2, 3, 0]]


def test_auto_ambiguous_case_requires_kind() -> None:
    square = [[0, 1], [1, 1]]
    with pytest.raises(ValueError, match="kind='counts' or kind='labels'"):
        annotations_to_counts(square, num_classes=2)
    assert annotations_to_counts(square, num_classes=2, kind="counts").tolist() == [[0, 1], [1, 1]]
    assert annotations_to_counts(square, num_classes=2, kind="labels").tolist() == [[1, 1], [0, 2]]


@pytest.mark.parametrize(
    ("annotations", "kind", "match"),
    [
        ([0, 1, 2], "auto", "2-D"),
        (np.zeros((2, 3, 3), dtype=int), "auto", "2-D"),
        ([[3, -2, 0]], "counts", "negative"),
        ([[0, 3]], "labels", r"\[0, 2\] or -1"),
        ([[0, -2, 1, 1]], "auto", r"\[0, 2\] or -1"),
        ([[0, 0, 0], [1, 2, 0]], "counts", r"rows \[0\] have none"),
        ([[-1, -1], [0, 1]], "labels", r"rows \[0\] have none"),
        ([[0.5, 1.0, 2.0]], "counts", "integer"),
        ([["a", "b", "c"]], "counts", "integers"),
        ([[1, 2]], "counts", "num_classes=3 columns"),
    ],
)
def test_annotations_validation(annotations: object, kind: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        annotations_to_counts(annotations, num_classes=3, kind=kind)  # type: ignore[arg-type]


def test_bad_kind_and_num_classes() -> None:
    with pytest.raises(ValueError, match="`kind`"):
        annotations_to_counts(COUNTS, num_classes=3, kind="votes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`num_classes` to be a positive integer, but got 0"):
        annotations_to_counts(COUNTS, num_classes=0)


# --- load_annotations ------------------------------------------------------------------------------


def test_load_from_npy_and_npz(tmp_path: Path) -> None:
    labels = np.array([[0, 1, -1], [2, 2, 2]])
    np.save(tmp_path / "labels.npy", labels)
    np.savez(tmp_path / "counts.npz", counts=COUNTS)
    np.savez(tmp_path / "labels.npz", labels=np.array([[0, 1], [2, 1]]))  # 2 columns, 3 classes
    np.savez(tmp_path / "single.npz", votes=COUNTS)
    assert load_annotations(tmp_path / "labels.npy", num_classes=3).tolist() == [[1, 1, 0], [0, 0, 3]]
    assert load_annotations(str(tmp_path / "counts.npz"), num_classes=3).tolist() == COUNTS.tolist()
    assert load_annotations(tmp_path / "labels.npz", num_classes=3).tolist() == [[1, 1, 0], [0, 1, 1]]
    assert load_annotations(tmp_path / "single.npz", num_classes=3).tolist() == COUNTS.tolist()
    assert load_annotations(COUNTS, num_classes=3).tolist() == COUNTS.tolist()


def test_npz_key_name_sets_kind(tmp_path: Path) -> None:
    # A square 0/1 matrix is ambiguous for "auto", but the key name settles it.
    square = np.array([[0, 1], [1, 1]])
    np.savez(tmp_path / "c.npz", counts=square)
    np.savez(tmp_path / "l.npz", labels=square)
    assert load_annotations(tmp_path / "c.npz", num_classes=2).tolist() == [[0, 1], [1, 1]]
    assert load_annotations(tmp_path / "l.npz", num_classes=2).tolist() == [[1, 1], [0, 2]]
    with pytest.raises(ValueError, match="contradicts the array name 'counts'"):
        load_annotations(tmp_path / "c.npz", num_classes=2, kind="labels")


def test_load_errors_name_path_and_keys(tmp_path: Path) -> None:
    np.savez(tmp_path / "many.npz", a=COUNTS, b=COUNTS)
    np.savez(tmp_path / "both.npz", counts=COUNTS, labels=COUNTS)
    path = str(tmp_path / "many.npz")
    with pytest.raises(ValueError, match=r"many\.npz.*\['a', 'b'\]"):
        load_annotations(path, num_classes=3)
    with pytest.raises(ValueError, match=r"both\.npz.*\['counts', 'labels'\]"):
        load_annotations(tmp_path / "both.npz", num_classes=3)
    with pytest.raises(ValueError, match=r"Expected key 'c' in .*many\.npz.*\['a', 'b'\]"):
        load_annotations(path, num_classes=3, key="c")
    assert load_annotations(path, num_classes=3, key="b").tolist() == COUNTS.tolist()
    with pytest.raises(FileNotFoundError, match=r"missing\.npz"):
        load_annotations(tmp_path / "missing.npz", num_classes=3)
    (tmp_path / "counts.csv").write_text("1,2,3\n")
    with pytest.raises(ValueError, match=r"\.npy. or .\.npz"):
        load_annotations(tmp_path / "counts.csv", num_classes=3)
    with pytest.raises(ValueError, match=r"only applies to `\.npz`"):
        load_annotations(COUNTS, num_classes=3, key="counts")


# --- scores ----------------------------------------------------------------------------------------


def test_human_difficulty_hand_values() -> None:
    # 5/50 chose another class than 0; 30/50 did not choose 1; nobody chose 0.
    np.testing.assert_allclose(human_difficulty(COUNTS, LABELS), [0.1, 0.6, 1.0], atol=1e-12)


def test_human_difficulty_accepts_probabilities() -> None:
    probs = COUNTS / COUNTS.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(human_difficulty(probs, LABELS), [0.1, 0.6, 1.0], atol=1e-12)


def test_human_entropy_hand_values_and_scipy() -> None:
    expected = [0.3250829733914482, 1.0549201679861442, 0.0]  # -sum p ln p for (.9,.1), (.2,.4,.4), (1,)
    got = human_entropy(COUNTS)
    np.testing.assert_allclose(got, expected, atol=1e-12)
    np.testing.assert_allclose(got, stats.entropy(COUNTS, axis=1), atol=1e-12)


def test_human_max_disagreement_hand_values() -> None:
    np.testing.assert_allclose(human_max_disagreement(COUNTS), [0.1, 0.6, 0.0], atol=1e-12)


@pytest.mark.parametrize(
    ("counts", "labels", "match"),
    [
        ([1, 2, 3], [0], r"\(N, C\)"),
        ([[1, -1, 3]], [0], "non-negative"),
        ([[0, 0, 0]], [0], "at least one annotation"),
        ([[1, 2, 3]], [3], r"\[0, 2\]"),
        ([[1, 2, 3]], [0, 1], r"shape \(1,\)"),
        ([[1, 2, 3]], [0.0], "integer"),
    ],
)
def test_human_difficulty_validation(counts: object, labels: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        human_difficulty(counts, labels)  # type: ignore[arg-type]


# --- correlations ----------------------------------------------------------------------------------


def test_correlations_match_direct_scipy_calls_without_nan_rows() -> None:
    rng = np.random.default_rng(1)
    human = rng.random(60)
    kdn = human + 0.5 * rng.random(60)
    depth = rng.integers(0, 6, size=60).astype(float)
    depth[[3, 10, 11]] = np.nan
    human[5] = np.nan
    table = {"human_difficulty": human, "kdn": kdn, "prediction_depth": depth, "label": np.zeros(60, int)}
    table["pattern"] = np.array(["1a"] * 60)  # non-numeric: skipped by default
    out = perspective_correlations(table)
    assert set(out) == {"kdn", "prediction_depth", "label"}
    for name, column in (("kdn", kdn), ("prediction_depth", depth)):
        keep = ~np.isnan(human) & ~np.isnan(column)
        rho, rho_p = stats.spearmanr(human[keep], column[keep])
        tau, tau_p = stats.kendalltau(human[keep], column[keep])
        assert out[name]["n"] == keep.sum()
        assert out[name]["spearman"] == pytest.approx(rho)
        assert out[name]["spearman_p"] == pytest.approx(rho_p)
        assert out[name]["kendall"] == pytest.approx(tau)
        assert out[name]["kendall_p"] == pytest.approx(tau_p)
    assert out["prediction_depth"]["n"] == 56.0
    assert math.isnan(out["label"]["spearman"])  # constant column: undefined
    for stats_of_column in out.values():
        assert all(type(value) is float for value in stats_of_column.values())
    json.dumps(out)


def test_correlations_accept_a_dataframe() -> None:
    frame = pd.DataFrame({"human_difficulty": [0.0, 0.3, 0.1, 0.6], "kdn": [0.1, 0.2, 0.3, 0.4]})
    out = perspective_correlations(frame)  # type: ignore[arg-type]
    assert list(out) == ["kdn"]
    assert out["kdn"]["spearman"] == pytest.approx(0.8)  # ranks (1,3,2,4) vs (1,2,3,4)


def test_correlations_reference_and_others() -> None:
    table: dict[str, list[float]] = {
        "confusion": [0.1, 0.5, 0.3, 0.9],
        "kdn": [0.0, 0.2, 0.4, 0.6],
        "other": [4.0, 3.0, 2.0, 1.0],
    }
    out = perspective_correlations(table, reference="confusion", others=["kdn"])
    assert list(out) == ["kdn"]
    assert out["kdn"]["spearman"] == pytest.approx(0.8)  # ranks (1,3,2,4) vs (1,2,3,4)
    assert out["kdn"]["kendall"] == pytest.approx(4 / 6)  # 5 concordant, 1 discordant pair
    with pytest.raises(ValueError, match=r"`reference`.*'human_difficulty'.*\['confusion', 'kdn', 'other'\]"):
        perspective_correlations(table)
    with pytest.raises(ValueError, match=r"\['depth'\] are missing"):
        perspective_correlations(table, reference="kdn", others=["depth"])
    with pytest.raises(ValueError, match="same length"):
        perspective_correlations({"human_difficulty": np.zeros(3), "kdn": np.zeros(2)})
