"""Split names and the trainer's dataloader behind each: ``"train"``, ``"val"``, ``"val_1"``, ..."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch.utils.data import DataLoader

if TYPE_CHECKING:
    import lightning.pytorch as pl


def split_name(dataloader_idx: int) -> str:
    """``"val"`` for the first validation dataloader, ``"val_<i>"`` for the others.

    Example::

        >>> split_name(0), split_name(2)
        ('val', 'val_2')
    """
    return "val" if dataloader_idx == 0 else f"val_{dataloader_idx}"


def validation_loaders(trainer: pl.Trainer) -> list[DataLoader]:
    """The trainer's validation dataloaders as a list (a dict of loaders keeps its order)."""
    loaders: Any = trainer.val_dataloaders
    if loaders is None:
        return []
    if isinstance(loaders, dict):
        return list(loaders.values())
    return list(loaders) if isinstance(loaders, (list, tuple)) else [loaders]


def split_loader(trainer: pl.Trainer, split: str) -> Any:
    """The trainer's dataloader of ``split``, the inverse of :func:`split_name` (``None`` if absent)."""
    if split == "train":
        return trainer.train_dataloader
    loaders = validation_loaders(trainer)
    position = 0 if split == "val" else int(split.split("_")[1])
    return loaders[position] if position < len(loaders) else None


def split_loaders(trainer: pl.Trainer, reference: DataLoader | None = None) -> dict[str, DataLoader]:
    """``split -> dataloader`` for the training data (or ``reference``) and every validation loader."""
    loaders: dict[str, DataLoader] = {}
    train = reference if reference is not None else trainer.train_dataloader
    if train is not None:
        loaders["train"] = train
    for i, loader in enumerate(validation_loaders(trainer)):
        loaders[split_name(i)] = loader
    return loaders
