"""Nearest-neighbour searches of the fit-end arrays: a reference embedding queried by every split.

Under DDP the search is split by **reference shard**: rank ``r`` indexes the contiguous block ``r`` of the
reference rows, searches every query against it and writes its ``(queries, k)`` answer to a per-rank
memmap; rank 0 merges the answers chunk by chunk (:func:`~lightning_difficulty.functional.knn.merge_neighbours`).
Each rank then holds ``1 / world`` of the index and does ``1 / world`` of the distance work; only the
``k`` candidates per query and rank cross between processes (through the run folder, which
``DifficultyReport`` checks is shared at setup). Exact search gives the same neighbours as one process.

``index="auto"`` searches exactly below :data:`APPROXIMATE_FROM` reference rows and with an IVF index
(exact distances to every candidate it scans) from there on (``PredictionDepth`` keeps exact search above
it too when the cost model says it fits the budget). ``PredictionDepth`` measures the agreement of an
approximate answer with exact search on sampled queries.
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lightning_difficulty.functional.knn import (
    build_index,
    knn_search,
    knn_vote,
    merge_neighbours,
    neighbour_disagreement,
)
from lightning_difficulty.pipeline.progress import Progress, search_estimate

if TYPE_CHECKING:
    import lightning.pytorch as pl

APPROXIMATE_FROM = 1_000_000
"""Reference rows from which ``index="auto"`` uses IVF: at 1M references the default IVF settings kept 99.7 %
of prediction depths identical to exact search on the probe benchmark (97.5 % at 200k), at 2.4x its speed."""
QUERY_BLOCK = 65_536
"""Queries read from disk and searched per step."""


@dataclass(frozen=True)
class ProbeConfig:
    """How neighbours are searched: ``index`` is ``"auto"``, ``"flat"`` (exact), ``"ivf"`` or ``"hnsw"``."""

    k: int
    index: str = "flat"
    index_options: tuple[tuple[str, Any], ...] = ()
    use_gpu: bool | str = "auto"
    sampled_train: bool = False
    """Whether a sample of the training rows may be searched instead of all (only when every sharer allows it)."""

    @property
    def index_key(self) -> tuple[Any, ...]:
        """What must agree for two searches of the same space to be one search (everything but ``k``)."""
        return (self.index, self.index_options, self.use_gpu)

    def widest(self, other: ProbeConfig) -> ProbeConfig:
        """The same search with the larger ``k`` of the two, over every training row unless both allow a sample."""
        return replace(self, k=max(self.k, other.k), sampled_train=self.sampled_train and other.sampled_train)

    def resolved(self, n_reference: int) -> ProbeConfig:
        """``index="auto"`` made concrete for a reference set of ``n_reference`` rows."""
        if self.index != "auto":
            return self
        return replace(self, index="ivf" if n_reference >= APPROXIMATE_FROM else "flat")


def _no_wait() -> None:
    return None


def _as_is(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Ranks:
    """This process's place among the processes that share a search, and how they wait for each other.

    Example::

        >>> Ranks(rank=1, world=2).shards(10, k=3)
        [(0, 5), (5, 10)]
    """

    rank: int = 0
    world: int = 1
    barrier: Callable[[], None] = _no_wait
    broadcast: Callable[[Any], Any] = _as_is
    """Rank 0's value, on every rank."""
    gpu_device: int | None = None

    @classmethod
    def of(cls, trainer: pl.Trainer) -> Ranks:
        strategy = trainer.strategy
        device = strategy.root_device
        gpu = device.index if device.type == "cuda" else None
        return cls(trainer.global_rank, trainer.world_size, strategy.barrier, strategy.broadcast, gpu)

    def shards(self, n_reference: int, *, k: int) -> list[tuple[int, int]]:
        """Contiguous ``[start, stop)`` reference blocks, one per searching rank. Every block keeps at least
        ``k + 1`` rows (leave-one-out needs them), so small sets are searched by fewer ranks."""
        used = max(1, min(self.world, n_reference // (k + 1)))
        edges = [n_reference * r // used for r in range(used + 1)]
        return list(itertools.pairwise(edges))


@dataclass(frozen=True)
class Found:
    """The ``k`` nearest reference rows of the searched queries of one split, nearest first.

    ``rows`` are the split's rows that were searched (``None``: all, in order); ``distances`` and ``ids``
    have one row per searched query and may be memmaps.
    """

    distances: np.ndarray
    ids: np.ndarray
    rows: np.ndarray | None = None

    @property
    def k(self) -> int:
        return int(self.ids.shape[1])

    def first(self, k: int) -> Found:
        """The ``k`` nearest only."""
        return Found(self.distances[:, :k], self.ids[:, :k], self.rows)

    def at(self, rows: np.ndarray | None) -> Found:
        """The answer for the split rows ``rows`` (``None``: all), which must all have been searched."""
        if rows is None or self.rows is None:
            if rows is not None:
                return Found(np.asarray(self.distances[rows]), np.asarray(self.ids[rows]), rows)
            if self.rows is not None:
                raise ValueError("Every row was asked for, but only a sample of the rows was searched.")
            return self
        if np.array_equal(rows, self.rows):
            return self
        position = np.minimum(np.searchsorted(self.rows, rows), len(self.rows) - 1)
        if not np.array_equal(self.rows[position], rows):
            raise ValueError("Some of the asked rows were not searched.")
        return Found(np.asarray(self.distances[position]), np.asarray(self.ids[position]), rows)

    def covers(self, rows: np.ndarray | None) -> bool:
        if self.rows is None:
            return True
        return rows is not None and bool(np.isin(rows, self.rows).all())

    def vote_and_disagreement(
        self, reference_labels: np.ndarray, classes: np.ndarray, num_classes: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per searched query: the majority vote of its neighbours' labels (ties to the smallest class) and
        :meth:`disagreement`, from one read of the neighbour labels."""
        votes = np.empty(len(self.ids), dtype=np.int64)
        disagreement = np.empty(len(self.ids), dtype=np.float64)
        for rows, labels in self._label_blocks(reference_labels):
            votes[rows] = knn_vote(labels, num_classes=num_classes)
            disagreement[rows] = neighbour_disagreement(labels, classes[rows])
        return votes, disagreement

    def disagreement(self, reference_labels: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """Per searched query, the share of its neighbours whose label differs from its ``classes`` entry (kDN
        with true labels, layer-wise kDN with predictions)."""
        out = np.empty(len(self.ids), dtype=np.float64)
        for rows, labels in self._label_blocks(reference_labels):
            out[rows] = neighbour_disagreement(labels, classes[rows])
        return out

    def _label_blocks(self, reference_labels: np.ndarray) -> Iterator[tuple[slice, np.ndarray]]:
        """``(rows, neighbour labels)`` ``QUERY_BLOCK`` queries at a time (the ids may be a large memmap)."""
        for start in range(0, len(self.ids), QUERY_BLOCK):
            rows = slice(start, min(start + QUERY_BLOCK, len(self.ids)))
            yield rows, reference_labels[np.asarray(self.ids[rows])]

    def padded(self, n_rows: int, k: int, directory: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(distances, ids)`` of the first ``k`` (at most) neighbours of every split row: NaN and ``-1`` where not
        searched. With ``directory`` the padded arrays are memmaps there (they are O(N k): keep them off RAM)."""
        if self.rows is None:
            return self.distances[:, :k], self.ids[:, :k]
        width = min(k, self.k)
        if directory is None:
            distances = np.full((n_rows, width), np.nan, dtype=np.float32)
            ids = np.full((n_rows, width), -1, dtype=np.int64)
        else:
            directory.mkdir(parents=True, exist_ok=True)
            distances, ids = _allocate(directory, "padded", n_rows, width)
            distances[:], ids[:] = np.nan, -1
        distances[self.rows] = self.distances[:, :width]
        ids[self.rows] = self.ids[:, :width]
        return distances, ids


def neighbours_by_split(
    reference: np.ndarray,
    queries: dict[str, np.ndarray],
    config: ProbeConfig,
    *,
    rows: dict[str, np.ndarray | None] | None = None,
    ranks: Ranks | None = None,
    directory: Path | None = None,
    leave_one_out: str = "train",
    progress: Progress | None = None,
    name: str = "neighbours",
) -> dict[str, Found]:
    """``split -> Found`` for the ``config.k`` nearest reference rows of each split's queries.

    Collective when ``ranks.world > 1``: every rank must call it with the same arguments, and ``directory``
    (a folder all ranks see) receives the per-rank answers. Queries of the split ``leave_one_out`` are
    reference rows themselves and never count as their own neighbour.

    Args:
        reference: ``(N, d)`` reference embedding (may be a float16 memmap).
        queries: ``split -> (N_s, d)`` query embeddings.
        config: the search (``k``, index and its options).
        rows: ``split -> sorted rows to search`` (``None`` or absent: every row).
        ranks: this process among the searching processes (default: alone).
        directory: where answers are written as memmaps (default: kept in memory; required for ``world > 1``).
        leave_one_out: the split whose rows are the reference rows.
        progress: where the search shows its bar (default: none), named ``name``, with the cost model's estimate.

    Example::

        >>> ref = np.array([[0.0], [1.0], [3.0]], dtype=np.float32)
        >>> neighbours_by_split(ref, {"train": ref}, ProbeConfig(1))["train"].ids[:, 0].tolist()
        [1, 0, 1]
    """
    ranks = ranks or Ranks()
    rows = rows or {}
    if ranks.world > 1 and directory is None:
        raise ValueError("A search split across ranks needs a `directory` that every rank can read.")
    config = config.resolved(reference.shape[0])
    shards = ranks.shards(reference.shape[0], k=config.k)
    if directory is not None and ranks.rank == 0:
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
    ranks.barrier()
    if ranks.rank < len(shards):
        start, stop = shards[ranks.rank]
        target = directory if len(shards) == 1 else (directory / f"rank{ranks.rank}" if directory else None)
        bar = _search_bar(progress or Progress(False), name, reference, queries, rows, config, len(shards))
        with bar:
            answers = _search_shard(reference, start, stop, queries, rows, config, ranks, target, leave_one_out, bar)
    ranks.barrier()
    if len(shards) > 1 and ranks.rank == 0:
        assert directory is not None
        answers = _merge_rank_answers(directory, len(shards), reference, queries, rows, config)
    ranks.barrier()
    if directory is not None:
        answers = {split: _open(directory, split) for split in queries}
    return {split: Found(d, i, rows.get(split)) for split, (d, i) in answers.items()}


def _search_shard(
    reference: np.ndarray,
    start: int,
    stop: int,
    queries: dict[str, np.ndarray],
    rows: dict[str, np.ndarray | None],
    config: ProbeConfig,
    ranks: Ranks,
    directory: Path | None,
    leave_one_out: str,
    bar: Any,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    options = dict(config.index_options)
    bar.set_postfix_str("building the index")
    index = build_index(
        reference[start:stop],
        kind=config.index,  # type: ignore[arg-type]
        use_gpu=config.use_gpu,  # type: ignore[arg-type]
        gpu_device=ranks.gpu_device,
        **options,
    )
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
    bar.set_postfix_str("")
    out = {}
    for split, embedding in queries.items():
        wanted = rows.get(split)
        count = embedding.shape[0] if wanted is None else len(wanted)
        distances, ids = _allocate(directory, split, count, config.k)
        for first in range(0, count, QUERY_BLOCK):
            ids_here = (
                np.arange(first, min(first + QUERY_BLOCK, count))
                if wanted is None
                else wanted[first : first + QUERY_BLOCK]
            )
            block = embedding[first : first + len(ids_here)] if wanted is None else embedding[ids_here]
            own = split == leave_one_out
            d, i = knn_search(
                index, block, config.k, exclude_self=own, query_ids=ids_here if own else None, reference_offset=start
            )
            distances[first : first + len(ids_here)], ids[first : first + len(ids_here)] = d, i
            bar.update(len(ids_here))
        out[split] = (distances, ids)
    if directory is not None:
        for d, i in out.values():
            d.flush()  # type: ignore[attr-defined]
            i.flush()  # type: ignore[attr-defined]
    return out


def _search_bar(
    progress: Progress,
    name: str,
    reference: np.ndarray,
    queries: dict[str, np.ndarray],
    rows: dict[str, np.ndarray | None],
    config: ProbeConfig,
    world: int,
) -> Any:
    """This rank's bar over the queries of every split, with the cost model's estimate of the whole search."""
    count = sum(q.shape[0] if (r := rows.get(s)) is None else len(r) for s, q in queries.items())
    n_reference, dims = reference.shape[0], int(np.prod(reference.shape[1:]))
    estimate = search_estimate(
        progress, n_reference, count, dims, index=config.index, world=world, use_gpu=config.use_gpu
    )
    return progress.bar(f"k-NN search [{name}]", total=count, estimate=estimate)


def _merge_rank_answers(
    directory: Path,
    n_ranks: int,
    reference: np.ndarray,
    queries: dict[str, np.ndarray],
    rows: dict[str, np.ndarray | None],
    config: ProbeConfig,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Rank 0: the ``k`` nearest over every rank's answer, ``QUERY_BLOCK`` queries at a time (bounded memory)."""
    exact = config.index == "flat"
    out = {}
    for split, embedding in queries.items():
        parts = [_open(directory / f"rank{r}", split) for r in range(n_ranks)]
        count = parts[0][0].shape[0]
        wanted = rows.get(split)
        distances, ids = _allocate(directory, split, count, config.k)
        for first in range(0, count, QUERY_BLOCK):
            last = min(first + QUERY_BLOCK, count)
            block = None
            if exact:
                block = embedding[first:last] if wanted is None else embedding[wanted[first:last]]
            d, i = merge_neighbours(
                [p[0][first:last] for p in parts],
                [p[1][first:last] for p in parts],
                config.k,
                queries=block,
                reference=reference if exact else None,
            )
            distances[first:last], ids[first:last] = d, i
        distances.flush()  # type: ignore[attr-defined]
        ids.flush()  # type: ignore[attr-defined]
        out[split] = (distances, ids)
        del parts
    for r in range(n_ranks):
        shutil.rmtree(directory / f"rank{r}")
    return out


def _allocate(directory: Path | None, split: str, count: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    if directory is None:
        return np.empty((count, k), dtype=np.float32), np.empty((count, k), dtype=np.int64)
    open_memmap = np.lib.format.open_memmap
    return (
        open_memmap(directory / f"{split}.distances.npy", mode="w+", dtype=np.float32, shape=(count, k)),
        open_memmap(directory / f"{split}.ids.npy", mode="w+", dtype=np.int64, shape=(count, k)),
    )


def _open(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.load(directory / f"{split}.distances.npy", mmap_mode="r"),
        np.load(directory / f"{split}.ids.npy", mmap_mode="r"),
    )


def sample_rows(n_rows: int, count: int, seed: int) -> np.ndarray | None:
    """``count`` sorted rows of ``n_rows`` drawn without replacement (``None`` when ``count >= n_rows``: all).

    Example::

        >>> sample_rows(10, 3, seed=0).tolist(), sample_rows(10, 10, seed=0)
        ([5, 6, 9], None)
    """
    if count >= n_rows:
        return None
    return np.sort(np.random.default_rng(seed).choice(n_rows, size=count, replace=False)).astype(np.int64)


def agreement_rows(searched: dict[str, np.ndarray], count: int, seed: int) -> dict[str, np.ndarray]:
    """A seeded sample of about ``count`` of the ``searched`` split rows, spread over the splits by their size.

    Example::

        >>> picks = agreement_rows({"train": np.arange(0, 100, 2), "val": np.arange(50)}, 10, seed=0)
        >>> [len(v) for v in picks.values()], bool(np.isin(picks["train"], np.arange(0, 100, 2)).all())
        ([5, 5], True)
    """
    total = max(sum(len(rows) for rows in searched.values()), 1)
    out = {}
    for i, (split, rows) in enumerate(searched.items()):
        picks = sample_rows(len(rows), max(1, round(count * len(rows) / total)), seed + i)
        out[split] = rows if picks is None else rows[picks]
    return out
