"""Module-level test helpers (``ddp_spawn`` pickles them, so they cannot live inside tests)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from lightning_difficulty import IndexedDataset


def blobs(n: int, *, num_classes: int = 4, dim: int = 6, seed: int = 0, spread: float = 1.5) -> TensorDataset:
    """Gaussian class blobs with overlapping tails, so some samples stay confusing."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % num_classes
    centres = rng.normal(0.0, spread, size=(num_classes, dim))
    x = centres[labels] + rng.normal(size=(n, dim))
    return TensorDataset(torch.tensor(x, dtype=torch.float32), torch.tensor(labels, dtype=torch.long))


class TinyMLP(L.LightningModule):
    """Linear-ReLU-Linear classifier with plain SGD (no batch statistics, so DDP matches one process).

    With ``keep_logits=True`` it stores every step's (epoch, index, logits) itself: an independent
    record to recompute confusion scores without the callback.
    """

    def __init__(self, dim: int = 6, num_classes: int = 4, lr: float = 0.2, keep_logits: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.hidden = nn.Linear(dim, 16)
        self.out = nn.Linear(16, num_classes)
        self.lr = lr
        self.keep_logits = keep_logits
        self.kept: dict[str, list[tuple[int, np.ndarray, np.ndarray]]] = {"train": [], "val": []}

    def forward(self, x: Tensor) -> Tensor:
        return self.out(torch.relu(self.hidden(x)))

    def _keep(self, split: str, batch: Any, logits: Tensor) -> None:
        if self.keep_logits and not self.trainer.sanity_checking:
            self.kept[split].append((self.current_epoch, batch[2].cpu().numpy(), logits.detach().cpu().numpy()))

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        logits = self(batch[0])
        self._keep("train", batch, logits)
        return F.cross_entropy(logits, batch[1])

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        logits = self(batch[0])
        self._keep("val", batch, logits)
        self.log("val_loss", F.cross_entropy(logits, batch[1]), sync_dist=True)

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class DictOutputModel(TinyMLP):
    """A module whose forward returns a dict: the callback cannot find logits without help."""

    def forward(self, x: Tensor) -> Any:  # type: ignore[override]
        return {"scores": super().forward(x)}

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return F.cross_entropy(self(batch[0])["scores"], batch[1])


class NaNModel(TinyMLP):
    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x) * float("nan")

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return super().forward(batch[0]).sum() * 0 + self(batch[0]).nan_to_num().sum() * 0


class UnindexedDataset(Dataset):
    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> Any:
        return self.base[i]


def loaders(
    n_train: int = 48, n_val: int = 21, *, batch_size: int = 8, shuffle: bool = False
) -> tuple[DataLoader, DataLoader]:
    train = IndexedDataset(blobs(n_train, seed=1))
    val = IndexedDataset(blobs(n_val, seed=2))
    return (
        DataLoader(train, batch_size=batch_size, shuffle=shuffle),
        DataLoader(val, batch_size=batch_size),
    )


def trainer_kwargs(tmp_path: Any, **overrides: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "default_root_dir": str(tmp_path),
        "accelerator": "cpu",
        "devices": 1,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "enable_checkpointing": False,
        "logger": False,
        "num_sanity_val_steps": 2,
    }
    kwargs.update(overrides)
    return kwargs


class StridedSampler(torch.utils.data.Sampler):
    """``DistributedSampler(shuffle=False)`` semantics, reading the rank lazily (usable with ddp_spawn)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def _rank_world(self) -> tuple[int, int]:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def __iter__(self) -> Any:
        rank, world = self._rank_world()
        total = -(-self.size // world) * world
        padded = list(range(self.size)) + list(range(total - self.size))
        return iter(padded[rank::world])

    def __len__(self) -> int:
        _, world = self._rank_world()
        return -(-self.size // world)


class MappedBlobs(Dataset):
    """Blobs as 1x2x3 "images" in mapping items with custom keys ``x`` / ``y`` / ``id``."""

    def __init__(self, n: int, seed: int = 0) -> None:
        self.base = blobs(n, seed=seed)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, Any]:
        x, y = self.base[i]
        return {"x": x.reshape(1, 2, 3), "y": y, "id": i}


class MappedMLP(TinyMLP):
    """TinyMLP reading mapping batches with keys ``x`` / ``y``."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.flatten(1))

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return F.cross_entropy(self(batch["x"]), batch["y"])

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", F.cross_entropy(self(batch["x"]), batch["y"]))


def load_example(path: Path, name: str) -> ModuleType:
    """Import a script under ``examples/`` as the module ``name`` (registered, so its dataclasses resolve)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
