"""ImageNet-shape benchmark of the fit-end probe stage and of ConfusionScore at 1,000 classes (issue 13).

Synthetic data of ImageNet shape: 1,281,167 training rows (the probes' reference set), 50,000 validation
rows, 1,000 classes, embeddings of d = 128 at the input and at 4 probed layers (5 probes), stored as float16
``.npy`` memmaps exactly as the fit-end pass stores them. The probe stage is the library's own code:
``PredictionDepth.compute`` on a ``FitEndArrays`` over those memmaps, with a seeded 50,000-row sample of the
training rows as queries (``train_queries=50_000``), ``index="auto"`` (IVF at this size) and the agreement
with exact search on 2,000 sampled queries. The embeddings follow ``benchmarks/probes.py``'s generator
(Gaussian classes in a low-dimensional latent space whose separation grows with depth).

Parts (each stage runs in a fresh process, so its peak memory is its own):
1. ``full``: the whole probe stage at full size, 2 threads: time, peak RAM, disk, agreement.
2. ``model``: the cost model (``lightning_difficulty.pipeline.cost``) against measurements at three sizes,
   exact and IVF: predicted and measured seconds, RAM and disk.
3. ``ranks``: one process against two processes sharing the search (``Ranks``, a barrier between two real
   processes), one thread per process, exact search: wall time, peak RAM per rank, identical tables.
4. ``pipeline``: the other fit-end stages (capture pass, table and summary, dashboard, views) through a real
   ``Trainer`` at five sizes: two fit the cost model's per-row constants, three check them (``scale_pipeline.py``).
5. ``confusion``: ConfusionScore over up to 1,281,167 samples x 1,000 classes, 2 epochs, at four sizes: the
   first (1/4) calibrates the per-step and epoch-end constants, three check them (``scale_confusion.py``).

    python benchmarks/scale.py                   # everything, about an hour on 2 cores
    python benchmarks/scale.py --parts model     # one part
    python benchmarks/scale.py --quick           # 1/64 of the sizes, a few minutes
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from _measure import folder_bytes, quiet_lightning
from probes import Synthetic, _centres, _separation, layer_features, make_synthetic

FULL_TRAIN, FULL_VAL, FULL_TRAIN_QUERIES = 1_281_167, 50_000, 50_000
FIXED_STAGES = ("views",)
CLASSES, DIM, LAYERS, K = 1000, 128, 4, 30
PROBE_NAMES = [f"block{i}" for i in range(1, LAYERS + 1)]


# -- memory -------------------------------------------------------------------------------------------


class MemoryWatch:
    """Peak resident memory of this process, sampled every 50 ms: anonymous (heap, faiss index, arrays) and
    total (anonymous + file pages of the memmaps that happen to be resident, which the kernel can drop)."""

    def __init__(self) -> None:
        self.peak_anon = self.peak_total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemoryWatch:
        self.start_anon, _ = _rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self._sample()

    def _sample(self) -> None:
        anon, total = _rss()
        self.peak_anon, self.peak_total = max(self.peak_anon, anon), max(self.peak_total, total)


def _rss() -> tuple[int, int]:
    values = {}
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(("RssAnon:", "VmRSS:")):
                key, amount, _ = line.split()
                values[key] = int(amount) * 1024
    return values["RssAnon:"], values["VmRSS:"]


# -- data ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    train: int
    val: int
    train_queries: int

    @classmethod
    def scaled(cls, fraction: float) -> Sizes:
        return cls(round(FULL_TRAIN * fraction), round(FULL_VAL * fraction), round(FULL_TRAIN_QUERIES * fraction))

    @property
    def label(self) -> str:
        return f"{self.train:,} ref / {self.val + self.train_queries:,} queries"


def write_data(root: Path, sizes: Sizes, seed: int = 0) -> None:
    """Labels, the network's predictions and the five probes' embeddings (float16 memmaps) of both splits."""
    n = sizes.train + sizes.val
    data = make_synthetic(n, num_classes=CLASSES, dim=DIM, latent_dim=32, n_layers=LAYERS + 1, seed=seed)
    predictions = _network_prediction(data)
    for split, rows in (("train", slice(0, sizes.train)), ("val", slice(sizes.train, n))):
        folder = root / split
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "labels.npy", data.labels[rows])
        np.save(folder / "predictions.npy", predictions[rows])
    for layer, name in enumerate(["inputs", *(f"layer.{p}" for p in PROBE_NAMES)]):
        features = layer_features(data, layer)
        for split, rows in (("train", slice(0, sizes.train)), ("val", slice(sizes.train, n))):
            np.save(root / split / f"{name}.npy", features[rows].astype(np.float16))
        del features


def _network_prediction(data: Synthetic, block: int = 50_000) -> np.ndarray:
    """The nearest class centre at the last layer (as ``probes.network_prediction``, in row blocks)."""
    last = data.n_layers - 1
    centres = _centres(data, last) * _separation(data, last)
    out = np.empty(len(data.labels), dtype=np.int64)
    for start in range(0, len(out), block):
        points = centres[data.labels[start : start + block]] + data.latent[start : start + block]
        sq = -2 * points @ centres.T + (centres**2).sum(1)[None, :]
        out[start : start + block] = sq.argmin(axis=1)
    return out


def open_arrays(root: Path) -> dict[str, Any]:
    from lightning_difficulty.pipeline.capture import SplitArrays

    class BenchmarkSplit(SplitArrays):
        """A split whose final predictions come from the generator (no (N, 1000) logits on disk)."""

    splits = {}
    for split in ("train", "val"):
        folder = root / split
        labels = np.load(folder / "labels.npy")
        logits = np.broadcast_to(np.zeros((1, CLASSES), dtype=np.float32), (len(labels), CLASSES))
        arrays = BenchmarkSplit(
            labels=labels,
            logits=logits,
            layers={p: np.load(folder / f"layer.{p}.npy", mmap_mode="r") for p in PROBE_NAMES},
            inputs=np.load(folder / "inputs.npy", mmap_mode="r"),
        )
        arrays.__dict__["predictions"] = np.load(folder / "predictions.npy")  # fills the cached property
        splits[split] = arrays
    return splits


# -- one probe stage ----------------------------------------------------------------------------------


@dataclass
class StageJob:
    data: Path
    work: Path
    train_queries: int
    index: str
    threads: int
    rank: int = 0
    world: int = 1
    barrier: Any = None
    agreement_queries: int = 2000
    keep_columns: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def probe_stage(job: StageJob) -> dict[str, Any]:
    """Run ``PredictionDepth.compute`` on the memmaps of ``job.data``; measure time, peak memory and disk."""
    import faiss
    import torch

    from lightning_difficulty import PredictionDepth
    from lightning_difficulty.pipeline.capture import FitEndArrays
    from lightning_difficulty.pipeline.cost import search_rate
    from lightning_difficulty.pipeline.neighbours import Ranks

    faiss.omp_set_num_threads(job.threads)
    torch.set_num_threads(job.threads)
    splits = open_arrays(job.data)
    depth = PredictionDepth(
        layers=PROBE_NAMES,
        k=K,
        index=job.index,  # type: ignore[arg-type]
        train_queries=job.train_queries,
        agreement_queries=job.agreement_queries,
        use_gpu=False,
    )
    barrier = job.barrier.wait if job.barrier is not None else (lambda: None)
    ranks = Ranks(job.rank, job.world, barrier, broadcast=_file_broadcast(job, barrier))
    search_dir = job.work / "neighbours"
    arrays = FitEndArrays(
        splits, input_searches={depth.probe.index_key: depth.probe}, ranks=ranks, search_dir=search_dir
    )
    trainer = SimpleNamespace(is_global_zero=job.rank == 0)
    rate = search_rate()
    barrier()
    with MemoryWatch() as memory:
        start = time.perf_counter()
        contribution = depth.compute(trainer, arrays)  # type: ignore[arg-type]
        seconds = time.perf_counter() - start
    out: dict[str, Any] = {
        "rank": job.rank,
        "seconds": seconds,
        "search_rate": rate,
        "peak_anon": memory.peak_anon,
        "start_anon": memory.start_anon,
        "peak_total": memory.peak_total,
    }
    if job.rank == 0:
        out["disk"] = folder_bytes(search_dir)
        out["summary"] = contribution.summary
        if job.keep_columns:
            np.savez(
                job.work / "columns.npz",
                **{f"{s}/{c}": v for s, cols in contribution.columns.items() for c, v in cols.items()},
            )
    return out


def _file_broadcast(job: StageJob, barrier: Any) -> Any:
    """Rank 0's value on every rank, through a pickle in the shared work folder (as the run folder would be)."""
    import pickle

    path = job.work / "broadcast.pkl"

    def broadcast(value: Any) -> Any:
        if job.world == 1:
            return value
        if job.rank == 0:
            path.write_bytes(pickle.dumps(value))
        barrier()
        value = pickle.loads(path.read_bytes())
        barrier()
        return value

    return broadcast


def _child(job: StageJob, queue: Any) -> None:
    queue.put(probe_stage(job))


def run_stage(jobs: list[StageJob]) -> list[dict[str, Any]]:
    """Each job in its own fresh process (all at once: they share a barrier); results by rank."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    processes = [ctx.Process(target=_child, args=(job, queue)) for job in jobs]
    for process in processes:
        process.start()
    results = [_result_of(processes, queue) for _ in processes]
    for process in processes:
        process.join()
        if process.exitcode:
            raise RuntimeError(f"a probe-stage process failed with exit code {process.exitcode}")
    return sorted(results, key=lambda r: r["rank"])


def _result_of(processes: Any, queue: Any) -> Any:
    """The next result on ``queue``; an error instead of waiting forever when a process died (e.g. OOM-killed)."""
    import queue as queues

    group = processes if isinstance(processes, list) else [processes]
    while True:
        try:
            return queue.get(timeout=5)
        except queues.Empty:
            dead = [p.exitcode for p in group if p.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"a benchmark process died with exit code {dead[0]} (negative: a signal)") from None


def _prepare(root: Path, sizes: Sizes) -> Path:
    folder = root / f"data_{sizes.train}"
    if not (folder / "val" / f"layer.{PROBE_NAMES[-1]}.npy").exists():
        start = time.perf_counter()
        write_data(folder, sizes)
        print(
            f"  data for {sizes.label}: {time.perf_counter() - start:.0f} s, {folder_bytes(folder) / 2**30:.2f} GiB",
            flush=True,
        )
    return folder


# -- parts --------------------------------------------------------------------------------------------


def part_full(root: Path, fraction: float, threads: int, index: str) -> dict[str, Any]:
    sizes = Sizes.scaled(fraction)
    data = _prepare(root, sizes)
    work = root / f"work_full_{index}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    [result] = run_stage([StageJob(data, work, sizes.train_queries, index, threads)])
    summary = result["summary"]
    agreement = summary.get("index_agreement", {})
    queries = sizes.val + sizes.train_queries
    row = {
        "sizes": sizes.label,
        "index": summary["index"],
        "seconds": result["seconds"],
        "agreement_seconds": agreement.get("seconds", 0.0),
        "estimated_seconds": summary["estimated_probe_seconds"],
        "identical_pd": agreement.get("identical_prediction_depth"),
        "identical_votes": agreement.get("identical_votes"),
        "agreement_queries": agreement.get("queries"),
        "peak_anon_gib": result["peak_anon"] / 2**30,
        "peak_total_gib": result["peak_total"] / 2**30,
        "added_bytes_per_reference_row": (result["peak_anon"] - result["start_anon"]) / sizes.train,
        "disk_gib": result["disk"] / 2**30,
        "disk_bytes_per_query": result["disk"] / queries,
        "search_gflops": result["search_rate"] / 1e9,
        "scored_train": summary["train"]["scored_rows"],
    }
    print("\n## Full-size probe stage\n")
    print(f"{sizes.label}, d = {DIM}, {LAYERS + 1} probes (input + {LAYERS} layers), k = {K}, {threads} threads")
    _table([row], list(row))
    return row


def part_model(root: Path, flat: list[float], ivf: list[float], threads: int) -> list[dict[str, Any]]:
    """Per index kind: the first fraction calibrates the kind's one constant, the other three check the model."""
    from lightning_difficulty.pipeline.cost import probe_disk_bytes, probe_ram_bytes, probe_stage_seconds

    rows = []
    dims = [DIM] * (LAYERS + 1)
    for kind, fractions in (("flat", flat), ("ivf", ivf)):
        constants: dict[str, float] = {}
        for position, fraction in enumerate(fractions):
            sizes = Sizes.scaled(fraction)
            data = _prepare(root, sizes)
            work = root / f"work_model_{kind}_{sizes.train}"
            shutil.rmtree(work, ignore_errors=True)  # a clean folder: its size is the stage's disk
            work.mkdir()
            [result] = run_stage([StageJob(data, work, sizes.train_queries, kind, threads, agreement_queries=0)])
            queries = sizes.val + sizes.train_queries
            shape = (sizes.train, queries, dims)
            rate = result["search_rate"]
            if position == 0:
                constants = _calibrate(kind, shape, rate, result["seconds"])
            predicted = probe_stage_seconds(*shape, kind=kind, world=1, rate=rate, **constants)
            added = result["peak_anon"] - result["start_anon"]
            ram = probe_ram_bytes(sizes.train, queries, DIM, world=1, k=K, kind=kind)
            disk = (LAYERS + 1) * probe_disk_bytes(queries, K, world=1, padded_rows=sizes.train)
            rows.append(
                {
                    "index": kind,
                    "role": "calibration" if position == 0 else "check",
                    "sizes": sizes.label,
                    "search GFLOP/s": rate / 1e9,
                    "predicted s": predicted,
                    "measured s": result["seconds"],
                    "time ratio": result["seconds"] / predicted,
                    "predicted RAM MiB": ram / 2**20,
                    "measured RAM MiB": added / 2**20,
                    "RAM ratio": added / ram,
                    "predicted disk MiB": disk / 2**20,
                    "measured disk MiB": result["disk"] / 2**20,
                    "disk ratio": result["disk"] / disk,
                    **{name: value for name, value in constants.items() if position == 0},
                }
            )
            print(f"  {kind} {sizes.label}: {result['seconds']:.1f} s", flush=True)
    print("\n## Cost model against measurements (measured / predicted; target within 0.75-1.25)\n")
    _table(rows, [c for c in rows[0] if c not in ("exact_scale", "scan_efficiency")])
    for row in rows:
        if row["role"] == "calibration":
            print(
                f"calibrated on {row['sizes']} ({row['index']}): "
                + ", ".join(f"{name} = {row[name]:.3f}" for name in ("exact_scale", "scan_efficiency") if name in row)
            )
    return rows


def _calibrate(kind: str, shape: tuple[int, int, list[int]], rate: float, seconds: float) -> dict[str, float]:
    """The kind's one free constant, set so that the model predicts ``seconds`` at this shape."""
    from lightning_difficulty.pipeline.cost import probe_stage_seconds

    if kind == "flat":
        return {"exact_scale": seconds / probe_stage_seconds(*shape, kind="flat", world=1, rate=rate, exact_scale=1.0)}
    # the IVF time is fixed (training, assignment) + scan / efficiency: solve for the efficiency
    at_one = probe_stage_seconds(*shape, kind="ivf", world=1, rate=rate, scan_efficiency=1.0)
    at_half = probe_stage_seconds(*shape, kind="ivf", world=1, rate=rate, scan_efficiency=0.5)
    scan_at_one = at_half - at_one
    return {"scan_efficiency": scan_at_one / max(seconds - (at_one - scan_at_one), 1e-9)}


def part_ranks(root: Path, fraction: float, index: str) -> dict[str, Any]:
    sizes = Sizes.scaled(fraction)
    data = _prepare(root, sizes)
    one_work, two_work = root / f"work_one_{index}", root / f"work_two_{index}"
    for work in (one_work, two_work):
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
    [one] = run_stage([StageJob(data, one_work, sizes.train_queries, index, 1, agreement_queries=0, keep_columns=True)])
    barrier = mp.get_context("spawn").Barrier(2)
    two = run_stage(
        [
            StageJob(
                data, two_work, sizes.train_queries, index, 1, rank, 2, barrier, agreement_queries=0, keep_columns=True
            )
            for rank in range(2)
        ]
    )
    first, second = np.load(one_work / "columns.npz"), np.load(two_work / "columns.npz")
    identical = all(np.array_equal(first[name], second[name], equal_nan=True) for name in first.files)
    row = {
        "sizes": sizes.label,
        "index": index,
        "one_process_s": one["seconds"],
        "two_processes_s": max(r["seconds"] for r in two),
        "time_ratio": max(r["seconds"] for r in two) / one["seconds"],
        "one_process_ram_mib": (one["peak_anon"] - one["start_anon"]) / 2**20,
        "per_rank_ram_mib": max(r["peak_anon"] - r["start_anon"] for r in two) / 2**20,
        "ram_ratio": max(r["peak_anon"] - r["start_anon"] for r in two) / (one["peak_anon"] - one["start_anon"]),
        "identical_columns": identical,
    }
    print("\n## One process against two processes sharing the search (1 thread each)\n")
    _table([row], list(row))
    return row


def _pipeline_child(n_train: int, work: Path, queue: Any) -> None:
    from scale_pipeline import pipeline_stage

    quiet_lightning()
    queue.put(pipeline_stage(n_train, work))


def part_pipeline(root: Path, fit_sizes: list[int], check_sizes: list[int]) -> list[dict[str, Any]]:
    """The other fit-end stages: per stage, ``seconds = a + b * rows`` fitted on two sizes (a constant, their
    mean, for the views: figures of bounded size), then checked at three larger sizes."""
    from scale_pipeline import STAGES

    ctx = mp.get_context("spawn")
    measured = []
    for n in [*fit_sizes, *check_sizes]:
        queue = ctx.Queue()
        process = ctx.Process(target=_pipeline_child, args=(n, root, queue))
        process.start()
        measured.append(_result_of(process, queue))
        process.join()
        print(f"  pipeline {n:,}: {measured[-1]['fit_seconds']:.0f} s", flush=True)
    small, large = measured[0], measured[len(fit_sizes) - 1]
    rows = []
    for result in measured[len(fit_sizes) :]:
        row: dict[str, Any] = {"rows": result["rows"]}
        for stage in STAGES:
            slope = (large[stage] - small[stage]) / (large["rows"] - small["rows"])
            if stage in FIXED_STAGES:  # figures of a bounded size: their cost does not grow with the rows
                slope = 0.0
            predicted = (small[stage] + large[stage]) / 2 if stage in FIXED_STAGES else small[stage]
            predicted += slope * (result["rows"] - small["rows"])
            row[f"{stage} s"] = result[stage]
            row[f"{stage} ratio"] = result[stage] / predicted
        row["table MiB"] = result["table_bytes"] / 2**20
        row["dashboard MiB"] = result["dashboard_bytes"] / 2**20
        rows.append(row)
    print(f"\n## Other fit-end stages (a + b * rows fitted on {fit_sizes}, views constant; measured / predicted)\n")
    _table(rows, list(rows[0]))
    return rows


def _confusion_child(n: int, work: Path, repeats: int, queue: Any) -> None:
    from scale_confusion import confusion_stage

    quiet_lightning()
    queue.put(confusion_stage(n, CLASSES, epochs=2, repeats=repeats, workdir=work))


def part_confusion(root: Path, fractions: list[float], repeats: int) -> list[dict[str, Any]]:
    """ConfusionScore at 1,000 classes, 2 epochs, at four sizes (each in a fresh process). The first calibrates
    the two per-run constants of the cost model; the other three check it:

    * time added per training step = the per-batch work timed in the same process (``micro_full_path_ms``:
      entropy, accumulator, top-k record) + a fixed per-step cost of the callback inside the loop (hook
      dispatch, the logits capture), calibrated;
    * epoch-end work (fold the epoch's states, merge the records) = ``b * N * epochs``, calibrated;
    * RAM and records: bytes per sample, exact formulas (44 and 8 t per epoch).
    """
    ctx = mp.get_context("spawn")
    measured = []
    for fraction in fractions:
        n = round(FULL_TRAIN * fraction)
        work = root / f"confusion_{n}"
        shutil.rmtree(work, ignore_errors=True)
        queue = ctx.Queue()
        process = ctx.Process(target=_confusion_child, args=(n, work, repeats, queue))
        process.start()
        measured.append(_result_of(process, queue))
        process.join()
        print(f"  confusion {n:,}: {measured[-1]['confusion_train_s']:.1f} s training loop", flush=True)
    first = measured[0]
    per_step_fixed = first["added_step_ms"] - first["micro_full_path_ms"]
    merge_per_row = first["confusion_epoch_end_s"] / (first["num_samples"] * first["epochs"])
    rows = []
    for position, result in enumerate(measured):
        step = result["micro_full_path_ms"] + per_step_fixed
        epoch_end = merge_per_row * result["num_samples"] * result["epochs"]
        rows.append(
            {
                "samples": int(result["num_samples"]),
                "role": "calibration" if position == 0 else "check",
                "loop ratio": result["train_ratio"],
                "per-batch work ms (log_softmax units)": (
                    f"{result['micro_full_path_ms']:.2f} ({result['micro_full_path_in_log_softmax']:.2f})"
                ),
                "predicted added ms/step": step,
                "measured added ms/step": result["added_step_ms"],
                "step ratio": result["added_step_ms"] / step,
                "predicted epoch-end s": epoch_end,
                "measured epoch-end s": result["confusion_epoch_end_s"],
                "epoch-end ratio": result["confusion_epoch_end_s"] / epoch_end,
                "RAM B/sample (formula 44)": result["ram_bytes_per_sample"],
                "records B/sample/epoch (formula 40)": result["records_bytes_per_sample_epoch"],
                "peak RSS GiB": result["peak_rss_bytes"] / 2**30,
            }
        )
    print(f"\n## ConfusionScore at 1,000 classes, 2 epochs, top-5 records, {repeats} repeats (measured / predicted)\n")
    _table(rows, list(rows[0]))
    print(
        f"calibrated on {rows[0]['samples']:,} samples: {per_step_fixed:.3f} ms per step in the loop beyond the "
        f"per-batch work, {merge_per_row * 1e9:.0f} ns per sample per epoch at the epoch ends\n"
    )
    from scale_confusion import _table as confusion_table

    print(f"Full detail of the largest size ({rows[-1]['samples']:,} samples):\n")
    print(confusion_table(measured[-1]), flush=True)
    return rows


def _table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(_cell(row[c]) for c in columns) + " |")
    print(flush=True)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_cell(v)}" for k, v in value.items())
    return str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", default=["full", "model", "ranks", "pipeline", "confusion"])
    parser.add_argument("--quick", action="store_true", help="1/64 of every size")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--flat-fractions",
        type=float,
        nargs=4,
        default=[1 / 4, 1 / 16, 1 / 8, 1 / 2],
        help="the first calibrates: a run of about a minute, where start-up and the machine's noise are a small "
        "share (the 4 s run at 1/16 is not)",
    )
    parser.add_argument(
        "--ivf-fractions",
        type=float,
        nargs=4,
        default=[1 / 4, 1 / 16, 1 / 8, 1 / 2],
        help="the first calibrates: a size where the list scan dominates (at 1/16 k-means takes most of the time, "
        "and the scan ran 1.4x faster per candidate than at 1/2)",
    )
    parser.add_argument(
        "--full-index",
        default="auto",
        help="index of the full-size part: 'auto' (PredictionDepth's choice), 'flat' or 'ivf'",
    )
    parser.add_argument("--ranks-fraction", type=float, default=1 / 4)
    parser.add_argument("--ranks-index", default="flat")
    parser.add_argument(
        "--pipeline-sizes",
        type=int,
        nargs=5,
        default=[160_000, 320_000, 640_000, 960_000, FULL_TRAIN],
        help="training rows of the pipeline part: two to fit the per-row costs, three to check them",
    )
    parser.add_argument(
        "--confusion-fractions",
        type=float,
        nargs=4,
        default=[1 / 4, 1 / 16, 1 / 2, 1.0],
        help="ConfusionScore sizes (of 1,281,167 samples): the first calibrates, three check",
    )
    parser.add_argument("--confusion-repeats", type=int, default=5, help="plain/ConfusionScore fit pairs per size")
    parser.add_argument("--workdir", type=Path, default=None, help="keeps the generated data between runs")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    scale = 1 / 64 if args.quick else 1.0
    root = args.workdir or Path(tempfile.mkdtemp(prefix="ld_scale_"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"# benchmarks/scale.py on {os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M')}, work in {root}\n")
    results: dict[str, Any] = {}
    if "full" in args.parts:
        results["full"] = part_full(root, scale, args.threads, args.full_index)
    if "model" in args.parts:
        flat, ivf = ([f * scale for f in fractions] for fractions in (args.flat_fractions, args.ivf_fractions))
        results["model"] = part_model(root, flat, ivf, args.threads)
    if "ranks" in args.parts:
        results["ranks"] = part_ranks(root, args.ranks_fraction * scale, args.ranks_index)
    if "pipeline" in args.parts:
        sizes = [max(2000, round(n * scale)) for n in args.pipeline_sizes]
        results["pipeline"] = part_pipeline(root, sizes[:2], sizes[2:])
    if "confusion" in args.parts:
        confusion = [f * scale for f in args.confusion_fractions]
        results["confusion"] = part_confusion(root, confusion, args.confusion_repeats)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
