"""Training labels marked ``ignore_index`` (-100): every measure keeps them out instead of failing at fit end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from lightning_difficulty import (
    ConfusionScore,
    DataDifficulty,
    DifficultyReport,
    IndexedDataset,
    PredictionDepth,
    TrainingDynamics,
    read_scores,
)
from lightning_difficulty.functional.knn import knn_vote, neighbour_disagreement
from tests.helpers import TinyMLP, blobs, trainer_kwargs


def test_unlabelled_neighbours_neither_vote_nor_count() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(-1, 4, size=(200, 7))
    classes = rng.integers(-1, 4, size=200)
    votes = knn_vote(labels, 4)
    share = neighbour_disagreement(labels, classes)
    for row, cls, vote, got in zip(labels, classes, votes, share, strict=True):  # brute force per row
        kept = row[row >= 0]
        counts = np.bincount(kept, minlength=4)
        assert vote == (int(np.argmax(counts)) if kept.size else -1)
        if cls < 0 or not kept.size:
            assert np.isnan(got)
        else:
            assert got == np.mean(kept != cls)


class IgnoringMLP(TinyMLP):
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return F.cross_entropy(self(batch[0]), batch[1], ignore_index=-100)


def test_a_fit_with_ignore_index_labels_writes_every_measure(tmp_path: Path) -> None:
    data = blobs(48, seed=1)
    labels = data.tensors[1].clone()
    labels[::5] = -100
    train = DataLoader(IndexedDataset(TensorDataset(data.tensors[0], labels)), batch_size=8)
    val = DataLoader(IndexedDataset(blobs(21, seed=2)), batch_size=8)
    out = tmp_path / "out"
    callbacks = [
        ConfusionScore(),
        TrainingDynamics(),
        PredictionDepth(layers=["hidden"], k=5),
        DataDifficulty(k=5),
        DifficultyReport(out),
    ]
    L.Trainer(max_epochs=2, callbacks=callbacks, **trainer_kwargs(tmp_path)).fit(IgnoringMLP(), train, val)
    table = read_scores(out)
    train_rows = table[table["split"] == "train"].sort_values("index")
    unlabelled = train_rows["label"].to_numpy() < 0
    assert unlabelled.sum() == 10
    assert train_rows["prediction_depth"].notna().all()
    assert train_rows.loc[unlabelled, "kdn"].isna().all() and train_rows.loc[~unlabelled, "kdn"].notna().all()
    # never_learned: nullable boolean, NA exactly where the loss never saw a label
    assert str(train_rows["never_learned"].dtype) == "boolean"
    np.testing.assert_array_equal(train_rows["never_learned"].isna().to_numpy(), unlabelled)
    summary = read_summary(out)
    correct = train_rows["correct"].to_numpy(bool)
    assert summary["splits"]["train"]["accuracy"] == correct[~unlabelled].mean()
    assert summary["splits"]["train"]["num_labelled"] == 38


def read_summary(out: Path) -> dict[str, Any]:
    import json

    return json.loads((out / "summary.json").read_text())
