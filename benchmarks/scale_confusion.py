"""ImageNet-scale ConfusionScore: step overhead, RAM state and top-k records at N = 1,281,167, C = 1,000.

One stage of the scale benchmark (issue 13). A real Lightning ``Trainer`` fits a one-layer model
(``nn.Linear(16, C)``, so each step's logits are ``(batch, C)``) on a synthetic dataset of ``N`` rows, twice
per repeat in one process: plain, and with ``ConfusionScore(record="topk")``. Reported:

* the training-loop seconds (``on_train_start`` to ``on_train_end``; the fit-end part is timed apart) of both
  runs and their ratio (target <= 1.03);
* a microbenchmark of the per-batch work: bare ``log_softmax`` on ``(batch, C)`` against what ConfusionScore
  adds to each batch, in milliseconds and in units of one ``log_softmax``;
* peak RSS of each run, the RAM bytes per sample of ConfusionScore's state and the disk bytes per sample of its
  records.

    python benchmarks/scale_confusion.py            # 1,281,167 x 1,000, 2 epochs, batch 1024
    python benchmarks/scale_confusion.py --quick    # 50,000 samples
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from _measure import folder_bytes, quiet_lightning
from torch import Tensor, nn
from torch.utils.data import DataLoader, default_collate

from lightning_difficulty import ConfusionScore, IndexedDataset
from lightning_difficulty.callbacks.accumulator import SplitAccumulator
from lightning_difficulty.functional.confusion import softmax_entropy
from lightning_difficulty.storage.records import EpochRecorder

IMAGENET_TRAIN = 1_281_167
FEATURES = 16
SEED = 0
Batch = tuple[Tensor, Tensor, Tensor]


class SyntheticFeatures:
    """``N`` deterministic rows: 16 float32 features from a seeded generator and a label in ``[0, C)``."""

    def __init__(self, num_samples: int, num_classes: int, seed: int = SEED) -> None:
        rng = np.random.default_rng(seed)
        self.x = torch.from_numpy(rng.standard_normal((num_samples, FEATURES), dtype=np.float32))
        self.targets = torch.from_numpy(rng.integers(0, num_classes, size=num_samples, dtype=np.int64))

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.x[index], self.targets[index]

    @property
    def nbytes(self) -> int:
        return self.x.nbytes + self.targets.nbytes


class BatchFetchIndexed(IndexedDataset):
    """:class:`IndexedDataset` whose batches are gathered in one indexing op instead of item by item.

    Items keep the ``(input, target, index)`` contract; ``__getitems__`` returns the already-collated batch, so
    the loader (with :func:`keep_batch` as ``collate_fn``) costs a gather, not ``batch`` Python calls. This keeps
    the data loading from diluting the step-overhead ratio.
    """

    dataset: SyntheticFeatures

    def __getitems__(self, indices: list[int]) -> Batch:
        index = torch.as_tensor(indices, dtype=torch.int64)
        return self.dataset.x[index], self.dataset.targets[index], index


def keep_batch(batch: Batch) -> Batch:
    """``collate_fn`` for :class:`BatchFetchIndexed`: the batch is collated already."""
    return batch


class LinearClassifier(L.LightningModule):
    """``nn.Linear(16, C)`` trained with cross-entropy (the bare ``log_softmax``) and SGD."""

    def __init__(self, num_classes: int, lr: float = 0.1) -> None:
        super().__init__()
        self.head = nn.Linear(FEATURES, num_classes)
        self.lr = lr

    def forward(self, x: Tensor) -> Tensor:
        return self.head(x)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        x, y, _ = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class TrainTimer(L.Callback):
    """Wall-clock seconds of the training loop (``on_train_start`` to ``on_train_end``) and the steps run.

    Put it first in the callbacks and :attr:`epoch_end_mark` last: the seconds between them in
    ``on_train_epoch_end`` (the other callbacks' epoch-end work, e.g. merging the records) add up in
    :attr:`epoch_end_s`.
    """

    def __init__(self) -> None:
        self.start = self.end = self.epoch_end_start = self.epoch_end_s = 0.0
        self.steps = 0
        self.epoch_end_mark = EpochEndMark(self)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epoch_end_start = time.perf_counter()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.end = time.perf_counter()
        self.steps = trainer.global_step

    @property
    def seconds(self) -> float:
        return self.end - self.start


class EpochEndMark(L.Callback):
    """The closing mark of :class:`TrainTimer`'s epoch-end window."""

    def __init__(self, timer: TrainTimer) -> None:
        self.timer = timer

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.timer.epoch_end_s += time.perf_counter() - self.timer.epoch_end_start


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (``/proc/self/clear_refs``), so each run gets its own peak."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _fit(
    data: SyntheticFeatures,
    num_classes: int,
    callbacks: list[L.Callback],
    *,
    epochs: int,
    batch_size: int,
    max_steps: int = -1,
) -> tuple[TrainTimer, float, float]:
    """One fit; returns the training-loop timer and the ``perf_counter`` before and after ``trainer.fit``."""
    L.seed_everything(SEED, verbose=False)
    model = LinearClassifier(num_classes)
    loader = DataLoader(BatchFetchIndexed(data), batch_size=batch_size, shuffle=True, collate_fn=keep_batch)
    timer = TrainTimer()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        max_steps=max_steps,
        logger=False,
        callbacks=[timer, *callbacks, timer.epoch_end_mark],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    start = time.perf_counter()
    trainer.fit(model, loader)
    return timer, start, time.perf_counter()


def _median_ms(fn: Callable[[], Any], reps: int) -> tuple[float, float]:
    """Median and mean milliseconds of ``fn`` over ``reps`` calls (after 5 warm-up calls)."""
    for _ in range(5):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3, statistics.fmean(times) * 1e3


def microbenchmark(
    num_samples: int, num_classes: int, batch_size: int, topk: int, workdir: Path, reps: int = 300
) -> dict[str, float]:
    """Per-batch milliseconds: bare ``log_softmax`` vs ConfusionScore's additions on one ``(batch, C)`` batch.

    ``entropy_index_add``: ``softmax_entropy`` plus one ``index_add_`` into an ``(N+1,)`` float64 buffer.
    ``full_path``: what ConfusionScore runs per training batch after the logits are captured: the real
    ``SplitAccumulator.add`` (entropy sum, count and label buffers) and the real top-k ``EpochRecorder.add``
    (a second softmax, ``topk``, buffered appends flushed to disk every 64 Ki rows; the mean includes the flushes).
    Its parts: ``entropy`` (``softmax_entropy`` alone), ``index_add``, ``accumulator_add`` and ``record_add``;
    ``entropy_minimal`` is a reference, not the library: ``-(exp(log_p) * log_p).sum(1)`` from one ``log_softmax``;
    ``entropy_fused`` another: the library's entropy formula through ``torch.compile`` (one fused kernel, what a
    fused implementation would cost; left out when this machine cannot compile).
    """
    gen = torch.Generator().manual_seed(SEED)
    logits = torch.randn(batch_size, num_classes, generator=gen) * 3
    index = torch.randperm(num_samples, generator=gen)[:batch_size]
    targets = torch.randint(0, num_classes, (batch_size,), generator=gen)
    buffer = torch.zeros(num_samples + 1, dtype=torch.float64)
    acc = SplitAccumulator(num_samples, num_classes, ConfusionScore.values, ConfusionScore.states, torch.device("cpu"))
    recorder = EpochRecorder(workdir / "micro_records", "train", num_samples, num_classes, kind="topk", topk=topk)
    entropy = softmax_entropy(logits)

    def entropy_minimal() -> Tensor:
        log_p = torch.log_softmax(logits, dim=1)
        return -(log_p.exp() * log_p).sum(dim=1)

    cases: dict[str, Callable[[], Any]] = {
        "log_softmax": lambda: torch.log_softmax(logits, dim=1),
        "entropy_index_add": lambda: buffer.index_add_(0, index, softmax_entropy(logits).double()),
        "entropy": lambda: softmax_entropy(logits),
        "entropy_minimal": entropy_minimal,
        **_fused_entropy_case(logits),
        "index_add": lambda: buffer.index_add_(0, index, entropy.double()),
        "accumulator_add": lambda: acc.add(index, {"confusion": entropy}, targets),
        "record_add": lambda: recorder.add(index, torch.softmax(logits, dim=1)),
        "full_path": lambda: (
            acc.add(index, {"confusion": softmax_entropy(logits)}, targets),
            recorder.add(index, torch.softmax(logits, dim=1)),
        ),
    }
    out: dict[str, float] = {}
    with torch.no_grad():
        for name, fn in cases.items():
            out[f"micro_{name}_ms"], mean = _median_ms(fn, reps)
            if name in ("record_add", "full_path"):  # flushes every 64 batches: the mean spreads them
                out[f"micro_{name}_mean_ms"] = mean
            if name == "record_add":
                recorder.discard_log()
    recorder.discard_log()
    shutil.rmtree(workdir / "micro_records", ignore_errors=True)
    base = out["micro_log_softmax_ms"]
    for name in cases:
        if name != "log_softmax":
            out[f"micro_{name}_in_log_softmax"] = out[f"micro_{name}_ms"] / base
    return out


def _entropy_formula(logits: Tensor) -> Tensor:
    """``softmax_entropy``'s fast path (no masked or NaN rows), for ``torch.compile``."""
    shifted = logits - logits.amax(dim=-1, keepdim=True)
    weights = shifted.exp()
    total = weights.sum(dim=-1)
    return total.log() - (weights * shifted).sum(dim=-1) / total


def _fused_entropy_case(logits: Tensor) -> dict[str, Callable[[], Any]]:
    """``{"entropy_fused": compiled entropy}`` when ``torch.compile`` works here (CPU: a C++ compiler), else ``{}``."""
    try:
        fused = torch.compile(_entropy_formula, dynamic=False)
        if not torch.allclose(fused(logits), softmax_entropy(logits), atol=1e-4):
            raise RuntimeError("the compiled entropy differs from softmax_entropy")
    except Exception as error:  # no compiler, no backend: the reference row is left out, the run goes on
        warnings.warn(f"entropy_fused left out: {error}", stacklevel=2)
        return {}
    return {"entropy_fused": lambda: fused(logits)}


def loader_cost(data: SyntheticFeatures, batch_size: int, reps: int = 20) -> dict[str, float]:
    """Milliseconds to load one batch: the batched gather used here vs item-by-item ``IndexedDataset``."""
    gen = torch.Generator().manual_seed(SEED)
    indices = torch.randperm(len(data), generator=gen)[:batch_size].tolist()
    batched, per_item = BatchFetchIndexed(data), IndexedDataset(data)
    gather, _ = _median_ms(lambda: batched.__getitems__(indices), reps)
    items, _ = _median_ms(lambda: default_collate([per_item[i] for i in indices]), reps)
    return {"loader_batched_ms": gather, "loader_per_item_ms": items}


def confusion_stage(
    num_samples: int,
    num_classes: int = 1000,
    *,
    epochs: int = 2,
    batch_size: int = 1024,
    topk: int = 5,
    repeats: int = 1,
    workdir: Path,
) -> dict[str, float]:
    """Run the stage: ``repeats`` x (plain fit, ConfusionScore fit) alternated, plus the microbenchmark.

    Returns a flat dict: seconds (``*_s``), milliseconds (``*_ms``), ratios, bytes (``*_bytes``) and bytes per
    sample (``*_bytes_per_sample``). ``train_ratio`` is the median of the per-repeat ratios of training-loop
    seconds (ConfusionScore / plain); ``steps_ratio`` the same without the callbacks' epoch-end work (the
    per-step overhead); ``*_step_ms`` is per step without the epoch-end work; ``micro_*_in_log_softmax`` is an
    added per-batch cost in units of one bare ``log_softmax`` on the same ``(batch, C)`` logits.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    record_dir = workdir / "records"
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*`training_step` returned.*")

    rss_start = _peak_rss_bytes()
    data = SyntheticFeatures(num_samples, num_classes)
    out: dict[str, float] = {
        "num_samples": float(num_samples),
        "num_classes": float(num_classes),
        "epochs": float(epochs),
        "batch_size": float(batch_size),
        "topk": float(topk),
        "repeats": float(repeats),
        "torch_threads": float(torch.get_num_threads()),
        "load_avg_1min_start": os.getloadavg()[0],  # other jobs on the machine skew every timing
        "dataset_bytes_per_sample": data.nbytes / num_samples,
    }
    out.update(loader_cost(data, batch_size))
    for warm in ([], [ConfusionScore(splits=("train",), record="topk", topk=topk, record_dir=str(record_dir))]):
        _fit(data, num_classes, warm, epochs=1, batch_size=batch_size, max_steps=20)  # first-call costs, allocator
    rss_ready = _peak_rss_bytes()

    runs: dict[str, dict[str, list[float]]] = {name: {} for name in ("plain", "confusion")}
    peaks = {name: 0 for name in runs}
    callback: ConfusionScore | None = None
    for _ in range(repeats):
        for name in runs:
            callbacks: list[L.Callback] = []
            if name == "confusion":
                callback = ConfusionScore(splits=("train",), record="topk", topk=topk, record_dir=str(record_dir))
                callbacks = [callback]
            reset = _reset_peak_rss()
            timer, fit_start, fit_end = _fit(data, num_classes, callbacks, epochs=epochs, batch_size=batch_size)
            peaks[name] = max(peaks[name], _peak_rss_bytes()) if reset else _peak_rss_bytes()
            for key, value in (
                ("train_s", timer.seconds),
                ("fit_s", fit_end - fit_start),
                ("fit_start_s", timer.start - fit_start),  # fit() to on_train_start: setup, loader
                ("fit_end_s", fit_end - timer.end),  # on_train_end to fit()'s return: teardown, record flush
                ("epoch_end_s", timer.epoch_end_s),  # the callbacks' on_train_epoch_end, all epochs
                ("steps_s", timer.seconds - timer.epoch_end_s),
                ("step_ms", (timer.seconds - timer.epoch_end_s) / max(timer.steps, 1) * 1e3),
            ):
                runs[name].setdefault(key, []).append(value)
    for name, values in runs.items():
        for key, series in values.items():
            out[f"{name}_{key}"] = statistics.median(series)
    ratios = [c / p for c, p in zip(runs["confusion"]["train_s"], runs["plain"]["train_s"], strict=True)]
    out["train_ratio"] = statistics.median(ratios)
    ratios = [c / p for c, p in zip(runs["confusion"]["steps_s"], runs["plain"]["steps_s"], strict=True)]
    out["steps_ratio"] = statistics.median(ratios)
    out["added_step_ms"] = out["confusion_step_ms"] - out["plain_step_ms"]

    if callback is None or "train" not in callback._accumulators:
        raise RuntimeError("ConfusionScore ran no training batch: no state to measure (repeats >= 1 and N >= 1).")
    acc = callback._accumulators["train"]
    state = sum(a.nbytes for a in acc.states.values()) + acc.labels.nbytes
    epoch_buffers = acc.sums.nbytes + acc.count.nbytes + acc.epoch_labels.nbytes
    records = folder_bytes(record_dir)
    out.update(
        state_bytes_per_sample=state / num_samples,
        epoch_buffer_bytes_per_sample=epoch_buffers / num_samples,
        ram_bytes_per_sample=(state + epoch_buffers) / num_samples,
        records_bytes=float(records),
        records_bytes_per_sample=records / num_samples,
        records_bytes_per_sample_epoch=records / num_samples / max(epochs, 1),
        rss_start_bytes=float(rss_start),
        rss_ready_bytes=float(rss_ready),
        plain_peak_rss_bytes=float(peaks["plain"]),
        confusion_peak_rss_bytes=float(peaks["confusion"]),
    )
    out.update(microbenchmark(num_samples, num_classes, batch_size, topk, workdir))
    out["peak_rss_bytes"] = float(max(_peak_rss_bytes(), *peaks.values()))
    out["load_avg_1min_end"] = os.getloadavg()[0]
    return out


MICRO_ROWS = (  # (key, label, has a mean) of the microbenchmark rows, brief's measure first
    ("entropy_index_add", "softmax_entropy + index_add_", False),
    ("full_path", "ConfusionScore's whole per-batch path", True),
    ("entropy", "  part: softmax_entropy", False),
    ("index_add", "  part: index_add_ into (N+1,) float64", False),
    ("accumulator_add", "  part: SplitAccumulator.add", False),
    ("record_add", "  part: top-k EpochRecorder.add (softmax, topk)", True),
    ("entropy_minimal", "reference: -(exp(log_p) * log_p).sum(1)", False),
    ("entropy_fused", "reference: the entropy formula fused by torch.compile", False),
)


def _table(result: dict[str, float]) -> str:
    """A small markdown table of the stage's numbers."""
    gib, mib = 2.0**30, 2.0**20
    r = result
    rows = [
        ("train loop, plain (s)", f"{r['plain_train_s']:.2f}", f"{r['plain_step_ms']:.2f} ms/step"),
        (
            "train loop, ConfusionScore top-k (s)",
            f"{r['confusion_train_s']:.2f}",
            f"{r['confusion_step_ms']:.2f} ms/step",
        ),
        ("train-loop ratio ConfusionScore / plain", f"{r['train_ratio']:.3f}", "target <= 1.03; median of repeats"),
        ("steps-only ratio (without epoch-end work)", f"{r['steps_ratio']:.3f}", "the per-step overhead"),
        ("added per training step (ms)", f"{r['added_step_ms']:.3f}", "measured in the loop, epoch ends excluded"),
        (
            "epoch-end callback work (s, all epochs), plain / ConfusionScore",
            f"{r['plain_epoch_end_s']:.2f} / {r['confusion_epoch_end_s']:.2f}",
            "O(N): fold states, merge top-k records",
        ),
        ("fit-end (s), plain / ConfusionScore", f"{r['plain_fit_end_s']:.2f} / {r['confusion_fit_end_s']:.2f}", ""),
        ("micro: bare log_softmax (ms/batch)", f"{r['micro_log_softmax_ms']:.3f}", "median; = 1 log_softmax unit"),
        *(
            (
                f"micro: {label} (ms/batch)",
                f"{r[f'micro_{key}_ms']:.3f}" + (f" (mean {r[f'micro_{key}_mean_ms']:.3f})" if mean else ""),
                f"{r[f'micro_{key}_in_log_softmax']:.2f} log_softmax units",
            )
            for key, label, mean in MICRO_ROWS
            if f"micro_{key}_ms" in r  # the fused reference is absent where torch.compile is not available
        ),
        (
            "loader per batch, batched gather / per-item (ms)",
            f"{r['loader_batched_ms']:.2f} / {r['loader_per_item_ms']:.2f}",
            "the fits use the batched gather",
        ),
        (
            "peak RSS, plain / ConfusionScore (GiB)",
            f"{r['plain_peak_rss_bytes'] / gib:.2f} / {r['confusion_peak_rss_bytes'] / gib:.2f}",
            "budget 24 GiB",
        ),
        ("peak RSS of the process (GiB)", f"{r['peak_rss_bytes'] / gib:.2f}", "all runs and the microbenchmark"),
        (
            "peak RSS at start / after data + warm-up (GiB)",
            f"{r['rss_start_bytes'] / gib:.2f} / {r['rss_ready_bytes'] / gib:.2f}",
            "per-run peaks above include what earlier runs left allocated",
        ),
        ("dataset RAM (bytes/sample)", f"{r['dataset_bytes_per_sample']:.1f}", "16 float32 + int64 label"),
        (
            "ConfusionScore RAM state (bytes/sample)",
            f"{r['state_bytes_per_sample']:.1f}",
            f"+ {r['epoch_buffer_bytes_per_sample']:.1f} open-epoch buffers = {r['ram_bytes_per_sample']:.1f}",
        ),
        (
            "top-k records on disk (bytes/sample)",
            f"{r['records_bytes_per_sample']:.1f}",
            f"{r['records_bytes_per_sample_epoch']:.1f} per epoch; {r['records_bytes'] / mib:.1f} MiB",
        ),
    ]
    rows.append(
        (
            "1-min load average, start / end",
            f"{r['load_avg_1min_start']:.2f} / {r['load_avg_1min_end']:.2f}",
            f"{os.cpu_count()} CPUs, {r['torch_threads']:.0f} torch threads; above ~1 other jobs share the cores",
        )
    )
    lines = ["| measure | value | note |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=IMAGENET_TRAIN)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--topk", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="plain/ConfusionScore pairs, alternated")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder, removed after")
    parser.add_argument("--quick", action="store_true", help="50,000 samples (overrides --samples)")
    args = parser.parse_args()
    quiet_lightning()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    samples = 50_000 if args.quick else args.samples
    print(
        f"ConfusionScore scale stage: {samples:,} samples x {args.classes:,} classes, {args.epochs} epochs, "
        f"batch {args.batch_size}, top-{args.topk} records, {args.repeats} repeat(s); "
        f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs"
    )
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        result = confusion_stage(
            samples,
            args.classes,
            epochs=args.epochs,
            batch_size=args.batch_size,
            topk=args.topk,
            repeats=args.repeats,
            workdir=workdir,
        )
    print(_table(result))


if __name__ == "__main__":
    main()
