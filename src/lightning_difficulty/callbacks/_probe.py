"""One k-NN probe: a reference embedding with true labels, queried by every split."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from torch.utils.data import DataLoader

from lightning_difficulty.functional.knn import build_index, knn_search

if TYPE_CHECKING:
    import lightning.pytorch as pl


@dataclass(frozen=True)
class ProbeConfig:
    """How neighbours are searched: ``index`` is ``"flat"`` (exact), ``"ivf"`` or ``"hnsw"``."""

    k: int
    index: str = "flat"
    index_options: tuple[tuple[str, Any], ...] = ()
    use_gpu: bool | str = "auto"


def neighbours_by_split(
    reference: np.ndarray, queries: dict[str, np.ndarray], config: ProbeConfig
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``split -> (distances (N, k), reference ids (N, k))``, nearest first; ``"train"`` queries are leave-one-out."""
    index = build_index(reference, kind=config.index, use_gpu=config.use_gpu, **dict(config.index_options))  # type: ignore[arg-type]
    return {
        split: knn_search(index, embedding, config.k, exclude_self=split == "train")
        for split, embedding in queries.items()
    }


def neighbour_labels_by_split(
    reference: np.ndarray,
    reference_labels: np.ndarray,
    queries: dict[str, np.ndarray],
    config: ProbeConfig,
) -> dict[str, np.ndarray]:
    """``split -> (N, k)`` labels of each sample's neighbours; ``"train"`` queries are leave-one-out."""
    found = neighbours_by_split(reference, queries, config)
    return {split: np.asarray(reference_labels)[ids] for split, (_, ids) in found.items()}


def check_k_fits_reference(trainer: pl.Trainer, k: int, reference: DataLoader | None, owner: str) -> None:
    """Refuse, before training, a ``k`` larger than the leave-one-out neighbours the reference set has."""
    loader = reference if reference is not None else trainer.train_dataloader
    dataset = getattr(loader, "dataset", None)
    if dataset is None or not hasattr(dataset, "__len__"):
        return
    available = len(dataset) - 1
    if k > available:
        raise ValueError(
            f"Invalid value for {owner}(k={k}): the reference set (training data) has {len(dataset)} samples, so "
            f"each has {available} leave-one-out neighbours. Expected argument `k` <= {available}."
        )
