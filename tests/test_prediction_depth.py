"""Prediction depth and layer-wise kDN against the literal definitions and hand-built cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors

from lightning_difficulty.functional.knn import knn_search, knn_vote
from lightning_difficulty.functional.prediction_depth import layer_kdn, prediction_depth


def _depth_by_definition(probes: np.ndarray, final: np.ndarray) -> list[int]:
    """PD(x) = min{l : probe_m(x) == yhat(x) for every m >= l}, l = 0..L+1 (L+1: empty set, never settles)."""
    n_probes, n_samples = probes.shape
    depths = []
    for n in range(n_samples):
        for level in range(n_probes + 1):
            if all(probes[m, n] == final[n] for m in range(level, n_probes)):
                depths.append(level)
                break
    return depths


def test_hand_built_depths() -> None:
    # L = 3 layers plus the input probe: 4 rows. yhat = 1 for every sample.
    probes = np.array(
        [
            [1, 0, 0, 0, 1, 0],  # input probe
            [1, 0, 0, 0, 0, 1],  # layer 1
            [1, 1, 0, 0, 1, 1],  # layer 2
            [1, 1, 1, 0, 1, 1],  # layer 3 (last)
        ]
    )
    final = np.ones(6, dtype=np.int64)
    # all agree -> 0; settles at layer 2 (middle); settles only at L = 3; never -> L + 1 = 4;
    # agrees at 0, leaves at 1, comes back at 2 -> 2; disagrees only at the input -> 1.
    assert prediction_depth(probes, final).tolist() == [0, 2, 3, 4, 2, 1]


def test_single_probe() -> None:
    assert prediction_depth(np.array([[2, 0]]), np.array([2, 2])).tolist() == [0, 1]


def test_random_probes_match_definition() -> None:
    rng = np.random.default_rng(0)
    final = rng.integers(0, 3, 500)
    # Probes copy yhat more often in later layers, so every depth occurs.
    probes = np.where(rng.random((8, 500)) < np.linspace(0.3, 0.95, 8)[:, None], final, rng.integers(0, 3, (8, 500)))
    depths = prediction_depth(probes, final)
    assert depths.dtype == np.int64
    assert depths.tolist() == _depth_by_definition(probes, final)
    assert set(depths.tolist()) == set(range(9))


def test_depth_from_knn_probes_matches_sklearn_probes() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, 600)
    centres = rng.normal(size=(4, 5))
    layers = [centres[labels] * scale + rng.standard_normal((600, 5)) for scale in (0.3, 1.0, 3.0)]
    final = labels[:200]  # stands in for the network's prediction on the first 200 samples (queries)
    ours, theirs = [], []
    for features in layers:
        reference, queries = features[200:].astype(np.float32), features[:200].astype(np.float32)
        _, indices = knn_search(reference, queries, 9)
        ours.append(knn_vote(labels[200:][indices], 4))
        classifier = KNeighborsClassifier(n_neighbors=9, algorithm="brute").fit(reference, labels[200:])
        theirs.append(classifier.predict(queries))
    expected = _depth_by_definition(np.stack(theirs), final)
    assert prediction_depth(np.stack(ours), final).tolist() == expected


def test_layer_kdn_hand_built() -> None:
    neighbours = np.array([[1, 1, 1, 1], [0, 1, 2, 2], [3, 3, 3, 0]])
    assert layer_kdn(neighbours, np.array([1, 2, 0])).tolist() == [0.0, 0.5, 0.75]


def test_layer_kdn_with_leave_one_out_neighbours() -> None:
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, 300)
    features = (rng.normal(size=(3, 4))[labels] + rng.standard_normal((300, 4))).astype(np.float32)
    prediction = rng.integers(0, 3, 300)
    neighbours = NearestNeighbors(n_neighbors=6, algorithm="brute").fit(features).kneighbors()[1]
    expected = [np.count_nonzero(labels[row] != prediction[i]) / 6 for i, row in enumerate(neighbours)]
    _, indices = knn_search(features, features, 6, exclude_self=True)
    np.testing.assert_allclose(layer_kdn(labels[indices], prediction), expected)


def test_validation() -> None:
    with pytest.raises(ValueError, match=r"`final_prediction` to be 3 integers"):
        prediction_depth(np.zeros((2, 3), dtype=np.int64), np.zeros(4, dtype=np.int64))
    with pytest.raises(ValueError, match=r"`probe_predictions` to be an integer array of shape \(L \+ 1, N\)"):
        prediction_depth(np.zeros(3, dtype=np.int64), np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match="`probe_predictions` to be an integer array"):
        prediction_depth(np.zeros((2, 3)), np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError, match="`final_prediction` to be 3 integers"):
        prediction_depth(np.zeros((2, 3), dtype=np.int64), np.zeros(3))
    with pytest.raises(ValueError, match="`query_classes` of shape"):
        layer_kdn(np.zeros((2, 3), dtype=np.int64), np.zeros(3, dtype=np.int64))
