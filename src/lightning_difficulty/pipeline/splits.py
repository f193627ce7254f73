"""Split names and the trainer's dataloader behind each: ``"train"``, ``"val"``, ``"val_1"``, ..."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
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


def check_split_name(split: Any, argument: str = "split") -> str:
    """``split`` if it names a split (``"train"``, ``"val"``, ``"val_<i>"``); else a ``ValueError`` with the choices.

    Example::

        >>> check_split_name("val_1")
        'val_1'
    """
    if not isinstance(split, str) or not re.fullmatch(r"train|val|val_[1-9][0-9]*", split):
        raise ValueError(
            f"Invalid value for {argument}={split!r}. Splits are 'train' (the training dataloader), 'val' (the first "
            "validation dataloader) and 'val_1', 'val_2', ... (the others); a test set goes in as a validation "
            "dataloader."
        )
    return split


def dataset_labels(dataset: Any) -> np.ndarray | None:
    """The labels of a dataset when they can be read without loading samples (``targets``, a
    ``TensorDataset``'s second tensor, through wrappers with ``.dataset``); ``None`` otherwise.

    Example::

        >>> dataset_labels(torch.utils.data.TensorDataset(torch.zeros(3, 2), torch.tensor([2, 0, 1]))).tolist()
        [2, 0, 1]
    """
    for _ in range(4):
        tensors = getattr(dataset, "tensors", None)
        targets = getattr(dataset, "targets", tensors[1] if isinstance(tensors, tuple) and len(tensors) > 1 else None)
        if targets is not None:
            try:
                labels = np.asarray(targets.cpu() if isinstance(targets, torch.Tensor) else targets)
            except (TypeError, ValueError):
                return None
            return labels if labels.ndim == 1 and labels.dtype.kind in "iu" else None
        dataset = getattr(dataset, "dataset", None)
        if dataset is None:
            return None
    return None


def fit_has_validation(trainer: pl.Trainer) -> bool:
    """Whether this fit runs validation: a loader was given (loaded yet or not) and not limited to zero batches."""
    if not trainer.limit_val_batches:
        return False
    source = getattr(getattr(trainer.fit_loop.epoch_loop, "val_loop", None), "_data_source", None)
    defined = getattr(source, "is_defined", None)
    return bool(defined()) if callable(defined) else True


def validation_split_names(trainer: pl.Trainer) -> list[str]:
    """``["val", "val_1", ...]`` for the fit's validation loaders, also before Lightning has loaded them (from
    the loaders given to ``fit``); ``["val"]`` when only a method will make them; ``[]`` without validation."""
    if not fit_has_validation(trainer):
        return []
    loaded = validation_loaders(trainer)
    if loaded:
        return [split_name(i) for i in range(len(loaded))]
    given = getattr(getattr(trainer.fit_loop.epoch_loop.val_loop, "_data_source", None), "instance", None)
    count = len(given) if isinstance(given, (list, tuple, dict)) else 1
    return [split_name(i) for i in range(max(count, 1))]


def split_loader(trainer: pl.Trainer, split: str) -> Any:
    """The trainer's dataloader of ``split``, the inverse of :func:`split_name` (``None`` if absent)."""
    check_split_name(split)
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
