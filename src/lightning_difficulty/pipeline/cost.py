"""The cost model of the fit-end probe stage: seconds, RAM and disk as formulas in the problem's sizes.

The symbols: ``N`` reference (training) rows, ``Q`` queries (validation rows plus the scored training rows),
``d`` dimensions of a probe's embedding, ``k`` neighbours, ``w`` ranks sharing the search and ``R`` the
exact-search rate of one rank (distance flop/s, measured by :func:`search_rate` on a small search). Exact
search costs ``2 N Q d`` flops per probe, at :data:`EXACT_SCALE` times the time ``R`` predicts. IVF with
``nlist = 4 sqrt(N)`` lists scans about ``N / 16`` candidates per query (the default
``nprobe = nlist / 16``) at a fraction :data:`IVF_SCAN_EFFICIENCY` of ``R`` (the scan is memory-bound), plus
k-means training on ``40 nlist`` rows and the assignment of every row. The cost-model checks (docs/results.md)
check these formulas against ``benchmarks/scale.py`` at three sizes.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Sequence

import numpy as np

from lightning_difficulty.functional.knn import ADD_CHUNK
from lightning_difficulty.pipeline.neighbours import QUERY_BLOCK

EXACT_SCALE = 1.18
"""Exact search time at the sizes of a probe over the time predicted from :func:`search_rate` (which times a
small exact search); calibrated by ``benchmarks/scale.py --parts model`` at 320k references x 25k queries (1.15
and 1.21 in two runs, 2026-12-01)."""
IVF_SCAN_EFFICIENCY = 0.11
"""Rate of the IVF list scan as a fraction of :func:`search_rate` (the scan is memory-bound); calibrated by
``benchmarks/scale.py --parts model`` at 320k references x 25k queries, where the scan dominates (0.107 and 0.112
in two runs, 2026-12-01)."""
KMEANS_ITERATIONS = 10
"""faiss's default k-means iterations when an IVF index is trained."""


@functools.cache  # a property of the machine: measured once per process, not at every fit end
def search_rate(*, n_reference: int = 32_768, n_queries: int = 2048, dims: int = 128, repeats: int = 3) -> float:
    """Distance flop/s (``2 N Q d`` per second) of exact faiss search with this process's threads, timed on a
    small search (about 0.5 s on 2 cores).

    Example::

        >>> search_rate(n_reference=512, n_queries=64, repeats=1) > 0
        True
    """
    import faiss

    rng = np.random.default_rng(0)
    index = faiss.IndexFlatL2(dims)
    index.add(rng.standard_normal((n_reference, dims), dtype=np.float32))
    queries = rng.standard_normal((n_queries, dims), dtype=np.float32)
    best = math.inf
    for _ in range(repeats + 1):  # the first run warms the BLAS threads up
        start = time.perf_counter()
        index.search(queries, 30)
        best = min(best, time.perf_counter() - start)
    return 2.0 * n_reference * n_queries * dims / max(best, 1e-9)


def ivf_lists(n_reference: int) -> int:
    """IVF lists of the default index (see :func:`~lightning_difficulty.functional.knn.build_index`)."""
    return max(1, min(round(4 * math.sqrt(n_reference)), n_reference // 40))


def probe_seconds(
    n_reference: int,
    n_queries: int,
    dims: int,
    *,
    kind: str,
    world: int,
    rate: float,
    exact_scale: float | None = None,
    scan_efficiency: float | None = None,
) -> float:
    """Predicted wall seconds of one probe's search (index build included) when ``world`` ranks share it.

    ``rate`` is :func:`search_rate` of one rank; ``exact_scale`` and ``scan_efficiency`` default to
    :data:`EXACT_SCALE` and :data:`IVF_SCAN_EFFICIENCY`.

    Example::

        >>> round(probe_seconds(1_000_000, 100_000, 128, kind="flat", world=1, rate=1e11))
        302
    """
    exact_scale = EXACT_SCALE if exact_scale is None else exact_scale
    scan_efficiency = IVF_SCAN_EFFICIENCY if scan_efficiency is None else scan_efficiency
    shard = n_reference / world
    if kind == "flat":
        return exact_scale * 2.0 * shard * n_queries * dims / rate
    if kind != "ivf":
        raise ValueError(f"The cost model covers kind='flat' and 'ivf', not {kind!r}.")
    lists = ivf_lists(int(shard))
    training = KMEANS_ITERATIONS * 2.0 * min(shard, 40 * lists) * lists * dims / rate
    assignment = 2.0 * (shard + n_queries) * lists * dims / rate
    scan = 2.0 * n_queries * (shard / 16) * dims / (scan_efficiency * rate)
    return training + assignment + scan


def probe_stage_seconds(
    n_reference: int, n_queries: int, dims: Sequence[int], *, kind: str, world: int, rate: float, **constants: float
) -> float:
    """Predicted wall seconds of every probe's search (the probes run one after another)."""
    return sum(probe_seconds(n_reference, n_queries, d, kind=kind, world=world, rate=rate, **constants) for d in dims)


def affordable_queries(
    n_reference: int, fixed_queries: int, dims: Sequence[int], *, kind: str, world: int, rate: float, budget: float
) -> int:
    """The most queries beyond ``fixed_queries`` the probe stage can search within ``budget`` seconds (>= 0)."""
    low, high = 0, n_reference
    while low < high:  # the stage time grows with the queries: bisect
        middle = (low + high + 1) // 2
        seconds = probe_stage_seconds(n_reference, fixed_queries + middle, dims, kind=kind, world=world, rate=rate)
        low, high = (middle, high) if seconds <= budget else (low, middle - 1)
    return low


def index_bytes(n_reference: float, dims: int, *, kind: str) -> float:
    """RAM of an index over ``n_reference`` rows as :func:`~lightning_difficulty.functional.knn.build_index`
    builds it (storage reserved up front, so this is also its peak while rows are added): ``4 d N`` float32
    vectors; IVF adds an int64 id and an int64 list number per row and ``4 d nlist`` of centroids.

    Example::

        >>> index_bytes(1000, 16, kind="flat")
        64000.0
    """
    vectors = 4.0 * dims * n_reference
    if kind == "flat":
        return vectors
    if kind != "ivf":
        raise ValueError(f"The cost model covers kind='flat' and 'ivf', not {kind!r}.")
    return vectors + 16.0 * n_reference + 4.0 * dims * ivf_lists(int(n_reference))


def probe_ram_bytes(n_reference: int, n_queries: int, dims: int, *, world: int, k: int, kind: str = "flat") -> float:
    """Peak RAM of one rank during a probe: its index shard (:func:`index_bytes`), one float32 chunk of the rows
    being added (:data:`ADD_CHUNK` rows), one block of queries (float32) with their answers and neighbour
    labels, and for IVF the k-means working memory, about the float32 training sample (``40 nlist`` rows),
    which the allocator keeps after training (measured on ``benchmarks/scale.py``)."""
    shard = n_reference / world
    block = min(n_queries, QUERY_BLOCK)
    chunk = 4.0 * dims * min(shard, ADD_CHUNK)
    training = 4.0 * dims * min(shard, 40 * ivf_lists(int(shard))) if kind == "ivf" else 0.0
    return index_bytes(shard, dims, kind=kind) + chunk + block * (4.0 * dims + 12.0 * (k + 8)) + training


def probe_disk_bytes(n_queries: int, k: int, *, world: int, padded_rows: int = 0, kept: int = 8) -> float:
    """Disk of one probe's answers: ``(Q, k)`` float32 distances and int64 ids, once per rank plus the merge,
    and, when only a sample of a split was searched, its ``kept`` nearest padded to all ``padded_rows`` rows
    (for the views)."""
    return 12.0 * n_queries * k * (world + 1 if world > 1 else 1) + 12.0 * kept * padded_rows
