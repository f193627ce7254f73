"""One k-NN probe: a reference embedding with true labels, queried by every split."""

from __future__ import annotations

from dataclasses import dataclass
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


def neighbour_labels_by_split(
    reference: np.ndarray,
    reference_labels: np.ndarray,
    queries: dict[str, np.ndarray],
    config: ProbeConfig,
) -> dict[str, np.ndarray]:
    """``split -> (N, k)`` labels of each sample's neighbours; ``"train"`` queries are leave-one-out."""
    index = build_index(reference, kind=config.index, use_gpu=config.use_gpu, **dict(config.index_options))  # type: ignore[arg-type]
    out = {}
    for split, embedding in queries.items():
        _, ids = knn_search(index, embedding, config.k, exclude_self=split == "train")
        out[split] = np.asarray(reference_labels)[ids]
    return out
