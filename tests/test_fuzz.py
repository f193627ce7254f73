"""Differential fuzzer (issue 19, requirement 1): drawn training set-ups against an independent recorder.

Each example draws a set-up on a tiny model and data set and runs ConfusionScore + TrainingDynamics +
DifficultyReport beside :class:`~tests.fuzz_recorder.HistoryRecorder` (its own forward hook on the model's head).
Drawn: shuffle (a seeded generator, or a sampler seeded by the epoch), batch size, ``drop_last``, a sampler that
repeats or pads, unlabelled samples (``ignore_index``), gradient accumulation, train/val batch limits (0 included),
``val_check_interval``, ``check_val_every_n_epoch`` (``None``: step-based validation), zero to three validation
loaders (a list or a dict; one may repeat samples), precision 32 / bf16-mixed / 64, ``max_steps``, a stop request,
a crash after a drawn training or validation batch resumed from the last checkpoint (every n steps, every epoch
end, the last batch of every epoch; a loader Lightning resumes mid-epoch or one it restarts), ``fit`` called again
with a higher ``max_epochs``, the callbacks reused by a second Trainer (same or new folder, possibly
interrupted), top-k or full records, TrainingDynamics records, no logger / CSV / TensorBoard; and, in its own
profile, two ``ddp_spawn`` CPU processes (with crash and resume).

The run must then agree with numpy recomputations from what the recorder saw (the *history*; its semantics,
replays and skipped validations included, are in ``tests/fuzz_recorder.py``): every per-sample column of both
callbacks, the per-epoch records, ``lightning-difficulty combine`` of the run (against the records and against
the run's own table), the epoch counts, per-epoch means and ``history`` of ``summary.json``; an interrupted run's
folder must hold no table that its records contradict. The other acceptable outcome is a refusal before the
first training step, with an error that says what is wrong. Anything else fails.

Profiles: ``fuzz-fixed`` (derandomized: the explicit examples, each a failure class found, plus 10 drawn ones;
no shrinking) and ``fuzz-ddp`` (one DDP example) run in ``make test``; ``fuzz-long`` (200 random examples with
shrinking, and 20 DDP ones) runs with ``pytest -m fuzz tests/test_fuzz.py``. ``FUZZ_EXAMPLES`` and
``FUZZ_DDP_EXAMPLES`` override the long counts; ``HYPOTHESIS_PROFILE`` picks another registered profile for the
long test. Known open classes are listed in ``OPEN``: drawn examples tolerate exactly those deviations, and each
has a strict xfail test at the end of this module.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import event as _event
from hypothesis import note as _note
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.strategies import DDPStrategy
from torch.utils.data import DataLoader

from lightning_difficulty import ConfusionScore, DifficultyReport, IndexedDataset, TrainingDynamics
from lightning_difficulty.cli import main as cli_main
from lightning_difficulty.functional.confusion import softmax_entropy
from lightning_difficulty.functional.dynamics import logit_margin
from tests.fuzz_recorder import (
    CrashAt,
    Dump,
    EpochShuffleSampler,
    FuzzNet,
    History,
    HistoryRecorder,
    PadSampler,
    RepeatSampler,
    ResumableLoader,
    SimulatedCrashError,
    StopAt,
    constant_confidence,
    epoch_means,
    expected_combine,
    expected_confusion,
    expected_dynamics,
    labelled,
    load_dump,
    make_blobs,
)

DIM = 5
DDP_TIMEOUT = 60
DYNAMICS = ("dm_confidence", "dm_variability", "dm_correctness", "aum", "el2n")

OPEN: dict[str, str] = {
    "ddp-padding-combine": "issue 19 (req. 2): under DDP, a DistributedSampler padding duplicate that runs on "
    "another rank at a later step (the last, shorter batch) has other logits than the first presentation: the "
    "table averages the two entropies, the record their probability vectors, so `combine` of one run differs "
    "from its table (found by the long DDP profile, 2026-12-07)",
}
"""Failure classes the fuzzer found that are not fixed yet: the drawn examples tolerate exactly these deviations
(nothing else), and each has a strict xfail test below that flips when it is fixed. Remove the entry then."""

settings.register_profile(
    "fuzz-fixed",
    derandomize=True,
    max_examples=10,
    phases=[Phase.explicit, Phase.generate],  # a failure in `make test` is reported as drawn (shrink: -m fuzz)
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
settings.register_profile("fuzz-ddp", parent=settings.get_profile("fuzz-fixed"), max_examples=1)
settings.register_profile(
    "fuzz-long", parent=settings.get_profile("fuzz-fixed"), derandomize=False, max_examples=200, phases=list(Phase)
)


def note(text: str) -> None:
    if currently_in_test_context():
        _note(text)


def event(text: str) -> None:
    if currently_in_test_context():
        _event(text)


def _profile(name: str) -> settings:
    chosen = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", name) if name == "fuzz-long" else name)
    count = os.environ.get("FUZZ_EXAMPLES")
    return settings(chosen, max_examples=int(count)) if count and name == "fuzz-long" else chosen


# ------------------------------------------------------------------------------------------------
# The drawn set-up
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Crash:
    """Crash after training (or validation) batch ``batch`` of the first fit; checkpoints ``kind``: ``"steps"``
    (every ``every`` optimizer steps), ``"epoch"`` (every epoch end) or ``"last_batch"`` (the last batch of every
    epoch)."""

    batch: int
    kind: str
    every: int = 1
    during: str = "train"  # or "val": the crash ends the batch-th validation batch instead


@dataclass(frozen=True)
class Scenario:
    n_train: int = 16
    num_classes: int = 3
    batch_size: int = 4
    shuffle: bool = False
    drop_last: bool = False
    sampler: str | None = None  # "repeat" | "pad"
    accumulate: int = 1
    limit_train: int | float | None = None
    val_sizes: tuple[int, ...] = (7,)
    val_batch: int = 4
    limit_val: int | float | None = None
    val_check_interval: int | float | None = None
    check_val_every: int = 1
    sanity: int = 0
    precision: str = "32-true"
    epochs: int = 2
    lr: float = 0.3
    td_val: bool = False
    explicit_dir: bool = True
    crash: Crash | None = None
    extend: int = 0
    second: str | None = None  # "same_dir" | "new_dir": the same callback objects in a new Trainer
    second_crash: int | None = None  # the second Trainer crashes after this training batch (no resume)
    ddp: bool = False
    seed: int = 0  # the model's initialisation
    epoch_shuffle: bool = False  # shuffle with a sampler seeded by the epoch (Lightning calls set_epoch)
    resumable: bool = False  # a train loader Lightning resumes mid-epoch (state_dict / load_state_dict)
    record: str = "probs"  # ConfusionScore's record: "probs" or "topk"
    topk: int = 2
    td_record: bool = False  # TrainingDynamics writes records too
    logger: str | None = None  # "csv" or "tb" (TensorBoard: the report's figures too): a versioned log_dir
    val_dict: bool = False  # several validation loaders passed as a dict
    unlabelled: int = 0  # training samples labelled -1 (ignore_index)
    val_repeat: bool = False  # the first validation loader presents some samples twice per run
    max_steps: int = -1  # stop at this global step (may fall inside an epoch)
    stop_at: int | None = None  # a callback sets trainer.should_stop after this training batch

    def sampler_length(self) -> int:
        if self.sampler == "repeat":
            return self.n_train + max(1, self.n_train // 3)
        if self.sampler == "pad":
            return -(-self.n_train // 5) * 5
        return self.n_train

    def loader_batches(self) -> int:
        length = self.sampler_length()
        if self.ddp:
            length = -(-length // 2)
        return length // self.batch_size if self.drop_last else -(-length // self.batch_size)

    def train_batches(self) -> int:
        full = self.loader_batches()
        if self.limit_train is None:
            return full
        if isinstance(self.limit_train, float):
            return int(full * self.limit_train)
        return min(full, self.limit_train)

    def steps_per_epoch(self) -> int:
        return -(-self.train_batches() // self.accumulate)


@st.composite
def scenarios(draw: st.DrawFn, *, ddp: bool = False) -> Scenario:
    n_train = draw(st.integers(8, 24))
    batch_size = draw(st.integers(2, 6))
    sampler = draw(st.sampled_from([None, None, "repeat", "pad"]))
    sc = Scenario(
        n_train=n_train,
        num_classes=draw(st.integers(2, 4)),
        batch_size=batch_size,
        shuffle=draw(st.booleans()),
        drop_last=draw(st.booleans()),
        sampler=sampler,
        accumulate=draw(st.sampled_from([1, 1, 2, 3])),
        val_sizes=tuple(draw(st.lists(st.integers(3, 11), min_size=0, max_size=1 if ddp else 3))),
        val_batch=draw(st.integers(2, 5)),
        sanity=draw(st.sampled_from([0, 2])),
        precision=draw(st.sampled_from(["32-true", "bf16-mixed", "64-true"])),
        epochs=draw(st.integers(1, 3)),
        lr=draw(st.sampled_from([0.3, 0.3, 0.0])),
        td_val=draw(st.booleans()),
        explicit_dir=draw(st.booleans()),
        ddp=ddp,
        seed=draw(st.integers(0, 3)),
        epoch_shuffle=draw(st.booleans()),
        resumable=not ddp and draw(st.booleans()),
        record=draw(st.sampled_from(["probs", "probs", "topk"])),
        td_record=draw(st.sampled_from([False, False, False, True])),  # refused beside a ConfusionScore record
        logger=None if ddp else draw(st.sampled_from([None, None, None, "csv", "tb"])),
    )
    if sc.record == "topk":
        sc = replace(sc, topk=draw(st.integers(1, sc.num_classes)))
    if len(sc.val_sizes) > 1:
        sc = replace(sc, val_dict=draw(st.booleans()))
    sc = replace(
        sc,
        unlabelled=draw(st.sampled_from([0, 0, 0, 1, 3])),
        val_repeat=bool(sc.val_sizes) and draw(st.integers(0, 3)) == 0,
    )
    full = sc.loader_batches()
    limit_train = draw(st.sampled_from([None, None, "int", "float"]))
    if limit_train == "int":
        sc = replace(sc, limit_train=draw(st.integers(1, full)))
    elif limit_train == "float" and full >= 2:
        sc = replace(sc, limit_train=0.5)
    if sc.val_sizes:
        limit_val = draw(st.sampled_from([None, None, 1, 2, 0.5, 0]))
        if limit_val == 0.5 and min(-(-n // sc.val_batch) for n in sc.val_sizes) < 2:
            limit_val = None  # Lightning itself refuses 0.5 of a one-batch loader (at the first validation run)
        interval = draw(st.sampled_from([None, None, 0.5, "int"]))
        batches = sc.train_batches()
        if interval == "int":
            interval = draw(st.integers(1, batches))
        elif interval == 0.5 and batches < 2:
            interval = None
        sc = replace(
            sc, limit_val=limit_val, val_check_interval=interval, check_val_every=draw(st.sampled_from([1, 2]))
        )
    total = sc.epochs * sc.train_batches()
    ending = draw(st.sampled_from([None, None, None, "max_steps", "stop"])) if total >= 2 else None
    if ending == "max_steps":
        sc = replace(sc, max_steps=draw(st.integers(1, max(1, total // sc.accumulate))))
    elif ending == "stop":
        sc = replace(sc, stop_at=draw(st.integers(1, total)))
    if sc.val_sizes and isinstance(sc.val_check_interval, int) and draw(st.integers(0, 3)) == 0:
        sc = replace(sc, check_val_every=0)  # validation every val_check_interval batches across epochs
    if total >= 2 and (not ddp or draw(st.integers(0, 2)) == 0) and draw(st.booleans()):
        kind = draw(st.sampled_from(["steps", "epoch", "last_batch"]))
        every = draw(st.integers(1, max(1, total // max(1, sc.accumulate)))) if kind == "steps" else 1
        if sc.val_sizes and draw(st.integers(0, 3)) == 0:  # a crash inside a validation run (may never come)
            sc = replace(sc, crash=Crash(draw(st.integers(1, 4)), kind, every, during="val"))
        else:  # half the crashes come after the first epoch, when every kind of checkpoint exists
            first = min(total - 1, sc.train_batches() + 1) if draw(st.booleans()) else 1
            sc = replace(sc, crash=Crash(draw(st.integers(first, total - 1)), kind, every))
    if not ddp:
        second = draw(st.sampled_from([None, None, "same_dir", "new_dir"]))
        second_crash = draw(st.sampled_from([None, None, 1, max(1, total - 1)])) if second and total >= 2 else None
        sc = replace(sc, extend=draw(st.sampled_from([0, 0, 1, 2])), second=second, second_crash=second_crash)
    return sc


# ------------------------------------------------------------------------------------------------
# Running a set-up
# ------------------------------------------------------------------------------------------------


@dataclass
class Data:
    train: IndexedDataset
    vals: list[IndexedDataset]
    train_loader: DataLoader
    val_loaders: list[DataLoader]
    as_dict: bool = False

    def val_splits(self) -> list[str]:
        return ["val" if i == 0 else f"val_{i}" for i in range(len(self.vals))]

    def val_argument(self) -> Any:
        if not self.val_loaders:
            return None
        if self.as_dict:
            return {f"loader{i}": loader for i, loader in enumerate(self.val_loaders)}
        return self.val_loaders[0] if len(self.val_loaders) == 1 else self.val_loaders


def make_data(sc: Scenario) -> Data:
    train = IndexedDataset(make_blobs(sc.n_train, sc.num_classes, DIM, seed=1, unlabelled=sc.unlabelled))
    vals = [IndexedDataset(make_blobs(n, sc.num_classes, DIM, seed=10 + i)) for i, n in enumerate(sc.val_sizes)]
    sampler: Any = None
    if sc.sampler == "repeat":
        sampler = RepeatSampler(sc.n_train, max(1, sc.n_train // 3))
    elif sc.sampler == "pad":
        sampler = PadSampler(sc.n_train, 5)
    elif sc.shuffle and sc.epoch_shuffle:
        sampler = EpochShuffleSampler(sc.n_train)
    generator = torch.Generator().manual_seed(0) if sc.shuffle and sampler is None else None
    loader = ResumableLoader if sc.resumable else DataLoader
    train_loader = loader(
        train,
        batch_size=sc.batch_size,
        shuffle=sc.shuffle and sampler is None,
        sampler=sampler,
        drop_last=sc.drop_last,
        generator=generator,
    )
    val_loaders = [DataLoader(v, batch_size=sc.val_batch) for v in vals]
    if sc.val_repeat and vals:
        extra = max(1, len(vals[0]) // 2)
        val_loaders[0] = DataLoader(vals[0], batch_size=sc.val_batch, sampler=RepeatSampler(len(vals[0]), extra))
    return Data(train, vals, train_loader, val_loaders, sc.val_dict)


@dataclass
class Measures:
    """The package's callbacks of one run (reused as they are by a second Trainer)."""

    confusion: ConfusionScore
    dynamics: TrainingDynamics
    report: DifficultyReport

    def callbacks(self) -> list[Any]:
        return [self.confusion, self.dynamics, self.report]


def make_measures(sc: Scenario, root: Path) -> Measures:
    return Measures(
        ConfusionScore(record=sc.record, topk=sc.topk),  # type: ignore[arg-type]
        TrainingDynamics(
            splits=("train", "val") if sc.td_val else ("train",), record="probs" if sc.td_record else "none"
        ),
        DifficultyReport(dirpath=root / "out" if sc.explicit_dir else None, grid_per_class=0),
    )


def make_trainer(sc: Scenario, root: Path, callbacks: list[Any], *, checkpointing: bool = False) -> L.Trainer:
    loggers = {"csv": CSVLogger(str(root)), "tb": TensorBoardLogger(str(root))}
    extra: dict[str, Any] = {"logger": loggers[sc.logger] if sc.logger else False}
    if sc.val_sizes:
        extra.update(check_val_every_n_epoch=sc.check_val_every or None, num_sanity_val_steps=sc.sanity)
        if sc.limit_val is not None:
            extra["limit_val_batches"] = sc.limit_val
        if sc.val_check_interval is not None:
            extra["val_check_interval"] = sc.val_check_interval
    if sc.limit_train is not None:
        extra["limit_train_batches"] = sc.limit_train
    if sc.ddp:  # a collective that one rank misses fails after a minute instead of hanging the suite
        extra.update(strategy=DDPStrategy(start_method="spawn", timeout=timedelta(seconds=DDP_TIMEOUT)), devices=2)
    else:
        extra["devices"] = 1
    return L.Trainer(
        default_root_dir=str(root),
        max_epochs=sc.epochs,
        max_steps=sc.max_steps,
        accelerator="cpu",
        precision=sc.precision,
        accumulate_grad_batches=sc.accumulate,
        callbacks=callbacks,
        enable_checkpointing=checkpointing,
        enable_progress_bar=False,
        enable_model_summary=False,
        **extra,
    )


def checkpoint_callback(sc: Scenario, root: Path) -> ModelCheckpoint:
    assert sc.crash is not None
    every = {"steps": sc.crash.every, "last_batch": sc.steps_per_epoch()}.get(sc.crash.kind)
    if every is None:
        return ModelCheckpoint(dirpath=root / "ckpt", every_n_epochs=1, save_top_k=-1, save_last=True)
    return ModelCheckpoint(dirpath=root / "ckpt", every_n_train_steps=every, save_top_k=-1, save_last=True)


@dataclass
class Run:
    """One finished run to check: its folder, its history and its final model."""

    run_dir: Path
    history: History
    model: FuzzNet
    measures: Measures
    label: str
    skipped: frozenset[tuple[str, int]] = frozenset()  # (val split, epoch) of validation runs a resume lost


class RefusedError(Exception):
    """The package refused the set-up before the first training step (an acceptable outcome)."""


def fit(trainer: L.Trainer, model: FuzzNet, data: Data, recorder: HistoryRecorder, **kwargs: Any) -> None:
    """``trainer.fit``; an error before any training batch ran is a refusal (under DDP the ranks' recorder dumps
    say whether one ran)."""
    before = recorder.ran["train"]
    try:
        trainer.fit(model, data.train_loader, data.val_argument(), **kwargs)
    except SimulatedCrashError:
        raise
    except Exception as err:
        if "simulated crash" in str(err):  # re-raised by the DDP launcher
            raise SimulatedCrashError(str(err)) from err
        dump = load_dump(recorder.dump_dir) if recorder.dump_dir else None
        ran = dump.ran["train"] if dump is not None else recorder.ran["train"] - before
        if ran == 0 and not isinstance(err, AssertionError):
            raise RefusedError(f"{type(err).__name__}: {err}") from err
        raise


def run_dir_of(measures: Measures, trainer: L.Trainer) -> Path:
    report = measures.report.dirpath
    return report if report is not None else Path(trainer.log_dir or trainer.default_root_dir) / "difficulty"


def lost_validations(crashed: Dump, resumed: History, val_splits: list[str]) -> frozenset[tuple[str, int]]:
    """(val split, epoch) of the validation runs that followed the checkpoint in the crashed process (begun, at
    least) and that the resumed fit did not run again: every validation loader loses them."""
    saved = len(crashed.saved_validation_keys)
    again = set(resumed.validation_keys[saved:])
    lost = [key for key in crashed.history.validation_keys[saved:] if key not in again]
    return frozenset((split, epoch) for epoch, _ in lost for split in val_splits)


def _dump_of(recorder: HistoryRecorder) -> Dump:
    """The recorder's state: from its ranks' dumps under DDP, else from the object itself."""
    if recorder.dump_dir is not None:
        dump = load_dump(recorder.dump_dir)
        assert dump is not None, f"no recorder dump in {recorder.dump_dir}"
        return dump
    return Dump(recorder.history, recorder.saved_validation_keys, recorder.ran)


def run_scenario(sc: Scenario, root: Path, check: Callable[[Run], None]) -> int:
    """Run the set-up and ``check`` each finished run (the first, then the second Trainer's when drawn) before
    anything else can touch its folder; returns the number of runs checked."""
    data = make_data(sc)
    segment = iter(range(10))

    def recorder_for() -> HistoryRecorder:  # the workers' callbacks die with them: DDP ranks dump their history
        return HistoryRecorder(dump_dir=str(root / f"history{next(segment)}") if sc.ddp else None)

    model = FuzzNet(DIM, sc.num_classes, sc.lr, seed=sc.seed)
    measures, recorder = make_measures(sc, root), recorder_for()
    callbacks: list[Any] = [*measures.callbacks(), recorder]
    checkpoint, skipped = None, frozenset[tuple[str, int]]()
    if sc.crash is not None:
        checkpoint = checkpoint_callback(sc, root)
        callbacks += [checkpoint, CrashAt(sc.crash.batch, sc.crash.during)]
    if sc.stop_at is not None:
        callbacks.append(StopAt(sc.stop_at))
    trainer = make_trainer(sc, root, callbacks, checkpointing=checkpoint is not None)
    try:
        fit(trainer, model, data, recorder)
        for callback in callbacks:  # the crash belongs to the first fit: a later `fit` call runs unharmed
            if isinstance(callback, CrashAt):
                callback.batch = -1
    except SimulatedCrashError:
        assert checkpoint is not None
        last = root / "ckpt" / "last.ckpt"  # under DDP the checkpoint callback lived in the workers
        resume = str(last) if last.exists() else None
        note(f"crashed; resuming from {resume}")
        event(f"resume from {'a checkpoint' if resume else 'scratch'} ({sc.crash.kind if sc.crash else ''})")
        crashed = _dump_of(recorder)
        model = FuzzNet(DIM, sc.num_classes, sc.lr, seed=sc.seed)
        measures, recorder = make_measures(sc, root), recorder_for()
        stop = [StopAt(sc.stop_at)] if sc.stop_at is not None else []  # counts the resumed fit's batches afresh
        trainer = make_trainer(sc, root, [*measures.callbacks(), recorder, *stop])
        fit(trainer, model, data, recorder, ckpt_path=resume)
        if resume:
            skipped = lost_validations(crashed, _dump_of(recorder).history, list(data.val_splits()))
    if sc.extend:
        trainer.fit_loop.max_epochs = sc.epochs + sc.extend
        fit(trainer, model, data, recorder)
    check(Run(run_dir_of(measures, trainer), _dump_of(recorder).history, model, measures, "first run", skipped))
    if sc.second is None:
        return 1
    root2 = root / "second" if sc.second == "new_dir" else root
    model2, recorder2 = FuzzNet(DIM, sc.num_classes, sc.lr, seed=sc.seed + 1), recorder_for()
    crash2 = [CrashAt(sc.second_crash)] if sc.second_crash else []
    trainer2 = make_trainer(sc, root2, [*measures.callbacks(), recorder2, *crash2])
    try:
        fit(trainer2, model2, data, recorder2)
    except SimulatedCrashError:
        check_interrupted(run_dir_of(measures, trainer2), root / "check-interrupted")
        return 1
    check(Run(run_dir_of(measures, trainer2), _dump_of(recorder2).history, model2, measures, "second Trainer"))
    return 2


# ------------------------------------------------------------------------------------------------
# Checking a run against its history
# ------------------------------------------------------------------------------------------------


def tolerance(sc: Scenario) -> dict[str, float]:
    if sc.precision == "64-true":
        return {"rtol": 1e-9, "atol": 1e-10}
    return {"rtol": 1e-5, "atol": 2e-6}


def _column(table: pd.DataFrame, split: str, name: str) -> np.ndarray:
    rows = table[table["split"] == split].sort_values("index")
    return rows[name].to_numpy()


def _floats(values: np.ndarray) -> np.ndarray:
    return pd.array(values).to_numpy(dtype=np.float64, na_value=np.nan)


def check_run(sc: Scenario, run: Run, data: Data, tmp: Path) -> None:
    tol = tolerance(sc)
    table = pd.read_parquet(run.run_dir / "scores.parquet")
    summary = json.loads((run.run_dir / "summary.json").read_text())
    splits = {"train": data.train, **{("val" if i == 0 else f"val_{i}"): v for i, v in enumerate(data.vals)}}
    in_table = set(table["split"].unique())
    assert "train" in in_table and in_table <= set(splits), f"the table's splits {sorted(in_table)}"
    for split in set(splits) - in_table:  # Lightning never loaded a validation loader it never ran
        assert not run.history.of(split), f"{run.label}: split {split!r} ran but is not in the table"
        del splits[split]
    cs_key, td_key = run.measures.confusion.state_key, run.measures.dynamics.state_key
    cs_summary, td_summary = summary["measures"][cs_key], summary["measures"][td_key]
    recorded: dict[str, dict[int, Any]] = {}
    for split, dataset in splits.items():
        n = len(dataset)
        where = f"{run.label}, split {split!r}"
        np.testing.assert_array_equal(_column(table, split, "index"), np.arange(n), err_msg=f"{where}: rows")
        check_fit_end_pass(sc, run, table, split, dataset, where)
        epochs = epoch_means(run.history.of(split), n, sc.num_classes)
        recorded[split] = epochs
        # ConfusionScore
        np.testing.assert_allclose(
            _floats(_column(table, split, "confusion")),
            expected_confusion(epochs, n),
            **tol,
            err_msg=f"{where}: confusion",
        )
        entry = cs_summary.get(split, {"epochs": 0, "mean_confusion_per_epoch": {}})
        assert entry["epochs"] == len(epochs), f"{where}: summary epochs {entry['epochs']} != history {len(epochs)}"
        means = {int(k): v for k, v in entry["mean_confusion_per_epoch"].items()}
        assert sorted(means) == sorted(epochs), f"{where}: summary epochs {sorted(means)} != {sorted(epochs)}"
        for k, e in epochs.items():
            assert math.isclose(means[k], float(e.entropy[e.seen].mean()), rel_tol=1e-5, abs_tol=1e-6), (
                f"{where}: mean confusion of epoch {k}"
            )
        # TrainingDynamics
        if split == "train" or sc.td_val:
            td = epoch_means(labelled(run.history.of(split)), n, sc.num_classes)
            check_dynamics(table, split, td, n, tol, where)
            td_epochs = td_summary.get("epochs", {}).get(split, {})
            assert sorted(int(k) for k in td_epochs) == sorted(td), f"{where}: TrainingDynamics summary epochs"
        # records
        check_records(run.run_dir, split, epochs, where)
    check_history(summary, run, sc)
    check_combine(run, table, recorded, splits, tmp, where=run.label)


def check_history(summary: dict[str, Any], run: Run, sc: Scenario) -> None:
    """``summary.json["history"]`` lists exactly the replayed training epochs and the skipped validation runs."""
    listed = {(e["event"], e["split"], int(e["epoch"])) for e in summary.get("history", [])}
    expected = {("replayed", "train", epoch) for epoch in run.history.replayed_epochs()}
    expected |= {("skipped", split, epoch) for split, epoch in run.skipped}
    assert listed == expected, f"{run.label}: summary history {sorted(listed)} != {sorted(expected)}"


def check_fit_end_pass(
    sc: Scenario, run: Run, table: pd.DataFrame, split: str, dataset: IndexedDataset, where: str
) -> None:
    """``label`` is the dataset's (-1 or NA where it has none) and ``prediction`` the final model's argmax, for
    every row: the fit-end pass runs the final model over the whole of every split."""
    labels = dataset.targets
    label = pd.array(_column(table, split, "label"), dtype="Int64").fillna(-1).to_numpy(dtype=np.int64)
    prediction = _floats(_column(table, split, "prediction"))
    np.testing.assert_array_equal(np.maximum(label, -1), labels, err_msg=f"{where}: label (-1 or NA: none)")
    model = run.model.eval()
    parameter = next(model.parameters())
    x = dataset.dataset.tensors[0]  # type: ignore[attr-defined]
    with torch.no_grad():
        logits = model(x.to(parameter.dtype)).double().numpy()
    top2 = np.sort(logits, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > (5e-2 if sc.precision == "bf16-mixed" else 1e-5)  # no near-tie to round away
    np.testing.assert_array_equal(
        prediction[clear], logits.argmax(axis=1)[clear], err_msg=f"{where}: prediction of the final model"
    )


def check_dynamics(
    table: pd.DataFrame, split: str, epochs: dict[int, Any], n: int, tol: dict[str, float], where: str
) -> None:
    expected = expected_dynamics(epochs, n)
    for name in DYNAMICS:
        np.testing.assert_allclose(
            _floats(_column(table, split, name)), expected[name], **tol, err_msg=f"{where}: {name}"
        )
    variability = _floats(_column(table, split, "dm_variability"))
    constant = constant_confidence(epochs, n)
    assert np.all(variability[constant] <= 1e-12), (
        f"{where}: dm_variability of constant samples {variability[constant]}"
    )
    # a sample never seen has no forgetting count, never_learned or region: 0 / False / "unseen", or missing
    seen = np.zeros(n, dtype=bool)
    for e in epochs.values():
        seen |= e.seen
    forgetting = _floats(_column(table, split, "forgetting"))
    np.testing.assert_array_equal(forgetting[seen], expected["forgetting"][seen], err_msg=f"{where}: forgetting")
    assert np.all(np.isnan(forgetting[~seen]) | (forgetting[~seen] == 0)), f"{where}: forgetting of unseen samples"
    never = pd.array(_column(table, split, "never_learned"), dtype="boolean")
    np.testing.assert_array_equal(
        never[seen].to_numpy(dtype=bool, na_value=True), expected["never_learned"][seen], err_msg=f"{where}: never"
    )
    assert not never[~seen].fillna(False).any(), f"{where}: never_learned of unseen samples"
    region = pd.Series(_column(table, split, "dm_region")).fillna("unseen").astype(str).to_numpy()
    confidence, variability_exp = expected["dm_confidence"], expected["dm_variability"]
    clear = ~((np.abs(confidence - 0.5) < 1e-5) | (np.abs(variability_exp - 0.2) < 1e-5))
    np.testing.assert_array_equal(
        region[clear], expected["dm_region"][clear].astype(str), err_msg=f"{where}: dm_region"
    )


def check_records(run_dir: Path, split: str, epochs: dict[int, Any], where: str) -> None:
    folder = run_dir / "records" / split
    if not epochs:
        assert (
            not (folder / "manifest.json").exists()
            or json.loads((folder / "manifest.json").read_text())["epochs"] == []
        ), f"{where}: records of a split the history never saw"
        return
    left = sorted(p.name for p in folder.glob(".log*"))
    assert not left, f"{where}: the finished fit left its epoch logs in {folder}: {left}"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["epochs"] == sorted(epochs), f"{where}: recorded epochs {manifest['epochs']} != {sorted(epochs)}"
    for k, e in epochs.items():
        if manifest["kind"] == "probs":
            probs = np.load(folder / f"epoch_{k:04d}.probs.npy").astype(np.float64)
            np.testing.assert_allclose(probs, e.probs, rtol=1e-5, atol=1e-6, err_msg=f"{where}: record of epoch {k}")
            continue
        top = manifest["topk"]
        values = np.load(folder / f"epoch_{k:04d}.topk_values.npy").astype(np.float64)
        classes = np.load(folder / f"epoch_{k:04d}.topk_indices.npy")
        expected = -np.sort(-np.nan_to_num(e.first_probs, nan=-1.0), axis=1)[:, :top]
        expected[~e.seen] = np.nan
        np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-6, err_msg=f"{where}: top-k of epoch {k}")
        picked = np.take_along_axis(np.nan_to_num(e.first_probs), np.maximum(classes, 0), axis=1)
        np.testing.assert_allclose(
            np.where(e.seen[:, None], picked, np.nan), expected, rtol=1e-5, atol=1e-6, err_msg=f"{where}: top-k classes"
        )
        assert np.all(classes[~e.seen] == -1), f"{where}: top-k classes of unseen rows in epoch {k}"


def check_combine(
    run: Run, table: pd.DataFrame, recorded: dict[str, dict[int, Any]], splits: dict, tmp: Path, where: str
) -> None:
    """``lightning-difficulty combine`` of the run against its records' recomputation, and (requirement 2) against
    the run's own table."""
    out = tmp / "combined"
    assert cli_main(["combine", str(run.run_dir), "-o", str(out)]) == 0
    combined = pd.read_parquet(out / "scores.parquet")
    found, expected = set(combined["split"].unique()), {s for s, e in recorded.items() if e}
    assert found == expected, f"{where}: combine splits {sorted(found)} != the history's {sorted(expected)}"
    confusion_score = run.measures.confusion
    topk = confusion_score.topk if confusion_score.record == "topk" else None
    for split, epochs in recorded.items():
        if not epochs:
            continue
        labels = splits[split].targets
        confusion, el2n, ambiguous = expected_combine(epochs, labels, topk)
        got = _floats(_column(combined, split, "confusion"))
        np.testing.assert_allclose(
            got, confusion, rtol=1e-5, atol=2e-6, err_msg=f"{where}: combine confusion, split {split!r}"
        )
        np.testing.assert_allclose(
            _floats(_column(combined, split, "el2n"))[~ambiguous],
            el2n[~ambiguous],
            rtol=1e-5,
            atol=2e-6,
            err_msg=f"{where}: combine el2n, split {split!r}",
        )
        if topk is None or topk >= int(labels.max()) + 1:  # a record that keeps every class is exact
            check_table_agrees(table, split, got, epochs, where)


def check_table_agrees(
    table: pd.DataFrame, split: str, combined: np.ndarray, epochs: dict[int, Any], where: str
) -> None:
    """Requirement 2: ``combine`` of one run equals its table (where the record is exact)."""
    own = _floats(_column(table, split, "confusion"))
    differ = ~np.isclose(own, combined, rtol=1e-5, atol=2e-6, equal_nan=True)
    assert not differ.any(), (
        f"{where}: combine of the run differs from its table on split {split!r} at {np.flatnonzero(differ)[:8]}: "
        f"table {own[differ][:4]}, combine {combined[differ][:4]}"
    )


def check_interrupted(run_dir: Path, tmp: Path) -> None:
    """A folder left by an interrupted run: its table, if any, agrees with its records (``combine``)."""
    if not (run_dir / "scores.parquet").exists():
        return
    table = pd.read_parquet(run_dir / "scores.parquet")
    rc = cli_main(["combine", str(run_dir), "-o", str(tmp / "combined")])
    assert rc == 0, f"combine of the interrupted run's folder failed (exit {rc}) while it holds a table"
    combined = pd.read_parquet(tmp / "combined" / "scores.parquet")
    scored = {str(s) for s, rows in table.groupby("split") if rows["confusion"].notna().any()}
    assert set(combined["split"]) == scored, f"interrupted folder: records of {set(combined['split'])}, table {scored}"
    for split in scored:
        own, other = _floats(_column(table, split, "confusion")), _floats(_column(combined, split, "confusion"))
        assert np.allclose(own, other, rtol=1e-5, atol=2e-6, equal_nan=True), (
            f"interrupted folder, split {split!r}: the table and the records' combine differ"
        )


_TOLERATED: frozenset[str] = frozenset()


def tolerated(name: str) -> bool:
    """Whether this check may let the known open class ``name`` pass (drawn examples only); records an event."""
    if name in _TOLERATED:
        event(f"known open class tolerated: {name}")
        return True
    return False


def check_scenario(sc: Scenario, root: Path, *, tolerate: frozenset[str] = frozenset()) -> None:
    global _TOLERATED
    _TOLERATED = tolerate
    note(repr(sc))
    data = make_data(sc)
    checked = iter(range(2))

    def check(run: Run) -> None:
        check_run(sc, run, data, root / f"check{next(checked)}")

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            run_scenario(sc, root, check)
        except RefusedError as refusal:
            event("refused before the first training step")
            assert len(str(refusal)) > 40, f"a refusal must say what is wrong and how to fix it: {refusal}"


# ------------------------------------------------------------------------------------------------
# Tests
# ------------------------------------------------------------------------------------------------


_counter = iter(range(10**9))


def all_open_but(name: str) -> frozenset[str]:
    """A named test of one open class tolerates the others, so it flips exactly when its own class is fixed."""
    return frozenset(OPEN) - {name}


def _fresh(tmp_path: Path) -> Path:
    root = tmp_path / f"example{next(_counter)}"
    root.mkdir()
    return root


@settings(_profile("fuzz-fixed"))
@given(sc=scenarios())
# issue 19 class 1: fit called again on the same Trainer extends the history
@example(sc=Scenario(n_train=8, batch_size=4, epochs=1, val_sizes=(4,), extend=1))
# class 2: a checkpoint at an epoch's last batch; Lightning skips the validation after it, for every loader
@example(sc=Scenario(n_train=16, batch_size=4, epochs=2, val_sizes=(4, 5), crash=Crash(batch=5, kind="last_batch")))
# found: the same before any validation run was recorded listed the skip for "val" only, not "val_1"
@example(
    sc=Scenario(n_train=8, batch_size=4, epochs=3, val_sizes=(4, 5), check_val_every=2, crash=Crash(5, "last_batch"))
)
# class 3: a mid-epoch step checkpoint; Lightning restarts the epoch's data (replays)
@example(sc=Scenario(n_train=16, batch_size=4, epochs=2, val_sizes=(4,), crash=Crash(batch=3, kind="steps", every=2)))
# found: a validation split that no validation run scored (loaded by the sanity check) broke the report
@example(sc=Scenario(n_train=8, batch_size=4, val_sizes=(4,), check_val_every=2, sanity=2, epochs=1))
# found: a second Trainer into the same folder that runs no validation left the first run's val records
@example(sc=Scenario(n_train=8, batch_size=4, val_sizes=(4,), check_val_every=2, epochs=1, extend=1, second="same_dir"))
# found: an untrained 4-class model was refused at the first validation of a 2-label validation set
@example(sc=Scenario(n_train=8, num_classes=4, batch_size=4, val_sizes=(2,), lr=0.0, epochs=1, seed=1))
# found: a resume at an epoch's last batch listed a skipped validation of a run without validation loaders
@example(sc=Scenario(n_train=8, batch_size=2, epochs=2, val_sizes=(), crash=Crash(5, "last_batch")))
# found: ConfusionScore(record="topk") and TrainingDynamics(record="probs") mixed their rows in one record
@example(sc=Scenario(n_train=8, num_classes=2, batch_size=4, val_sizes=(), record="topk", topk=1, td_record=True))
def test_fuzz_fixed_seed(sc: Scenario, tmp_path: Path) -> None:
    check_scenario(sc, _fresh(tmp_path), tolerate=frozenset(OPEN))


@settings(_profile("fuzz-ddp"))
@given(sc=scenarios(ddp=True))
def test_fuzz_ddp_spawn(sc: Scenario, tmp_path: Path) -> None:
    check_scenario(sc, _fresh(tmp_path), tolerate=frozenset(OPEN))


@pytest.mark.fuzz
@settings(_profile("fuzz-long"), max_examples=int(os.environ.get("FUZZ_DDP_EXAMPLES", "20")))
@given(sc=scenarios(ddp=True))
def test_fuzz_long_ddp_spawn(sc: Scenario, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if "fuzz" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("the long fuzz profile runs with `pytest -m fuzz`")
    check_scenario(sc, _fresh(tmp_path), tolerate=frozenset(OPEN))


@pytest.mark.fuzz
@settings(_profile("fuzz-long"))
@given(sc=scenarios())
def test_fuzz_long(sc: Scenario, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if "fuzz" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("the long fuzz profile runs with `pytest -m fuzz`")
    check_scenario(sc, _fresh(tmp_path), tolerate=frozenset(OPEN))


def _scaled_entropy(logits: torch.Tensor) -> torch.Tensor:
    return softmax_entropy(logits) * (1 + 1e-4)


def _shifted_margin(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return logit_margin(logits, target) + 1e-4


def _hard_correct(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.zeros(logits.shape[0], dtype=logits.dtype)  # never correct: forgetting and never_learned change


@pytest.mark.parametrize(
    ("module", "name", "wrong"),
    [
        ("lightning_difficulty.callbacks.confusion", "softmax_entropy", _scaled_entropy),
        ("lightning_difficulty.functional.dynamics", "logit_margin", _shifted_margin),
        ("lightning_difficulty.functional.dynamics", "is_correct", _hard_correct),
    ],
    ids=["entropy-1e-4-relative", "margin-plus-1e-4", "never-correct"],
)
def test_the_fuzzer_catches_a_small_error_in_a_measure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str, name: str, wrong: Callable[..., Any]
) -> None:
    """The oracles are not vacuous: a resumed run whose measure is off by 1e-4 (or wrong outright) fails."""
    monkeypatch.setattr(f"{module}.{name}", wrong)
    sc = Scenario(n_train=12, batch_size=4, epochs=3, val_sizes=(5,), crash=Crash(5, "epoch"))
    with pytest.raises(AssertionError):
        check_scenario(sc, tmp_path, tolerate=frozenset(OPEN))


# ------------------------------------------------------------------------------------------------
# Failure classes the fuzzer found, reduced (strict: each flips to a failure when it is fixed)
# ------------------------------------------------------------------------------------------------


def test_report_setup_makes_the_same_collectives_on_every_rank(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by the DDP profile (a fit that hung until the process group's timeout), reduced: with dirpath=None,
    DifficultyReport.setup must broadcast as often on every rank (``trainer.log_dir`` broadcasts; Lightning: "You
    must call this on all processes")."""
    counts = [
        _setup_broadcasts(tmp_path, monkeypatch, rank_zero=True),
        _setup_broadcasts(tmp_path, monkeypatch, rank_zero=False),
    ]
    assert counts[0] == counts[1], f"broadcasts in setup: rank 0 {counts[0]}, other ranks {counts[1]}"


def _setup_broadcasts(root: Path, monkeypatch: pytest.MonkeyPatch, *, rank_zero: bool) -> int:
    """Broadcasts made by DifficultyReport.setup on a one-process Trainer that plays rank 0 or another rank."""
    trainer = L.Trainer(default_root_dir=str(root), logger=False, accelerator="cpu", devices=1)
    strategy = trainer.strategy
    original = strategy.broadcast
    broadcasts: list[Any] = []

    def counting(obj: Any, src: int = 0) -> Any:
        broadcasts.append(obj)
        return original(obj, src)

    with monkeypatch.context() as patch:
        patch.setattr(strategy, "broadcast", counting)
        patch.setattr(type(strategy), "is_global_zero", property(lambda self: rank_zero))
        DifficultyReport(grid_per_class=0).setup(trainer, FuzzNet(DIM, 3, 0.1), "fit")
    return len(broadcasts)


@pytest.mark.xfail(strict=True, reason=OPEN["ddp-padding-combine"])
def test_combine_equals_the_table_when_a_ddp_padding_duplicate_runs_at_a_later_step(tmp_path: Path) -> None:
    sc = Scenario(n_train=9, num_classes=2, batch_size=2, val_sizes=(), epochs=1, ddp=True, record="probs")
    check_scenario(sc, tmp_path, tolerate=all_open_but("ddp-padding-combine"))


def test_combine_of_one_run_equals_its_table_when_a_sampler_repeats_samples(tmp_path: Path) -> None:
    # fixed (was an open class): a sample's later presentations in one epoch are left out of table and records
    check_scenario(Scenario(n_train=8, batch_size=4, sampler="repeat", epochs=2, val_sizes=()), tmp_path)


def test_a_validation_skipped_after_a_mid_epoch_checkpoint_is_listed(tmp_path: Path) -> None:
    # checkpoint at step 2 of 4; the validation at batch 2 (val_check_interval=2) follows it and crashes
    sc = Scenario(
        n_train=16, batch_size=4, epochs=2, val_sizes=(4,), val_check_interval=2, crash=Crash(1, "steps", 2, "val")
    )
    check_scenario(sc, tmp_path)  # fixed (was an open class): the history follows Lightning's validation schedule


def test_a_refit_with_nothing_left_to_train_keeps_the_fit_end_pass(tmp_path: Path) -> None:
    # fixed (was an open class): the report loads the validation loaders a fit that trained nothing never loaded
    sc = Scenario(n_train=8, batch_size=4, val_sizes=(7,), val_batch=2, limit_val=2, epochs=2, max_steps=3, extend=1)
    check_scenario(sc, tmp_path)


def test_a_real_four_class_model_is_not_refused_on_a_limited_training_epoch(tmp_path: Path) -> None:
    # one training batch of labels 0-2 (limit_train_batches=1); the untrained 4-class model predicts class 3 there:
    # the classes check reads the dataset's labels (fixed; was an open class)
    sc = Scenario(n_train=8, num_classes=4, batch_size=3, limit_train=1, lr=0.0, seed=3, epochs=1, val_sizes=())
    check_scenario(sc, tmp_path)
