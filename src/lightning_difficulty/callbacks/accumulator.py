"""The per-sample accumulator: the one extension point for measures read from the training loop.

A measure supplies pure per-batch values ``(logits, targets) -> {name: (B,)}`` (from ``functional/``),
declares its O(N) states, and folds each epoch's per-sample means into them. This base class owns
everything else, once: the logits tap, batch and index checks, sanity-check exclusion, averaging
``DistributedSampler`` duplicates within an epoch, the all-reduce through ``trainer.strategy``,
exact resume at any step, the per-epoch probability records and per-fit reset.

Example (a measure in a few lines)::

    class MeanMargin(PerSampleAccumulator):
        values = ("margin",)
        states = (SampleState("margin_sum"), SampleState("epochs", np.int32))

        def per_batch(self, logits, targets):
            return {"margin": logit_margin(logits, targets)}

        def fold(self, states, epoch, seen):
            states["margin_sum"][seen] += epoch["margin"][seen]
            states["epochs"][seen] += 1

        def split_columns(self, states, labels):
            return {"margin": mean_over_epochs(states["margin_sum"], states["epochs"])}
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch
from lightning.pytorch.strategies import Strategy
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from typing_extensions import override

from lightning_difficulty.callbacks.base import (
    ColumnInfo,
    Contribution,
    DifficultyCallback,
    check_writable,
    output_dir,
)
from lightning_difficulty.data import Batch, BatchKeys, class_targets, unpack_batch
from lightning_difficulty.logits import LogitsTap, as_class_logits, check_logits, no_logits_error
from lightning_difficulty.pipeline.capture import CaptureRequest, FitEndArrays
from lightning_difficulty.pipeline.splits import (
    dataset_labels,
    fit_has_validation,
    split_loader,
    split_name,
    validation_loaders,
    validation_split_names,
)
from lightning_difficulty.storage.records import EpochRecorder

if TYPE_CHECKING:
    import lightning.pytorch as pl

SPLITS = ("train", "val")
RecordMode = Literal["auto", "probs", "topk", "none"]


@dataclass(frozen=True)
class SampleState:
    """One O(N) per-sample state of a measure, kept across epochs and saved in checkpoints."""

    name: str
    dtype: Any = np.float64
    fill: float = 0.0


@dataclass
class SplitAccumulator:
    """Index-keyed statistics of one split: device buffers for the open epoch, O(N) host states across epochs."""

    num_samples: int
    num_classes: int
    values: tuple[str, ...]
    specs: tuple[SampleState, ...]
    device: torch.device
    states: dict[str, np.ndarray] = field(init=False)
    labels: np.ndarray = field(init=False)
    epoch_scalars: dict[int, dict[str, float]] = field(default_factory=dict)
    recorder: EpochRecorder | None = None
    open_epoch: int | None = None
    replayed: Tensor | None = None
    """Samples presented in the open epoch before the mid-epoch checkpoint this run resumed from: Lightning
    restarts the epoch's data, and their second presentation is ignored (the table and the records alike)."""

    def __post_init__(self) -> None:
        self.states = {s.name: np.full(self.num_samples, s.fill, dtype=s.dtype) for s in self.specs}
        self.labels = np.full(self.num_samples, -1, dtype=np.int64)
        self.reset_epoch()

    @property
    def out_of_range(self) -> int:
        """Slot of rows whose index is outside ``[0, N)`` (an error at the epoch's end)."""
        return self.num_samples

    @property
    def skipped(self) -> int:
        """Slot of rows that count for no sample because they carry no label (``ignore_index``)."""
        return self.num_samples + 1

    @property
    def replay(self) -> int:
        """Slot of replayed presentations (see :attr:`replayed`)."""
        return self.num_samples + 2

    @property
    def repeat(self) -> int:
        """Slot of a sample's later presentations in one epoch on this process (a sampler that repeats it): the
        table and the records alike keep its first presentation."""
        return self.num_samples + 3

    def reset_epoch(self) -> None:
        # four extra slots route rows without a per-batch device sync (out_of_range, skipped, replay, repeat)
        n, dev = self.num_samples + 4, self.device
        self.sums = torch.zeros((len(self.values), n), dtype=torch.float64, device=dev)  # one row per value
        self.predicted = torch.zeros(self.num_classes, dtype=torch.int64, device=dev)  # argmax counts per class
        self.count = torch.zeros(n, dtype=torch.int64, device=dev)
        self.epoch_labels = torch.full((n,), -1, dtype=torch.int64, device=dev)

    def to(self, device: torch.device) -> None:
        """Move the open epoch's buffers (restored on the CPU) to the training device."""
        self.device = device
        self.sums, self.count, self.epoch_labels, self.predicted = (
            t.to(device) for t in (self.sums, self.count, self.epoch_labels, self.predicted)
        )
        if self.replayed is not None:
            self.replayed = self.replayed.to(device)

    def route(self, index: Tensor, counted: Tensor | None = None) -> Tensor:
        """Each row's slot: its sample, :attr:`out_of_range`, :attr:`skipped` (rows not ``counted``) or
        :attr:`replay`. No device synchronisation."""
        index = torch.where((index >= 0) & (index < self.num_samples), index, self.out_of_range)
        if counted is not None:
            index = torch.where(counted, index, self.skipped)
        if self.replayed is not None:
            index = torch.where(self.replayed[index], self.replay, index)
        rows = torch.arange(index.shape[0], device=index.device)
        first_row = torch.full_like(self.count, index.shape[0]).scatter_reduce_(0, index, rows, reduce="amin")
        again = (first_row[index] != rows) | (self.count[index] > 0)  # earlier in this batch, or in this epoch
        return torch.where(again & (index < self.num_samples), self.repeat, index)

    def add(self, slots: Tensor, batch_values: dict[str, Tensor], targets: Tensor, logits: Tensor) -> None:
        """Add one batch's values at the slots given by :meth:`route`."""
        self.predicted.index_add_(0, logits.argmax(dim=1), torch.ones_like(slots))
        self.sums.index_add_(1, slots, torch.stack([batch_values[name] for name in self.values]).double())
        self.count.index_add_(0, slots, torch.ones_like(slots))
        self.epoch_labels.scatter_reduce_(0, slots, targets.to(self.device), reduce="amax")


class PerSampleAccumulator(DifficultyCallback):
    """Base class of training-time per-sample measures (see the module docstring).

    Subclasses set ``values`` and ``states`` and implement :meth:`per_batch`, :meth:`fold` and
    :meth:`split_columns`; :meth:`column_info` describes the columns (optional). Per-epoch means of each value over
    the samples seen are logged to every logger as ``difficulty/<value>_mean/<split>``.

    Args:
        splits: which loops to read: ``"train"`` and/or ``"val"`` (every validation dataloader).
        batch_keys: where the input, target and index sit in a batch.
        logits_from: name of the submodule whose output are the logits (default: the module's ``forward``).
        record: per-epoch probability records for ``lightning-difficulty combine``: ``"probs"``, ``"topk"``,
            ``"none"`` or ``"auto"`` (``"probs"`` up to 100 classes, else ``"topk"``).
        topk: vector length of the ``"topk"`` record.
        record_dir: where records go (default ``<run dir>/records``, beside the report's table).
        num_classes: the model's number of classes, when it has classes that no label uses (otherwise an output
            whose predictions mostly name such classes is refused at the first epoch end as not being logits).
    """

    values: ClassVar[tuple[str, ...]] = ()
    states: ClassVar[tuple[SampleState, ...]] = ()
    scalars: ClassVar[tuple[str, ...]] = ()
    """Names of the extra per-epoch scalars :meth:`state_scalars` returns (logged beside the values' means)."""
    needs_labels: ClassVar[bool] = True
    needs_report = False

    def __init__(
        self,
        splits: tuple[str, ...] | list[str] = SPLITS,
        *,
        batch_keys: BatchKeys | None = None,
        logits_from: str | None = None,
        record: RecordMode = "none",
        topk: int = 5,
        record_dir: str | None = None,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        unknown = [s for s in splits if s not in SPLITS]
        if unknown or not splits or isinstance(splits, str):
            raise ValueError(f"Invalid value for splits={splits!r}. Choose one or both of {list(SPLITS)}.")
        if record not in ("auto", "probs", "topk", "none"):
            raise ValueError(f"Invalid value for record={record!r}. Must be 'auto', 'probs', 'topk' or 'none'.")
        if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
            raise ValueError(f"Expected argument `topk` to be a positive integer, but got {topk!r}.")
        if num_classes is not None and (
            isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
        ):
            raise ValueError(f"Expected argument `num_classes` to be a positive integer, but got {num_classes!r}.")
        self.num_classes = num_classes
        self.splits = tuple(splits)
        self.batch_keys = batch_keys
        self.logits_from = logits_from
        self.record = record
        self.topk = topk
        self.record_dir = record_dir
        self._tap = LogitsTap(logits_from)
        self._state_key = self._generate_state_key(splits=self.splits, logits_from=logits_from)
        self._accumulators: dict[str, SplitAccumulator] = {}
        self._batch: Batch | None = None
        self._checked: set[str] = set()
        self._records_root: Path | None = None
        self._restored = False
        self._classes_checked: set[str] = set()
        self._strategy: Strategy | None = None
        self._rank = 0
        self._trainer_ref: weakref.ref[pl.Trainer] | None = None
        self._history: list[dict[str, Any]] = []
        self._pending_skips: list[int] = []

    # -- what a measure supplies ------------------------------------------------------------------
    def per_batch(self, logits: Tensor, targets: Tensor) -> dict[str, Tensor]:
        """Per-sample values ``(B,)`` of one batch: ``logits`` ``(B, C)`` float, ``targets`` class ids ``(B,)``."""
        raise NotImplementedError

    def fold(self, states: dict[str, np.ndarray], epoch: dict[str, np.ndarray], seen: np.ndarray) -> None:
        """Fold one epoch's per-sample means (``epoch[value]``, valid where ``seen``) into ``states`` in place."""
        raise NotImplementedError

    def split_columns(self, states: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, np.ndarray]:
        """The table columns of one split from its states."""
        raise NotImplementedError

    def state_scalars(self, states: dict[str, np.ndarray]) -> dict[str, float]:
        """Extra per-epoch scalars from the folded states (logged beside each value's epoch mean); default: none."""
        return {}

    def column_info(self) -> dict[str, ColumnInfo]:
        """What each column means (``columns.json``); default: the column names only."""
        return {}

    @override
    def compute(self, trainer: pl.Trainer, arrays: FitEndArrays) -> Contribution:
        """The columns folded during training, their meaning and the per-epoch means."""
        summary: dict[str, Any] = {"epochs": self.epoch_scalars()}
        if self._history:
            summary["history"] = self.history
        return Contribution(columns=self.columns(), info=self.column_info(), summary=summary)

    # -- public state -----------------------------------------------------------------------------
    @property
    @override
    def state_key(self) -> str:
        return self._state_key

    def columns(self) -> dict[str, dict[str, np.ndarray]]:
        """``split -> column -> (N,)`` from the epochs folded so far."""
        out: dict[str, dict[str, np.ndarray]] = {}
        for split, acc in self._accumulators.items():
            out[split] = self.split_columns(acc.states, acc.labels)
            if (acc.labels >= 0).any():
                out[split]["label"] = acc.labels.copy()
        return out

    def epoch_scalars(self) -> dict[str, dict[int, dict[str, float]]]:
        """``split -> epoch -> {value: mean over the samples seen}``."""
        return {s: {e: dict(v) for e, v in acc.epoch_scalars.items()} for s, acc in self._accumulators.items()}

    # -- lifecycle --------------------------------------------------------------------------------
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage != "fit":
            return
        self._batch = None
        if self._continues(trainer):
            # `fit` called again on the same Trainer extends its training: the history so far stays
            self._restored = True
        else:  # a new fit (or this callback reused in another Trainer): per-fit state starts clean
            self._accumulators, self._checked, self._restored = {}, set(), False
            self._classes_checked, self._history, self._pending_skips = set(), [], []
        self._trainer_ref = weakref.ref(trainer)
        self._check_curve_keys(trainer)
        self._records_root = self._records_folder(trainer)
        self._check_records(trainer)
        if self.record != "none":
            check_writable(self._records_root, owner=type(self).__name__)
        self._strategy = trainer.strategy  # state_dict() gets no trainer, but its collectives go through the strategy
        self._rank = trainer.global_rank
        self._tap.attach(pl_module)

    def __getstate__(self) -> dict[str, Any]:
        """Picklable for ``ddp_spawn`` (the weak reference to the last Trainer stays behind)."""
        return {**self.__dict__, "_trainer_ref": None}

    def _continues(self, trainer: pl.Trainer) -> bool:
        """Whether this fit extends an earlier fit of the same Trainer (Lightning keeps its loop's progress)."""
        previous = self._trainer_ref() if self._trainer_ref is not None else None
        progress = trainer.fit_loop.epoch_progress.current.completed
        return previous is trainer and bool(self._accumulators) and progress > 0

    @override
    def capture_request(self) -> CaptureRequest | None:
        """The fit-end pass reads the logits from the same place as the training steps."""
        return CaptureRequest(batch_keys=self.batch_keys, logits_from=self.logits_from)

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for split, acc in list(self._accumulators.items()):  # restored from a checkpoint
            self._check_size(trainer, split, acc.num_samples, "the checkpoint's state")
            acc.to(pl_module.device)
            if split == "train" and acc.open_epoch is not None:  # a checkpoint taken at a training batch's end
                epoch, last_batch = acc.open_epoch, acc.open_epoch != trainer.current_epoch
                self._finish_restored_epoch(trainer)
                if _validation_was_due(trainer, epoch, last_batch=last_batch):
                    self._note_skipped_validation(trainer, epoch)
        if not self._restored and self._records_root is not None and trainer.is_global_zero:
            # a fresh fit: no epochs of other runs, of any split (this fit may not score a split the last one did)
            for folder in sorted(self._records_root.glob("*/")):
                EpochRecorder.discard_previous(self._records_root, folder.name)
        trainer.strategy.barrier()

    def _note_skipped_validation(self, trainer: pl.Trainer, epoch: int) -> None:
        if "val" not in self.splits or not fit_has_validation(trainer):
            return
        if trainer.val_dataloaders is None:  # not loaded yet: noted for every loader when validation starts
            self._pending_skips.append(epoch)
            return
        for split in validation_split_names(trainer):
            self._note(
                split,
                epoch,
                "skipped",
                _SKIPPED.format(epoch=epoch),
            )

    @override
    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._tap.remove()
        for acc in self._accumulators.values():
            if acc.recorder is not None:
                acc.recorder.flush()

    @override
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        super().on_exception(trainer, pl_module, exception)
        self._tap.remove()

    # -- hooks ------------------------------------------------------------------------------------
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
        self._finish_restored_epoch(trainer)
        if "train" in self._accumulators:  # a dataset that grows or shrinks between epochs has no fixed index
            self._check_size(trainer, "train", self._accumulators["train"].num_samples, "the first epoch")

    def _finish_restored_epoch(self, trainer: pl.Trainer) -> None:
        """A checkpoint taken at an epoch's last batch: Lightning resumes in the next epoch, without the end of
        this one and without the validation that would have followed that batch."""
        acc = self._accumulators.get("train")
        if acc is None or acc.open_epoch is None or acc.open_epoch == trainer.current_epoch:
            return
        acc.replayed = None
        self._finish_epoch(trainer, "train")

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if "train" in self._accumulators:
            self._finish_epoch(trainer, "train")

    @override
    def on_validation_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if self._reads_validation(trainer):
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
        if self._reads_validation(trainer):
            self._close(trainer, split_name(dataloader_idx), "validation step")

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for epoch in self._pending_skips:  # no validation ran after the resume: its loaders were never loaded
            for split in validation_split_names(trainer):
                self._note(split, epoch, "skipped", _SKIPPED.format(epoch=epoch))
        self._pending_skips = []
        for acc in self._accumulators.values():  # training is complete: no checkpoint of it needs the logs
            if acc.recorder is not None:
                acc.recorder.release_logs()

    @override
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pending, self._pending_skips = self._pending_skips, []
        if self._reads_validation(trainer):
            for epoch in pending:
                self._note_skipped_validation(trainer, epoch)

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._reads_validation(trainer):
            return
        for split in [s for s in self._accumulators if s.startswith("val")]:
            if self._accumulators[split].open_epoch is not None:
                self._finish_epoch(trainer, split)

    def _reads_validation(self, trainer: pl.Trainer) -> bool:
        # only validation inside fit counts (not the sanity check, not a later trainer.validate())
        return "val" in self.splits and trainer.state.fn == "fit" and not trainer.sanity_checking

    # -- accumulation -----------------------------------------------------------------------------
    def _open(self, batch: Any) -> None:
        self._batch = unpack_batch(batch, self.batch_keys or BatchKeys())
        self._tap.open(batch_size=int(self._batch.index.shape[0]))

    def _close(self, trainer: pl.Trainer, split: str, where: str) -> None:
        captured, parsed, self._batch = self._tap.close(), self._batch, None
        if parsed is None:
            return
        if captured is None:
            raise no_logits_error(where, self.logits_from, int(parsed.index.shape[0]))
        logits = as_class_logits(captured)
        targets = class_targets(parsed.target, where=where)
        acc = self._accumulator(trainer, split, logits)
        index = parsed.index.to(acc.device)
        if split not in self._checked:  # the first batch of a split: everything that can be checked, once
            check_logits(logits, targets, where=f"{type(self).__name__}'s {where}", logits_from=self.logits_from)
            _check_index_range(split, index, acc.num_samples)
            self._checked.add(split)
        if acc.open_epoch is None:
            # validation runs are numbered 0, 1, ... (several may fall in one training epoch)
            acc.open_epoch = trainer.current_epoch if split == "train" else max(acc.epoch_scalars, default=-1) + 1
            if acc.recorder is not None:
                acc.recorder.epoch = acc.open_epoch
        with torch.no_grad():
            logits = logits.to(acc.device)
            if logits.dtype in (torch.float16, torch.bfloat16):
                logits = logits.float()
            targets = targets.to(acc.device)
            slots = acc.route(index, targets >= 0 if self.needs_labels else None)  # unlabelled rows skip
            acc.add(slots, self.per_batch(logits, targets.clamp(min=0)), targets, logits)
            if acc.recorder is not None:
                acc.recorder.add(slots, torch.softmax(logits, dim=1))

    def _accumulator(self, trainer: pl.Trainer, split: str, logits: Tensor) -> SplitAccumulator:
        acc = self._accumulators.get(split)
        if acc is None:
            num_samples = _dataset_size(trainer, split, type(self).__name__)
            acc = self._new_accumulator(split, num_samples, int(logits.shape[1]), logits.device, trainer.global_rank)
            if acc.recorder is not None:
                acc.recorder.discard_log()
            self._accumulators[split] = acc
            if self.num_classes not in (None, acc.num_classes):
                raise ValueError(
                    f"{type(self).__name__}(num_classes={self.num_classes}): the captured output of split {split!r} "
                    f"has {acc.num_classes} columns. Pass the width of the model's class logits, or leave num_classes "
                    "out."
                )
        elif acc.num_classes != logits.shape[1]:
            raise ValueError(
                f"{type(self).__name__}: the logits of split {split!r} have {logits.shape[1]} columns but earlier "
                f"batches had {acc.num_classes}. The captured output must be the class logits of every batch."
            )
        return acc

    def _new_accumulator(
        self, split: str, num_samples: int, num_classes: int, device: torch.device, rank: int
    ) -> SplitAccumulator:
        acc = SplitAccumulator(num_samples, num_classes, self.values, self.states, device)
        kind = self._record_kind(num_classes)
        if kind != "none" and self._records_root is not None:
            acc.recorder = EpochRecorder(
                self._records_root, split, num_samples, num_classes, kind=kind, topk=self.topk, rank=rank
            )
        return acc

    def _record_kind(self, num_classes: int) -> Literal["probs", "topk", "none"]:
        if self.record == "auto":
            return "probs" if num_classes <= 100 else "topk"
        return self.record

    def _finish_epoch(self, trainer: pl.Trainer, split: str) -> None:
        acc = self._accumulators[split]
        epoch = acc.open_epoch
        if epoch is None:
            return
        reduce = trainer.strategy.reduce
        n = acc.num_samples
        sums = reduce(acc.sums, reduce_op="sum").cpu().numpy()[:, :n]
        count = reduce(acc.count, reduce_op="sum").cpu().numpy()
        labels = reduce(acc.epoch_labels, reduce_op="max").cpu().numpy()
        predicted = reduce(acc.predicted, reduce_op="sum").cpu().numpy()
        if count[acc.out_of_range]:
            raise IndexError(
                f"{type(self).__name__}: {int(count[acc.out_of_range])} rows of split {split!r} in epoch {epoch} had "
                "a dataset index "
                f"outside [0, {acc.num_samples}). The index must be the position in the dataloader's dataset "
                "(use `IndexedDataset`)."
            )
        nonfinite = int((~np.isfinite(sums)).any(axis=0).sum())  # a NaN or inf value makes its sample's sum non-finite
        if nonfinite:
            raise FloatingPointError(
                f"{type(self).__name__}: {nonfinite} samples of split {split!r} had NaN or infinite values in epoch "
                f"{epoch} "
                "(NaN or all -inf logits). The scores of earlier epochs are kept in the last checkpoint; fix the "
                "divergence (lower the learning rate, clip gradients, check the inputs) and resume."
            )
        if acc.replayed is not None and count[acc.replay]:
            self._note(
                split,
                epoch,
                "replayed",
                f"resumed from a checkpoint inside epoch {epoch}: Lightning restarted the epoch's data, so "
                f"{int(count[acc.replay])} presentations of samples already seen in it before the checkpoint were "
                f"ignored and {int((count[:n] == 0).sum())} samples were not seen in it",
            )
        acc.replayed = None
        count, labels = count[:n], labels[:n]
        seen = count > 0
        means = {name: np.where(seen, sums[i] / np.maximum(count, 1), np.nan) for i, name in enumerate(self.values)}
        self.fold(acc.states, means, seen)
        acc.labels[labels >= 0] = labels[labels >= 0]
        self._check_predicted_classes(trainer, split, epoch, predicted, acc.labels)
        scalars = {name: float(v[seen].mean()) if seen.any() else float("nan") for name, v in means.items()}
        scalars.update(self.state_scalars(acc.states))
        acc.epoch_scalars[epoch] = scalars
        if acc.recorder is not None:
            acc.recorder.label_fingerprint = None if (acc.labels < 0).any() else _fingerprint(acc.labels)
            acc.recorder.flush()
            trainer.strategy.barrier()
            if trainer.is_global_zero:
                acc.recorder.finish_epoch(epoch, world_size=trainer.world_size)
            else:
                acc.recorder.epochs.append(epoch)
            trainer.strategy.barrier()
        acc.reset_epoch()
        acc.open_epoch = None
        self._log_epoch(trainer, split, epoch, scalars, means, seen)

    def _note(self, split: str, epoch: int, event: str, detail: str) -> None:
        """Record (and warn about) a place where Lightning changed the run's history (``summary["history"]``)."""
        entry = {"split": split, "epoch": epoch, "event": event, "detail": detail}
        if entry not in self._history:
            self._history.append(entry)
            rank_zero_warn(f"{type(self).__name__}: split {split!r}, epoch {epoch}: {detail}.")

    @property
    def history(self) -> list[dict[str, Any]]:
        """Where Lightning skipped or replayed part of the run (resumes), as ``summary.json["history"]`` lists it."""
        return [dict(entry) for entry in self._history]

    def _check_predicted_classes(
        self, trainer: pl.Trainer, split: str, epoch: int, predicted: np.ndarray, labels: np.ndarray
    ) -> None:
        """Refuse, at the first training epoch end that knows every label, a captured output whose argmax mostly
        names classes no label uses: a ``forward`` that returns features (the head applied in the step) would be
        scored as logits. The labels are the dataset's when they are cheap to read, else those seen so far (the
        check waits until every sample was seen: a cut epoch may hold fewer classes than the model predicts)."""
        # the training split only: a validation run may be cut (limit_val_batches) to fewer classes than the model
        if split != "train" or split in self._classes_checked or self.num_classes is not None:
            return
        known = dataset_labels(getattr(split_loader(trainer, split), "dataset", None))
        if known is None and (labels < 0).any():
            return  # some labels not seen yet: checked again at the next epoch end
        labels = known if known is not None else labels
        self._classes_checked.add(split)
        classes = int(labels.max()) + 1 if labels.size else 0
        total = int(predicted.sum())
        if not classes or predicted.shape[0] <= classes or not total:
            return
        foreign = int(predicted[classes:].sum())
        if foreign / total > FOREIGN_PREDICTIONS:
            raise ValueError(
                f"{type(self).__name__}: the captured output of split {split!r} has {predicted.shape[0]} columns but "
                f"the labels use {classes} classes, and {foreign} of {total} predictions in epoch {epoch} are classes "
                "no label uses: it is not the class logits (a `forward` that returns features, with the head applied "
                f'in the step?). Pass logits_from="<the head module>"; if the model really has {predicted.shape[0]} '
                f"classes, pass num_classes={predicted.shape[0]}."
            )

    def _log_epoch(
        self,
        trainer: pl.Trainer,
        split: str,
        epoch: int,
        scalars: dict[str, float],
        means: dict[str, np.ndarray],
        seen: np.ndarray,
    ) -> None:
        """The epoch's curves through the LightningModule's ``log`` (every logger, Lightning's step axis with an
        ``epoch`` key, ``trainer.callback_metrics`` for EarlyStopping / ModelCheckpoint); the per-sample
        distributions as TensorBoard histograms."""
        from lightning_difficulty.views.tensorboard import log_histograms

        module = trainer.lightning_module
        for name, value in scalars.items():
            if np.isfinite(value):  # identical on every rank (reduced above): the sync is a formality
                module.log(curve_key(self._curve_name(name), split), float(value), on_epoch=True, sync_dist=True)
        log_histograms(trainer, split, {name: v[seen] for name, v in means.items()})

    def _curve_name(self, name: str) -> str:
        return f"{name}_mean" if name in self.values else name

    def curve_keys(self) -> set[str]:
        """The logged keys this measure can produce (``difficulty/<name>/<split>``; validation: the first loader)."""
        names = [*(f"{v}_mean" for v in self.values), *self.scalars]
        return {curve_key(name, split) for name in names for split in self.splits}

    def _records_folder(self, trainer: pl.Trainer) -> Path:
        return Path(self.record_dir) if self.record_dir else output_dir(trainer) / "records"

    def _check_records(self, trainer: pl.Trainer) -> None:
        """Refuse, at setup, two measures that would write records of one split into one folder."""
        if self.record == "none":
            return
        for other in trainer.callbacks:  # type: ignore[attr-defined]
            if other is self or not isinstance(other, PerSampleAccumulator) or other.record == "none":
                continue
            shared = sorted(set(self.splits) & set(other.splits))
            if shared and other._records_folder(trainer) == self._records_root:
                raise ValueError(
                    f"{self.state_key} and {other.state_key} both write records of {shared} into "
                    f"{self._records_root}. Give one of them record='none' or its own record_dir=."
                )

    def _check_curve_keys(self, trainer: pl.Trainer) -> None:
        """Refuse, at setup, two measures that would log the same curve (each would overwrite the other's)."""
        mine = self.curve_keys()
        for other in trainer.callbacks:  # type: ignore[attr-defined]
            if other is self or not isinstance(other, PerSampleAccumulator):
                continue
            shared = sorted(mine & other.curve_keys())
            if shared:
                raise ValueError(
                    f"{self.state_key} and {other.state_key} both log {shared}: one would overwrite the other. "
                    "Give each measure its own value names, or keep one of them."
                )

    def _split_names(self, trainer: pl.Trainer) -> list[str]:
        names = ["train"] if "train" in self.splits else []
        if "val" in self.splits:
            names += [split_name(i) for i in range(len(validation_loaders(trainer)))]
        return names

    def _check_size(self, trainer: pl.Trainer, split: str, expected: int, since: str) -> None:
        if split_loader(trainer, split) is None:
            return
        actual = _dataset_size(trainer, split, type(self).__name__)
        if actual != expected:
            raise ValueError(
                f"{type(self).__name__}: the {split!r} dataset has {actual} samples now, but {since} had {expected}. "
                "Per-sample scores are keyed by dataset index, so the dataset must keep its samples for the whole "
                "fit (resume with the same dataset; to grow a dataset, start a new fit)."
            )

    # -- checkpointing ----------------------------------------------------------------------------
    @override
    def state_dict(self) -> dict[str, Any]:
        splits: dict[str, Any] = {}
        for split, acc in self._accumulators.items():
            entry: dict[str, Any] = {
                "num_samples": acc.num_samples,
                "num_classes": acc.num_classes,
                "states": {name: torch.from_numpy(v.copy()) for name, v in acc.states.items()},
                "labels": torch.from_numpy(acc.labels.copy()),
                "epoch_scalars": {e: dict(v) for e, v in acc.epoch_scalars.items()},
                "record_epochs": list(acc.recorder.epochs) if acc.recorder else [],
            }
            if acc.open_epoch is not None and self._strategy is not None:  # inside an epoch: the epoch so far
                reduce = self._strategy.reduce
                entry["open_epoch"] = acc.open_epoch
                reduced = reduce(acc.sums.clone(), reduce_op="sum").cpu()
                entry["sums"] = {name: reduced[i] for i, name in enumerate(self.values)}
                entry["count"] = reduce(acc.count.clone(), reduce_op="sum").cpu()
                entry["epoch_labels"] = reduce(acc.epoch_labels.clone(), reduce_op="max").cpu()
                rows = torch.tensor([acc.recorder.log_offsets() if acc.recorder else 0], device=acc.device)
                entry["log_rows"] = self._strategy.all_gather(rows).flatten().tolist()
            splits[split] = entry
        root = str(self._records_root) if self._records_root is not None else None
        return {"version": 2, "splits": splits, "history": self.history, "records_root": root}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Rebuild every split's state now (not at the first batch), so a resume with no batch left still reports."""
        self._restored = True
        self._history = [dict(entry) for entry in state_dict.get("history", [])]
        self._discard_unsaved_records(set(state_dict.get("splits", {})))
        saved_root = state_dict.get("records_root")
        previous = Path(saved_root) if saved_root is not None else None
        if previous == self._records_root:
            previous = None  # the records stay where they are
        for split, saved in state_dict.get("splits", {}).items():
            acc = self._new_accumulator(
                split, int(saved["num_samples"]), int(saved["num_classes"]), torch.device("cpu"), self._rank
            )
            missing = sorted(set(acc.states) - set(saved.get("states", {})))
            if missing:
                raise ValueError(
                    f"{type(self).__name__}: the checkpoint's state of split {split!r} lacks {missing} (it was saved "
                    "by an older version of lightning-difficulty that kept other statistics). Resume with that "
                    "version, or start the fit afresh."
                )
            for name, value in saved["states"].items():
                if name in acc.states:
                    acc.states[name] = value.numpy().astype(acc.states[name].dtype)
            acc.labels = saved["labels"].numpy().astype(np.int64)
            acc.epoch_scalars = {int(e): dict(v) for e, v in saved.get("epoch_scalars", {}).items()}
            if acc.recorder is not None:
                acc.recorder.epochs = [int(e) for e in saved.get("record_epochs", [])]
                if previous is not None and (previous / split).is_dir():  # e.g. the logger's next version_N
                    acc.recorder.epoch = int(saved.get("open_epoch", acc.recorder.epoch))
                    acc.recorder.adopt(previous / split)
            if "open_epoch" in saved:
                acc.open_epoch = int(saved["open_epoch"])
                count = saved["count"]
                if count.shape[0] != acc.count.shape[0]:
                    raise ValueError(
                        f"{type(self).__name__}: the checkpoint was saved inside an epoch by an older version of "
                        "lightning-difficulty; resume from an end-of-epoch checkpoint, or with that version."
                    )
                if self._rank == 0:  # other ranks start from zero so the epoch-end sum is not multiplied
                    for i, name in enumerate(self.values):
                        acc.sums[i].copy_(saved["sums"][name])
                    acc.count.copy_(count)
                    acc.epoch_labels.copy_(saved["epoch_labels"])
                acc.replayed = torch.cat([count[: acc.num_samples] > 0, torch.zeros(4, dtype=torch.bool)])
                self._restore_log(split, acc, saved.get("log_rows", []))
            elif acc.recorder is not None:
                acc.recorder.keep_only(None)
            self._accumulators[split] = acc

    def _discard_unsaved_records(self, saved: set[str]) -> None:
        """On resume, records of this measure's splits that the checkpoint has no state for were written after it
        (the abandoned run's first validation, say): rank 0 removes them."""
        if self.record == "none" or self._records_root is None or self._rank != 0:
            return
        for folder in sorted(self._records_root.glob("*/")):
            split = folder.name
            kind = "train" if split == "train" else "val" if split == "val" or split.startswith("val_") else None
            own = kind in self.splits
            if own and split not in saved:
                EpochRecorder.discard_previous(self._records_root, split)

    def _restore_log(self, split: str, acc: SplitAccumulator, rows: list[int]) -> None:
        """Cut the open epoch's record log back to the checkpoint; drop what the abandoned run wrote after it."""
        if acc.recorder is None or acc.open_epoch is None:
            return
        acc.recorder.epoch = acc.open_epoch
        acc.recorder.keep_only(acc.open_epoch)
        if not acc.recorder.truncate_log(rows[self._rank] if self._rank < len(rows) else 0):
            self._note(
                split,
                acc.open_epoch,
                "record incomplete",
                f"the record log of epoch {acc.open_epoch} no longer holds the rows written before the checkpoint "
                "(the fit that wrote it had finished); this epoch's record lacks them, so `combine` of this run "
                "differs from its table for that epoch",
            )


FOREIGN_PREDICTIONS = 0.5
"""Share of an epoch's predictions naming classes that no label uses above which the output is refused."""


_SKIPPED = (
    "resumed from a checkpoint taken at a training batch of epoch {epoch} that a validation run was due to follow: "
    "Lightning does not run it, so this split counts one validation run fewer"
)


def _validation_was_due(trainer: pl.Trainer, epoch: int, *, last_batch: bool) -> bool:
    """Whether Lightning's schedule (``check_val_every_n_epoch``, ``val_check_interval``) ran a validation after the
    training batch a restored checkpoint was taken at: on resume Lightning continues after that batch, without it."""
    every = trainer.check_val_every_n_epoch
    if every is not None and (epoch + 1) % every:
        return False
    per_batches = trainer.val_check_batch
    if per_batches is None or per_batches == float("inf"):
        return last_batch
    progress = trainer.fit_loop.epoch_loop.batch_progress  # restored: the batch the checkpoint was taken at
    iteration = (progress.total.ready if every is None else progress.current.ready) - 1
    return (iteration + 1) % int(per_batches) == 0


def curve_key(name: str, split: str) -> str:
    """``difficulty/<name>/<split>``, the key of a per-epoch curve.

    Example::

        >>> curve_key("confusion_mean", "val")
        'difficulty/confusion_mean/val'
    """
    return f"difficulty/{name}/{split}"


def _fingerprint(labels: np.ndarray) -> str:
    from lightning_difficulty.storage.manifest import label_fingerprint

    return label_fingerprint(labels)


def _check_index_range(split: str, index: Tensor, num_samples: int) -> None:
    low, high = int(index.min()), int(index.max())
    if low < 0 or high >= num_samples:
        raise IndexError(
            f"Dataset index out of range in split {split!r}: got indices in [{low}, {high}] but the dataloader's "
            f"dataset has {num_samples} samples. The index must be the position in that dataset (use `IndexedDataset`)."
        )


def _dataset_size(trainer: pl.Trainer, split: str, owner: str) -> int:
    dataset = getattr(split_loader(trainer, split), "dataset", None)
    try:
        return len(dataset)  # type: ignore[arg-type]
    except TypeError as err:
        raise TypeError(
            f"{owner} needs the size of the {split!r} dataset to key scores by index, but its dataloader's dataset "
            f"({type(dataset).__name__}) has no len(). Use a map-style dataset wrapped in IndexedDataset."
        ) from err


__all__ = ["PerSampleAccumulator", "SampleState", "SplitAccumulator"]
