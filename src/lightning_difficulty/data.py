"""Per-sample identity: datasets that yield their own index, and batch unpacking.

Every statistic in this package is keyed by dataset index, so shuffling, ``drop_last``,
``DistributedSampler`` padding and resuming never mix samples up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset


class IndexedDataset(Dataset):
    """Wrap a map-style dataset so each item is ``(input, target, index)``.

    Args:
        dataset: any map-style dataset whose items are ``(input, target, ...)`` sequences
            or mappings with ``"input"`` and ``"target"`` keys.

    Example::

        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> ds = IndexedDataset(TensorDataset(torch.zeros(3, 2), torch.tensor([0, 1, 1])))
        >>> ds[2][2]
        2
    """

    def __init__(self, dataset: Dataset) -> None:
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise TypeError(
                f"Expected argument `dataset` to be a map-style dataset with __getitem__ and __len__, "
                f"but got {type(dataset).__name__}. Iterable datasets have no stable index: "
                "yield the index yourself and name it with `BatchKeys(index=...)`."
            )
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, Any, int]:
        item = self.dataset[index]
        if isinstance(item, Mapping):
            return item["input"], item["target"], int(index)
        return item[0], item[1], int(index)

    @property
    def targets(self) -> np.ndarray:
        """All targets as an int64 array (read from the wrapped dataset when it exposes them)."""
        for name in ("targets", "labels", "y"):
            values = getattr(self.dataset, name, None)
            if values is not None:
                return np.asarray(values, dtype=np.int64)
        tensors = getattr(self.dataset, "tensors", None)
        if tensors is not None and len(tensors) > 1:
            return np.asarray(tensors[1], dtype=np.int64)
        return np.asarray([int(self.dataset[i][1]) for i in range(len(self))], dtype=np.int64)


@dataclass(frozen=True)
class BatchKeys:
    """Where input, target and dataset index sit in a batch.

    Tuple/list batches use the positions, mapping batches the keys.

    Example::

        >>> keys = BatchKeys(index="idx")
        >>> keys.index
        'idx'
    """

    input: str = "input"
    target: str = "target"
    index: str = "index"
    input_position: int = 0
    target_position: int = 1
    index_position: int = 2


@dataclass
class Batch:
    """A batch split into its parts; ``index`` is an int64 tensor of dataset indices."""

    input: Any
    target: Tensor
    index: Tensor


class MissingIndexError(ValueError):
    """Raised when a batch carries no dataset index."""


_HOW_TO_FIX = (
    "Wrap the dataset with `lightning_difficulty.IndexedDataset(dataset)` so batches are "
    "(input, target, index), or pass `batch_keys=BatchKeys(index=...)` naming where the index is."
)


def item_input(item: Any, keys: BatchKeys = BatchKeys()) -> Any:
    """The input part of one dataset item (a mapping or a sequence), located like :func:`unpack_batch`.

    Example::

        >>> item_input({"x": 1, "y": 0}, BatchKeys(input="x"))
        1
    """
    return item[keys.input] if isinstance(item, Mapping) else item[keys.input_position]


def unpack_batch(batch: Any, keys: BatchKeys = BatchKeys()) -> Batch:
    """Split a batch into input, target and dataset index.

    Raises:
        MissingIndexError: when the batch has no index, with the fix in the message.

    Example::

        >>> import torch
        >>> b = unpack_batch((torch.zeros(2, 3), torch.tensor([1, 0]), torch.tensor([7, 4])))
        >>> b.index.tolist()
        [7, 4]
    """
    if isinstance(batch, Mapping):
        missing = [k for k in (keys.input, keys.target, keys.index) if k not in batch]
        if missing:
            raise MissingIndexError(
                f"The batch is a mapping with keys {sorted(map(str, batch))} but lacks {missing}. {_HOW_TO_FIX}"
            )
        parts = (batch[keys.input], batch[keys.target], batch[keys.index])
    elif isinstance(batch, Sequence) and not isinstance(batch, (str, bytes, Tensor)):
        needed = max(keys.input_position, keys.target_position, keys.index_position) + 1
        if len(batch) < needed:
            raise MissingIndexError(
                f"The batch is a sequence of {len(batch)} items, but the dataset index is expected at "
                f"position {keys.index_position}. {_HOW_TO_FIX}"
            )
        parts = (batch[keys.input_position], batch[keys.target_position], batch[keys.index_position])
    else:
        raise MissingIndexError(f"Cannot find a dataset index in a batch of type {type(batch).__name__}. {_HOW_TO_FIX}")
    index = torch.as_tensor(parts[2])
    target = torch.as_tensor(parts[1])
    if index.dtype.is_floating_point or index.ndim != 1:
        raise MissingIndexError(
            f"The batch's index part must be a 1-D integer tensor, but got dtype={index.dtype}, "
            f"shape={tuple(index.shape)}. {_HOW_TO_FIX}"
        )
    return Batch(input=parts[0], target=target, index=index.long())


def class_targets(target: Tensor, *, where: str) -> Tensor:
    """Class ids ``(B,)`` int64 from a batch's targets; ``-1`` marks samples without a label.

    Integer labels of any dtype are accepted; negative ones (``ignore_index``, e.g. -100) become -1. One-hot
    rows ``(B, C)`` become their class. Soft labels (mixup, label smoothing applied in the data) have no single
    class and are refused, with the fix in the message.

    Example::

        >>> class_targets(torch.tensor([3, -100], dtype=torch.int16), where="batch").tolist()
        [3, -1]
        >>> class_targets(torch.tensor([[0.0, 1.0], [1.0, 0.0]]), where="batch").tolist()
        [1, 0]
    """
    if target.ndim == 2 and target.is_floating_point():
        one_hot = bool(((target == 0) | (target == 1)).all()) and bool((target.sum(dim=1) == 1).all())
        if not one_hot:
            raise ValueError(
                f"The {where} has soft targets of shape {tuple(target.shape)} (rows that are not one-hot, e.g. "
                "mixup). Per-sample scores need one class per sample: keep the original hard label in the batch "
                "and name it with `BatchKeys(target=...)`."
            )
        return target.argmax(dim=1)
    if target.ndim == 2 and target.shape[1] == 1:
        target = target[:, 0]
    if target.ndim != 1:
        raise ValueError(
            f"The {where} has targets of shape {tuple(target.shape)}; expected one class id per sample (B,) or "
            "one-hot rows (B, C). Name the class-id entry of the batch with `BatchKeys(target=...)`."
        )
    if target.is_floating_point() and not bool((target == target.round()).all()):
        raise ValueError(
            f"The {where} has non-integer float targets {target[:4].tolist()}...: expected class ids. "
            "Name the class-id entry of the batch with `BatchKeys(target=...)`."
        )
    if target.dtype == torch.bool:
        target = target.long()
    target = target.long()
    return torch.where(target < 0, torch.full_like(target, -1), target)
