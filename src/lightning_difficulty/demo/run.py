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
from lightning_difficulty.demo.datasets import load_digits_splits
from lightning_difficulty.demo.models import SmallCNN


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
        log_every_n_steps=5,
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
            rho = band["pearson_rho"]
            rho_text = f"{rho:.3f}" if rho == rho else "n/a: no errors in this split"
            lines.append(f"  error rate by confusion band (Pearson rho = {rho_text}):")
            for row in band["bands"]:
                if row["count"]:
                    lines.append(
                        f"    [{row['low']:.3f}, {row['high']:.3f}]  n={row['count']:5d}  error={row['error_rate']:.3f}"
                    )
    depth = result.summary.get("PredictionDepth", {})
    lines.append("")
    for split in ("train", "val"):
        if split in depth:
            probes = ", ".join(f"{p} {a:.2f}" for p, a in depth[split]["probe_accuracy"].items())
            mean_depth = depth[split]["mean_prediction_depth"]
            lines.append(f"[{split}] mean prediction depth {mean_depth:.2f}; k-NN probe accuracy: {probes}")
    for split, entry in result.summary.get("DataDifficulty", {}).items():
        lines.append(f"[{split}] mean kDN (k={entry['k']}) {entry['mean_kdn']:.3f}")
    if "hard_subset" in result.summary:
        hard = result.summary["hard_subset"]
        where = f"{hard['size']} {hard['split']} samples, confusion >= {hard['threshold']:.3f}"
        lines.append(f"\nHard subset: {where} (hard_subset.json)")
    if "groups" in result.summary:
        lines.append(f"GroupDRO groups: sizes {result.summary['groups']['sizes']} in groups.json")
    val = result.table[result.table["split"] == "val"]
    hardest = val.nlargest(top, "confusion")
    columns = [
        c for c in ("index", "label", "prediction", "correct", "confusion", "prediction_depth", "kdn") if c in val
    ]
    lines.append(f"\n{top} hardest validation samples:\n{hardest[columns].to_string(index=False)}")
    lines.append(f"\nTensorBoard: tensorboard --logdir {result.run_dir.parent}")
    return "\n".join(lines)
