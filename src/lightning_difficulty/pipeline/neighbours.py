"""Nearest-neighbour searches of the fit-end arrays: a reference embedding queried by every split."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from lightning_difficulty.functional.knn import build_index, knn_search


@dataclass(frozen=True)
class ProbeConfig:
    """How neighbours are searched: ``index`` is ``"flat"`` (exact), ``"ivf"`` or ``"hnsw"``."""

    k: int
    index: str = "flat"
    index_options: tuple[tuple[str, Any], ...] = ()
    use_gpu: bool | str = "auto"

    @property
    def index_key(self) -> tuple[Any, ...]:
        """What must agree for two searches of the same space to be one search (everything but ``k``)."""
        return (self.index, self.index_options, self.use_gpu)

    def widest(self, other: ProbeConfig) -> ProbeConfig:
        """The same search with the larger ``k`` of the two."""
        return replace(self, k=max(self.k, other.k))


def neighbours_by_split(
    reference: np.ndarray, queries: dict[str, np.ndarray], config: ProbeConfig
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``split -> (distances (N, k), reference ids (N, k))``, nearest first; ``"train"`` queries are leave-one-out."""
    index = build_index(reference, kind=config.index, use_gpu=config.use_gpu, **dict(config.index_options))  # type: ignore[arg-type]
    return {
        split: knn_search(index, embedding, config.k, exclude_self=split == "train")
        for split, embedding in queries.items()
    }
