"""Accuracy and time of the fast CIFAR-10 recipe (``lightning_difficulty.demo.fast_cifar``) on all 50,000 images.

Trains ``FastCifarModule`` with Lightning (``precision="bf16-mixed"``, no difficulty callbacks) on the full
CIFAR-10 training set and prints, per epoch, the wall and process CPU seconds and the training loss; then the
test accuracy with and without flip-averaging (TTA), the total wall time, the process CPU seconds (user +
system, all threads) and a ``--json`` summary line. On a machine shared with other work, CPU seconds divided
by the thread count is what the run would take alone. On a busy machine two intra-op threads wait on each other
(each convolution ends at a barrier), so there ``--threads 1`` is both faster and the cleaner measurement.

Measured 2026-12-07 on the project's 2-core AMX machine (shared with other jobs), ``--threads 1``: width 32,
10 epochs: 91.3 % test accuracy with flip-averaging (90.1 % without), 742 CPU s (1,316 s wall under load);
width 32, 5 epochs: 88.8 % (88.2 %), 383 CPU s (472 s wall).

    python benchmarks/fast_cifar.py --data-dir ../shared/data                  # width 32, 10 epochs
    python benchmarks/fast_cifar.py --threads 1 --json                         # the 2026-12-07 measurement
    python benchmarks/fast_cifar.py --width 64 --epochs 10 --json
    python benchmarks/fast_cifar.py --train-subset 5000 --epochs 1             # a smoke run
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from _measure import quiet_lightning
from torch.utils.data import DataLoader

from lightning_difficulty import IndexedDataset
from lightning_difficulty.demo.datasets import default_data_dir, load_cifar10_splits
from lightning_difficulty.demo.fast_cifar import FastCifarModule


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (all threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class EpochClock(L.Callback):
    """Prints and keeps each training epoch's wall and CPU seconds and mean training loss.

    With ``test`` images and labels it also measures the test accuracy after every epoch (timed apart).
    """

    def __init__(self, test: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        self.epochs: list[dict[str, float]] = []
        self.test = test
        self._start = (0.0, 0.0)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = (time.perf_counter(), cpu_seconds())

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        wall, cpu = time.perf_counter() - self._start[0], cpu_seconds() - self._start[1]
        loss = float(trainer.callback_metrics.get("train/loss", float("nan")))
        acc = float(trainer.callback_metrics.get("train/acc", float("nan")))
        row = {"epoch": trainer.current_epoch + 1, "wall_s": wall, "cpu_s": cpu, "train_loss": loss, "train_acc": acc}
        line = (
            f"epoch {row['epoch']:>2}: {wall:6.1f} s wall, {cpu:6.1f} s CPU, train loss {loss:.3f}, train acc {acc:.3f}"
        )
        if self.test is not None:
            start = time.perf_counter()
            row.update(test_accuracy(pl_module, *self.test))  # type: ignore[arg-type]
            pl_module.train()
            row["eval_wall_s"] = time.perf_counter() - start
            line += f", test acc {row['test_acc']:.4f} (TTA {row['test_acc_tta']:.4f}, {row['eval_wall_s']:.0f} s)"
        self.epochs.append(row)
        print(line, flush=True)


@torch.no_grad()
def test_accuracy(module: FastCifarModule, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Test accuracy of the plain logits and of the flip-averaged logits (one pass over both views)."""
    module.eval()
    plain_hits = tta_hits = 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for start in range(0, len(images), 1000):
            x, y = images[start : start + 1000], labels[start : start + 1000]
            plain = module.net(x).float()
            tta = (plain + module.net(x.flip(-1)).float()) / 2
            plain_hits += int((plain.argmax(1) == y).sum())
            tta_hits += int((tta.argmax(1) == y).sum())
    return {"test_acc": plain_hits / len(labels), "test_acc_tta": tta_hits / len(labels)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=default_data_dir(), help="folder with cifar10_*.npz")
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--lr", type=float, default=0.4)
    parser.add_argument("--train-subset", type=int, default=None, help="fewer training images (smoke runs only)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-every-epoch", action="store_true", help="test accuracy after each epoch (timed apart)")
    parser.add_argument("--json", action="store_true", help="also print one JSON summary line")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.data_dir is None:
        raise SystemExit("--data-dir is required (the folder with cifar10_train.npz and cifar10_test.npz)")
    quiet_lightning()
    torch.set_num_threads(args.threads)
    wall0, cpu0 = time.perf_counter(), cpu_seconds()
    L.seed_everything(args.seed, verbose=False)
    splits = load_cifar10_splits(args.data_dir, train_subset=args.train_subset, augment=False, seed=args.seed)
    train = DataLoader(IndexedDataset(splits.train), batch_size=args.batch_size, shuffle=True)
    test_images, test_labels = splits.val.images, torch.as_tensor(np.asarray(splits.val.targets))
    clock = EpochClock((test_images, test_labels) if args.eval_every_epoch else None)
    trainer = L.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        precision="bf16-mixed",
        callbacks=[clock],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    module = FastCifarModule(args.width, lr=args.lr)
    trainer.fit(module, train)
    fit_wall, fit_cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
    accuracy = test_accuracy(module, test_images, test_labels)
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "width": args.width,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "train_images": len(splits.train),
        "threads": args.threads,
        **accuracy,
        "fit_wall_s": round(fit_wall, 1),
        "fit_cpu_s": round(fit_cpu, 1),
        "total_wall_s": round(time.perf_counter() - wall0, 1),
        "total_cpu_s": round(cpu_seconds() - cpu0, 1),
        "epochs_detail": [{k: round(v, 3) for k, v in row.items()} for row in clock.epochs],
    }
    print(
        f"test accuracy {accuracy['test_acc']:.4f} (flip-averaged {accuracy['test_acc_tta']:.4f}); "
        f"total {result['total_wall_s']} s wall, {result['total_cpu_s']} s CPU "
        f"(CPU / {args.threads} threads = {result['total_cpu_s'] / args.threads:.0f} s)"
    )
    if args.json:
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
