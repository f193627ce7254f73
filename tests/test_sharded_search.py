"""Sharded neighbour search (issue 13) against scikit-learn brute force and numpy.

- one reference shard at a time (``knn_search(..., reference_offset=...)``) merged with ``merge_neighbours``
  equals one float64 brute-force search, also at near distance ties and with twin points split between shards;
- ``neighbours_by_split`` in two real processes (spawned, sharing a barrier and a folder) equals the same call
  in one process and scikit-learn, including a set too small to split and an exhaustive IVF index;
- ``Found`` on sampled rows, ``ProbeConfig.resolved``, ``sample_rows`` / ``agreement_rows`` and the cost model
  (hand formulas, brute-force inversion, the bytes actually written).
"""

from __future__ import annotations

import itertools
import math
import multiprocessing
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from lightning_difficulty.functional import knn
from lightning_difficulty.functional.knn import build_index, knn_search, merge_neighbours
from lightning_difficulty.pipeline import neighbours
from lightning_difficulty.pipeline.cost import (
    EXACT_SCALE,
    affordable_queries,
    index_bytes,
    ivf_lists,
    probe_disk_bytes,
    probe_ram_bytes,
    probe_seconds,
    probe_stage_seconds,
    search_rate,
)
from lightning_difficulty.pipeline.neighbours import (
    APPROXIMATE_FROM,
    ProbeConfig,
    Ranks,
    agreement_rows,
    neighbours_by_split,
    sample_rows,
)

K = 5
TIE = 1e-12  # relative gap in float64 squared distance below which the k-th neighbour is undecidable
SPLITS = ("train", "val")


# ----------------------------------------------------------------------------------------------- data


def _data(kind: str, n: int, seed: int) -> np.ndarray:
    """``(n, d)`` float32 rows; every value is exact in float32, so float64 references see the same points.

    - ``gaussian``: continuous, no ties;
    - ``lattice``: integers in [0, 5) plus multiples of 2**-16 in [-4, 4] * 2**-16: many squared distances
      tie exactly or differ by ~1e-6 relative (below float32 resolution of the faiss distances); float64
      arithmetic on them is exact, so exact ties are detected exactly;
    - ``integers``: integers in [0, 12): many exact ties (about one row in eight ties at its k-th neighbour);
    - ``twins``: every point has a twin one float32 ulp away (rows ``i`` and ``i + n // 2``), so with odd ``k``
      the boundary is decided at ~1e-7 relative, and sharding puts most twins in different shards.
    """
    rng = np.random.default_rng(seed)
    if kind == "gaussian":
        return rng.standard_normal((n, 8)).astype(np.float32)
    if kind == "lattice":
        return (rng.integers(0, 5, (n, 6)) + rng.integers(-4, 5, (n, 6)) * 2.0**-16).astype(np.float32)
    if kind == "integers":
        return rng.integers(0, 12, (n, 12)).astype(np.float32)
    if kind == "twins":
        base = (rng.standard_normal((n // 2, 16)) + 3.0).astype(np.float32)
        twin = base.copy()
        twin[:, 0] = np.nextafter(twin[:, 0], np.float32(np.inf))
        return np.concatenate([base, twin])
    raise AssertionError(kind)


def _queries(kind: str, n: int, seed: int) -> np.ndarray:
    """Plain queries in the same space as ``_data(kind, ...)``."""
    if kind == "twins":
        return (np.random.default_rng(seed).standard_normal((n, 16)) + 3.0).astype(np.float32)
    return _data(kind, n, seed)


def _brute(reference: np.ndarray, queries: np.ndarray | None, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn float64 brute force: ``(distances, ids)`` of the ``k + 1`` nearest (leave-one-out when
    ``queries`` is None) and a mask of the rows whose ``k``-th and ``(k + 1)``-th squared distances, recomputed
    exactly from differences in numpy, are not tied (those rows have one correct set of ``k``)."""
    ref64 = reference.astype(np.float64)
    fitted = NearestNeighbors(n_neighbors=k + 1, algorithm="brute").fit(ref64)
    q64 = ref64 if queries is None else queries.astype(np.float64)
    distances, ids = fitted.kneighbors(None if queries is None else q64)
    edge = ((ref64[ids[:, k - 1 : k + 1]] - q64[:, None, :]) ** 2).sum(axis=2)
    decidable = edge[:, 1] - edge[:, 0] > TIE * edge[:, 1]
    return distances, ids, decidable


def _assert_same_sets(ids: np.ndarray, expected: np.ndarray, checked: np.ndarray | None = None) -> None:
    rows = np.arange(len(ids)) if checked is None else np.flatnonzero(checked)
    got, want = np.sort(ids[rows], axis=1), np.sort(expected[rows], axis=1)
    bad = np.flatnonzero((got != want).any(axis=1))
    assert bad.size == 0, f"{bad.size} rows differ, e.g. row {rows[bad[0]]}: {got[bad[0]]} != {want[bad[0]]}"


# ------------------------------------------------------------------------- 1. shard search + merge


def _sharded_search(
    reference: np.ndarray, queries: np.ndarray | None, k: int, edges: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Search every shard ``[edges[s], edges[s + 1])`` on its own and merge (leave-one-out when no queries)."""
    all_distances, all_ids = [], []
    for start, stop in itertools.pairwise(edges):
        index = build_index(reference[start:stop], use_gpu=False)
        if queries is None:
            own = np.arange(reference.shape[0])
            d, i = knn_search(index, reference, k, exclude_self=True, query_ids=own, reference_offset=start)
            assert not (i == own[:, None]).any(), "a query was returned as its own neighbour"
        else:
            d, i = knn_search(index, queries, k, reference_offset=start)
        assert ((i >= start) & (i < stop)).all(), "ids must be ids of the whole set, inside the shard"
        all_distances.append(d)
        all_ids.append(i)
    block = reference if queries is None else queries
    return merge_neighbours(all_distances, all_ids, k, queries=block, reference=reference)


@pytest.mark.parametrize("edges", [(0, 600), (0, 350, 600), (0, 120, 410, 600)], ids=["1", "2", "3"])
@pytest.mark.parametrize("kind", ["gaussian", "lattice", "integers", "twins"])
@pytest.mark.parametrize("leave_one_out", [True, False], ids=["loo", "queries"])
def test_shards_merged_match_sklearn_brute(kind: str, edges: tuple[int, ...], leave_one_out: bool) -> None:
    reference = _data(kind, 600, seed=1)
    queries = None if leave_one_out else _queries(kind, 250, seed=2)
    distances, ids = _sharded_search(reference, queries, K, edges)
    expected_distances, expected_ids, decidable = _brute(reference, queries, K)

    assert distances.dtype == np.float32 and ids.dtype == np.int64 and ids.shape == (len(decidable), K)
    # the sorted k smallest distances are unique even where the ids are not
    np.testing.assert_allclose(distances, expected_distances[:, :K], rtol=1e-5, atol=1e-5)
    assert (np.diff(distances, axis=1) >= 0).all()
    # exact ties at the k-th neighbour leave more than one correct set: those rows are skipped, and only those
    assert decidable.mean() >= 0.8, f"only {decidable.mean():.0%} of rows decidable; the data tie too often"
    if kind in ("gaussian", "twins"):
        assert decidable.all()
    _assert_same_sets(ids, expected_ids[:, :K], decidable)


def test_tie_data_really_tie() -> None:
    # the cases above only test the float64 re-check if float32 cannot order the boundaries they decide
    reference = _data("lattice", 600, seed=1)
    ref64 = reference.astype(np.float64)
    sq = ((ref64[:, None, :] - ref64[None, :, :]) ** 2).sum(axis=2)
    np.fill_diagonal(sq, np.inf)
    edge = np.sort(sq, axis=1)[:, K - 1 : K + 1]
    gap = (edge[:, 1] - edge[:, 0]) / edge[:, 1]
    assert ((gap > 0) & (gap < 1e-5)).sum() >= 20  # decidable in float64, not by float32 distances
    _, _, decidable = _brute(_data("integers", 600, seed=1), None, K)
    assert (~decidable).mean() >= 0.05  # exact ties, which the sharded test skips

    # twins split between shards: merging on the float32 distances alone gets sets wrong, the float64 re-check not
    reference, queries = _data("twins", 600, seed=1), _queries("twins", 250, seed=2)
    parts = [
        knn_search(build_index(reference[a:b], use_gpu=False), queries, K, reference_offset=a)
        for a, b in itertools.pairwise((0, 350, 600))
    ]
    _, float32_only = merge_neighbours([p[0] for p in parts], [p[1] for p in parts], K)
    _, expected_ids, _ = _brute(reference, queries, K)
    wrong = (np.sort(float32_only, axis=1) != np.sort(expected_ids[:, :K], axis=1)).any(axis=1)
    assert wrong.sum() >= 10


# ------------------------------------------------------------------------------ 2. merge_neighbours


def test_merge_docstring_example() -> None:
    shard_a = (np.array([[1.0, 4.0]]), np.array([[7, 9]]))
    shard_b = (np.array([[2.0, 3.0]]), np.array([[0, 5]]))
    d, i = merge_neighbours([shard_a[0], shard_b[0]], [shard_a[1], shard_b[1]], 3)
    assert i.tolist() == [[7, 0, 5]] and d.tolist() == [[1.0, 2.0, 3.0]]
    assert d.dtype == np.float32 and i.dtype == np.int64


def test_merge_padding_sorts_last() -> None:
    # a padding entry (-1) with the smallest distance must not be taken
    d, i = merge_neighbours(
        [np.array([[0.1, 1.0]]), np.array([[2.0, 3.0]])], [np.array([[-1, 3]]), np.array([[4, 5]])], 3
    )
    assert i.tolist() == [[3, 4, 5]]
    np.testing.assert_allclose(d, [[1.0, 2.0, 3.0]])


def test_merge_too_few_valid_candidates_raises() -> None:
    with pytest.raises(ValueError, match="k=3"):  # 4 candidates, only 2 real
        merge_neighbours(
            [np.array([[1.0, 0.5]]), np.array([[2.0, 0.5]])], [np.array([[3, -1]]), np.array([[4, -1]])], 3
        )
    with pytest.raises(ValueError, match="k=3"):  # 2 candidates in all
        merge_neighbours([np.array([[1.0]]), np.array([[2.0]])], [np.array([[3]]), np.array([[4]])], 3)


def test_merge_equal_distances_go_to_smaller_id() -> None:
    distances = [np.array([[1.0, 2.0], [1.0, 1.0]]), np.array([[1.0, 2.0], [1.0, 1.0]])]
    ids = [np.array([[9, 4], [8, 6]]), np.array([[2, 1], [7, 5]])]
    _, i = merge_neighbours(distances, ids, 3)
    assert i.tolist() == [[2, 9, 1], [5, 6, 7]]


def test_merge_rechecks_float32_ties_in_float64() -> None:
    # ids 1 and 2 are both at float32 distance 1.0 from the query; in float64 id 2 is nearer
    reference = np.array([[5.0], [1.0 + 1e-9], [1.0], [7.0]])
    query = np.array([[0.0]])
    distances = [np.array([[1.0, 5.0]], dtype=np.float32), np.array([[1.0, 7.0]], dtype=np.float32)]
    ids = [np.array([[1, 0]]), np.array([[2, 3]])]
    _, plain = merge_neighbours(distances, ids, 1)
    d, checked = merge_neighbours(distances, ids, 1, queries=query, reference=reference)
    expected = NearestNeighbors(n_neighbors=1, algorithm="brute").fit(reference).kneighbors(query)[1]
    assert plain.tolist() == [[1]]  # float32 tie: smaller id
    assert checked.tolist() == expected.tolist() == [[2]]
    assert d.tolist() == [[1.0]]


# ------------------------------------------------------------------- 3. two real processes (spawn)

SCENARIOS: dict[str, dict[str, Any]] = {
    # name: reference rows, val rows, dims, searched train rows, config
    "flat": {"n": 900, "n_val": 300, "d": 8, "train": 400, "config": ProbeConfig(K, use_gpu=False)},
    "small": {"n": 9, "n_val": 5, "d": 4, "train": 4, "config": ProbeConfig(4, use_gpu=False)},
    "ivf": {
        "n": 2000,
        "n_val": 200,
        "d": 8,
        "train": 500,
        "config": ProbeConfig(K, "ivf", (("nlist", 8), ("nprobe", 8)), use_gpu=False),
    },
}
SHARDS = {"flat": 2, "small": 1, "ivf": 2}  # reference shards two ranks make of each scenario
SMALL_BLOCK = 128


def _scenario_inputs(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic ``(reference, val, sorted train rows)`` of a scenario."""
    spec = SCENARIOS[name]
    rng = np.random.default_rng(len(name) * 101 + spec["n"])
    reference = rng.standard_normal((spec["n"], spec["d"])).astype(np.float32)
    val = rng.standard_normal((spec["n_val"], spec["d"])).astype(np.float32)
    train_rows = np.sort(rng.choice(spec["n"], size=spec["train"], replace=False)).astype(np.int64)
    return reference, val, train_rows


def _rank_main(rank: int, barrier: Any, root: str) -> None:
    """One of two spawned ranks: every scenario through ``neighbours_by_split``, each rank saving what it got."""
    neighbours.QUERY_BLOCK = SMALL_BLOCK  # several query blocks per split, in the search and in the merge
    ranks = Ranks(rank=rank, world=2, barrier=barrier.wait)
    for name, spec in SCENARIOS.items():
        base = Path(root) / name
        reference = np.load(base / "reference.npy", mmap_mode="r")
        val = np.load(base / "val.npy", mmap_mode="r")
        train_rows = np.load(base / "train_rows.npy")
        found = neighbours_by_split(
            reference,
            {"train": reference, "val": val},
            spec["config"],
            rows={"train": train_rows},
            ranks=ranks,
            directory=base / "search",
        )
        for split, answer in found.items():
            np.save(base / f"rank{rank}.{split}.ids.npy", np.asarray(answer.ids))
            np.save(base / f"rank{rank}.{split}.distances.npy", np.asarray(answer.distances))
            rows = answer.rows
            np.save(base / f"rank{rank}.{split}.rows.npy", np.array([-1]) if rows is None else rows)


def test_ranks_shards_shrink_for_small_sets() -> None:
    assert Ranks(world=2).shards(9, k=4) == [(0, 9)]  # 9 < 2 * (4 + 1): one shard
    assert Ranks(world=2).shards(10, k=4) == [(0, 5), (5, 10)]
    assert len(Ranks(world=3).shards(11, k=4)) == 2
    for world, k, n in itertools.product(range(1, 5), range(1, 5), range(1, 40)):
        shards = Ranks(world=world).shards(n, k=k)
        assert len(shards) == max(1, min(world, n // (k + 1)))
        assert shards[0][0] == 0 and shards[-1][1] == n
        assert all(a[1] == b[0] for a, b in itertools.pairwise(shards))
        assert len(shards) == 1 or all(stop - start >= k + 1 for start, stop in shards)


def test_two_spawned_ranks_match_one_process_and_sklearn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(neighbours, "QUERY_BLOCK", SMALL_BLOCK)
    for name, spec in SCENARIOS.items():
        assert len(Ranks(world=2).shards(spec["n"], k=spec["config"].k)) == SHARDS[name]
        base = tmp_path / name
        base.mkdir()
        reference, val, train_rows = _scenario_inputs(name)
        np.save(base / "reference.npy", reference)
        np.save(base / "val.npy", val)
        np.save(base / "train_rows.npy", train_rows)

    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2, timeout=120)
    processes = [ctx.Process(target=_rank_main, args=(rank, barrier, str(tmp_path))) for rank in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=240)
    alive = [p for p in processes if p.is_alive()]
    for process in alive:
        process.kill()
    assert not alive and [p.exitcode for p in processes] == [0, 0]

    for name, spec in SCENARIOS.items():
        base = tmp_path / name
        reference, val, train_rows = _scenario_inputs(name)
        config: ProbeConfig = spec["config"]
        single = neighbours_by_split(
            reference, {"train": reference, "val": val}, config, rows={"train": train_rows}, ranks=Ranks()
        )
        fitted = NearestNeighbors(n_neighbors=config.k, algorithm="brute").fit(reference.astype(np.float64))
        loo_distances, loo_ids = fitted.kneighbors(None)
        expected = {
            "train": (loo_distances[train_rows], loo_ids[train_rows]),
            "val": fitted.kneighbors(val.astype(np.float64)),
        }
        assert not (base / "search" / "rank0").exists() and not (base / "search" / "rank1").exists()
        for split in SPLITS:
            ids = [np.load(base / f"rank{r}.{split}.ids.npy") for r in range(2)]
            distances = [np.load(base / f"rank{r}.{split}.distances.npy") for r in range(2)]
            rows = np.load(base / f"rank0.{split}.rows.npy")
            np.testing.assert_array_equal(ids[0], ids[1])  # every rank sees rank 0's merged answer
            np.testing.assert_array_equal(rows, train_rows if split == "train" else [-1])
            want_distances, want_ids = expected[split]
            assert ids[0].shape == want_ids.shape
            if config.index == "flat":
                np.testing.assert_array_equal(ids[0], np.asarray(single[split].ids), err_msg=f"{name}/{split}")
                np.testing.assert_array_equal(ids[0], want_ids, err_msg=f"{name}/{split}")
            else:  # IVF: exhaustive (nprobe = nlist) but float32 distances; the sets are exact
                _assert_same_sets(ids[0], np.asarray(single[split].ids))
                _assert_same_sets(ids[0], want_ids)
            np.testing.assert_allclose(distances[0], want_distances, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------- 4. Found


def test_found_on_sampled_rows() -> None:
    reference = _data("gaussian", 400, seed=5)
    val = _data("gaussian", 60, seed=6)
    searched = np.array([3, 10, 11, 50, 200, 399])
    found = neighbours_by_split(
        reference, {"train": reference, "val": val}, ProbeConfig(K, use_gpu=False), rows={"train": searched}
    )
    train, everything = found["train"], found["val"]
    fitted = NearestNeighbors(n_neighbors=K, algorithm="brute").fit(reference.astype(np.float64))
    expected_ids = fitted.kneighbors(None)[1]

    np.testing.assert_array_equal(train.rows, searched)
    assert train.ids.shape == (len(searched), K) and train.k == K
    np.testing.assert_array_equal(train.ids, expected_ids[searched])
    np.testing.assert_array_equal(train.first(2).ids, expected_ids[searched, :2])

    subset = np.array([10, 200, 399])
    picked = train.at(subset)
    np.testing.assert_array_equal(picked.rows, subset)
    np.testing.assert_array_equal(picked.ids, expected_ids[subset])
    assert train.at(searched) is train
    assert train.at(np.array([], dtype=np.int64)).ids.shape == (0, K)
    with pytest.raises(ValueError, match="not searched"):
        train.at(np.array([3, 4]))
    with pytest.raises(ValueError, match="not searched"):
        train.at(np.array([400]))  # beyond the last searched row
    with pytest.raises(ValueError, match="sample"):
        train.at(None)

    assert train.covers(subset) and train.covers(searched)
    assert not train.covers(np.array([3, 4])) and not train.covers(None)

    distances, ids = train.padded(len(reference), 3)
    assert distances.shape == ids.shape == (len(reference), 3)
    unsearched = np.setdiff1d(np.arange(len(reference)), searched)
    assert np.isnan(distances[unsearched]).all() and (ids[unsearched] == -1).all()
    np.testing.assert_array_equal(ids[searched], expected_ids[searched, :3])
    assert not np.isnan(distances[searched]).any()

    # every row searched: nothing is missing
    assert everything.rows is None and everything.covers(None) and everything.covers(np.array([0, 59]))
    assert everything.at(None) is everything
    np.testing.assert_array_equal(everything.at(np.array([0, 59])).ids, everything.ids[[0, 59]])
    np.testing.assert_array_equal(everything.padded(len(val), 2)[1], everything.ids[:, :2])


# ------------------------------------------------------------------------------------------- 5. IVF


def test_exhaustive_ivf_equals_exact_search() -> None:
    reference = _data("gaussian", 2000, seed=7)
    val = _data("gaussian", 200, seed=8)
    queries = {"train": reference, "val": val}
    searched = np.sort(np.random.default_rng(0).choice(2000, 300, replace=False))
    rows: dict[str, np.ndarray | None] = {"train": searched}
    exhaustive = ProbeConfig(K, "ivf", (("nlist", 8), ("nprobe", 8)), use_gpu=False)
    ivf = neighbours_by_split(reference, queries, exhaustive, rows=rows)
    flat = neighbours_by_split(reference, queries, ProbeConfig(K, use_gpu=False), rows=rows)
    fitted = NearestNeighbors(n_neighbors=K, algorithm="brute").fit(reference.astype(np.float64))
    expected = {"train": fitted.kneighbors(None)[1][searched], "val": fitted.kneighbors(val.astype(np.float64))[1]}
    for split in SPLITS:
        _assert_same_sets(ivf[split].ids, expected[split])
        _assert_same_sets(flat[split].ids, expected[split])
    assert not (ivf["train"].ids == searched[:, None]).any()  # leave-one-out

    # the options reach the index: one list of eight misses some neighbours
    one_list = ProbeConfig(K, "ivf", (("nlist", 8), ("nprobe", 1)), use_gpu=False)
    approximate = neighbours_by_split(reference, {"val": val}, one_list)["val"].ids
    assert (np.sort(approximate, axis=1) != np.sort(expected["val"], axis=1)).any(axis=1).sum() > 0


def test_auto_index_resolves_by_reference_size() -> None:
    auto = ProbeConfig(K, "auto", (("nprobe", 4),))
    assert auto.resolved(APPROXIMATE_FROM - 1).index == "flat"
    assert auto.resolved(APPROXIMATE_FROM).index == "ivf"
    assert auto.resolved(APPROXIMATE_FROM).index_options == (("nprobe", 4),)
    assert auto.resolved(10).k == K
    assert ProbeConfig(K, "flat").resolved(10 * APPROXIMATE_FROM).index == "flat"
    assert ProbeConfig(K, "hnsw").resolved(10).index == "hnsw"


# ------------------------------------------------------------------------------------- 6. cost model


def test_flat_probe_seconds_is_the_formula() -> None:
    # EXACT_SCALE * 2 N Q d / (w R), flops counted by hand
    assert probe_seconds(1000, 200, 16, kind="flat", world=1, rate=1e9) == pytest.approx(EXACT_SCALE * 6_400_000 / 1e9)
    assert probe_seconds(50_000, 3000, 64, kind="flat", world=4, rate=2.5e10) == pytest.approx(
        EXACT_SCALE * 4_800_000_000 / 2.5e10
    )
    one = probe_seconds(123_456, 7890, 32, kind="flat", world=1, rate=3e10)
    assert probe_seconds(123_456, 7890, 32, kind="flat", world=2, rate=3e10) == pytest.approx(one / 2)
    assert probe_stage_seconds(1000, 200, [16, 16, 8], kind="flat", world=1, rate=1e9) == pytest.approx(
        EXACT_SCALE * (2 * 6_400_000 + 3_200_000) / 1e9
    )
    with pytest.raises(ValueError, match="hnsw"):
        probe_seconds(1000, 10, 8, kind="hnsw", world=1, rate=1e9)


def test_ivf_cost_is_cheaper_at_scale_and_lists_match_the_index() -> None:
    n, q, d, rate = 1_000_000, 100_000, 128, 1e11
    ivf = probe_seconds(n, q, d, kind="ivf", world=1, rate=rate)
    assert 0 < ivf < probe_seconds(n, q, d, kind="flat", world=1, rate=rate)
    assert probe_seconds(n, q, d, kind="ivf", world=2, rate=rate) < ivf
    for rows in (300, 5000):  # the cost model's list count is the default index's
        data = np.random.default_rng(rows).standard_normal((rows, 4)).astype(np.float32)
        index = build_index(data, kind="ivf", use_gpu=False)
        assert isinstance(index, faiss.IndexIVFFlat) and index.nlist == ivf_lists(rows)


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_reserved_storage_index_matches_a_plain_faiss_build(kind: str) -> None:
    # build_index reserves the storage (and reuses one IVF assignment pass); a plain faiss build adds the
    # same rows chunk by chunk: same lists, same neighbours
    data = np.random.default_rng(3).standard_normal((3000, 8)).astype(np.float32)
    built = build_index(data, kind=kind, use_gpu=False, nlist=12, nprobe=3, chunk_size=700)  # type: ignore[arg-type]
    if kind == "flat":
        plain: faiss.Index = faiss.IndexFlatL2(8)
        assert built.codes.size() == data.nbytes
    else:
        plain = faiss.IndexIVFFlat(faiss.IndexFlatL2(8), 8, 12)
        plain.quantizer.add(built.quantizer.reconstruct_n(0, 12))  # the same centroids
        plain.is_trained, plain.nprobe = True, 3
    for start in range(0, 3000, 700):
        plain.add(data[start : start + 700])
    assert built.ntotal == plain.ntotal == 3000
    if kind == "ivf":
        sizes = [faiss.downcast_InvertedLists(i.invlists).list_size(j) for i in (built, plain) for j in range(12)]
        assert sizes[:12] == sizes[12:] and sum(sizes[:12]) == 3000
    queries = np.random.default_rng(4).standard_normal((200, 8)).astype(np.float32)
    built_answer, plain_answer = built.search(queries, 10), plain.search(queries, 10)
    np.testing.assert_array_equal(built_answer[1], plain_answer[1])
    np.testing.assert_allclose(built_answer[0], plain_answer[0], rtol=1e-6)


def test_index_storage_never_moves_while_rows_are_added() -> None:
    # reserved up front, the storage is never reallocated (no old + new buffer at once); a plain chunked add
    # reallocates as it grows, which the same probe detects
    data = np.random.default_rng(5).standard_normal((3000, 8)).astype(np.float32)

    def flat_addresses(reserve: bool) -> set[int]:
        index, seen = faiss.IndexFlatL2(8), set()
        add = index.add

        def recording_add(rows: np.ndarray) -> None:
            add(rows)
            seen.add(int(index.codes.data()))

        index.add = recording_add
        if reserve:
            knn._add_rows(index, data, 100)
        else:
            for start in range(0, 3000, 100):
                index.add(data[start : start + 100])
        return seen

    assert len(flat_addresses(reserve=True)) == 1
    assert len(flat_addresses(reserve=False)) > 1

    index = faiss.IndexIVFFlat(faiss.IndexFlatL2(8), 8, 4)
    index.train(data)
    lists, seen = faiss.downcast_InvertedLists(index.invlists), set()
    add_core = index.add_core

    def recording_add_core(*args: Any) -> None:
        add_core(*args)
        seen.add(tuple(int(lists.get_codes(j)) for j in range(4)))

    index.add_core = recording_add_core
    knn._add_rows(index, data, 100)
    assert index.ntotal == 3000 and len(seen) == 1


@pytest.mark.parametrize(("kind", "world"), [("flat", 1), ("flat", 2), ("ivf", 1), ("ivf", 3)])
def test_affordable_queries_is_the_largest_that_fits(kind: str, world: int) -> None:
    n, fixed, dims, rate = 400, 30, (8, 32), 1e7

    def stage(queries: int) -> float:
        return probe_stage_seconds(n, queries, dims, kind=kind, world=world, rate=rate)

    for budget in (stage(fixed + 1) * 0.999, stage(fixed + 57), stage(fixed + 57) * 1.0001, stage(fixed + 300)):
        fits = [q for q in range(n + 1) if stage(fixed + q) <= budget]
        got = affordable_queries(n, fixed, dims, kind=kind, world=world, rate=rate, budget=budget)
        assert got == max(fits, default=0)
        assert stage(fixed + got) <= budget < stage(fixed + got + 1)
    assert affordable_queries(n, fixed, dims, kind=kind, world=world, rate=rate, budget=stage(fixed) / 2) == 0
    assert affordable_queries(n, fixed, dims, kind=kind, world=world, rate=rate, budget=stage(fixed + 10 * n)) == n


def test_ram_and_disk_formulas(tmp_path: Path) -> None:
    # half the float32 rows per rank, a 65,536-row float32 chunk being added, a block of queries and answers
    expected_ram = 4 * 128 * 500_000 + 4 * 128 * 65_536 + 65_536 * (4 * 128 + 12 * (10 + 8))
    assert probe_ram_bytes(1_000_000, 100_000, 128, world=2, k=10) == pytest.approx(expected_ram)
    small = 4 * 128 * 1_000 + 4 * 128 * 1_000 + 500 * (4 * 128 + 12 * (10 + 8))  # smaller than a chunk and a block
    assert probe_ram_bytes(1_000, 500, 128, world=1, k=10) == pytest.approx(small)
    # IVF: vectors, an int64 id and list number per row, 4 sqrt(N) = 4000 centroids
    ivf = 4 * 128 * 1_000_000 + 16 * 1_000_000 + 4 * 128 * 4000
    assert index_bytes(1_000_000, 128, kind="ivf") == pytest.approx(ivf)
    training = 4 * 128 * 40 * 4000  # k-means working memory: the float32 training sample
    assert probe_ram_bytes(1_000_000, 5_000, 128, world=1, k=10, kind="ivf") == pytest.approx(
        ivf + 4 * 128 * 65_536 + 5_000 * (4 * 128 + 12 * (10 + 8)) + training
    )
    with pytest.raises(ValueError, match="hnsw"):
        index_bytes(10, 4, kind="hnsw")
    assert probe_disk_bytes(1000, 10, world=1) == 12 * 1000 * 10
    assert probe_disk_bytes(1000, 10, world=3) == 12 * 1000 * 10 * 4

    # one process writes exactly its answers: float32 distances and int64 ids per query and neighbour
    reference, val = _data("gaussian", 300, seed=9), _data("gaussian", 70, seed=10)
    neighbours_by_split(
        reference, {"train": reference, "val": val}, ProbeConfig(K, use_gpu=False), directory=tmp_path / "found"
    )
    written = sum(np.load(path, mmap_mode="r").nbytes for path in (tmp_path / "found").glob("*.npy"))
    assert written == probe_disk_bytes(300 + 70, K, world=1)


def test_search_rate_is_positive() -> None:
    rate = search_rate(n_reference=256, n_queries=64, dims=16, repeats=1)
    assert math.isfinite(rate) and rate > 0


def test_sample_rows_sorted_unique_seeded() -> None:
    rows = sample_rows(1000, 100, seed=5)
    assert rows is not None and rows.dtype == np.int64 and len(rows) == 100
    assert (np.diff(rows) > 0).all() and rows[0] >= 0 and rows[-1] < 1000
    np.testing.assert_array_equal(rows, sample_rows(1000, 100, seed=5))
    other = sample_rows(1000, 100, seed=6)
    assert other is not None and not np.array_equal(rows, other)
    assert sample_rows(50, 50, seed=0) is None and sample_rows(50, 80, seed=0) is None


def test_agreement_rows_draws_searched_rows_in_proportion() -> None:
    train = sample_rows(3000, 1000, seed=1)
    assert train is not None
    searched = {"train": train, "val": np.arange(250, dtype=np.int64)}
    picks = agreement_rows(searched, 100, seed=3)
    assert list(picks) == ["train", "val"]
    assert len(picks["train"]) == 80 and len(picks["val"]) == 20  # 1000 : 250
    for split, rows in picks.items():
        assert np.isin(rows, searched[split]).all() and len(np.unique(rows)) == len(rows)
    again = agreement_rows(searched, 100, seed=3)
    assert all(np.array_equal(picks[s], again[s]) for s in picks)
    everything = agreement_rows(searched, 10_000, seed=3)
    assert all(np.array_equal(everything[s], searched[s]) for s in searched)
