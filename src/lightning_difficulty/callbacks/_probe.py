"""Checks of the k-NN callbacks made before or during training: ``k`` fits the reference set, inputs keep a shape."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import Tensor
from torch.utils.data import DataLoader

from lightning_difficulty.data import BatchKeys, unpack_batch

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


class InputShapeGuard:
    """Refuses, at the first batch that shows it, inputs whose per-sample shape changes between batches
    (variable-length sequences, images of several sizes): a k-NN search over inputs needs one vector length.

    With ``input_size`` (images average-pooled to one side length) only the leading (channel) dimensions must
    stay fixed. The shape is metadata: the check never synchronises the device.

    Example::

        >>> import torch
        >>> guard = InputShapeGuard("DataDifficulty", input_size=None)
        >>> guard.check((torch.zeros(2, 5), torch.zeros(2), torch.arange(2)), BatchKeys())
        >>> guard.check((torch.zeros(2, 7), torch.zeros(2), torch.arange(2)), BatchKeys())
        Traceback (most recent call last):
        ...
        ValueError: DataDifficulty: the inputs change shape between batches, (5,) then (7,) ...
    """

    def __init__(self, owner: str, *, input_size: int | None) -> None:
        self.owner = owner
        self.input_size = input_size
        self.shape: tuple[int, ...] | None = None

    def reset(self) -> None:
        self.shape = None

    def check(self, batch: Any, keys: BatchKeys) -> None:
        try:
            inputs = unpack_batch(batch, keys).input
        except (KeyError, IndexError, TypeError, ValueError):
            return  # the logits tap reports a batch it cannot unpack, with its own fix
        fix = (
            f"Give every sample one input shape (pad sequences to one length in the collate function; for images "
            f"of several sizes pass `input_size=`), or leave {self.owner} out."
        )
        if not isinstance(inputs, Tensor):
            raise ValueError(
                f"{self.owner}: the batch input is a {type(inputs).__name__}, not one tensor, so it cannot be "
                f"searched for neighbours. {fix}"
            )
        shape = tuple(inputs.shape[1:]) if self.input_size is None else tuple(inputs.shape[1:-2])
        if self.shape is None:
            self.shape = shape
        elif shape != self.shape:
            raise ValueError(
                f"{self.owner}: the inputs change shape between batches, {self.shape} then {shape} per sample, so "
                f"they have no common vector length for the k-NN search at fit end. {fix}"
            )
