"""The differential fuzzer's independent side: a model, data, a history recorder and numpy oracles.

Nothing here reuses the package's tap, accumulators or records. The recorder hooks the model's ``head``
(a submodule, so a DDP-wrapped step never reaches it twice) and keeps every presentation that ran:
split, epoch (train) or validation-run number (val), dataset indices, targets and float64 logits.

**What "the run's history" is.** A run's records are what the final model's training history saw:

- every training step and validation run whose effect is in the final weights' lineage: the steps before
  the checkpoint a resume starts from, then everything the resumed fit runs (replayed batches included: a
  sample presented twice in one epoch is an ordinary pair of presentations of that epoch);
- steps and validation runs that ran after that checkpoint was saved and before the crash are **not**
  history (the resumed model never descends from them). The recorder keeps its records in the checkpoint
  (``state_dict``) so a resume restores exactly the history up to the checkpoint;
- **replays (convention).** After a resume from a checkpoint inside an epoch, Lightning (2.6) restarts that
  epoch's data from its first batch and stops after the batches the epoch had left, so the first batches come
  again and the last ones never come. A presentation after the resume, in the epoch open at the checkpoint, of a
  sample already presented in that epoch before the checkpoint is a *replay*: it is not counted again (the
  epoch keeps the sample's presentations before the checkpoint), and the run's ``summary.json["history"]``
  must list the epoch as ``replayed``. Samples the restarted epoch never reaches are unseen in that epoch;
- a validation run that Lightning does not repeat after a resume (it followed the checkpoint in the crashed
  process) is not history either, and ``summary.json["history"]`` must list it as ``skipped``;
- ``trainer.fit`` called again on the same Trainer (``fit_loop.max_epochs`` raised) extends the history:
  both calls' epochs count;
- a new Trainer (even with the same callback objects) starts a new history;
- sanity-check batches and ``trainer.validate`` are not training history.

Module-level classes only: ``ddp_spawn`` pickles them.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import entr
from torch import Tensor, nn
from torch.utils.data import DataLoader, Sampler, TensorDataset

# ------------------------------------------------------------------------------------------------
# Model, data, samplers, crash
# ------------------------------------------------------------------------------------------------


class FuzzNet(L.LightningModule):
    """Linear-ReLU-Linear with plain SGD; ``forward`` returns the class logits, ``head`` is the last layer."""

    def __init__(self, dim: int, num_classes: int, lr: float, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Linear(dim, 12)
        self.head = nn.Linear(12, num_classes)
        self.lr = lr

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.relu(self.body(x)))

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y, _ = batch  # label -1 = unlabelled (ignored by the loss; a batch of only those gives a zero loss)
        loss = F.cross_entropy(self(x), y, ignore_index=-1, reduction="sum")
        return loss / (y >= 0).sum().clamp(min=1)

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self(batch[0])

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def make_blobs(n: int, num_classes: int, dim: int, seed: int, unlabelled: int = 0) -> TensorDataset:
    """Overlapping Gaussian blobs: labels cycle through the classes, so every class is present. The last
    ``unlabelled`` samples get the label -1 (``ignore_index``)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % num_classes
    centres = rng.normal(0.0, 1.2, size=(num_classes, dim))
    x = centres[labels] + rng.normal(size=(n, dim))
    if unlabelled:
        labels[-unlabelled:] = -1
    return TensorDataset(torch.tensor(x, dtype=torch.float32), torch.tensor(labels, dtype=torch.long))


class StopAt(L.Callback):
    """Ask the Trainer to stop (``trainer.should_stop``, as EarlyStopping does) after training batch ``batch``."""

    def __init__(self, batch: int) -> None:
        self.batch = batch
        self.seen = 0

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self.seen += 1
        if self.seen == self.batch:
            trainer.should_stop = True


class RepeatSampler(Sampler[int]):
    """Every index once, then the first ``extra`` again: some samples are presented twice in one epoch."""

    def __init__(self, size: int, extra: int) -> None:
        self.size, self.extra = size, extra

    def __iter__(self) -> Iterator[int]:
        return iter([*range(self.size), *range(self.extra)])

    def __len__(self) -> int:
        return self.size + self.extra


class PadSampler(Sampler[int]):
    """``DistributedSampler``-style padding in one process: the order wraps round to a multiple of ``multiple``."""

    def __init__(self, size: int, multiple: int) -> None:
        self.size = size
        self.total = -(-size // multiple) * multiple

    def __iter__(self) -> Iterator[int]:
        return iter([i % self.size for i in range(self.total)])

    def __len__(self) -> int:
        return self.total


class SimulatedCrashError(RuntimeError):
    """The crash the fuzzer injects (never confused with an error of the package)."""


class CrashAt(L.Callback):
    """Raise :class:`SimulatedCrashError` at the end of the ``batch``-th training batch of this fit (1-based), or of
    its ``batch``-th validation batch (sanity check excluded) with ``during="val"``."""

    def __init__(self, batch: int, during: str = "train") -> None:
        self.batch = batch
        self.during = during
        self.seen = 0

    def _count(self, trainer: L.Trainer, during: str) -> None:
        if during != self.during or trainer.sanity_checking:
            return
        self.seen += 1
        if self.seen == self.batch:
            raise SimulatedCrashError(f"simulated crash after {during} batch {self.batch}")

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self._count(trainer, "train")

    def on_validation_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self._count(trainer, "val")


class EpochShuffleSampler(Sampler[int]):
    """A permutation drawn from ``seed + epoch`` (Lightning calls ``set_epoch``), so a restarted epoch repeats it."""

    def __init__(self, size: int, seed: int = 0) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


class ResumableLoader(DataLoader):
    """A loader Lightning resumes mid-epoch (``state_dict``/``load_state_dict``): it skips the batches the epoch had
    already yielded at the checkpoint, so a resume continues the epoch instead of restarting it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._yielded = 0
        self._skip = 0

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        skip, self._skip, self._yielded = self._skip, 0, 0
        for position, batch in enumerate(super().__iter__()):
            if position < skip:
                continue
            self._yielded = position + 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        return {"yielded": self._yielded}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        yielded = int(state_dict["yielded"])
        self._skip = yielded if yielded < len(self) else 0  # a finished epoch: the next one starts afresh


# ------------------------------------------------------------------------------------------------
# The recorder
# ------------------------------------------------------------------------------------------------


@dataclass
class Presentation:
    """One batch the model saw: ``split`` is ``"train"``, ``"val"``, ``"val_1"``, ...; ``run`` the epoch (train)
    or the validation run (val, numbered 0, 1, ... over the history, shared by all validation loaders)."""

    split: str
    run: int
    index: np.ndarray
    target: np.ndarray
    logits: np.ndarray
    rank: int = 0
    generation: int = 0  # resumes before this presentation ran (presentations restored keep theirs)


@dataclass
class History:
    """All presentations of one run's history, plus the facts the oracle needs."""

    presentations: list[Presentation] = field(default_factory=list)
    validation_runs: int = 0
    validation_keys: list[tuple[int, int]] = field(default_factory=list)  # (epoch, batches done) of each run started
    generation: int = 0

    def of(self, split: str) -> list[Presentation]:
        """The split's presentations that count (rows of replays dropped, see the module docstring)."""
        out = []
        for p in self.presentations:
            if p.split != split:
                continue
            keep = ~self._replayed_rows(p)
            if keep.all():
                out.append(p)
            elif keep.any():
                out.append(replace(p, index=p.index[keep], target=p.target[keep], logits=p.logits[keep]))
        return out

    def replayed_epochs(self) -> set[int]:
        return {p.run for p in self.presentations if self._replayed_rows(p).any()}

    def _replayed_rows(self, p: Presentation) -> np.ndarray:
        if p.split != "train" or p.generation == 0:
            return np.zeros(p.index.shape, dtype=bool)
        earlier = [
            q.index for q in self.presentations if q.split == "train" and q.run == p.run and q.generation < p.generation
        ]
        return np.isin(p.index, np.concatenate(earlier)) if earlier else np.zeros(p.index.shape, dtype=bool)


def _split_name(dataloader_idx: int) -> str:
    return "val" if dataloader_idx == 0 else f"val_{dataloader_idx}"


class HistoryRecorder(L.Callback):
    """Keep the logits of every training and validation batch of the history (see the module docstring).

    Its records travel in checkpoints (every rank's, gathered), so a resume restores the history up to the
    checkpoint. With ``dump_dir`` each rank writes its history to ``dump_dir/rank<r>.pkl`` at teardown (for
    ``ddp_spawn``, whose callbacks die with the worker processes).
    """

    def __init__(self, head: str = "head", dump_dir: str | None = None) -> None:
        self.head = head
        self.dump_dir = dump_dir
        self.history = History()
        self.ran = {"train": 0, "val": 0}  # batches that ran in this process, history or not
        self._pending: tuple[str, int, Tensor, Tensor] | None = None
        self._handle: Any = None
        self._rank = 0
        self._val_open = False
        self.saved_validation_keys: list[tuple[int, int]] = []  # at the last checkpoint this recorder saved
        self._active = False

    # -- hook --------------------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._active = True  # under ddp_spawn only the workers get here, not the launching process
        self._rank = trainer.global_rank
        if self._handle is not None:
            self._handle.remove()
        self._handle = getattr(pl_module, self.head).register_forward_hook(self._hook)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        if stage == "fit":
            self._dump()

    def _dump(self) -> None:
        """Write this rank's state; under DDP after every batch, since a worker that raises gets no more hooks."""
        if self.dump_dir is None or not self._active:
            return
        Path(self.dump_dir).mkdir(parents=True, exist_ok=True)
        dump = Dump(self.history, list(self.saved_validation_keys), dict(self.ran))
        with open(Path(self.dump_dir) / f"rank{self._rank}.pkl", "wb") as fh:
            pickle.dump(dump, fh)

    def _hook(self, module: nn.Module, args: Any, output: Any) -> None:
        if self._pending is None:
            return  # the fit-end pass, the sanity check, or a second call inside one step
        split, run, index, target = self._pending
        if not isinstance(output, Tensor) or output.shape[0] != index.shape[0]:
            raise AssertionError(f"recorder: head output {getattr(output, 'shape', None)} for {index.shape[0]} rows")
        self._pending = None
        self.ran["train" if split == "train" else "val"] += 1
        self.history.presentations.append(
            Presentation(
                split,
                run,
                index.detach().cpu().numpy().astype(np.int64),
                target.detach().cpu().numpy().astype(np.int64),
                output.detach().double().cpu().numpy(),
                self._rank,
                self.history.generation,
            )
        )

    def _open(self, split: str, run: int, batch: Any) -> None:
        self._pending = (split, run, batch[2], batch[1])

    def _closed(self) -> None:
        if self._pending is not None:
            raise AssertionError("recorder: a batch ended without a forward through the head")

    # -- training ------------------------------------------------------------------------------------
    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, *args: Any) -> None:
        self._open("train", trainer.current_epoch, batch)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self._closed()
        self._dump()

    # -- validation ------------------------------------------------------------------------------------
    def _in_fit(self, trainer: L.Trainer) -> bool:
        return trainer.state.fn == "fit" and not trainer.sanity_checking

    def on_validation_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if self._in_fit(trainer):
            if not self._val_open:  # a validation run starts: keyed by where it falls in training
                done = trainer.fit_loop.epoch_loop.batch_progress.current.completed
                self.history.validation_keys.append((trainer.current_epoch, done))
                self._val_open = True
            self._open(_split_name(dataloader_idx), self.history.validation_runs, batch)

    def on_validation_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if self._in_fit(trainer):
            self._closed()
            self._dump()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._in_fit(trainer) and self._val_open:
            self.history.validation_runs += 1
            self._val_open = False
            self._dump()

    # -- checkpoints: the history travels with the weights -----------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        mine = [p for p in self.history.presentations if p.rank == self._rank]
        gathered = [mine]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered = [None] * torch.distributed.get_world_size()  # type: ignore[list-item]
            torch.distributed.all_gather_object(gathered, mine)
        everyone = [p for part in gathered for p in part]
        self.saved_validation_keys = list(self.history.validation_keys)
        saved = replace(self.history, presentations=everyone, validation_keys=list(self.history.validation_keys))
        self._dump()
        return {"history": pickle.dumps(saved)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        restored: History = pickle.loads(state_dict["history"])
        if self._rank != 0:  # rank 0 carries the restored history; the others only add what they run next
            restored.presentations = []
        restored.generation += 1
        self.history = restored


@dataclass
class Dump:
    """What a rank's recorder leaves on disk (``dump_dir``): its history, its last checkpoint's validation keys and
    the batches that ran in that process."""

    history: History
    saved_validation_keys: list[tuple[int, int]]
    ran: dict[str, int]


def load_dump(dump_dir: str | Path) -> Dump | None:
    """The ranks' dumps merged: the union of their histories, rank 0's validation keys, the batches that ran."""
    dumps = []
    for path in sorted(Path(dump_dir).glob("rank*.pkl")):
        with open(path, "rb") as fh:
            dumps.append(pickle.load(fh))
    if not dumps:
        return None
    history = replace(dumps[0].history, presentations=[p for d in dumps for p in d.history.presentations])
    ran = {key: sum(d.ran[key] for d in dumps) for key in dumps[0].ran}
    return Dump(history, dumps[0].saved_validation_keys, ran)


# ------------------------------------------------------------------------------------------------
# Oracles (numpy/scipy, written from the definitions)
# ------------------------------------------------------------------------------------------------


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@dataclass
class EpochMeans:
    """One epoch (or validation run) of one split: per-sample means over that epoch's presentations."""

    seen: np.ndarray  # (N,) bool
    presentations: np.ndarray  # (N,) int
    entropy: np.ndarray  # mean of the presentations' entropies
    probs: np.ndarray  # (N, C) mean probability vector (what a "probs" record stores)
    first_probs: np.ndarray  # (N, C) the first presentation's probabilities (what a "topk" record keeps)
    p_label: np.ndarray
    correct: np.ndarray  # share of presentations with argmax == label
    margin: np.ndarray
    el2n: np.ndarray
    identical: np.ndarray  # (N,) all presentations of the sample in this epoch had the same logits


def labelled(presentations: list[Presentation]) -> list[Presentation]:
    """The rows with a label (TrainingDynamics skips ``ignore_index`` rows: they have no p(label))."""
    out = []
    for p in presentations:
        keep = p.target >= 0
        if keep.any():
            out.append(replace(p, index=p.index[keep], target=p.target[keep], logits=p.logits[keep]))
    return out


def epoch_means(presentations: list[Presentation], num_samples: int, num_classes: int) -> dict[int, EpochMeans]:
    """Per-epoch, per-sample means of every presentation-level quantity, keyed by epoch/run (ordinal for val).
    Label-based quantities of unlabelled rows (target -1) are meaningless: use :func:`labelled` first for them."""
    by_run: dict[int, list[Presentation]] = {}
    for p in presentations:
        by_run.setdefault(p.run, []).append(p)
    out: dict[int, EpochMeans] = {}
    for ordinal, run in enumerate(sorted(by_run)):
        # a sample presented again in one epoch on one process counts with its first presentation (the package's
        # convention for samplers that repeat; DDP padding puts a duplicate on another process: both count)
        kept, seen_rows = [], set()
        for p in by_run[run]:
            first = np.zeros(len(p.index), dtype=bool)
            for row, i in enumerate(p.index.tolist()):
                if (p.rank, i) not in seen_rows:
                    seen_rows.add((p.rank, i))
                    first[row] = True
            if first.any():
                kept.append(replace(p, index=p.index[first], target=p.target[first], logits=p.logits[first]))
        index = np.concatenate([p.index for p in kept])
        target = np.concatenate([p.target for p in kept])
        z = np.concatenate([p.logits for p in kept])
        probs = _softmax(z)
        rows = np.arange(len(index))
        target = np.where(target >= 0, target, 0)
        others = np.where(np.eye(num_classes, dtype=bool)[target], -np.inf, z)
        onehot = np.eye(num_classes)[target]
        per = {
            "entropy": entr(probs).sum(axis=1),
            "p_label": probs[rows, target],
            "correct": (np.argmax(z, axis=1) == target).astype(np.float64),
            "margin": z[rows, target] - others.max(axis=1),
            "el2n": np.sqrt(((probs - onehot) ** 2).sum(axis=1)),
        }
        count = np.bincount(index, minlength=num_samples)
        seen = count > 0
        means = {}
        for name, values in per.items():
            total = np.zeros(num_samples)
            np.add.at(total, index, values)
            means[name] = np.where(seen, total / np.maximum(count, 1), np.nan)
        prob_total = np.zeros((num_samples, num_classes))
        np.add.at(prob_total, index, probs)
        mean_probs = np.where(seen[:, None], prob_total / np.maximum(count, 1)[:, None], np.nan)
        identical = np.ones(num_samples, dtype=bool)
        first: dict[int, np.ndarray] = {}
        first_probs = np.full((num_samples, num_classes), np.nan)
        for i, row, p in zip(index.tolist(), z, probs, strict=True):
            if i in first and not np.array_equal(first[i], row):
                identical[i] = False
            if i not in first:
                first[i] = row
                first_probs[i] = p
        key = run if presentations[0].split == "train" else ordinal
        out[key] = EpochMeans(seen, count, probs=mean_probs, first_probs=first_probs, identical=identical, **means)
    return out


def _mean_over(epochs: list[EpochMeans], name: str, num_samples: int) -> np.ndarray:
    total, count = np.zeros(num_samples), np.zeros(num_samples)
    for e in epochs:
        total += np.where(e.seen, getattr(e, name), 0.0)
        count += e.seen
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def expected_confusion(epochs: dict[int, EpochMeans], num_samples: int) -> np.ndarray:
    """ConfusionScore: the mean over epochs seen of the epoch's mean softmax entropy (nats); NaN if never seen."""
    return _mean_over(list(epochs.values()), "entropy", num_samples)


def expected_dynamics(epochs: dict[int, EpochMeans], num_samples: int) -> dict[str, np.ndarray]:
    """TrainingDynamics' columns from the per-epoch means, by their definitions (functional/dynamics.py)."""
    ordered = [epochs[k] for k in sorted(epochs)]
    confidence = _mean_over(ordered, "p_label", num_samples)
    stack = np.array([np.where(e.seen, e.p_label, np.nan) for e in ordered]) if ordered else np.zeros((0, num_samples))
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: samples never seen
        variability = np.nanstd(stack, axis=0) if ordered else np.full(num_samples, np.nan)
    forgetting = np.zeros(num_samples, dtype=np.int64)
    ever = np.zeros(num_samples, dtype=bool)
    previous: dict[int, bool] = {}
    el2n_last = np.full(num_samples, np.nan)
    for e in ordered:
        for i in np.flatnonzero(e.seen):
            now = bool(e.correct[i] > 0.5)
            if previous.get(int(i), False) and not now:
                forgetting[i] += 1
            previous[int(i)] = now
            ever[i] |= now
            el2n_last[i] = e.el2n[i]
    seen_any = np.zeros(num_samples, dtype=bool)
    for e in ordered:
        seen_any |= e.seen
    region = np.where(confidence >= 0.5, "easy", "hard").astype(object)
    region[variability >= 0.2] = "ambiguous"
    region[~seen_any] = "unseen"
    return {
        "dm_confidence": confidence,
        "dm_variability": variability,
        "dm_correctness": _mean_over(ordered, "correct", num_samples),
        "dm_region": region,
        "forgetting": forgetting,
        "never_learned": seen_any & ~ever,
        "aum": _mean_over(ordered, "margin", num_samples),
        "el2n": el2n_last,
    }


def constant_confidence(epochs: dict[int, EpochMeans], num_samples: int) -> np.ndarray:
    """Samples whose logits were the same in every presentation of every epoch (variability must be exactly 0)."""
    ordered = [epochs[k] for k in sorted(epochs)]
    same = np.ones(num_samples, dtype=bool)
    reference = np.full(num_samples, np.nan)
    for e in ordered:
        same &= np.where(e.seen, e.identical, True)
        fresh = e.seen & np.isnan(reference)
        reference[fresh] = e.p_label[fresh]
        same &= np.where(e.seen, e.p_label == reference, True)
    return same & ~np.isnan(reference)


def topk_vector(probs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """A top-k record's completion: the ``k`` largest probabilities kept, the rest of the mass spread evenly over the
    other classes (the maximum-entropy choice). Returns the vectors and a mask of rows whose k-th and (k+1)-th
    probabilities tie (which classes are kept is then arbitrary)."""
    n, c = probs.shape
    order = np.argsort(-probs, axis=1, kind="stable")
    kept = np.zeros_like(probs, dtype=bool)
    np.put_along_axis(kept, order[:, :k], True, axis=1)
    rest = np.clip(1.0 - np.where(kept, probs, 0.0).sum(axis=1), 0.0, None)
    spread = rest / (c - k) if c > k else np.zeros(n)
    out = np.where(kept, probs, spread[:, None])
    sorted_p = np.take_along_axis(probs, order, axis=1)
    tie = (sorted_p[:, k - 1] == sorted_p[:, k]) if c > k else np.zeros(n, dtype=bool)
    return out, tie


def expected_combine(
    epochs: dict[int, EpochMeans], labels: np.ndarray, topk: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``combine`` of one run from what its records hold per epoch: the mean probability vector of the epoch's
    presentations ("probs"), or the first presentation's top-k completed by :func:`topk_vector`. Returns
    (confusion, el2n at the last epoch seen, rows whose el2n is ambiguous because of a top-k tie)."""
    n = labels.shape[0]
    total, count = np.zeros(n), np.zeros(n)
    last = np.full(n, np.nan)
    ambiguous = np.zeros(n, dtype=bool)
    for k in sorted(epochs):
        e = epochs[k]
        p = np.nan_to_num(e.probs if topk is None else e.first_probs)
        if topk is not None:
            p, tie = topk_vector(p, topk)
            ambiguous = np.where(e.seen, tie, ambiguous)
        total += np.where(e.seen, entr(p).sum(axis=1), 0.0)
        count += e.seen
        onehot = np.eye(p.shape[1])[np.maximum(labels, 0)]
        last = np.where(e.seen, np.sqrt(((p - onehot) ** 2).sum(axis=1)), last)
    last[labels < 0] = np.nan  # no label, no EL2N
    return np.where(count > 0, total / np.maximum(count, 1), np.nan), last, ambiguous
