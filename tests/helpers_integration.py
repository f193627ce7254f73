"""Module-level helpers for the callback/report/CLI integration tests (``ddp_spawn`` pickles them).

Everything here is an independent reference or a tiny fixture; nothing calls the package's maths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_difficulty import ConfusionScore, DifficultyReport, IndexedDataset
from tests.helpers import TinyMLP, blobs, trainer_kwargs


def image_blobs(n: int, *, num_classes: int = 4, side: int = 4, seed: int = 0) -> TensorDataset:
    """Class blobs shaped as one-channel ``side x side`` images with values in [0, 1]."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % num_classes
    centres = rng.uniform(0.2, 0.8, size=(num_classes, side * side))
    x = np.clip(centres[labels] + rng.normal(scale=0.25, size=(n, side * side)), 0.0, 1.0)
    images = torch.tensor(x.reshape(n, 1, side, side), dtype=torch.float32)
    return TensorDataset(images, torch.tensor(labels, dtype=torch.long))


class ImageMLP(TinyMLP):
    """TinyMLP on flattened ``(1, side, side)`` images; layers ``hidden`` and ``out`` as in TinyMLP."""

    def __init__(self, side: int = 4, lr: float = 0.2) -> None:
        super().__init__(dim=side * side, lr=lr)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(torch.relu(self.hidden(x.flatten(1))))


class ReversedMLP(TinyMLP):
    """TinyMLP whose ``out`` is registered before ``hidden``: definition order differs from forward order."""

    def __init__(self) -> None:
        super().__init__()
        hidden = self.hidden
        del self.hidden
        self.hidden = hidden


class WrappedMLP(TinyMLP):
    """The same network behind a single child ``net`` (an ``nn.Sequential``), like ``self.net = resnet18()``."""

    def __init__(self) -> None:
        super().__init__()
        net = nn.Sequential(self.hidden, nn.ReLU(), self.out)
        del self.hidden
        del self.out
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def indexed_loaders(train: TensorDataset, val: TensorDataset, *, batch_size: int = 16) -> tuple[DataLoader, DataLoader]:
    return (
        DataLoader(IndexedDataset(train), batch_size=batch_size),
        DataLoader(IndexedDataset(val), batch_size=batch_size),
    )


def fit(
    tmp_path: Path,
    model: L.LightningModule,
    callbacks: list[Any],
    train: TensorDataset,
    val: TensorDataset,
    *,
    epochs: int = 2,
    batch_size: int = 16,
    **overrides: Any,
) -> L.Trainer:
    """A small CPU fit (no logger unless overridden)."""
    torch.set_num_threads(1)
    train_loader, val_loader = indexed_loaders(train, val, batch_size=batch_size)
    trainer = L.Trainer(max_epochs=epochs, callbacks=callbacks, **trainer_kwargs(tmp_path, **overrides))
    trainer.fit(model, train_loader, val_loader)
    return trainer


def run_forward(model: nn.Module, x: Tensor, layers: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The model in eval mode on ``x``: ``(float64 logits, {layer: float64 flattened output})``.

    Uses plain ``register_forward_hook`` on the named modules, independent of the package's hooks.
    """
    modules = dict(model.named_modules())
    captured: dict[str, Tensor] = {}

    def keep(name: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Tensor) -> None:
            captured[name] = output.detach().reshape(output.shape[0], -1).clone()

        return hook

    handles = [modules[name].register_forward_hook(keep(name)) for name in layers]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return logits.double().numpy(), {name: value.double().numpy() for name, value in captured.items()}


def majority_vote(neighbour_labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Row-wise majority with ties to the smallest class, one ``np.bincount`` per row."""
    return np.array([int(np.argmax(np.bincount(row, minlength=num_classes))) for row in neighbour_labels])


def literal_prediction_depth(votes: np.ndarray, final: np.ndarray) -> np.ndarray:
    """PD(x) = min{l : vote_m(x) == final(x) for every m >= l}; L + 1 when the last probe disagrees."""
    num_probes, n = votes.shape
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        out[i] = num_probes  # L + 1, "never settles"
        for level in range(num_probes):
            if all(votes[m, i] == final[i] for m in range(level, num_probes)):
                out[i] = level
                break
    return out


def tiny_report_run(out_dir: Path, *, epochs: int, seed: int, n_train: int = 48, n_val: int = 24) -> Path:
    """A tiny run writing ``out_dir/scores.parquet`` and ``out_dir/records`` (ConfusionScore + report)."""
    torch.set_num_threads(1)
    # TinyMLP reseeds torch's global generator, so the shuffling gets its own, seeded by `seed`
    order = torch.Generator().manual_seed(seed)
    train = DataLoader(IndexedDataset(blobs(n_train, seed=1)), batch_size=8, shuffle=True, generator=order)
    val = DataLoader(IndexedDataset(blobs(n_val, seed=2)), batch_size=8)
    trainer = L.Trainer(
        max_epochs=epochs,
        callbacks=[ConfusionScore(), DifficultyReport(dirpath=out_dir, grid_per_class=0)],
        **trainer_kwargs(out_dir.parent),
    )
    trainer.fit(TinyMLP(lr=0.2), train, val)
    return out_dir


class LossModuleMLP(TinyMLP):
    """Uses a loss *module* in training_step: it runs in the step but not in forward."""

    def __init__(self) -> None:
        super().__init__()
        self.criterion = nn.CrossEntropyLoss()

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self.criterion(self(batch[0]), batch[1])


class SingleLeafModel(TinyMLP):
    """Its only child is one Linear layer."""

    def __init__(self) -> None:
        super().__init__()
        del self.hidden, self.out
        self.linear = nn.Linear(6, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x)


class ExtraClassMLP(TinyMLP):
    """Five outputs on four-class data, biased towards the class no sample has."""

    def __init__(self) -> None:
        super().__init__(num_classes=5, lr=0.0)
        with torch.no_grad():
            self.out.bias[4] = 100.0


def measure_summary(trainer: L.Trainer, callback: Any) -> dict[str, Any]:
    """The callback's entry in the report's ``summary.json`` (keyed by its ``state_key``)."""
    report = next(cb for cb in trainer.callbacks if isinstance(cb, DifficultyReport))  # type: ignore[attr-defined]
    return report.summary["measures"][callback.state_key]
