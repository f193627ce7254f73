"""The fit-end stages around the probes, through a real ``Trainer``: capture pass, table and summary,
dashboard and views, at several sizes, from ``summary.json["fit_end_seconds"]``.

Synthetic data of ImageNet class count (1,000 classes, 64 input features, 5 % validation rows), an MLP
(64 -> 128 -> 128 -> 1000), one epoch, with ``ConfusionScore`` (top-k records), ``PredictionDepth`` on the two
hidden layers (1,000 training rows scored, so the probes stay small here: they have their own part in
``scale.py``) and ``DifficultyReport``. ``scale.py --parts pipeline`` fits each
stage's ``a + b * rows`` on two sizes and checks the prediction at three larger ones.

    python benchmarks/scale_pipeline.py --sizes 20000 80000 320000
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from _measure import folder_bytes
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

CLASSES, FEATURES, HIDDEN = 1000, 64, 128
STAGES = ("capture pass", "table and summary", "dashboard", "views")


class Synthetic(Dataset):
    """Gaussian classes in ``FEATURES`` dimensions; items ``(x, y, index)`` (as ``IndexedDataset`` gives)."""

    def __init__(self, n: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        centres = np.random.default_rng(0).normal(size=(CLASSES, FEATURES)).astype(np.float32)
        self.y = torch.from_numpy(rng.integers(0, CLASSES, n))
        noise = rng.normal(scale=1.5, size=(n, FEATURES)).astype(np.float32)
        self.x = torch.from_numpy(centres[self.y.numpy()] + noise)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, int]:
        return self.x[index], self.y[index], index


class MLP(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.block1 = nn.Sequential(nn.Linear(FEATURES, HIDDEN), nn.ReLU())
        self.block2 = nn.Sequential(nn.Linear(HIDDEN, HIDDEN), nn.ReLU())
        self.head = nn.Linear(HIDDEN, CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.block2(self.block1(x)))

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y, _index = batch
        return nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y, _index = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def pipeline_stage(n_train: int, workdir: Path, *, batch_size: int = 1024) -> dict[str, Any]:
    """One fit at ``n_train`` training rows; the fit-end seconds per stage and the output sizes."""
    from lightning_difficulty import ConfusionScore, DifficultyReport, PredictionDepth

    n_val = max(1, n_train // 20)
    out = workdir / f"pipeline_{n_train}"
    shutil.rmtree(out, ignore_errors=True)
    train = DataLoader(Synthetic(n_train, seed=1), batch_size=batch_size, shuffle=True)
    val = DataLoader(Synthetic(n_val, seed=2), batch_size=batch_size)
    callbacks = [
        ConfusionScore(record="topk"),
        PredictionDepth(layers=["block1", "block2"], train_queries=min(1000, n_train), index="flat"),
        DifficultyReport(dirpath=out / "difficulty"),
    ]
    trainer = L.Trainer(
        max_epochs=1,
        callbacks=callbacks,
        default_root_dir=out,
        accelerator="cpu",
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
    )
    start = time.perf_counter()
    trainer.fit(MLP(), train, val)
    wall = time.perf_counter() - start
    summary = json.loads((out / "difficulty" / "summary.json").read_text())
    seconds = summary["fit_end_seconds"]
    rows = n_train + n_val
    return {
        "n_train": n_train,
        "rows": rows,
        "fit_seconds": wall,
        **{stage: seconds.get(stage, 0.0) for stage in STAGES},
        "table_bytes": (out / "difficulty" / "scores.parquet").stat().st_size,
        "dashboard_bytes": folder_bytes(out / "difficulty" / "dashboard"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 80_000, 320_000])
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="ld_pipeline_"))
    for n in args.sizes:
        print(pipeline_stage(n, workdir), flush=True)


if __name__ == "__main__":
    main()
