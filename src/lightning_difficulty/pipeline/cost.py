"""The cost model of the fit-end probe stage: seconds, RAM and disk as formulas in the problem's sizes.

The symbols: ``N`` reference (training) rows, ``Q`` queries (validation rows plus the scored training rows),
``d`` dimensions of a probe's embedding, ``k`` neighbours, ``w`` ranks sharing the search and ``R`` the
float32 matrix-multiply rate of one rank (flop/s, measured by :func:`gemm_rate`). Exact search costs
``2 N Q d`` flops per probe, at :data:`EXACT_SLOWDOWN` times the GEMM time. IVF with ``nlist = 4 sqrt(N)``
lists scans about ``N / 16`` candidates per query (the default ``nprobe = nlist / 16``) at a fraction
:data:`IVF_SCAN_EFFICIENCY` of the GEMM rate (the scan is memory-bound), plus k-means training on
``40 nlist`` rows and the assignment of every row. The README's cost model table checks these formulas
against ``benchmarks/scale.py`` at three sizes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np

EXACT_SLOWDOWN = 1.29
"""Exact faiss search time over the time of the float32 GEMM of the same shapes (``benchmarks/probes.py``)."""
IVF_SCAN_EFFICIENCY = 0.116
"""Rate of the IVF list scan as a fraction of the GEMM rate: with 1/16 of the lists probed, IVF measured 2.4x
faster than exact search at 1M references (``benchmarks/probes.py``), so ``1 / (16 / 2.4 * 1.29)``."""
KMEANS_ITERATIONS = 10
"""faiss's default k-means iterations when an IVF index is trained."""
INDEX_OVERHEAD = 1.1
"""RAM of a faiss index over the raw float32 vectors it stores (ids and list bookkeeping)."""


def gemm_rate(*, rows: int = 1024, dims: int = 128, columns: int = 4096, repeats: int = 3) -> float:
    """Float32 matrix-multiply rate of this process (flop/s), on the shape of a probe's distance block.

    Example::

        >>> gemm_rate(rows=64, columns=256, repeats=1) > 0
        True
    """
    rng = np.random.default_rng(0)
    a = rng.standard_normal((rows, dims), dtype=np.float32)
    b = rng.standard_normal((dims, columns), dtype=np.float32)
    best = math.inf
    for _ in range(repeats + 1):  # the first run warms the BLAS threads up
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2.0 * rows * dims * columns / max(best, 1e-9)


def ivf_lists(n_reference: int) -> int:
    """IVF lists of the default index (see :func:`~lightning_difficulty.functional.knn.build_index`)."""
    return max(1, min(round(4 * math.sqrt(n_reference)), n_reference // 40))


def probe_seconds(n_reference: int, n_queries: int, dims: int, *, kind: str, world: int, rate: float) -> float:
    """Predicted wall seconds of one probe's search (index build included) when ``world`` ranks share it.

    Example::

        >>> round(probe_seconds(1_000_000, 100_000, 128, kind="flat", world=1, rate=1e11))
        330
    """
    shard = n_reference / world
    if kind == "flat":
        return EXACT_SLOWDOWN * 2.0 * shard * n_queries * dims / rate
    if kind != "ivf":
        raise ValueError(f"The cost model covers kind='flat' and 'ivf', not {kind!r}.")
    lists = ivf_lists(int(shard))
    training = KMEANS_ITERATIONS * 2.0 * min(shard, 40 * lists) * lists * dims / rate
    assignment = 2.0 * (shard + n_queries) * lists * dims / rate
    scan = 2.0 * n_queries * (shard / 16) * dims / (IVF_SCAN_EFFICIENCY * rate)
    return training + assignment + scan


def probe_stage_seconds(
    n_reference: int, n_queries: int, dims: Sequence[int], *, kind: str, world: int, rate: float
) -> float:
    """Predicted wall seconds of every probe's search (the probes run one after another)."""
    return sum(probe_seconds(n_reference, n_queries, d, kind=kind, world=world, rate=rate) for d in dims)


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


def probe_ram_bytes(n_reference: int, dims: int, *, world: int, query_block: int, k: int) -> float:
    """Peak RAM of one rank during a probe's search: its index shard, one block of queries and of answers."""
    return INDEX_OVERHEAD * 4.0 * dims * n_reference / world + query_block * (4.0 * dims + 12.0 * (k + 8))


def probe_disk_bytes(n_queries: int, k: int, *, world: int) -> float:
    """Disk of one probe's answers: ``(Q, k)`` float32 distances and int64 ids, once per rank plus the merge."""
    return 12.0 * n_queries * k * (world + 1 if world > 1 else 1)
