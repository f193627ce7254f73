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
