"""k-NN probe maths against scikit-learn brute force and hand-built cases."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import faiss
import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors

from lightning_difficulty.functional.knn import build_index, knn_search, knn_vote, neighbour_disagreement


def _continuous(n: int, dim: int, seed: int, offset: float = 0.0) -> np.ndarray:
    """Continuous random floats: distance ties have probability zero."""
    return (np.random.default_rng(seed).standard_normal((n, dim)) + offset).astype(np.float32)


def _clustered(n: int, *, num_classes: int = 6, dim: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian class clusters that touch, so votes near the borders are not trivial."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n)
    centres = rng.normal(0.0, 1.0, size=(num_classes, dim))
    return (centres[labels] + rng.standard_normal((n, dim))).astype(np.float32), labels


def test_neighbours_and_distances_match_sklearn_brute() -> None:
    reference, queries = _continuous(800, 8, seed=1), _continuous(150, 8, seed=2)
    distances, indices = knn_search(reference, queries, 7)
    expected_dist, expected_idx = NearestNeighbors(n_neighbors=7, algorithm="brute").fit(reference).kneighbors(queries)
    assert distances.dtype == np.float32 and indices.dtype == np.int64
    np.testing.assert_array_equal(indices, expected_idx)
    np.testing.assert_allclose(distances, expected_dist, rtol=1e-5)


def test_neighbours_far_from_origin_match_sklearn() -> None:
    # |x|^2 is ~1e6 times the squared distances: a naive float32 |q|^2 + |r|^2 - 2 q.r would reorder them.
    reference, queries = (
        _continuous(3000, 16, seed=3, offset=1000.0),
        _continuous(300, 16, seed=4, offset=1000.0),
    )
    _, indices = knn_search(reference, queries, 10)
    expected = NearestNeighbors(n_neighbors=10, algorithm="brute").fit(reference.astype(np.float64))
    np.testing.assert_array_equal(indices, expected.kneighbors(queries.astype(np.float64))[1])


def test_neighbour_sets_match_sklearn_at_float32_near_ties() -> None:
    # Every point has a twin one float32 ulp away, so with odd k the k-th neighbour is decided by a
    # distance gap of ~1e-7 relative: below float32 resolution of faiss's distances, not of float64.
    rng = np.random.default_rng(17)
    base = (rng.standard_normal((300, 64)) + 3.0).astype(np.float32)
    twin = base.copy()
    twin[:, 0] = np.nextafter(twin[:, 0], np.float32(np.inf))
    reference = np.concatenate([base, twin])
    queries = (rng.standard_normal((200, 64)) + 3.0).astype(np.float32)
    _, indices = knn_search(reference, queries, 11)
    fitted = NearestNeighbors(n_neighbors=11, algorithm="brute").fit(reference.astype(np.float64))
    expected = fitted.kneighbors(queries.astype(np.float64))[1]
    np.testing.assert_array_equal(np.sort(indices, axis=1), np.sort(expected, axis=1))


def test_votes_match_sklearn_classifier() -> None:
    features, all_labels = _clustered(3500, seed=5)
    reference, labels, queries = features[:3000], all_labels[:3000], features[3000:]
    _, indices = knn_search(build_index(reference, use_gpu=False), queries, 30)
    classifier = KNeighborsClassifier(n_neighbors=30, algorithm="brute").fit(reference, labels)
    np.testing.assert_array_equal(knn_vote(labels[indices], 6), classifier.predict(queries))


def test_leave_one_out_matches_sklearn_kneighbors_without_x() -> None:
    reference = _continuous(600, 6, seed=7)
    distances, indices = knn_search(reference, reference, 5, exclude_self=True)
    expected_dist, expected_idx = NearestNeighbors(n_neighbors=5, algorithm="brute").fit(reference).kneighbors()
    np.testing.assert_array_equal(indices, expected_idx)
    np.testing.assert_allclose(distances, expected_dist, rtol=1e-5)


def test_leave_one_out_with_query_ids_on_a_subset() -> None:
    reference = _continuous(500, 5, seed=8)
    ids = np.array([499, 3, 250, 0, 77])
    _, indices = knn_search(reference, reference[ids], 4, exclude_self=True, query_ids=ids)
    expected = NearestNeighbors(n_neighbors=4, algorithm="brute").fit(reference).kneighbors()[1][ids]
    np.testing.assert_array_equal(indices, expected)


def test_leave_one_out_keeps_exact_duplicates() -> None:
    reference = np.array([[0.0, 0.0], [0.0, 0.0], [5.0, 0.0], [0.0, 7.0]], dtype=np.float32)
    distances, indices = knn_search(reference, reference, 2, exclude_self=True)
    assert indices[0].tolist() == [1, 2] and distances[0].tolist() == [0.0, 5.0]
    assert indices[1].tolist() == [0, 2] and distances[1].tolist() == [0.0, 5.0]
    assert sorted(indices[2].tolist()) == [0, 1] and distances[2].tolist() == [5.0, 5.0]
    assert sorted(indices[3].tolist()) == [0, 1] and distances[3].tolist() == [7.0, 7.0]


def test_float16_memmap_reference_and_queries(tmp_path: Path) -> None:
    reference_map = np.lib.format.open_memmap(tmp_path / "ref.npy", mode="w+", dtype=np.float16, shape=(700, 8))
    reference_map[:] = _continuous(700, 8, seed=9)
    query_map = np.lib.format.open_memmap(tmp_path / "q.npy", mode="w+", dtype=np.float16, shape=(90, 8))
    query_map[:] = _continuous(90, 8, seed=10)
    reference_map.flush()
    query_map.flush()
    reference = np.load(tmp_path / "ref.npy", mmap_mode="r")
    queries = np.load(tmp_path / "q.npy", mmap_mode="r")
    index = build_index(reference, chunk_size=64, use_gpu=False)
    _, indices = knn_search(index, queries, 6, batch_size=32)
    fitted = NearestNeighbors(n_neighbors=6, algorithm="brute").fit(np.asarray(reference, dtype=np.float64))
    expected = fitted.kneighbors(np.asarray(queries, dtype=np.float64))[1]
    assert index.ntotal == 700
    np.testing.assert_array_equal(indices, expected)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_agree_with_exact_votes(kind: str) -> None:
    features, all_labels = _clustered(7000, num_classes=10, dim=16, seed=11)
    reference, labels, queries = features[:6000], all_labels[:6000], features[6000:]
    _, exact = knn_search(reference, queries, 30)
    exact_votes = knn_vote(labels[exact], 10)
    assert 0.9 < np.mean(exact_votes == all_labels[6000:]) < 1.0  # some queries sit between clusters
    _, approximate = knn_search(build_index(reference, kind=kind, use_gpu=False), queries, 30)
    agreement = np.mean(knn_vote(labels[approximate], 10) == exact_votes)
    assert agreement >= 0.95


def test_approximate_leave_one_out_never_returns_self() -> None:
    reference, _ = _clustered(2000, seed=13)
    _, indices = knn_search(build_index(reference, kind="ivf", use_gpu=False), reference, 5, exclude_self=True)
    assert indices.shape == (2000, 5)
    assert not (indices == np.arange(2000)[:, None]).any()


def test_vote_ties_go_to_smallest_class() -> None:
    labels = np.array([[3, 1, 3, 1, 2], [4, 4, 0, 0, 2], [2, 2, 2, 0, 1]])
    assert knn_vote(labels, 5).tolist() == [1, 0, 2]


def test_vote_tie_matches_sklearn_on_hand_built_points() -> None:
    reference = np.array([[0.0], [1.0], [-2.0], [3.0]])
    labels = np.array([2, 0, 2, 0])  # from x = 0.4 the 4 neighbours are two 2s and two 0s
    predicted = KNeighborsClassifier(n_neighbors=4, algorithm="brute").fit(reference, labels).predict([[0.4]])
    _, indices = knn_search(reference.astype(np.float32), np.array([[0.4]], dtype=np.float32), 4)
    assert predicted.tolist() == [0]
    assert knn_vote(labels[indices], 3).tolist() == [0]


def _vote_loop(labels: np.ndarray) -> list[int]:
    """Most common label per row; among equally common labels, the smallest."""
    winners = []
    for row in labels.tolist():
        counts = Counter(row)
        best = max(counts.values())
        winners.append(min(c for c, n in counts.items() if n == best))
    return winners


def test_vote_matches_counter_loop_on_random_labels() -> None:
    labels = np.random.default_rng(14).integers(0, 7, size=(400, 9))
    assert knn_vote(labels, 7).tolist() == _vote_loop(labels)


def test_vote_in_blocks_with_many_classes() -> None:
    labels = np.random.default_rng(15).integers(0, 3, size=(50, 6)) * 1_000_000  # one row per vote block
    assert knn_vote(labels, 3_000_000).tolist() == _vote_loop(labels)


def test_neighbour_disagreement_is_classic_kdn() -> None:
    reference, labels = _clustered(400, num_classes=3, dim=4, seed=16)
    neighbours = NearestNeighbors(n_neighbors=5, algorithm="brute").fit(reference).kneighbors()[1]
    expected = [sum(labels[j] != labels[i] for j in row) / 5 for i, row in enumerate(neighbours)]
    _, indices = knn_search(reference, reference, 5, exclude_self=True)
    np.testing.assert_allclose(neighbour_disagreement(labels[indices], labels), expected)


def test_use_gpu_auto_stays_on_cpu_without_gpus() -> None:
    if faiss.get_num_gpus() > 0:
        pytest.skip("a GPU is visible")
    assert isinstance(build_index(_continuous(10, 3, seed=0)), faiss.IndexFlatL2)
    with pytest.raises(RuntimeError, match="use_gpu=True"):
        build_index(_continuous(10, 3, seed=0), use_gpu=True)


@pytest.mark.parametrize("k", [0, -3, 2.5, True])
def test_bad_k(k: object) -> None:
    with pytest.raises(ValueError, match="`k` to be a positive integer"):
        knn_search(_continuous(10, 3, seed=0), _continuous(2, 3, seed=1), k)  # type: ignore[arg-type]


def test_k_larger_than_reference() -> None:
    reference = _continuous(10, 3, seed=0)
    assert knn_search(reference, reference[:2], 10)[1].shape == (2, 10)
    with pytest.raises(ValueError, match="`k` <= 10"):
        knn_search(reference, reference[:2], 11)


def test_k_equal_to_reference_with_leave_one_out() -> None:
    reference = _continuous(10, 3, seed=0)
    assert knn_search(reference, reference, 9, exclude_self=True)[1].shape == (10, 9)
    with pytest.raises(ValueError, match=r"`k` <= 9.*leave-one-out"):
        knn_search(reference, reference, 10, exclude_self=True)


def test_bad_kind_lists_choices() -> None:
    with pytest.raises(ValueError, match=r"`kind` to be one of \('flat', 'ivf', 'hnsw'\), but got 'kd'"):
        build_index(_continuous(10, 3, seed=0), kind="kd")  # type: ignore[arg-type]


def test_query_dimension_mismatch() -> None:
    with pytest.raises(ValueError, match="`queries` with 3 columns"):
        knn_search(_continuous(10, 3, seed=0), _continuous(2, 4, seed=1), 2)


def test_bad_query_ids() -> None:
    reference = _continuous(10, 3, seed=0)
    with pytest.raises(ValueError, match="`query_ids` to be 2 integers"):
        knn_search(reference, reference[:2], 2, exclude_self=True, query_ids=np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"`query_ids` in \[0, 9\]"):
        knn_search(reference, reference[:2], 2, exclude_self=True, query_ids=np.array([0, 10]))
    with pytest.raises(ValueError, match="only used with `exclude_self=True`"):
        knn_search(reference, reference[:2], 2, query_ids=np.array([0, 1]))


def test_vote_and_disagreement_validation() -> None:
    with pytest.raises(ValueError, match=r"`neighbour_labels` in \[0, 2\]"):
        knn_vote(np.array([[0, 3]]), 3)
    with pytest.raises(ValueError, match="`num_classes` to be a positive integer"):
        knn_vote(np.array([[0, 1]]), 0)
    with pytest.raises(ValueError, match="`neighbour_labels` to be an integer array"):
        knn_vote(np.array([0.0, 1.0]), 2)
    with pytest.raises(ValueError, match=r"`query_classes` of shape \(2,\)"):
        neighbour_disagreement(np.array([[0, 1], [1, 1]]), np.array([0, 1, 1]))
