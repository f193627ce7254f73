"""Quickstart: per-sample difficulty of an ordinary classifier in a few seconds, on scikit-learn's digits.

Run ``.venv/bin/python examples/quickstart.py`` once ``make demo`` or ``make test`` has set up ``.venv``.
It trains a small MLP for 5 epochs with ConfusionScore, PredictionDepth, DataDifficulty and
DifficultyReport, writes ``runs/quickstart/lightning_logs/version_<n>/difficulty/`` and prints where
the results went and the 5 hardest validation samples. The README's "Usage" section shows the lines
between the two ``# ---`` markers, exactly (``tests/test_readme.py`` checks it).
"""

# --- README "Usage" from here ---
import sys
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_difficulty import (
    ConfusionScore,
    DataDifficulty,
    DifficultyReport,
    IndexedDataset,
    PredictionDepth,
    read_scores,
)


class Classifier(L.LightningModule):
    """An ordinary classifier. The one change: every batch also carries the dataset index."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU())  # each top-level block
        self.hidden = nn.Sequential(nn.Linear(128, 64), nn.ReLU())  # is a prediction-depth probe
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden(self.features(x)))  # the callbacks read these logits

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y, _index = batch  # IndexedDataset turns each item (x, y) into (x, y, index)
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y, _index = batch
        self.log("val_acc", (self(x).argmax(dim=1) == y).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=3e-3)


L.seed_everything(0)
digits = load_digits()  # 1,797 8x8 images that ship with scikit-learn; every 5th one is for validation
x, y = torch.tensor(digits.images / 16.0, dtype=torch.float32), torch.tensor(digits.target)
is_val = torch.arange(len(y)) % 5 == 0
train_set, val_set = TensorDataset(x[~is_val], y[~is_val]), TensorDataset(x[is_val], y[is_val])

train = DataLoader(IndexedDataset(train_set), batch_size=64, shuffle=True)
val = DataLoader(IndexedDataset(val_set), batch_size=256)
trainer = L.Trainer(
    max_epochs=5,
    default_root_dir="runs/quickstart",  # logs go to runs/quickstart/lightning_logs/version_<n>
    enable_progress_bar=False,
    log_every_n_steps=10,
    callbacks=[
        ConfusionScore(),  # entropy of the softmax per sample per epoch, from the training loop
        PredictionDepth(layers="auto", k=30),  # k-NN probes on the input and each top-level block
        DataDifficulty(k=10),  # kDN: share of the 10 nearest training inputs with another label
        DifficultyReport(),  # at the end of fit: scores.parquet, summary.json, TensorBoard views
    ],
)
trainer.fit(Classifier(), train, val)

results = f"{trainer.log_dir}/difficulty"
table = read_scores(results)  # one row per (split, dataset index)
print(f"Per-sample table: {results}/scores.parquet ({len(table)} rows); summary: {results}/summary.json")
print(f"TensorBoard: {sys.executable} -m tensorboard.main --logdir runs/quickstart")  # this environment's
print(table[table.split == "val"].nlargest(5, "confusion")[["index", "label", "prediction", "confusion"]])
# --- README "Usage" to here ---
