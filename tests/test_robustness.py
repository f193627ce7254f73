"""Never silently wrong (issue 10): reuse, resume, unusual models, labels, precisions and loops.

Every number is checked against an independent recomputation: logits are kept by this file's own forward
hook (:class:`LogitRecorder`) and scored with scipy; nothing here calls the package's maths.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from scipy.special import expit
from scipy.stats import entropy as scipy_entropy
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from lightning_difficulty import ConfusionScore, DataDifficulty, DifficultyReport, IndexedDataset
from tests.helpers import blobs, trainer_kwargs

N_TRAIN, N_VAL, BATCH = 48, 21, 8  # six training batches per epoch


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


# ----------------------------------------------------------------------------------------------
# Independent reference: our own forward hook and scipy
# ----------------------------------------------------------------------------------------------


class LogitRecorder(L.Callback):
    """Keeps ``(epoch, index, output)`` of every in-fit step through its own forward hook.

    Train entries use ``trainer.current_epoch``; validation runs inside fit are numbered 0, 1, ...
    (sanity checks and a later ``trainer.validate()`` are not kept).
    """

    def __init__(self, module_name: str = "") -> None:
        self.module_name = module_name
        self.kept: dict[str, list[tuple[int, np.ndarray, np.ndarray]]] = {"train": [], "val": []}
        self._open: tuple[str, int, np.ndarray] | None = None
        self._val_runs = -1
        self._handle: Any = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and self._handle is None:
            self._handle = dict(pl_module.named_modules())[self.module_name].register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, args: Any, output: Any) -> None:
        if self._open is not None and isinstance(output, Tensor) and output.shape[0] == len(self._open[2]):
            split, epoch, index = self._open
            self.kept[split].append((epoch, index, output.detach().double().cpu().numpy().reshape(len(index), -1)))
            self._open = None  # the step's first output only

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, i: int) -> None:
        self._open = ("train", trainer.current_epoch, np.asarray(batch[2]))

    def on_train_batch_end(self, *args: Any) -> None:
        self._open = None

    def _in_fit(self, trainer: L.Trainer) -> bool:
        return trainer.state.fn == "fit" and not trainer.sanity_checking

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._val_runs += self._in_fit(trainer)

    def on_validation_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, *a: Any) -> None:
        if self._in_fit(trainer):
            self._open = ("val", self._val_runs, np.asarray(batch[2]))

    def on_validation_batch_end(self, *args: Any) -> None:
        self._open = None


def softmax_probs(logits: np.ndarray) -> np.ndarray:
    """Row softmax in float64; a single logit ``z`` is the binary ``[1 - sigmoid(z), sigmoid(z)]``."""
    if logits.shape[1] == 1:
        p = expit(logits[:, 0])
        return np.stack([1.0 - p, p], axis=1)
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def per_epoch_mean(kept: list[tuple[int, np.ndarray, np.ndarray]], n: int, value: Any) -> dict[int, np.ndarray]:
    """``epoch -> (n,)`` mean of ``value(logits, index)`` over the sample's occurrences that epoch (NaN: unseen)."""
    sums: dict[int, np.ndarray] = {}
    counts: dict[int, np.ndarray] = {}
    for epoch, index, logits in kept:
        s = sums.setdefault(epoch, np.zeros(n))
        c = counts.setdefault(epoch, np.zeros(n))
        np.add.at(s, index, value(logits, index))
        np.add.at(c, index, 1)
    return {e: np.where(counts[e] > 0, sums[e] / np.maximum(counts[e], 1), np.nan) for e in sums}


def mean_over_epochs(per_epoch: dict[int, np.ndarray]) -> np.ndarray:
    stack = np.stack(list(per_epoch.values()))
    seen = np.isfinite(stack)
    return np.where(seen.any(0), np.where(seen, stack, 0).sum(0) / np.maximum(seen.sum(0), 1), np.nan)


def entropy_of(logits: np.ndarray, index: np.ndarray | None = None) -> np.ndarray:
    return scipy_entropy(softmax_probs(logits), axis=1)


def expected_confusion(kept: list[tuple[int, np.ndarray, np.ndarray]], n: int) -> np.ndarray:
    """Simsek et al.'s confusion: the per-epoch softmax entropy averaged over the epochs a sample was seen."""
    return mean_over_epochs(per_epoch_mean(kept, n, entropy_of))


def expected_probs(kept: list[tuple[int, np.ndarray, np.ndarray]], n: int, c: int) -> dict[int, np.ndarray]:
    """``epoch -> (n, c)`` softmax vectors (NaN rows: not seen), as the probability records hold them."""
    out: dict[int, np.ndarray] = {}
    for epoch, index, logits in kept:
        out.setdefault(epoch, np.full((n, c), np.nan))[index] = softmax_probs(logits)
    return out


def column(table: pd.DataFrame, split: str, name: str) -> np.ndarray:
    return table[table["split"] == split].sort_values("index")[name].to_numpy()


def read_table(run_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(run_dir / "scores.parquet")


# ----------------------------------------------------------------------------------------------
# Small models and data
# ----------------------------------------------------------------------------------------------


class Net(L.LightningModule):
    """Linear-ReLU-Linear classifier, plain SGD (deterministic); counts its training steps."""

    def __init__(self, num_classes: int = 4, dim: int = 6, width: int = 16, lr: float = 0.2) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.hidden = nn.Linear(dim, width)
        self.out = nn.Linear(width, num_classes)
        self.lr = lr
        self.steps = 0

    def forward(self, x: Tensor) -> Any:
        return self.out(torch.relu(self.hidden(x)))

    def logits(self, x: Tensor) -> Tensor:
        return self(x)

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(logits, target if target.is_floating_point() else target.long())

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        self.steps += 1
        return self.loss(self.logits(batch[0]), batch[1])

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_loss", self.loss(self.logits(batch[0]), batch[1]))

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class BinaryNet(Net):
    """A single-logit binary model trained with ``BCEWithLogits``: forward returns ``(B, 1)``."""

    def __init__(self) -> None:
        super().__init__(num_classes=1)

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(logits[:, 0], target.float())


class FeaturesNet(Net):
    """``forward`` returns the hidden features; the step applies the head."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.hidden(x))

    def logits(self, x: Tensor) -> Tensor:
        return self.out(self(x))


class TupleNet(Net):
    """``forward`` returns ``(features, logits)``."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features = torch.relu(self.hidden(x))
        return features, self.out(features)

    def logits(self, x: Tensor) -> Tensor:
        return self(x)[1]


class ProbsNet(Net):
    """``forward`` returns softmax probabilities; the step takes their log."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.softmax(super().forward(x), dim=1)

    def loss(self, probs: Tensor, target: Tensor) -> Tensor:
        return F.nll_loss(torch.log(probs), target.long())


class MaskedNet(Net):
    """Four outputs for three classes; the last class is masked with ``-inf`` (a valid softmax)."""

    def __init__(self) -> None:
        super().__init__(num_classes=4)

    def forward(self, x: Tensor) -> Tensor:
        logits = super().forward(x)
        mask = torch.zeros(4, dtype=torch.bool, device=logits.device)
        mask[3] = True
        return logits.masked_fill(mask, float("-inf"))


def dataset(n: int, *, seed: int, num_classes: int = 4, labels: Tensor | None = None) -> IndexedDataset:
    base = blobs(n, seed=seed, num_classes=num_classes)
    return IndexedDataset(TensorDataset(base.tensors[0], base.tensors[1] if labels is None else labels))


def make_loaders(
    train: Dataset | None = None, val: Dataset | None = None, *, loader: type[DataLoader] = DataLoader
) -> tuple[DataLoader, DataLoader]:
    train = train if train is not None else dataset(N_TRAIN, seed=1)
    val = val if val is not None else dataset(N_VAL, seed=2)
    return loader(train, batch_size=BATCH), DataLoader(val, batch_size=BATCH)


def fit(
    root: Path,
    model: L.LightningModule,
    callbacks: list[Any],
    *,
    epochs: int = 2,
    train: DataLoader | None = None,
    val: DataLoader | None = None,
    no_val: bool = False,
    ckpt_path: str | None = None,
    **overrides: Any,
) -> L.Trainer:
    default_train, default_val = make_loaders()
    trainer = L.Trainer(max_epochs=epochs, callbacks=callbacks, **trainer_kwargs(root, **overrides))
    val_loader = None if no_val else (val or default_val)
    trainer.fit(model, train or default_train, val_loader, ckpt_path=ckpt_path)
    return trainer


def report(**kwargs: Any) -> DifficultyReport:
    return DifficultyReport(grid_per_class=0, **kwargs)


def assert_confusion_matches(table: pd.DataFrame, recorder: LogitRecorder, sizes: dict[str, int]) -> None:
    for split, n in sizes.items():
        expected = expected_confusion(recorder.kept[split], n)
        np.testing.assert_allclose(column(table, split, "confusion"), expected, rtol=1e-6, err_msg=split)


# ----------------------------------------------------------------------------------------------
# 1. State that outlives a fit
# ----------------------------------------------------------------------------------------------


def test_reused_callbacks_report_only_the_second_run(tmp_path: Path) -> None:
    score, rep = ConfusionScore(), report()
    recorders = []
    for name, epochs, lr in (("run1", 3, 0.2), ("run2", 2, 0.05)):
        recorder = LogitRecorder()
        fit(tmp_path / name, Net(lr=lr), [score, rep, recorder], epochs=epochs)
        recorders.append(recorder)

    table = read_table(tmp_path / "run2" / "difficulty")
    assert_confusion_matches(table, recorders[1], {"train": N_TRAIN, "val": N_VAL})
    for run, recorder, recorded_epochs in (("run1", recorders[0], [0, 1, 2]), ("run2", recorders[1], [0, 1])):
        records = tmp_path / run / "difficulty" / "records" / "train"
        assert json.loads((records / "manifest.json").read_text())["epochs"] == recorded_epochs, run
        names = sorted(p.name for p in records.glob("epoch_*.probs.npy"))
        assert names == [f"epoch_{e:04d}.probs.npy" for e in recorded_epochs], run
        for epoch, probs in expected_probs(recorder.kept["train"], N_TRAIN, 4).items():
            recorded = np.load(records / f"epoch_{epoch:04d}.probs.npy")
            np.testing.assert_allclose(recorded, probs, rtol=1e-5, atol=1e-7, err_msg=f"{run} epoch {epoch}")
    summary = json.loads((tmp_path / "run2" / "difficulty" / "summary.json").read_text())
    assert summary["measures"][score.state_key]["train"]["epochs"] == 2


# ----------------------------------------------------------------------------------------------
# 2. Resume edge cases (deterministic model, un-shuffled data)
# ----------------------------------------------------------------------------------------------


class ResumableLoader(DataLoader):
    """A DataLoader Lightning treats as resumable: its next iterator skips ``skip`` batches once.

    Set ``skip`` to the batches the checkpoint already trained in its epoch; a mid-epoch resume then
    sees exactly the batches an uninterrupted run sees.
    """

    skip = 0

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        iterator = super().__iter__()
        for _ in range(self.skip):
            next(iterator)
        self.skip = 0
        return iterator

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass


class CrashAt(L.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("simulated crash")


def _uninterrupted(root: Path, epochs: int = 3, **checkpoint: Any) -> tuple[LogitRecorder, Path]:
    """A full run with checkpoints; returns its recorder and its run folder."""
    recorder = LogitRecorder()
    ckpt = ModelCheckpoint(dirpath=root / "ckpt", save_top_k=-1, **checkpoint)
    fit(root, Net(), [ConfusionScore(), report(), recorder, ckpt], epochs=epochs, enable_checkpointing=True)
    return recorder, root / "difficulty"


def _epoch_files(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "records" / "train").glob("epoch_*.npy"))


def test_resume_from_a_checkpoint_at_the_last_batch_of_an_epoch(tmp_path: Path) -> None:
    recorder, full = _uninterrupted(tmp_path / "full")
    first = tmp_path / "interrupted"
    ckpt = ModelCheckpoint(dirpath=first / "ckpt", every_n_train_steps=N_TRAIN // BATCH, save_top_k=-1)
    fit(first, Net(), [ConfusionScore(), report(), ckpt], epochs=1, enable_checkpointing=True)
    score, resumed = ConfusionScore(), LogitRecorder()
    fit(first, Net(), [score, report(), resumed], epochs=3, ckpt_path=str(first / "ckpt" / "epoch=0-step=6.ckpt"))

    assert sorted(score.epoch_means["train"]) == [0, 1, 2]
    table, expected = read_table(first / "difficulty"), read_table(full)
    np.testing.assert_allclose(
        column(expected, "train", "confusion"), expected_confusion(recorder.kept["train"], N_TRAIN), rtol=1e-6
    )
    np.testing.assert_allclose(column(table, "train", "confusion"), column(expected, "train", "confusion"), rtol=1e-6)
    assert _epoch_files(first / "difficulty") == _epoch_files(full)
    # the checkpoint precedes epoch 0's validation, which Lightning does not replay: two validation runs remain
    np.testing.assert_allclose(
        column(table, "val", "confusion"), expected_confusion(resumed.kept["val"], N_VAL), rtol=1e-6
    )


def crash_and_resume(root: Path, make_callbacks: Callable[[], list[Any]]) -> Path:
    """Train 3 epochs with checkpoints every 3 steps, crash at step 10, resume from the step-9 checkpoint
    (three batches into epoch 1) with a loader that replays the rest of that epoch; returns the run folder."""
    ckpt = ModelCheckpoint(dirpath=root / "ckpt", every_n_train_steps=3, save_top_k=-1)
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(root, Net(), [*make_callbacks(), ckpt, CrashAt(10)], epochs=3, enable_checkpointing=True)
    train, val = make_loaders(loader=ResumableLoader)
    train.skip = 3
    checkpoint = str(root / "ckpt" / "epoch=1-step=9.ckpt")
    fit(root, Net(), make_callbacks(), epochs=3, train=train, val=val, ckpt_path=checkpoint)
    return root / "difficulty"


def test_resume_mid_epoch_keeps_the_records_of_an_uninterrupted_run(tmp_path: Path) -> None:
    recorder, full = _uninterrupted(tmp_path / "full", every_n_train_steps=3)
    run = crash_and_resume(tmp_path / "crashed", lambda: [ConfusionScore(), report()])
    assert _epoch_files(run) == _epoch_files(full) == [f"epoch_{e:04d}.probs.npy" for e in range(3)]
    for epoch, probs in expected_probs(recorder.kept["train"], N_TRAIN, 4).items():
        name = f"epoch_{epoch:04d}.probs.npy"
        np.testing.assert_allclose(np.load(run / "records" / "train" / name), probs, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(
            np.load(run / "records" / "train" / name), np.load(full / "records" / "train" / name)
        )
    assert_confusion_matches(read_table(run), recorder, {"train": N_TRAIN, "val": N_VAL})


@pytest.mark.parametrize(
    ("checkpoint", "val_runs"),
    [({"every_n_train_steps": N_TRAIN // BATCH}, 2), ({"every_n_epochs": 1}, 3)],
    ids=["at-the-last-batch", "at-validation-end"],
)
def test_refit_from_the_finished_runs_last_checkpoint_keeps_the_table(
    tmp_path: Path, checkpoint: dict, val_runs: int
) -> None:
    recorder, run = _uninterrupted(tmp_path, save_last=True, **checkpoint)
    (run / "hard_subset.json").unlink()  # any file the refit writes is then its own
    score = ConfusionScore()
    fit(tmp_path, Net(), [score, report()], epochs=3, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))

    table = read_table(run)
    assert {"confusion", "hard", "group"} <= set(table.columns)
    assert (run / "hard_subset.json").exists() and (run / "groups.json").exists()
    assert sorted(score.epoch_means["train"]) == [0, 1, 2]
    expected = expected_confusion(recorder.kept["train"], N_TRAIN)
    np.testing.assert_allclose(column(table, "train", "confusion"), expected, rtol=1e-6)
    # a checkpoint at the last batch precedes the last validation run, which the refit does not replay
    before = [entry for entry in recorder.kept["val"] if entry[0] < val_runs]
    np.testing.assert_allclose(column(table, "val", "confusion"), expected_confusion(before, N_VAL), rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# 3. Model outputs that are not (B, C) class logits
# ----------------------------------------------------------------------------------------------


def test_single_logit_binary_model_scores_the_two_class_entropy(tmp_path: Path) -> None:
    train, val = make_loaders(dataset(N_TRAIN, seed=1, num_classes=2), dataset(N_VAL, seed=2, num_classes=2))
    recorder = LogitRecorder()
    fit(tmp_path, BinaryNet(), [ConfusionScore(), report(), recorder], epochs=2, train=train, val=val)

    table = read_table(tmp_path / "difficulty")
    for split, n in (("train", N_TRAIN), ("val", N_VAL)):
        expected = mean_over_epochs(
            per_epoch_mean(recorder.kept[split], n, lambda z, i: scipy_entropy([1 - expit(z[:, 0]), expit(z[:, 0])]))
        )
        assert (expected > 0.01).all()  # a constant 0 would be wrong
        np.testing.assert_allclose(column(table, split, "confusion"), expected, rtol=1e-6)
    assert set(column(table, "val", "prediction")) <= {0, 1}


def _first_batch_failure(root: Path, model: Net) -> tuple[BaseException | None, list[str]]:
    """Fit on the training data only; the exception (if any) and the warnings' texts."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fit(root, model, [ConfusionScore(), report()], epochs=1, no_val=True)
        except Exception as err:
            return err, [str(w.message) for w in caught]
    return None, [str(w.message) for w in caught]


def test_forward_returning_narrow_features_is_refused_at_the_first_batch(tmp_path: Path) -> None:
    model = FeaturesNet(width=3)  # 3 features, labels up to 3: cannot be the logits of these labels
    error, _ = _first_batch_failure(tmp_path, model)
    assert isinstance(error, ValueError) and "logits_from" in str(error), repr(error)
    assert model.steps == 1


def test_forward_returning_wide_features_is_refused_at_the_first_epoch_end(tmp_path: Path) -> None:
    # 16 features for 4 classes: most argmaxes name a class no label uses, so they are not logits
    model = FeaturesNet(width=16)
    error, _ = _first_batch_failure(tmp_path, model)
    assert isinstance(error, ValueError), repr(error)
    assert 'logits_from="<the head module>"' in str(error) and "num_classes=16" in str(error)
    assert model.steps == N_TRAIN // BATCH  # one epoch, not the whole fit


def test_a_model_with_spare_outputs_is_scored_when_num_classes_says_so(tmp_path: Path) -> None:
    model = FeaturesNet(width=16)
    fit(tmp_path, model, [ConfusionScore(num_classes=16), report()], epochs=2, no_val=True)
    assert model.steps == 2 * N_TRAIN // BATCH
    with pytest.raises(ValueError, match=r"num_classes=10.*16 columns"):
        fit(tmp_path / "again", FeaturesNet(width=16), [ConfusionScore(num_classes=10), report()], no_val=True)


def test_forward_returning_a_tuple_is_refused_naming_logits_from(tmp_path: Path) -> None:
    model = TupleNet()
    error, _ = _first_batch_failure(tmp_path, model)
    assert isinstance(error, ValueError) and "logits_from" in str(error), repr(error)
    assert model.steps == 1


def test_forward_returning_probabilities_is_refused_at_the_first_batch(tmp_path: Path) -> None:
    model = ProbsNet()
    error, _ = _first_batch_failure(tmp_path, model)
    assert isinstance(error, ValueError) and "probabilities" in str(error), repr(error)
    assert model.steps == 1


# ----------------------------------------------------------------------------------------------
# 4. Labels
# ----------------------------------------------------------------------------------------------


def _label_run(root: Path, labels: Tensor, model: Net | None = None) -> tuple[pd.DataFrame, LogitRecorder]:
    recorder = LogitRecorder()
    train = DataLoader(dataset(N_TRAIN, seed=1, labels=labels), batch_size=BATCH)
    fit(root, model or Net(), [ConfusionScore(), report(), recorder], epochs=2, train=train, no_val=True)
    return read_table(root / "difficulty"), recorder


@pytest.mark.parametrize("dtype", [torch.int8, torch.int16, torch.int32, torch.uint8])
def test_integer_labels_of_any_dtype(tmp_path: Path, dtype: torch.dtype) -> None:
    labels = blobs(N_TRAIN, seed=1).tensors[1]
    table, recorder = _label_run(tmp_path, labels.to(dtype))
    np.testing.assert_array_equal(column(table, "train", "label"), labels.numpy())
    assert_confusion_matches(table, recorder, {"train": N_TRAIN})


def test_one_hot_targets_score_like_class_ids(tmp_path: Path) -> None:
    labels = blobs(N_TRAIN, seed=1).tensors[1]
    ids, _ = _label_run(tmp_path / "ids", labels)
    one_hot, recorder = _label_run(tmp_path / "one_hot", F.one_hot(labels, 4).float())
    np.testing.assert_array_equal(column(one_hot, "train", "label"), labels.numpy())
    assert_confusion_matches(one_hot, recorder, {"train": N_TRAIN})
    np.testing.assert_allclose(column(one_hot, "train", "confusion"), column(ids, "train", "confusion"), rtol=1e-5)


def test_soft_targets_are_refused_at_the_first_batch(tmp_path: Path) -> None:
    labels = blobs(N_TRAIN, seed=1).tensors[1]
    soft = 0.7 * F.one_hot(labels, 4).float() + 0.075  # mixup-like rows summing to 1
    model = Net()
    with pytest.raises(ValueError, match="soft targets"):
        _label_run(tmp_path, soft, model)
    assert model.steps == 1


def test_ignore_index_targets_get_label_minus_one(tmp_path: Path) -> None:
    labels = blobs(N_TRAIN, seed=1).tensors[1].clone()
    ignored = np.arange(N_TRAIN) % 5 == 0
    labels[torch.from_numpy(ignored)] = -100
    table, recorder = _label_run(tmp_path, labels)
    got = column(table, "train", "label")
    np.testing.assert_array_equal(got[ignored], -1)
    np.testing.assert_array_equal(got[~ignored], labels.numpy()[~ignored])
    expected = expected_confusion(recorder.kept["train"], N_TRAIN)
    confusion = column(table, "train", "confusion")
    np.testing.assert_allclose(confusion[~ignored], expected[~ignored], rtol=1e-6)
    assert np.all(np.isnan(confusion[ignored]) | np.isclose(confusion[ignored], expected[ignored], rtol=1e-6))


# ----------------------------------------------------------------------------------------------
# 5. Precisions
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("precision", "rtol"), [("64-true", 1e-9), ("bf16-true", 1e-4)])
def test_true_precisions_write_the_table(tmp_path: Path, precision: str, rtol: float) -> None:
    recorder = LogitRecorder()
    fit(tmp_path, Net(), [ConfusionScore(), report(), recorder], epochs=2, precision=precision)
    table = read_table(tmp_path / "difficulty")
    for split, n in (("train", N_TRAIN), ("val", N_VAL)):
        expected = expected_confusion(recorder.kept[split], n)
        np.testing.assert_allclose(column(table, split, "confusion"), expected, rtol=rtol, atol=1e-6)
    assert set(column(table, "val", "prediction")) <= set(range(4))
    assert not (tmp_path / "difficulty" / "cache").exists()


# ----------------------------------------------------------------------------------------------
# 6. Samples never seen
# ----------------------------------------------------------------------------------------------


def test_unseen_samples_keep_the_hard_column_boolean(tmp_path: Path) -> None:
    recorder = LogitRecorder()
    rep = report(hard_split="train", hard_fraction=0.25)
    with pytest.warns(UserWarning, match=r"\b24 of 48\b"):
        fit(tmp_path, Net(), [ConfusionScore(), rep, recorder], epochs=2, limit_train_batches=3)

    run = tmp_path / "difficulty"
    table = read_table(run)
    assert table["hard"].dtype == bool
    hard = column(table, "train", "hard")
    expected = expected_confusion(recorder.kept["train"], N_TRAIN)
    seen = np.isfinite(expected)
    assert seen.sum() == 24 and not hard[~seen].any()
    ranked = np.flatnonzero(seen)[np.argsort(-expected[seen], kind="stable")]
    np.testing.assert_array_equal(np.flatnonzero(hard), np.sort(ranked[: int(np.ceil(0.25 * 24))]))
    manifest = json.loads((run / "hard_subset.json").read_text())
    assert manifest["split"] == "train" and sorted(manifest["indices"]) == np.flatnonzero(hard).tolist()
    assert (run / "groups.json").exists()
    group = column(table, "train", "group")
    assert (group[~seen] == -1).all() and set(group[seen]) <= {0, 1}


# ----------------------------------------------------------------------------------------------
# 7. Outputs mixing runs
# ----------------------------------------------------------------------------------------------


def test_second_run_into_the_same_folder_leaves_no_stale_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    fit(tmp_path / "a", Net(), [ConfusionScore(), report(dirpath=out)], epochs=3)
    assert (out / "hard_subset.json").exists()
    (out / "my_notes.txt").write_text("mine")
    (out / "my_subset.json").write_text("{}")
    first_id = json.loads((out / "summary.json").read_text())["run_id"]

    fit(tmp_path / "b", Net(lr=0.05), [ConfusionScore(), report(dirpath=out, hard_fraction=None)], epochs=1)
    assert not (out / "hard_subset.json").exists()
    assert "hard" not in read_table(out).columns
    assert (out / "my_notes.txt").read_text() == "mine" and (out / "my_subset.json").read_text() == "{}"
    assert json.loads((out / "summary.json").read_text())["run_id"] != first_id
    assert _epoch_files(out) == ["epoch_0000.probs.npy"]
    assert json.loads((out / "records" / "train" / "manifest.json").read_text())["epochs"] == [0]


# ----------------------------------------------------------------------------------------------
# 8. Range checks, validate() after fit, -inf masks
# ----------------------------------------------------------------------------------------------


class ShiftedLater(IndexedDataset):
    """Indices of the samples from 24 on (the fourth batch) are out of range."""

    def __getitem__(self, index: int) -> tuple[Any, Any, int]:
        x, y, i = super().__getitem__(index)
        return x, y, i + 100 if i >= 24 else i


def test_out_of_range_index_in_a_later_batch_names_the_split(tmp_path: Path) -> None:
    train = DataLoader(ShiftedLater(blobs(N_TRAIN, seed=1)), batch_size=BATCH)
    with pytest.raises(IndexError, match=r"split 'train'") as info:
        fit(tmp_path, Net(), [ConfusionScore(), report()], epochs=1, train=train, no_val=True)
    assert "IndexedDataset" in str(info.value)


def test_validate_after_fit_with_the_callbacks_attached(tmp_path: Path) -> None:
    score, recorder = ConfusionScore(), LogitRecorder()
    model = Net()
    trainer = fit(tmp_path, model, [score, report(), recorder], epochs=2)
    before = {split: values.copy() for split, values in score.scores.items()}
    summary = (tmp_path / "difficulty" / "summary.json").read_text()

    metrics = trainer.validate(model, make_loaders()[1], verbose=False)
    assert np.isfinite(metrics[0]["val_loss"])
    for split, values in before.items():
        np.testing.assert_array_equal(score.scores[split], values)
    np.testing.assert_allclose(before["val"], expected_confusion(recorder.kept["val"], N_VAL), rtol=1e-6)
    assert (tmp_path / "difficulty" / "summary.json").read_text() == summary


def test_minus_inf_masked_logits_score_the_remaining_classes(tmp_path: Path) -> None:
    train, val = make_loaders(dataset(N_TRAIN, seed=1, num_classes=3), dataset(N_VAL, seed=2, num_classes=3))
    recorder = LogitRecorder()
    fit(tmp_path, MaskedNet(), [ConfusionScore(), report(), recorder], epochs=2, train=train, val=val)
    table = read_table(tmp_path / "difficulty")
    for split, n in (("train", N_TRAIN), ("val", N_VAL)):
        three_classes = [(e, i, z[:, :3]) for e, i, z in recorder.kept[split]]
        expected = expected_confusion(three_classes, n)
        assert np.isfinite(expected).all() and (expected <= np.log(3) + 1e-12).all()
        np.testing.assert_allclose(column(table, split, "confusion"), expected, rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# 9. Augmented training data
# ----------------------------------------------------------------------------------------------


class RandomNoise:
    def __init__(self, scale: float) -> None:
        self.scale = scale

    def __call__(self, x: Tensor) -> Tensor:
        return x + self.scale * torch.randn_like(x)

    def __repr__(self) -> str:
        return f"RandomNoise(scale={self.scale})"


class Augmented(Dataset):
    def __init__(self, base: TensorDataset, scale: float) -> None:
        self.base, self.transform = base, RandomNoise(scale)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        x, y = self.base[i]
        return self.transform(x), y


def test_reference_dataloader_gives_predictions_on_unaugmented_inputs(tmp_path: Path) -> None:
    clean = blobs(N_TRAIN, seed=1)
    augmented = DataLoader(IndexedDataset(Augmented(clean, 3.0)), batch_size=BATCH)
    reference = DataLoader(IndexedDataset(clean), batch_size=BATCH)
    model = Net()
    fit(tmp_path / "ref", model, [ConfusionScore(), report(reference_dataloader=reference)], train=augmented)

    model.eval()
    with torch.no_grad():
        expected = model(clean.tensors[0]).argmax(1).numpy()
        noisy = model(clean.tensors[0] + 3.0 * torch.randn(clean.tensors[0].shape)).argmax(1).numpy()
    assert (noisy != expected).any()  # augmentation would change predictions: the check below can fail
    table = read_table(tmp_path / "ref" / "difficulty")
    np.testing.assert_array_equal(column(table, "train", "prediction"), expected)
    np.testing.assert_array_equal(column(table, "train", "correct"), expected == clean.tensors[1].numpy())

    with pytest.warns(UserWarning, match="reference_dataloader"):
        fit(tmp_path / "noref", Net(), [ConfusionScore(), report()], epochs=1, train=augmented)


# ----------------------------------------------------------------------------------------------
# 10. A failing measure or view does not lose the table
# ----------------------------------------------------------------------------------------------


def test_failing_measure_is_skipped_and_the_table_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: DataDifficulty, trainer: L.Trainer, arrays: Any) -> Any:
        raise RuntimeError("kdn exploded")

    monkeypatch.setattr(DataDifficulty, "compute", broken)
    recorder, kdn = LogitRecorder(), DataDifficulty(k=3)
    with pytest.warns(UserWarning, match="DataDifficulty"):
        fit(tmp_path, Net(), [ConfusionScore(), kdn, report(), recorder], epochs=2)

    run = tmp_path / "difficulty"
    assert_confusion_matches(read_table(run), recorder, {"train": N_TRAIN, "val": N_VAL})
    skipped = json.loads((run / "summary.json").read_text())["skipped"]
    assert any("DataDifficulty" in entry and "kdn exploded" in entry for entry in skipped), skipped
    assert "kdn" not in read_table(run).columns
    assert not (run / "cache").exists()


def test_class_names_shorter_than_the_classes_still_write_the_table(tmp_path: Path) -> None:
    recorder = LogitRecorder()
    logger = TensorBoardLogger(tmp_path, name="tb")
    rep = report(class_names=["zero", "one"])
    fit(tmp_path, Net(), [ConfusionScore(), rep, recorder], epochs=2, logger=logger)
    run = Path(logger.log_dir) / "difficulty"
    assert_confusion_matches(read_table(run), recorder, {"train": N_TRAIN, "val": N_VAL})
    assert set(read_table(run)["label"]) == {0, 1, 2, 3}


class _Sequences(Dataset):
    """Variable-length inputs: items of batch b (un-shuffled) are (2 + b % 3, 6) sequences, labels from the blobs."""

    def __init__(self, n: int, seed: int) -> None:
        base = blobs(n, seed=seed)
        self.x, self.y = base.tensors

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, int]:
        return self.x[i].repeat(2 + (i // BATCH) % 3, 1), self.y[i], i


def _pad(items: list[tuple[Tensor, Tensor, int]]) -> tuple[Tensor, Tensor, Tensor]:
    longest = max(x.shape[0] for x, _, _ in items)
    x = torch.stack([F.pad(x, (0, 0, 0, longest - x.shape[0])) for x, _, _ in items])
    return x, torch.stack([y for _, y, _ in items]), torch.tensor([i for _, _, i in items])


class _SequenceNet(Net):
    def forward(self, x: Tensor) -> Any:
        return super().forward(x.mean(dim=1))


def test_variable_size_inputs_are_refused_at_the_batch_that_shows_them(tmp_path: Path) -> None:
    # the k-NN probes need one vector length: refused during training, not after it
    from lightning_difficulty import PredictionDepth

    train = DataLoader(_Sequences(N_TRAIN, seed=1), batch_size=BATCH, collate_fn=_pad)
    val = DataLoader(_Sequences(N_VAL, seed=2), batch_size=BATCH, collate_fn=_pad)
    model = _SequenceNet()
    with pytest.raises(ValueError, match=r"PredictionDepth: the inputs change shape between batches, \(2, 6\) then"):
        fit(tmp_path, model, [ConfusionScore(), PredictionDepth(k=3), report()], train=train, val=val)
    assert model.steps <= 1  # the sanity check's second batch or the first training step: never the fit's end


class _NeedsWorkerInit(Dataset):
    """Refuses to load unless the dataloader's worker_init_fn prepared the worker."""

    def __init__(self, base: Dataset) -> None:
        self.base, self.ready = base, False

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> Any:
        if not self.ready:
            raise RuntimeError("worker_init_fn did not run in this worker")
        return self.base[i]


def _prepare_worker(worker_id: int) -> None:
    info = torch.utils.data.get_worker_info()
    assert info is not None
    info.dataset.ready = True  # type: ignore[union-attr]


def test_the_fit_end_pass_keeps_the_loaders_worker_init_fn(tmp_path: Path) -> None:
    def loader(data: Dataset) -> DataLoader:
        return DataLoader(_NeedsWorkerInit(data), batch_size=BATCH, num_workers=1, worker_init_fn=_prepare_worker)

    train, val = loader(dataset(N_TRAIN, seed=1)), loader(dataset(N_VAL, seed=2))
    fit(tmp_path, Net(), [ConfusionScore(), DataDifficulty(k=3), report()], epochs=1, train=train, val=val)
    table = read_table(tmp_path / "difficulty")
    assert table["kdn"].notna().all() and len(table) == N_TRAIN + N_VAL


def _counts(n: int, seed: int) -> np.ndarray:
    """Annotator counts (n, 4), 10 annotators a row, every row annotated."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(10, [0.4, 0.3, 0.2, 0.1], size=n)


def test_human_annotations_with_nan_are_refused_at_construction() -> None:
    from lightning_difficulty import HumanAlignment

    counts = _counts(N_VAL, seed=0).astype(float)
    counts[5, 2] = np.nan
    with pytest.raises(ValueError, match=r"rows \[5\].*NaN"):
        HumanAlignment(counts, split="val")


def test_human_rows_without_annotations_are_nan_with_a_warning(tmp_path: Path) -> None:
    from lightning_difficulty import HumanAlignment

    counts = _counts(N_VAL, seed=0)
    counts[[3, 7]] = 0
    with pytest.warns(UserWarning, match="2 samples have no annotation"):
        fit(tmp_path, Net(), [ConfusionScore(), HumanAlignment(counts, split="val"), report()], epochs=1)
    table = read_table(tmp_path / "difficulty")
    human = column(table, "val", "human_difficulty")
    labels = column(table, "val", "label")
    assert np.isnan(human[[3, 7]]).all()
    rows = np.setdiff1d(np.arange(N_VAL), [3, 7])
    expected = 1 - counts[rows, labels[rows]] / counts[rows].sum(axis=1)
    np.testing.assert_allclose(human[rows], expected)


def test_human_alignment_on_a_split_that_does_not_exist_stops_before_training(tmp_path: Path) -> None:
    from lightning_difficulty import HumanAlignment

    model = Net()
    with pytest.raises(ValueError, match=r"split='val_1'.*splits \['train', 'val'\]"):
        fit(tmp_path, model, [HumanAlignment(_counts(N_VAL, 0), split="val_1"), report()], epochs=1)
    assert model.steps == 0


def test_human_alignment_on_train_and_val_keep_their_own_summaries(tmp_path: Path) -> None:
    from lightning_difficulty import HumanAlignment

    train_counts, val_counts = _counts(N_TRAIN, seed=1), _counts(N_VAL, seed=2)
    train_counts[:, 0] += 5  # a different annotator-count profile per split
    callbacks = [HumanAlignment(train_counts, split="train"), HumanAlignment(val_counts, split="val"), report()]
    fit(tmp_path, Net(), callbacks, epochs=1)
    summary = json.loads((tmp_path / "difficulty" / "summary.json").read_text())
    by_split = {
        split: part
        for m in summary["measures"].values()
        if m["callback"] == "HumanAlignment"
        for split, part in m["splits"].items()
    }
    assert by_split["train"]["annotators_per_sample"] == {"min": 15, "median": 15.0}
    assert by_split["val"]["annotators_per_sample"] == {"min": 10, "median": 10.0}
    # disjoint splits fill one column (no prefixed copy)
    table = read_table(tmp_path / "difficulty")
    assert not [c for c in table.columns if c.endswith(":human_difficulty")]
    for split, counts in (("train", train_counts), ("val", val_counts)):
        labels = column(table, split, "label")
        expected = 1 - counts[np.arange(len(labels)), labels] / counts.sum(axis=1)
        np.testing.assert_allclose(column(table, split, "human_difficulty"), expected, atol=1e-12)


class _TwoLoaderNet(Net):
    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        super().validation_step(batch, batch_idx)


def test_a_dict_of_validation_loaders_is_scored_per_loader(tmp_path: Path) -> None:
    recorder = LogitRecorder()
    train, val = make_loaders()
    other = DataLoader(dataset(N_VAL - 5, seed=3), batch_size=BATCH)
    callbacks = [ConfusionScore(), report(), recorder]
    fit(tmp_path, _TwoLoaderNet(), callbacks, epochs=2, train=train, val={"a": val, "b": other})
    table = read_table(tmp_path / "difficulty")
    assert sorted(set(table["split"])) == ["train", "val", "val_1"]
    assert (table["split"] == "val_1").sum() == N_VAL - 5 and table["confusion"].notna().all()
