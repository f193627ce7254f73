"""TrainingDynamics inside real Lightning runs, against numpy recomputations from logits the model kept itself."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
from scipy.special import softmax

from lightning_difficulty import ConfusionScore, DifficultyReport, TrainingDynamics
from tests.helpers import TinyMLP, blobs, loaders, trainer_kwargs


def _per_epoch(kept: list[tuple[int, np.ndarray, np.ndarray]], labels: np.ndarray) -> dict[int, dict[str, np.ndarray]]:
    """Per epoch and sample: p(label), correct, margin, EL2N (one presentation per epoch here)."""
    out: dict[int, dict[str, np.ndarray]] = {}
    n = len(labels)
    for epoch, index, logits in kept:
        z = logits.astype(np.float64)
        p = softmax(z, axis=1)
        y = labels[index]
        rows = np.arange(len(index))
        other = z.copy()
        other[rows, y] = -np.inf
        onehot = np.eye(z.shape[1])[y]
        values = {
            "p": p[rows, y],
            "correct": (z.argmax(axis=1) == y).astype(float),
            "margin": z[rows, y] - other.max(axis=1),
            "el2n": np.linalg.norm(p - onehot, axis=1),
        }
        store = out.setdefault(epoch, {k: np.full(n, np.nan) for k in values})
        for key, value in values.items():
            store[key][index] = value
    return out


def test_dynamics_match_numpy_recomputation(tmp_path: Path) -> None:
    train, val = loaders(shuffle=True)
    model = TinyMLP(keep_logits=True)
    report = DifficultyReport(dirpath=tmp_path / "out", grid_per_class=0)
    trainer = L.Trainer(
        max_epochs=4, callbacks=[ConfusionScore(), TrainingDynamics(), report], **trainer_kwargs(tmp_path)
    )
    trainer.fit(model, train, val)

    labels = blobs(48, seed=1).tensors[1].numpy()
    epochs = _per_epoch(model.kept["train"], labels)
    p = np.stack([epochs[e]["p"] for e in sorted(epochs)])
    correct = np.stack([epochs[e]["correct"] for e in sorted(epochs)]).astype(bool)
    margin = np.stack([epochs[e]["margin"] for e in sorted(epochs)])
    forgetting = (correct[:-1] & ~correct[1:]).sum(axis=0)

    table = pd.read_parquet(tmp_path / "out" / "scores.parquet")
    rows = table[table["split"] == "train"].sort_values("index")
    np.testing.assert_allclose(rows["dm_confidence"], p.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(rows["dm_variability"], p.std(axis=0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(rows["dm_correctness"], correct.mean(axis=0))
    np.testing.assert_array_equal(rows["forgetting"], forgetting)
    np.testing.assert_array_equal(rows["never_learned"], ~correct.any(axis=0))
    np.testing.assert_allclose(rows["aum"], margin.mean(axis=0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(rows["el2n"], epochs[max(epochs)]["el2n"], rtol=1e-6, atol=1e-7)
    assert set(rows["dm_region"]) <= {"easy", "ambiguous", "hard"}
    assert table.loc[table["split"] == "val", "dm_confidence"].isna().all()  # default: the training loop only
    assert forgetting.sum() > 0  # the check is only meaningful when something is forgotten
