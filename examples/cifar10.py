"""CIFAR-10 + CIFAR-10H: every difficulty perspective on real data, on a CPU.

Trains a model on the CIFAR-10 training set (all 50,000 images unless ``--train-subset``) with
ConfusionScore, PredictionDepth, DataDifficulty, HumanAlignment (CIFAR-10H counts on the 10,000 test
images, used as the validation split) and a DifficultyReport with the error taxonomy, then prints the
results and exports figures.

Models: ``--model fast`` (default) is the recipe of :mod:`lightning_difficulty.demo.fast_cifar`
(airbench-style network, batch flip/translate augmentation, bf16 autocast, flip-averaged evaluation);
``--model smallcnn`` is the small CNN of the earlier runs (AdamW, fp32, per-sample augmentation).

    python examples/cifar10.py --data-dir ../shared/data                  # the fast recipe, 10 epochs
    python examples/cifar10.py --model smallcnn --train-subset 20000      # the earlier 63 % model
    python examples/cifar10.py --train-subset 5000 --epochs 5 --export-figures ""   # a quick look
    python examples/cifar10.py --from-run runs/cifar10                    # print and export a finished run
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

from lightning_difficulty import (
    ConfusionScore,
    DataDifficulty,
    DifficultyReport,
    ErrorTaxonomy,
    HumanAlignment,
    IndexedDataset,
    PredictionDepth,
)
from lightning_difficulty.demo.datasets import CIFAR10_CLASSES, ArrayDataset, default_data_dir, load_cifar10_splits
from lightning_difficulty.demo.fast_cifar import FastCifarModule
from lightning_difficulty.demo.models import SmallCNN
from lightning_difficulty.runs import measure_summary, read_scores, read_summary
from lightning_difficulty.views import figures
from lightning_difficulty.views.images import save_figure

# per-model defaults of the options left unset on the command line
MODELS: dict[str, dict[str, Any]] = {
    "fast": {"epochs": 10, "width": 32, "batch_size": 512},
    "smallcnn": {"epochs": 20, "width": 16, "batch_size": 128},
}


def build_model(args: argparse.Namespace) -> tuple[L.LightningModule, str]:
    """The LightningModule of ``--model`` and the Trainer precision it trains with."""
    if args.model == "fast":
        return FastCifarModule(args.width, 10), "bf16-mixed"
    return SmallCNN(3, 10, width=args.width, max_epochs=args.epochs), "32-true"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=default_data_dir(), help="folder with cifar10_*.npz")
    parser.add_argument("--out", type=Path, default=Path("runs/cifar10"))
    parser.add_argument("--model", choices=sorted(MODELS), default="fast", help="the recipe to train (see above)")
    parser.add_argument("--train-subset", type=int, default=None, help="training images (seeded subset; default all)")
    parser.add_argument("--test-subset", type=int, default=10000, help="first n test images (CIFAR-10H rows)")
    parser.add_argument("--epochs", type=int, default=None, help="default: 10 (fast) or 20 (smallcnn)")
    parser.add_argument("--width", type=int, default=None, help="default: 32 (fast) or 16 (smallcnn)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 512 (fast) or 128 (smallcnn)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--export-figures", default="docs", help="folder for PNG figures ('' to skip)")
    parser.add_argument(
        "--from-run", type=Path, default=None, help="print and export the results of a finished run's --out folder"
    )
    args = parser.parse_args(argv)
    for name, value in MODELS[args.model].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def build_callbacks(args: argparse.Namespace, reference: DataLoader, counts: np.ndarray, names: list[str]) -> list[Any]:
    return [
        ConfusionScore(),
        PredictionDepth(layers="auto", k=30, reference_dataloader=reference),
        DataDifficulty(k=10, reference_dataloader=reference),
        HumanAlignment(counts, split="val"),
        DifficultyReport(class_names=names, error_taxonomy=ErrorTaxonomy(superclasses="cifar10")),
    ]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.from_run is not None:
        return report_run(args.from_run / "difficulty", args)
    if args.data_dir is None:
        raise SystemExit("--data-dir is required (the folder with cifar10_train.npz, cifar10_test.npz, cifar10h.npz)")
    torch.set_num_threads(args.threads)
    L.seed_everything(args.seed, verbose=False)
    # the fast recipe augments whole batches in its training_step; SmallCNN's dataset augments each image
    splits = load_cifar10_splits(
        args.data_dir,
        train_subset=args.train_subset,
        test_subset=args.test_subset,
        augment=args.model == "smallcnn",
        seed=args.seed,
    )
    counts = np.load(Path(args.data_dir) / "cifar10h.npz")["counts"][: len(splits.val)]
    unaugmented = ArrayDataset(splits.train.images, splits.train.targets)
    reference = DataLoader(IndexedDataset(unaugmented), batch_size=512)
    train = DataLoader(IndexedDataset(splits.train), batch_size=args.batch_size, shuffle=True)
    val = DataLoader(IndexedDataset(splits.val), batch_size=512)
    callbacks = build_callbacks(args, reference, counts, splits.class_names)
    report = callbacks[-1]
    assert isinstance(report, DifficultyReport)
    model, precision = build_model(args)
    trainer = L.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        precision=precision,
        logger=TensorBoardLogger(save_dir=str(args.out.parent), name=args.out.name, version=""),
        callbacks=list(callbacks),
        enable_checkpointing=False,
        enable_progress_bar=not args.no_progress,
        enable_model_summary=False,
    )
    start = time.perf_counter()
    trainer.fit(model, train, val)
    minutes = round((time.perf_counter() - start) / 60, 1)
    (args.out / "minutes.json").write_text(json.dumps({"minutes": minutes}))
    return report_run(report.run_dir(trainer), args)


def report_run(run_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Print, save and export the results of a finished run from its files."""
    summary = read_summary(run_dir)
    timing = run_dir.parent / "minutes.json"
    minutes = json.loads(timing.read_text())["minutes"] if timing.exists() else None
    results = summarise(summary, minutes, args)
    print(format_results(results))
    (run_dir.parent / "results.json").write_text(json.dumps(results, indent=2))
    if args.export_figures:
        probes = measure_summary(summary, "PredictionDepth")["probes"]
        export_figures(read_scores(run_dir), Path(args.export_figures), list(CIFAR10_CLASSES), probes)
    return results


def summarise(summary: dict[str, Any], minutes: float | None, args: argparse.Namespace) -> dict[str, Any]:
    val = summary["splits"]["val"]
    depth = measure_summary(summary, "PredictionDepth").get("val", {})
    return {
        "setup": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "minutes": minutes,
        "accuracy": {s: summary["splits"][s]["accuracy"] for s in summary["splits"]},
        "human_correlations": val.get("human_correlations", {}),
        "patterns": val.get("patterns", {}),
        "error_by_confusion_band": val.get("error_by_confusion_band", {}),
        "error_categories": val.get("error_categories", {}).get("overall", {}),
        "mean_prediction_depth": depth.get("mean_prediction_depth"),
        "probe_accuracy": depth.get("probe_accuracy"),
    }


def format_results(results: dict[str, Any]) -> str:
    lines = [
        f"\nCIFAR-10 run: {results['minutes']} min of training and report; accuracy "
        + ", ".join(f"{s} {a:.3f}" for s, a in results["accuracy"].items())
    ]
    lines.append("\nHuman difficulty vs other perspectives (val = CIFAR-10 test, CIFAR-10H):")
    lines.append("| perspective | Spearman rho | Kendall tau | n |\n|---|---|---|---|")
    for name, c in results["human_correlations"].items():
        lines.append(f"| {name} | {c['spearman']:.3f} | {c['kendall']:.3f} | {int(c['n'])} |")
    lines.append("\nDifficultyEyes patterns (val):\n| pattern | count | share | share of errors |\n|---|---|---|---|")
    for pid, p in results["patterns"].items():
        lines.append(f"| {pid} | {p['count']} | {p['share']:.3f} | {p['error_share']:.3f} |")
    band = results["error_by_confusion_band"]
    if band:
        rho = band["pearson_rho"]  # None when fewer than two bands hold samples
        shown = "n/a" if rho is None else f"{rho:.3f}"
        lines.append(f"\nError rate by confusion band (val), Pearson rho = {shown}:")
        lines.append("| band (nats) | count | error rate |\n|---|---|---|")
        for b in band["bands"]:
            if b["count"]:
                lines.append(f"| {b['low']:.2f}-{b['high']:.2f} | {b['count']} | {b['error_rate']:.3f} |")
    lines.append("\nError categories (val errors):\n| category | count | share of errors |\n|---|---|---|")
    for cat, c in results["error_categories"].items():
        if cat != "correct":
            lines.append(f"| {cat} | {c['count']} | {c['error_share']:.3f} |")
    return "\n".join(lines)


def export_figures(table: pd.DataFrame, folder: Path, names: list[str], probes: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    val = table[table["split"] == "val"]
    votes = np.stack([val[f"knn:{p}"].to_numpy() for p in probes])
    flow = figures.difficulty_flow_figure(
        votes,
        val["prediction"].to_numpy(),
        val["label"].to_numpy(),
        val["prediction_depth"].to_numpy(),
        layer_names=probes,
        class_names=names,
    )
    save_figure(flow, folder / "cifar10_difficulty_flow.png")
    perspectives = {c: val[c].to_numpy(float) for c in ("confusion", "prediction_depth", "kdn", "human_difficulty")}
    save_figure(
        figures.perspective_heatmaps_figure(perspectives, val["correct"].to_numpy(bool)),
        folder / "cifar10_perspectives.png",
    )
    wrong = val[~val["correct"]]
    shares = figures.category_shares_figure(wrong["error_category"], wrong["pattern"].astype(str), group_name="pattern")
    save_figure(shares, folder / "cifar10_error_categories_by_pattern.png")


if __name__ == "__main__":
    main()
