"""Training overhead of the difficulty callbacks: the same run with and without them, alternated.

Prints a table of median wall-clock seconds per configuration and the median of the per-repeat
ratios against the plain run (ratios taken within one repeat, so machine drift cancels).
Targets: ConfusionScore <= 1.03 (one softmax and one ``index_add`` per batch); TrainingDynamics (four values
per sample per batch) and both together <= 1.03.

    python benchmarks/overhead.py                 # digits, 10 epochs, 5 repeats
    python benchmarks/overhead.py --dataset cifar10 --data-dir ../shared/data --train-subset 5000
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from lightning_difficulty import (
    ConfusionScore,
    DataDifficulty,
    DifficultyReport,
    IndexedDataset,
    PredictionDepth,
    TrainingDynamics,
)
from lightning_difficulty.demo.datasets import Splits, default_data_dir, load_cifar10_splits, load_digits_splits
from lightning_difficulty.demo.models import SmallCNN

CONFIGS: dict[str, Callable[[Path], list[Any]]] = {
    "plain": lambda out: [],
    "ConfusionScore (probs record)": lambda out: [ConfusionScore(record_dir=str(out / "records"))],
    "ConfusionScore (no record)": lambda out: [ConfusionScore(record="none")],
    "TrainingDynamics": lambda out: [TrainingDynamics()],
    "ConfusionScore + TrainingDynamics": lambda out: [ConfusionScore(record="none"), TrainingDynamics()],
    "all callbacks + report (incl. fit-end analysis)": lambda out: [
        ConfusionScore(),
        PredictionDepth(),
        DataDifficulty(),
        DifficultyReport(dirpath=out / "report", grid_per_class=0),
    ],
}


def load(args: argparse.Namespace) -> Splits:
    if args.dataset == "digits":
        return load_digits_splits()
    data_dir = args.data_dir or default_data_dir()
    if data_dir is None:
        raise SystemExit("--data-dir is required for cifar10 (the folder with cifar10_train.npz)")
    return load_cifar10_splits(data_dir, train_subset=args.train_subset, test_subset=args.test_subset, augment=False)


def timed_fit(splits: Splits, callbacks: list[Any], args: argparse.Namespace) -> float:
    L.seed_everything(0, verbose=False)
    channels = int(splits.train[0][0].shape[0])
    model = SmallCNN(in_channels=channels, num_classes=10, width=args.width)
    train = DataLoader(IndexedDataset(splits.train), batch_size=args.batch_size, shuffle=True)
    val = DataLoader(IndexedDataset(splits.val), batch_size=256)
    trainer = L.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        logger=False,
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
    )
    start = time.perf_counter()
    trainer.fit(model, train, val)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=["digits", "cifar10"], default="digits")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--train-subset", type=int, default=5000)
    parser.add_argument("--test-subset", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    splits = load(args)
    times: dict[str, list[float]] = {name: [] for name in CONFIGS}
    with tempfile.TemporaryDirectory() as tmp:
        timed_fit(splits, [], args)  # warm-up: imports, allocator, first-call costs
        for repeat in range(args.repeats):
            for name, make in CONFIGS.items():
                times[name].append(timed_fit(splits, make(Path(tmp) / f"{repeat}-{len(times[name])}"), args))
            print(f"repeat {repeat + 1}/{args.repeats}: " + ", ".join(f"{t[-1]:.2f}s" for t in times.values()))
    base = times["plain"]
    print(
        f"\n{args.dataset}: {len(splits.train)} train / {len(splits.val)} val, {args.epochs} epochs, "
        f"SmallCNN width {args.width}, batch {args.batch_size}, {args.threads} thread(s), {args.repeats} repeats"
    )
    print("| configuration | median s | median ratio vs plain | min ratio | max ratio |\n|---|---|---|---|---|")
    for name, values in times.items():
        ratios = [v / b for v, b in zip(values, base, strict=True)]
        print(
            f"| {name} | {statistics.median(values):.2f} | {statistics.median(ratios):.3f} | "
            f"{min(ratios):.3f} | {max(ratios):.3f} |"
        )


if __name__ == "__main__":
    main()
