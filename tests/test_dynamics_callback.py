"""TrainingDynamics inside real Lightning runs, against numpy recomputations from logits the model kept itself."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
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


def test_epoch_curves_data_map_and_score_correlations(tmp_path: Path) -> None:
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
    from scipy.stats import spearmanr
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train, val = loaders(shuffle=True)
    model = TinyMLP(keep_logits=True)
    report = DifficultyReport(dirpath=tmp_path / "out", grid_per_class=0)
    loggers = [CSVLogger(str(tmp_path), name="csv"), TensorBoardLogger(str(tmp_path), name="tb")]
    kwargs = trainer_kwargs(tmp_path, logger=loggers)
    trainer = L.Trainer(max_epochs=4, callbacks=[ConfusionScore(), TrainingDynamics(), report], **kwargs)
    trainer.fit(model, train, val)

    labels = blobs(48, seed=1).tensors[1].numpy()
    epochs = _per_epoch(model.kept["train"], labels)
    correct = np.stack([epochs[e]["correct"] for e in sorted(epochs)]).astype(bool)
    margin = np.stack([epochs[e]["margin"] for e in sorted(epochs)])
    metrics = pd.read_csv(Path(loggers[0].log_dir) / "metrics.csv")
    for name, expected in (
        # cumulative forgetting events and mean AUM so far, after each epoch
        ("forgetting_events", [(correct[:e][:-1] & ~correct[:e][1:]).sum() for e in range(1, 5)]),
        ("aum_mean", [margin[:e].mean(axis=0).mean() for e in range(1, 5)]),
        ("margin_mean", margin.mean(axis=1)),
    ):
        logged = metrics[["epoch", f"difficulty/{name}/train"]].dropna().sort_values("epoch")
        assert logged["epoch"].tolist() == [0, 1, 2, 3]
        np.testing.assert_allclose(logged[f"difficulty/{name}/train"], expected, rtol=1e-5, err_msg=name)

    events = EventAccumulator(str(loggers[1].log_dir), size_guidance={"images": 0})
    events.Reload()
    assert "difficulty/data_map/train" in events.Tags()["images"]

    table = pd.read_parquet(tmp_path / "out" / "scores.parquet")
    rows = table[table["split"] == "train"]
    pairs = report.summary["splits"]["train"]["score_correlations"]
    for pair in ("label_issue_score|aum", "confusion|dm_confidence", "aum|el2n"):
        a, b = pair.split("|")
        key = pair if pair in pairs else f"{b}|{a}"
        assert pairs[key]["spearman"] == pytest.approx(spearmanr(rows[a], rows[b]).statistic)
        assert pairs[key]["n"] == 48


def test_mid_epoch_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    from tests.test_robustness import Net, crash_and_resume, fit, read_table, report

    columns = ["dm_confidence", "dm_variability", "dm_correctness", "forgetting", "never_learned", "aum", "el2n"]
    fit(tmp_path / "full", Net(), [TrainingDynamics(), report()], epochs=3)
    full = read_table(tmp_path / "full" / "difficulty")
    resumed = read_table(crash_and_resume(tmp_path / "crashed", lambda: [TrainingDynamics(), report()]))
    pd.testing.assert_frame_equal(resumed[["split", "index", *columns]], full[["split", "index", *columns]])
    assert full["forgetting"].sum() > 0 or full["dm_variability"].max() > 0  # the columns carry information
