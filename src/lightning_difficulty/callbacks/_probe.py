"""The check that a k-NN callback's ``k`` fits its reference set, made before training."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch.utils.data import DataLoader

if TYPE_CHECKING:
    import lightning.pytorch as pl


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
