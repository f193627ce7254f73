"""A run's history as Lightning ran it: fit called again, resumes that skip or replay, a folder used twice.

Each test recomputes the confusion column from the logits the model itself kept at every step that ran (an
independent record, not the package's tap) and checks the table, ``combine`` over the run's records and
``summary.json`` against it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from scipy.stats import entropy
from torch.utils.data import DataLoader

from lightning_difficulty import ConfusionScore, DifficultyReport, IndexedDataset, read_scores
from lightning_difficulty.runs.combine import combine_runs
from tests.helpers import TinyMLP, blobs, loaders, trainer_kwargs

N_TRAIN, N_VAL, BATCH = 48, 21, 8  # 6 training batches an epoch


class StepMLP(TinyMLP):
    """TinyMLP keeping ``(epoch, global step, index, logits)`` of every step that ran."""

    def _keep(self, split: str, batch: Any, logits: torch.Tensor) -> None:
        if not self.trainer.sanity_checking:
            row = (self.current_epoch, self.global_step, batch[2].numpy(), logits.detach().double().numpy())
            self.kept[split].append(row)  # type: ignore[arg-type]


class CrashAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("simulated crash")


def confusion_from(rows: list[tuple], n: int, *, first_only: bool = False) -> np.ndarray:
    """Mean over runs (training epochs or validation runs) of the per-run mean entropy; NaN if never seen.

    With ``first_only`` a sample's later presentations inside one run are ignored (a replayed epoch)."""
    total, runs = np.zeros(n), np.zeros(n)
    for key in sorted({r[0] for r in rows}):
        sums, count = np.zeros(n), np.zeros(n)
        for _, _, idx, z in [r for r in rows if r[0] == key]:
            for i, p in zip(idx, torch.softmax(torch.from_numpy(z), 1).numpy(), strict=True):
                if first_only and count[i]:
                    continue
                sums[i] += entropy(p)
                count[i] += 1
        seen = count > 0
        total[seen] += sums[seen] / count[seen]
        runs[seen] += 1
    return np.where(runs > 0, total / np.maximum(runs, 1), np.nan)


def column(table: Any, split: str, name: str) -> np.ndarray:
    return table[table["split"] == split].sort_values("index")[name].to_numpy(float)


def check_combine_equals_table(out: Path, tmp_path: Path) -> None:
    combined = combine_runs([out], tmp_path / "combined")
    table = read_scores(out)
    for split in ("train", "val"):
        np.testing.assert_allclose(column(combined, split, "confusion"), column(table, split, "confusion"), atol=1e-6)


def test_fit_called_again_extends_the_history(tmp_path: Path) -> None:
    train, val = loaders(N_TRAIN, N_VAL, batch_size=BATCH, shuffle=True)
    model, out = StepMLP(keep_logits=True), tmp_path / "out"
    trainer = L.Trainer(max_epochs=2, callbacks=[ConfusionScore(), DifficultyReport(out)], **trainer_kwargs(tmp_path))
    trainer.fit(model, train, val)
    trainer.fit_loop.max_epochs = 4
    trainer.fit(model, train, val)
    table = read_scores(out)
    kept = model.kept
    np.testing.assert_allclose(column(table, "train", "confusion"), confusion_from(kept["train"], N_TRAIN), atol=1e-6)
    val_runs = [(r[1], *r[1:]) for r in kept["val"]]  # one validation run per global step
    np.testing.assert_allclose(column(table, "val", "confusion"), confusion_from(val_runs, N_VAL), atol=1e-6)
    summary = json.loads((out / "summary.json").read_text())
    confusion = next(m for m in summary["measures"].values() if m["callback"] == "ConfusionScore")
    assert confusion["train"]["epochs"] == 4 and confusion["val"]["epochs"] == 4
    assert summary["history"] == []
    check_combine_equals_table(out, tmp_path)


def _crash_and_resume(tmp_path: Path, *, every: int, crash: int) -> tuple[Path, dict[str, list], int]:
    train, val = loaders(N_TRAIN, N_VAL, batch_size=BATCH)
    out, ckpt = tmp_path / "out", tmp_path / "ckpt"

    def callbacks() -> list[Callback]:
        saver = ModelCheckpoint(dirpath=ckpt, every_n_train_steps=every, save_top_k=-1, filename="{step}")
        return [ConfusionScore(), DifficultyReport(out), saver]

    first = StepMLP(keep_logits=True)
    kwargs = trainer_kwargs(tmp_path, enable_checkpointing=True, max_epochs=4)
    with pytest.raises(RuntimeError, match="simulated crash"):
        L.Trainer(callbacks=[*callbacks(), CrashAt(crash)], **kwargs).fit(first, train, val)
    last = max(ckpt.glob("*.ckpt"), key=lambda p: int(p.stem.split("=")[1]))
    step = int(last.stem.split("=")[1])
    second = StepMLP(keep_logits=True)
    L.Trainer(callbacks=callbacks(), **kwargs).fit(second, train, val, ckpt_path=str(last))
    # the history the final model has: every step before the checkpoint, then the resumed run's
    kept = {s: [r for r in first.kept[s] if r[1] < step] + second.kept[s] for s in ("train", "val")}
    return out, kept, step


def test_resume_from_the_last_batch_of_an_epoch_says_validation_was_skipped(tmp_path: Path) -> None:
    out, kept, step = _crash_and_resume(tmp_path, every=6, crash=8)
    assert step == 6  # the last training batch of epoch 0: Lightning resumes in epoch 1 without its validation
    table = read_scores(out)
    np.testing.assert_allclose(column(table, "train", "confusion"), confusion_from(kept["train"], N_TRAIN), atol=1e-6)
    val_runs = [(r[1], *r[1:]) for r in kept["val"]]
    assert len({r[0] for r in val_runs}) == 3  # of 4 epochs
    np.testing.assert_allclose(column(table, "val", "confusion"), confusion_from(val_runs, N_VAL), atol=1e-6)
    summary = json.loads((out / "summary.json").read_text())
    assert [(h["split"], h["epoch"], h["event"]) for h in summary["history"]] == [("val", 0, "skipped")]
    check_combine_equals_table(out, tmp_path)


def test_resume_inside_an_epoch_ignores_replayed_presentations(tmp_path: Path) -> None:
    out, kept, step = _crash_and_resume(tmp_path, every=4, crash=5)
    assert step == 4  # inside epoch 0: Lightning restarts its data, so batches 0 and 1 come again
    table = read_scores(out)
    expected = confusion_from(kept["train"], N_TRAIN, first_only=True)
    np.testing.assert_allclose(column(table, "train", "confusion"), expected, atol=1e-6)
    summary = json.loads((out / "summary.json").read_text())
    assert [(h["split"], h["epoch"], h["event"]) for h in summary["history"]] == [("train", 0, "replayed")]
    assert "16 presentations" in summary["history"][0]["detail"]
    check_combine_equals_table(out, tmp_path)


def test_a_second_run_into_the_same_folder_never_mixes_with_the_first(tmp_path: Path) -> None:
    train, val = loaders(N_TRAIN, N_VAL, batch_size=BATCH)
    out = tmp_path / "out"
    L.Trainer(max_epochs=2, callbacks=[ConfusionScore(), DifficultyReport(out)], **trainer_kwargs(tmp_path)).fit(
        TinyMLP(), train, val
    )
    assert (out / "scores.parquet").exists()
    with pytest.warns(UserWarning, match="held an earlier run's report"), pytest.raises(RuntimeError):
        callbacks = [ConfusionScore(), DifficultyReport(out), CrashAt(3)]
        L.Trainer(max_epochs=2, callbacks=callbacks, **trainer_kwargs(tmp_path)).fit(TinyMLP(lr=0.5), train, val)
    assert not (out / "scores.parquet").exists() and not (out / "summary.json").exists()


def test_a_reference_loader_in_another_order_is_refused_before_training(tmp_path: Path) -> None:
    data = blobs(N_TRAIN, seed=1)
    order = torch.randperm(N_TRAIN, generator=torch.Generator().manual_seed(0))
    shuffled = torch.utils.data.TensorDataset(data.tensors[0][order], data.tensors[1][order])
    train = DataLoader(IndexedDataset(data), batch_size=BATCH)
    for reference, match in (
        (DataLoader(IndexedDataset(shuffled), batch_size=BATCH), r"label differs .* another order"),
        (DataLoader(IndexedDataset(blobs(N_TRAIN - 8, seed=1)), batch_size=BATCH), r"40 samples .* has 48"),
    ):
        model = StepMLP(keep_logits=True)
        report = DifficultyReport(tmp_path / "out", reference_dataloader=reference)
        trainer = L.Trainer(max_epochs=1, callbacks=[ConfusionScore(), report], **trainer_kwargs(tmp_path))
        with pytest.raises(ValueError, match=match):
            trainer.fit(model, train)
        assert model.kept["train"] == []


def test_a_resume_into_the_loggers_next_version_carries_the_records_over(tmp_path: Path) -> None:
    from lightning.pytorch.loggers import TensorBoardLogger

    train, val = loaders(N_TRAIN, N_VAL, batch_size=BATCH)
    ckpt = tmp_path / "ckpt"

    def trainer(*extra: Callback) -> L.Trainer:
        saver = ModelCheckpoint(dirpath=ckpt, every_n_train_steps=4, save_top_k=-1, filename="{step}")
        callbacks = [ConfusionScore(), DifficultyReport(), saver, *extra]
        kwargs = trainer_kwargs(tmp_path, enable_checkpointing=True, max_epochs=3, logger=TensorBoardLogger(tmp_path))
        return L.Trainer(callbacks=callbacks, **kwargs)

    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer(CrashAt(9)).fit(StepMLP(), train, val)
    resumed = trainer()
    resumed.fit(StepMLP(), train, val, ckpt_path=str(ckpt / "step=8.ckpt"))
    out = Path(resumed.log_dir) / "difficulty"
    assert out.parent.name == "version_1"
    check_combine_equals_table(out, tmp_path)
