"""The embedded demo: a small CNN on scikit-learn's bundled digits with every difficulty callback."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

from lightning_difficulty.callbacks import ConfusionScore, DataDifficulty, DifficultyReport, PredictionDepth
from lightning_difficulty.data import IndexedDataset
from lightning_difficulty.datasets import load_digits_splits
from lightning_difficulty.models import SmallCNN


@dataclass
class DemoResult:
    run_dir: Path
    table: pd.DataFrame
    summary: dict[str, Any]


def run_demo(out: str | Path = "runs/demo", *, epochs: int = 30, seed: int = 0, progress: bool = True) -> DemoResult:
    """Train on the digits and write ``<out>/difficulty/scores.parquet`` plus TensorBoard logs.

    Example::

        result = run_demo("runs/demo", epochs=5)
        result.table.nlargest(10, "confusion")
    """
    out = Path(out)
    if (out / "difficulty" / "summary.json").exists():
        shutil.rmtree(out)  # a previous demo run: start clean so TensorBoard shows one run
    torch.set_num_threads(1)  # convolutions this small run several times faster on one thread
    L.seed_everything(seed, verbose=False)
    splits = load_digits_splits(seed=seed)
    train = DataLoader(IndexedDataset(splits.train), batch_size=64, shuffle=True)
    val = DataLoader(IndexedDataset(splits.val), batch_size=256)
    report = DifficultyReport(class_names=splits.class_names)
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=TensorBoardLogger(save_dir=str(out.parent), name=out.name, version=""),
        callbacks=[*_analysis_callbacks(), report],
        enable_progress_bar=progress,
        enable_model_summary=False,
        enable_checkpointing=False,
        deterministic=True,
    )
    trainer.fit(SmallCNN(in_channels=1, num_classes=10, width=16, max_epochs=epochs), train, val)
    assert report.table is not None
    return DemoResult(report.run_dir(trainer), report.table, report.summary)


def _analysis_callbacks() -> list[Any]:
    return [ConfusionScore(), PredictionDepth(layers="auto", k=30), DataDifficulty(k=10)]


def format_summary(result: DemoResult, *, top: int = 10) -> str:
    """The demo's printed summary."""
    lines = [f"Per-sample table: {result.run_dir / 'scores.parquet'}"]
    for split, entry in result.summary["splits"].items():
        lines.append(f"\n[{split}] {entry['num_samples']} samples, accuracy {entry.get('accuracy', float('nan')):.3f}")
        if "confusion_quartiles" in entry:
            q1, q2, q3 = entry["confusion_quartiles"]
            lines.append(f"  confusion (nats) quartiles: 25% {q1:.3f} | median {q2:.3f} | 75% {q3:.3f}")
        band = entry.get("error_by_confusion_band")
        if band:
            lines.append(f"  error rate by confusion band (Pearson rho = {band['pearson_rho']:.3f}):")
            for row in band["bands"]:
                if row["count"]:
                    lines.append(
                        f"    [{row['low']:.3f}, {row['high']:.3f}]  n={row['count']:5d}  error={row['error_rate']:.3f}"
                    )
    val = result.table[result.table["split"] == "val"]
    hardest = val.nlargest(top, "confusion")
    columns = [
        c for c in ("index", "label", "prediction", "correct", "confusion", "prediction_depth", "kdn") if c in val
    ]
    lines.append(f"\n{top} hardest validation samples:\n{hardest[columns].to_string(index=False)}")
    lines.append(f"\nTensorBoard: tensorboard --logdir {result.run_dir.parent}")
    return "\n".join(lines)
