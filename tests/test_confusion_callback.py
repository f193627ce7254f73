"""ConfusionScore inside real Lightning runs, against an independent recomputation from the model's logits."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from scipy.special import softmax
from scipy.stats import entropy as scipy_entropy
from torch.utils.data import DataLoader

from lightning_difficulty import ConfusionScore, IndexedDataset, MissingIndexError
from tests.helpers import (
    DictOutputModel,
    NaNModel,
    TinyMLP,
    UnindexedDataset,
    blobs,
    loaders,
    trainer_kwargs,
)


def _reference_scores(kept: list[tuple[int, np.ndarray, np.ndarray]], n: int) -> tuple[np.ndarray, dict]:
    """Mean over epochs of the per-epoch entropy, computed with scipy from logits the model kept itself."""
    per_epoch: dict[int, dict[int, float]] = {}
    probs: dict[int, np.ndarray] = {}
    for epoch, index, logits in kept:
        p = softmax(logits.astype(np.float64), axis=1)
        probs.setdefault(epoch, np.full((n, logits.shape[1]), np.nan))[index] = p
        for i, h in zip(index, scipy_entropy(p, axis=1), strict=True):
            per_epoch.setdefault(epoch, {})[int(i)] = float(h)
    totals, counts = np.zeros(n), np.zeros(n)
    for values in per_epoch.values():
        for i, h in values.items():
            totals[i] += h
            counts[i] += 1
    return totals / counts, probs


def test_scores_match_recomputation_from_logits(tmp_path: Path) -> None:
    train, val = loaders(shuffle=True)
    model = TinyMLP(keep_logits=True)
    score = ConfusionScore(record_dir=str(tmp_path / "records"))
    trainer = L.Trainer(max_epochs=3, callbacks=[score], **trainer_kwargs(tmp_path))
    trainer.fit(model, train, val)

    expected_train, train_probs = _reference_scores(model.kept["train"], 48)
    expected_val, _ = _reference_scores(model.kept["val"], 21)
    np.testing.assert_allclose(score.scores["train"], expected_train, rtol=1e-6)
    np.testing.assert_allclose(score.scores["val"], expected_val, rtol=1e-6)
    assert sorted(score.epoch_means["val"]) == [0, 1, 2]  # sanity-check batches did not count as an epoch
    for epoch, probs in train_probs.items():
        recorded = np.load(tmp_path / "records" / "train" / f"epoch_{epoch:04d}.probs.npy")
        np.testing.assert_allclose(recorded, probs, rtol=1e-5, atol=1e-7)
    labels = blobs(48, seed=1).tensors[1].numpy()
    np.testing.assert_array_equal(score.columns()["train"]["label"], labels)


def test_topk_record_keeps_largest_probabilities(tmp_path: Path) -> None:
    train, val = loaders()
    model = TinyMLP(keep_logits=True)
    score = ConfusionScore(splits=["train"], record="topk", topk=2, record_dir=str(tmp_path))
    L.Trainer(max_epochs=1, callbacks=[score], **trainer_kwargs(tmp_path)).fit(model, train, val)
    _, probs = _reference_scores(model.kept["train"], 48)
    values = np.load(tmp_path / "train" / "epoch_0000.topk_values.npy")
    classes = np.load(tmp_path / "train" / "epoch_0000.topk_indices.npy")
    expected_classes = np.argsort(-probs[0], axis=1)[:, :2]
    np.testing.assert_array_equal(classes, expected_classes)
    np.testing.assert_allclose(values, np.take_along_axis(probs[0], expected_classes, axis=1), rtol=1e-5)


def _fit_with_checkpoints(tmp_path: Path, max_epochs: int, ckpt_path: str | None = None) -> tuple[ConfusionScore, Path]:
    train, val = loaders()
    score = ConfusionScore(record_dir=str(tmp_path / "records"))
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1)
    kwargs = trainer_kwargs(tmp_path, enable_checkpointing=True)
    trainer = L.Trainer(max_epochs=max_epochs, callbacks=[score, checkpoint], **kwargs)
    trainer.fit(TinyMLP(), train, val, ckpt_path=ckpt_path)
    return score, tmp_path / "ckpt"


def test_resume_gives_the_same_scores_as_an_uninterrupted_run(tmp_path: Path) -> None:
    full, _ = _fit_with_checkpoints(tmp_path / "full", 4)
    _, ckpt_dir = _fit_with_checkpoints(tmp_path / "first", 2)
    ckpt = sorted(ckpt_dir.glob("epoch=1*.ckpt"))[0]
    resumed, _ = _fit_with_checkpoints(tmp_path / "first", 4, ckpt_path=str(ckpt))
    for split in ("train", "val"):
        np.testing.assert_allclose(resumed.scores[split], full.scores[split], rtol=1e-6)
        assert resumed.epoch_means[split].keys() == full.epoch_means[split].keys() == {0, 1, 2, 3}
    for epoch in range(4):
        name = f"epoch_{epoch:04d}.probs.npy"
        np.testing.assert_allclose(
            np.load(tmp_path / "first" / "records" / "train" / name),
            np.load(tmp_path / "full" / "records" / "train" / name),
            rtol=1e-6,
        )


def test_batch_without_index_gets_a_clear_error(tmp_path: Path) -> None:
    loader = DataLoader(UnindexedDataset(blobs(16)), batch_size=8)
    trainer = L.Trainer(max_epochs=1, callbacks=[ConfusionScore(splits=["train"])], **trainer_kwargs(tmp_path))
    with pytest.raises(MissingIndexError, match="IndexedDataset"):
        trainer.fit(TinyMLP(), loader)


def test_mapping_batches_with_custom_keys(tmp_path: Path) -> None:
    from lightning_difficulty import BatchKeys

    class Mapped(torch.utils.data.Dataset):
        def __init__(self) -> None:
            self.base = blobs(16)

        def __len__(self) -> int:
            return 16

        def __getitem__(self, i: int) -> dict:
            x, y = self.base[i]
            return {"x": x, "y": y, "id": i}

    class MappedMLP(TinyMLP):
        def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
            return torch.nn.functional.cross_entropy(self(batch["x"]), batch["y"])

    score = ConfusionScore(splits=["train"], batch_keys=BatchKeys(input="x", target="y", index="id"), record="none")
    L.Trainer(max_epochs=1, callbacks=[score], **trainer_kwargs(tmp_path)).fit(
        MappedMLP(), DataLoader(Mapped(), batch_size=4)
    )
    assert np.isfinite(score.scores["train"]).all()


def test_missing_logits_and_unknown_logits_module(tmp_path: Path) -> None:
    train, _ = loaders()
    with pytest.raises(RuntimeError, match="No logits were seen"):
        L.Trainer(max_epochs=1, callbacks=[ConfusionScore(splits=["train"])], **trainer_kwargs(tmp_path)).fit(
            DictOutputModel(), train
        )
    with pytest.raises(ValueError, match=r"no module named \['nope'\].*'hidden'"):
        L.Trainer(
            max_epochs=1, callbacks=[ConfusionScore(splits=["train"], logits_from="nope")], **trainer_kwargs(tmp_path)
        ).fit(TinyMLP(), train)


def test_logits_from_a_named_submodule(tmp_path: Path) -> None:
    train, _ = loaders()
    score = ConfusionScore(splits=["train"], logits_from="out", record="none")
    L.Trainer(max_epochs=1, callbacks=[score], **trainer_kwargs(tmp_path)).fit(DictOutputModel(), train)
    assert np.isfinite(score.scores["train"]).all()


def test_nan_logits_are_reported(tmp_path: Path) -> None:
    train, _ = loaders()
    with pytest.raises(FloatingPointError, match="NaN or infinite"):
        L.Trainer(max_epochs=1, callbacks=[ConfusionScore(splits=["train"])], **trainer_kwargs(tmp_path)).fit(
            NaNModel(), train
        )


def test_index_outside_the_dataset_is_reported(tmp_path: Path) -> None:
    class Shifted(IndexedDataset):
        def __getitem__(self, index: int):  # type: ignore[no-untyped-def]
            x, y, i = super().__getitem__(index)
            return x, y, i + 100

    loader = DataLoader(Shifted(blobs(16)), batch_size=8)
    with pytest.raises(IndexError, match="out of range"):
        L.Trainer(max_epochs=1, callbacks=[ConfusionScore(splits=["train"])], **trainer_kwargs(tmp_path)).fit(
            TinyMLP(), loader
        )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"splits": ["test"]}, "splits"), ({"record": "all"}, "record"), ({"topk": 0}, "topk")],
)
def test_invalid_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ConfusionScore(**kwargs)


class _CrashAt(L.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("simulated crash")


def test_mid_epoch_checkpoint_drops_rows_logged_after_it(tmp_path: Path) -> None:
    # 48 samples / batch 8 = 6 steps per epoch; checkpoint at step 9 (3 batches into epoch 1), crash at step 10
    def fit(ckpt_path: str | None, extra: list) -> ConfusionScore:
        train, val = loaders()
        score = ConfusionScore(record_dir=str(tmp_path / "records"))
        kwargs = trainer_kwargs(tmp_path, enable_checkpointing=True)
        L.Trainer(max_epochs=3, callbacks=[score, *extra], **kwargs).fit(TinyMLP(), train, val, ckpt_path=ckpt_path)
        return score

    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=3, save_top_k=-1)
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(None, [checkpoint, _CrashAt(10)])
    resumed = fit(str(tmp_path / "ckpt" / "epoch=1-step=9.ckpt"), [])
    # Lightning replays a plain DataLoader from the epoch's start (it warns): batches 0-2 (samples 0-23) again;
    # the batch logged after the checkpoint (samples 24-31) must not count, so 24-47 miss epoch 1 only.
    seen = resumed._accumulators["train"].states["epochs_seen"]
    np.testing.assert_array_equal(seen, np.r_[np.full(24, 3), np.full(24, 2)])
    assert sorted(resumed.epoch_means["train"]) == [0, 1, 2]
    epoch1 = np.load(tmp_path / "records" / "train" / "epoch_0001.probs.npy")
    assert np.isfinite(epoch1[:24]).all() and np.isnan(epoch1[24:]).all()
