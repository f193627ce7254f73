"""Per-epoch curves follow Lightning's logging conventions: callback_metrics, monitors, one owner per key."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

from lightning_difficulty import ConfusionScore, DifficultyReport, TrainingDynamics
from lightning_difficulty.callbacks.accumulator import PerSampleAccumulator, SampleState
from lightning_difficulty.functional.dynamics import logit_margin
from tests.helpers import TinyMLP, loaders, trainer_kwargs


def test_early_stopping_and_checkpointing_monitor_a_difficulty_curve(tmp_path: Path) -> None:
    train, val = loaders(48, 21, batch_size=8)
    model = TinyMLP(lr=0.0)  # a frozen model: validation confusion never improves, so patience 1 stops it
    stop = EarlyStopping(monitor="difficulty/confusion_mean/val", mode="min", patience=1, min_delta=1e-3)
    best = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="difficulty/confusion_mean/val", mode="min")
    callbacks = [ConfusionScore(), DifficultyReport(tmp_path / "out"), stop, best]
    trainer = L.Trainer(max_epochs=10, callbacks=callbacks, **trainer_kwargs(tmp_path, enable_checkpointing=True))
    trainer.fit(model, train, val)
    assert trainer.current_epoch == 2  # epochs 0 and 1 ran, epoch 1 did not improve: stopped
    value = trainer.callback_metrics["difficulty/confusion_mean/val"]
    assert float(value) == pytest.approx(float(np.nanmean(callbacks[0].scores["val"])), rel=1e-5)
    assert best.best_model_path


class MarginMean(PerSampleAccumulator):
    """A user's own measure that happens to log the same key as TrainingDynamics."""

    values = ("margin",)
    states = (SampleState("margin_sum"), SampleState("epochs", np.int32))
    needs_report = False

    def per_batch(self, logits, targets):  # type: ignore[no-untyped-def]
        return {"margin": logit_margin(logits, targets)}

    def fold(self, states, epoch, seen):  # type: ignore[no-untyped-def]
        states["margin_sum"][seen] += epoch["margin"][seen]
        states["epochs"][seen] += 1

    def split_columns(self, states, labels):  # type: ignore[no-untyped-def]
        return {"my_margin": states["margin_sum"] / np.maximum(states["epochs"], 1)}


def test_two_measures_logging_one_key_are_refused_at_setup(tmp_path: Path) -> None:
    train, val = loaders(48, 21, batch_size=8)
    callbacks = [TrainingDynamics(), MarginMean(splits=["train"]), DifficultyReport(tmp_path / "out")]
    trainer = L.Trainer(max_epochs=1, callbacks=callbacks, **trainer_kwargs(tmp_path))
    with pytest.raises(ValueError, match=r"both log \['difficulty/margin_mean/train'\]"):
        trainer.fit(TinyMLP(), train, val)
    assert trainer.global_step == 0
