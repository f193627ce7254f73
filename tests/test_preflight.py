"""Refusals before (or at the first batch of) training: an output folder that cannot be written, inputs that
change shape for a k-NN measure, a training set that changes size between epochs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from lightning_difficulty import ConfusionScore, DataDifficulty, DifficultyReport, IndexedDataset, PredictionDepth
from tests.helpers import TinyMLP, blobs, loaders, trainer_kwargs


class CountingMLP(TinyMLP):
    steps = 0

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        self.steps += 1
        return super().training_step(batch, batch_idx)


def test_an_output_folder_that_cannot_be_created_is_refused_before_training(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    train, val = loaders()
    model = CountingMLP()
    trainer = L.Trainer(
        max_epochs=1, callbacks=[ConfusionScore(), DifficultyReport(blocker / "out")], **trainer_kwargs(tmp_path)
    )
    with pytest.raises(
        PermissionError, match=r"(ConfusionScore|DifficultyReport): cannot write into the output folder .*a_file/out"
    ):
        trainer.fit(model, train, val)
    assert model.steps == 0


class RaggedSequences(Dataset):
    """Sequences of 5 or 9 features (the length changes with the sample), labels from a fixed rule."""

    def __len__(self) -> int:
        return 32

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        length = 5 if i < 16 else 9
        return torch.full((length,), float(i % 4)), torch.tensor(i % 4)


class MeanPoolMLP(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(1, 8)
        self.out = nn.Linear(8, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(torch.relu(self.hidden(x.mean(dim=1, keepdim=True))))

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return F.cross_entropy(self(batch[0]), batch[1])

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("measure", [DataDifficulty(k=3), PredictionDepth(layers=["hidden"], k=3)])
def test_inputs_that_change_shape_are_refused_at_the_batch_that_shows_it(tmp_path: Path, measure: Any) -> None:
    model = MeanPoolMLP()
    train = DataLoader(IndexedDataset(RaggedSequences()), batch_size=8)  # batches 0-1 length 5, 2-3 length 9
    trainer = L.Trainer(max_epochs=2, callbacks=[measure, DifficultyReport(tmp_path / "o")], **trainer_kwargs(tmp_path))
    with pytest.raises(ValueError, match=r"inputs change shape between batches, \(5,\) then \(9,\).*pad sequences"):
        trainer.fit(model, train)
    assert trainer.global_step == 2  # stopped at the third batch, not at fit end


class GrowingDataset(Dataset):
    def __init__(self) -> None:
        self.base = blobs(24, seed=1)
        self.size = 16

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> Any:
        return self.base[i]


class GrowAfterEpoch(L.Callback):
    def __init__(self, dataset: GrowingDataset) -> None:
        self.dataset = dataset

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.dataset.size = 24


def test_a_training_set_that_grows_between_epochs_is_named(tmp_path: Path) -> None:
    dataset = GrowingDataset()
    train = DataLoader(IndexedDataset(dataset), batch_size=8)
    callbacks = [ConfusionScore(), GrowAfterEpoch(dataset), DifficultyReport(tmp_path / "o")]
    trainer = L.Trainer(
        max_epochs=3, reload_dataloaders_every_n_epochs=1, callbacks=callbacks, **trainer_kwargs(tmp_path)
    )
    with pytest.raises(ValueError, match=r"'train' dataset has 24 samples now, but the first epoch had 16"):
        trainer.fit(CountingMLP(), train)
