"""ConfusionScore: per-sample softmax entropy averaged over epochs, from the ordinary training loop."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import Tensor
from typing_extensions import override

from lightning_difficulty.callbacks._distributed import all_gather_int, all_reduce_, barrier
from lightning_difficulty.callbacks._tap import LogitsTap, no_logits_error
from lightning_difficulty.callbacks.base import Columns, DifficultyCallback, run_dir, split_loader, split_name
from lightning_difficulty.data import Batch, BatchKeys, unpack_batch
from lightning_difficulty.functional.confusion import mean_over_epochs, softmax_with_entropy
from lightning_difficulty.storage.records import EpochRecorder

if TYPE_CHECKING:
    import lightning.pytorch as pl

RecordMode = Literal["auto", "probs", "topk", "none"]
_SPLITS = ("train", "val")


@dataclass
class _SplitState:
    """Index-keyed statistics of one split: O(N) scalars in memory, probabilities on disk."""

    num_samples: int
    num_classes: int
    device: torch.device
    entropy_sum: np.ndarray = field(init=False)
    epochs_seen: np.ndarray = field(init=False)
    labels: np.ndarray = field(init=False)
    epoch_means: dict[int, float] = field(default_factory=dict)
    recorder: EpochRecorder | None = None
    open_epoch: int | None = None

    def __post_init__(self) -> None:
        self.entropy_sum = np.zeros(self.num_samples, dtype=np.float64)
        self.epochs_seen = np.zeros(self.num_samples, dtype=np.int32)
        self.labels = np.full(self.num_samples, -1, dtype=np.int64)
        self.reset_epoch()

    def reset_epoch(self) -> None:
        n, dev = self.num_samples, self.device
        self.epoch_sum = torch.zeros(n, dtype=torch.float64, device=dev)
        self.epoch_count = torch.zeros(n, dtype=torch.int32, device=dev)
        self.epoch_labels = torch.full((n,), -1, dtype=torch.int64, device=dev)
        self.nonfinite = torch.zeros((), dtype=torch.int64, device=dev)

    def add(self, index: Tensor, logits: Tensor, target: Tensor) -> None:
        probs, entropy = softmax_with_entropy(logits)
        self.nonfinite += (~torch.isfinite(entropy)).sum()
        self.epoch_sum.index_add_(0, index, entropy.double())
        self.epoch_count.index_add_(0, index, torch.ones_like(index, dtype=torch.int32))
        if target.ndim == 1 and not target.is_floating_point():
            self.epoch_labels.index_copy_(0, index, target.to(self.epoch_labels.device))
        if self.recorder is not None:
            self.recorder.add(index, probs)


class ConfusionScore(DifficultyCallback):
    r"""Per-sample confusion score: the softmax entropy (nats) averaged over the epochs a sample was seen.

    Hooks the training and validation forward passes (no extra compute: one softmax and one
    ``index_add`` per batch). Sanity-check batches never count. Scores are keyed by dataset index,
    so batches must carry it (see :class:`~lightning_difficulty.IndexedDataset`).

    Args:
        splits: which loops to score: ``"train"`` and/or ``"val"`` (all validation dataloaders).
        record: per-epoch probability record for ensembles (``lightning-difficulty combine``):
            ``"probs"`` full vectors, ``"topk"`` the ``topk`` largest (for many classes), ``"none"``,
            or ``"auto"`` (``"probs"`` up to 100 classes, else ``"topk"``).
        topk: vector length of the ``"topk"`` record.
        batch_keys: where the index/target are in the batch.
        logits_from: name of the submodule whose output are the logits (default: the module's forward).
        record_dir: where records go (default ``<run dir>/records``, beside the report's table).

    Example::

        trainer = L.Trainer(callbacks=[ConfusionScore(), DifficultyReport()])
        trainer.fit(model, DataLoader(IndexedDataset(train_set)), DataLoader(IndexedDataset(val_set)))
        ConfusionScore.scores["train"]      # (N,) float64, NaN for samples never seen
    """

    def __init__(
        self,
        splits: tuple[str, ...] | list[str] = _SPLITS,
        *,
        record: RecordMode = "auto",
        topk: int = 5,
        batch_keys: BatchKeys | None = None,
        logits_from: str | None = None,
        record_dir: str | None = None,
    ) -> None:
        super().__init__()
        unknown = [s for s in splits if s not in _SPLITS]
        if unknown or not splits:
            raise ValueError(f"Invalid value for splits={list(splits)!r}. Choose one or both of {list(_SPLITS)}.")
        if record not in ("auto", "probs", "topk", "none"):
            raise ValueError(f"Invalid value for record={record!r}. Must be 'auto', 'probs', 'topk' or 'none'.")
        if not isinstance(topk, int) or topk < 1:
            raise ValueError(f"Expected argument `topk` to be a positive integer, but got {topk!r}.")
        self.splits = tuple(splits)
        self.record = record
        self.topk = topk
        self.batch_keys = batch_keys or BatchKeys()
        self.logits_from = logits_from
        self.record_dir = record_dir
        self._tap = LogitsTap(logits_from)
        self._state_key = self._generate_state_key(splits=self.splits, logits_from=self.logits_from)
        self._states: dict[str, _SplitState] = {}
        self._batch: Batch | None = None
        self._restored: dict[str, Any] = {}
        self._rank, self._world = 0, 1

    @property
    def state_key(self) -> str:
        return self._state_key

    @property
    def scores(self) -> dict[str, np.ndarray]:
        """``split -> (N,)`` confusion scores (mean entropy over the epochs each sample was seen)."""
        return {s: mean_over_epochs(st.entropy_sum, st.epochs_seen) for s, st in self._states.items()}

    @property
    def epoch_means(self) -> dict[str, dict[int, float]]:
        """``split -> {epoch: mean entropy over the samples seen that epoch}``."""
        return {s: dict(st.epoch_means) for s, st in self._states.items()}

    # -- hooks -----------------------------------------------------------------------------------
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._tap.attach(pl_module)
            self._rank, self._world = trainer.global_rank, trainer.world_size

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._tap.remove()
        for state in self._states.values():
            if state.recorder is not None:
                state.recorder.flush()

    @override
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._tap.remove()

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if "train" in self.splits:
            self._open(batch)

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if "train" in self.splits:
            self._close(trainer, "train", "training step")

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        state = self._states.get("train")
        if state is not None and state.open_epoch not in (None, trainer.current_epoch):
            self._finish_epoch(trainer, "train")  # an epoch restored from a checkpoint taken after its last batch

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if "train" in self._states:
            self._finish_epoch(trainer, "train")

    @override
    def on_validation_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if "val" in self.splits and not trainer.sanity_checking:
            self._open(batch)

    @override
    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if "val" in self.splits and not trainer.sanity_checking:
            self._close(trainer, split_name(dataloader_idx), "validation step")

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        for split in [s for s in self._states if s.startswith("val")]:
            if self._states[split].open_epoch is not None:
                self._finish_epoch(trainer, split)

    # -- accumulation ----------------------------------------------------------------------------
    def _open(self, batch: Any) -> None:
        self._batch = unpack_batch(batch, self.batch_keys)
        self._tap.open(batch_size=int(self._batch.index.shape[0]))

    def _close(self, trainer: pl.Trainer, split: str, where: str) -> None:
        logits, parsed, self._batch = self._tap.close(), self._batch, None
        assert parsed is not None
        if logits is None:
            raise no_logits_error(where, self.logits_from, int(parsed.index.shape[0]))
        state = self._state_for(trainer, split, logits)
        index = parsed.index.to(state.device)
        if state.open_epoch is None:
            self._check_index_range(split, index, state.num_samples)
            # validation runs are numbered 0, 1, ... (several may fall in one training epoch)
            state.open_epoch = trainer.current_epoch if split == "train" else max(state.epoch_means, default=-1) + 1
        state.add(index, logits.to(state.device), parsed.target)

    @staticmethod
    def _check_index_range(split: str, index: Tensor, num_samples: int) -> None:
        low, high = int(index.min()), int(index.max())
        if low < 0 or high >= num_samples:
            raise IndexError(
                f"Dataset index out of range in split {split!r}: got indices in [{low}, {high}] but the "
                f"dataloader's dataset has {num_samples} samples. The index must be the position in that "
                "dataset (use `IndexedDataset`)."
            )

    def _state_for(self, trainer: pl.Trainer, split: str, logits: Tensor) -> _SplitState:
        state = self._states.get(split)
        if state is not None:
            return state
        num_samples = _dataset_size(trainer, split)
        state = _SplitState(num_samples, int(logits.shape[1]), logits.device)
        kind = self._record_kind(state.num_classes)
        if kind != "none":
            directory = Path(self.record_dir) if self.record_dir else run_dir(trainer) / "records"
            state.recorder = EpochRecorder(
                directory, split, num_samples, state.num_classes, kind=kind, topk=self.topk, rank=self._rank
            )
            state.recorder.discard_log()
        self._apply_restored(split, state)
        self._states[split] = state
        return state

    def _record_kind(self, num_classes: int) -> Literal["probs", "topk", "none"]:
        if self.record == "auto":
            return "probs" if num_classes <= 100 else "topk"
        return self.record

    def _finish_epoch(self, trainer: pl.Trainer, split: str) -> None:
        state = self._states[split]
        epoch = state.open_epoch
        if epoch is None:
            return
        for tensor in (state.epoch_sum, state.epoch_count, state.nonfinite):
            all_reduce_(tensor, "sum")
        all_reduce_(state.epoch_labels, "max")
        nonfinite = int(state.nonfinite)
        if nonfinite:
            raise FloatingPointError(
                f"ConfusionScore: {nonfinite} logits rows of split {split!r} were NaN or infinite in epoch {epoch}. "
                "The scores of earlier epochs are kept in the last checkpoint; fix the divergence (lower the "
                "learning rate, clip gradients, check the inputs) and resume."
            )
        count = state.epoch_count.cpu().numpy()
        seen = count > 0
        per_sample = state.epoch_sum.cpu().numpy()[seen] / count[seen]
        state.entropy_sum[seen] += per_sample
        state.epochs_seen[seen] += 1
        labels = state.epoch_labels.cpu().numpy()
        state.labels[labels >= 0] = labels[labels >= 0]
        state.epoch_means[epoch] = float(per_sample.mean()) if per_sample.size else float("nan")
        if state.recorder is not None:
            state.recorder.flush()
            barrier()
            if self._rank == 0:
                state.recorder.finish_epoch(epoch, world_size=self._world)
            else:
                state.recorder.epochs.append(epoch)
            barrier()
        state.reset_epoch()
        state.open_epoch = None
        _log_epoch(trainer, split, epoch, per_sample)

    # -- report interface --------------------------------------------------------------------------
    @override
    def columns(self) -> Columns:
        out: Columns = {}
        for split, state in self._states.items():
            out[split] = {"confusion": mean_over_epochs(state.entropy_sum, state.epochs_seen)}
            if (state.labels >= 0).any():
                out[split]["label"] = state.labels.copy()
        return out

    @override
    def summary(self) -> dict[str, Any]:
        return {
            split: {"epochs": len(st.epoch_means), "mean_confusion_per_epoch": st.epoch_means}
            for split, st in self._states.items()
        }

    # -- checkpointing ---------------------------------------------------------------------------
    @override
    def state_dict(self) -> dict[str, Any]:
        splits: dict[str, Any] = {}
        for split, state in self._states.items():
            entry: dict[str, Any] = {
                "num_samples": state.num_samples,
                "num_classes": state.num_classes,
                "entropy_sum": torch.from_numpy(state.entropy_sum.copy()),
                "epochs_seen": torch.from_numpy(state.epochs_seen.copy()),
                "labels": torch.from_numpy(state.labels.copy()),
                "epoch_means": dict(state.epoch_means),
                "record_epochs": list(state.recorder.epochs) if state.recorder else [],
            }
            if state.open_epoch is not None:  # a checkpoint taken inside an epoch
                entry["open_epoch"] = state.open_epoch
                entry["epoch_sum"] = all_reduce_(state.epoch_sum.clone(), "sum").cpu()
                entry["epoch_count"] = all_reduce_(state.epoch_count.clone(), "sum").cpu()
                entry["epoch_labels"] = all_reduce_(state.epoch_labels.clone(), "max").cpu()
                rows = state.recorder.log_offsets() if state.recorder else 0
                entry["log_rows"] = all_gather_int(rows, state.device)
            splits[split] = entry
        return {"version": 1, "splits": splits}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = dict(state_dict.get("splits", {}))
        for split, state in self._states.items():
            self._apply_restored(split, state)

    def _apply_restored(self, split: str, state: _SplitState) -> None:
        saved = self._restored.pop(split, None)
        if saved is None:
            return
        if saved["num_samples"] != state.num_samples:
            raise ValueError(
                f"The checkpoint's ConfusionScore state for split {split!r} has {saved['num_samples']} samples "
                f"but the dataset now has {state.num_samples}. Resume with the same dataset."
            )
        state.entropy_sum = saved["entropy_sum"].numpy().astype(np.float64)
        state.epochs_seen = saved["epochs_seen"].numpy().astype(np.int32)
        state.labels = saved["labels"].numpy().astype(np.int64)
        state.epoch_means = {int(k): float(v) for k, v in saved.get("epoch_means", {}).items()}
        if state.recorder is not None:
            state.recorder.epochs = [int(e) for e in saved.get("record_epochs", [])]
        if "open_epoch" in saved:
            state.open_epoch = int(saved["open_epoch"])
            if self._rank == 0:  # other ranks start from zero so the epoch-end sum is not multiplied
                state.epoch_sum.copy_(saved["epoch_sum"])
                state.epoch_count.copy_(saved["epoch_count"])
                state.epoch_labels.copy_(saved["epoch_labels"])
            if state.recorder is not None:
                rows = saved.get("log_rows", [])
                state.recorder.truncate_log(rows[self._rank] if self._rank < len(rows) else 0)


def _dataset_size(trainer: pl.Trainer, split: str) -> int:
    dataset = getattr(split_loader(trainer, split), "dataset", None)
    try:
        return len(dataset)  # type: ignore[arg-type]
    except TypeError as err:
        raise TypeError(
            f"ConfusionScore needs the size of the {split!r} dataset to key scores by index, but its dataloader's "
            f"dataset ({type(dataset).__name__}) has no len(). Use a map-style dataset wrapped in IndexedDataset."
        ) from err


def _log_epoch(trainer: pl.Trainer, split: str, epoch: int, per_sample: np.ndarray) -> None:
    from lightning_difficulty.views.tensorboard import tensorboard_writer

    if trainer.global_rank != 0 or per_sample.size == 0:
        return
    writer = tensorboard_writer(trainer)
    if writer is None:
        return
    writer.add_scalar(f"difficulty/confusion_mean/{split}", float(per_sample.mean()), epoch)
    writer.add_histogram(f"difficulty/confusion/{split}", per_sample, epoch)


__all__ = ["ConfusionScore"]
