"""GroupDRO on confusion bands (Albiero et al., Sec. 3.4) with this package alone.

1. Score: train a small CNN with ``ConfusionScore`` + ``DifficultyReport``. The report writes the
   confusion scores, ``groups.json`` (band edges fitted on the training split) and the ``group``
   column of train and val (val banded with the train edges), and the ``hard`` column (top 10 %
   confusion of val).
2. Retrain from scratch twice with the same budget and the same initial weights: ERM (plain
   cross-entropy) and GroupDRO (``GroupDROModule`` over the train groups).
3. Compare both retrained models on val, from their own eval-mode predictions: average accuracy,
   worst-group accuracy, accuracy per band and on the hard subset.

The retrained models use seed ``--seed + 1``, so the ERM baseline is not the very model whose
confusion defined the bands.

    python examples/groupdro_retrain.py                                              # digits, ~40 s
    python examples/groupdro_retrain.py --dataset cifar10 --data-dir ../shared/data   # ~13 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from lightning_difficulty import (
    ConfusionScore,
    DifficultyReport,
    GroupDROModule,
    GroupsManifest,
    IndexedDataset,
    group_balanced_sampler,
    groups_from_run,
)
from lightning_difficulty.demo.datasets import (
    ArrayDataset,
    Splits,
    default_data_dir,
    load_cifar10_splits,
    load_digits_splits,
)
from lightning_difficulty.demo.models import SmallCNN

T = TypeVar("T")

# Per-dataset defaults of the options left unset; sized for a 2-core CPU (see the timings in the docstring).
DEFAULTS: dict[str, dict[str, Any]] = {
    "digits": {
        "epochs": 30,
        "train_subset": None,
        "test_subset": None,
        "num_threads": 1,
        "width": 16,
        "batch_size": 64,
    },
    "cifar10": {
        "epochs": 15,
        "train_subset": 10000,
        "test_subset": 10000,
        "num_threads": 2,
        "width": 16,
        "batch_size": 128,
    },
}


@dataclass
class Groups:
    """Group ids from the scoring run: per dataset index of train and val, and the hard subset of val."""

    manifest: GroupsManifest
    train: np.ndarray
    val: np.ndarray
    val_hard: np.ndarray


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; ``None`` values are filled from :data:`DEFAULTS` for the dataset."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(DEFAULTS), default="digits")
    parser.add_argument("--data-dir", type=Path, default=default_data_dir(), help="folder with cifar10_*.npz")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default runs/groupdro_<dataset>)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs of each of the three trainings")
    parser.add_argument("--train-subset", type=int, default=None, help="training images (cifar10: seeded subset)")
    parser.add_argument("--test-subset", type=int, default=None, help="first n validation (cifar10: test) images")
    parser.add_argument("--width", type=int, default=None, help="SmallCNN width")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--num-threads", type=int, default=None, help="torch threads (1 for digits, 2 for cifar10)")
    parser.add_argument(
        "--seed", type=int, default=0, help="scoring seed and data split/subset; retraining uses seed + 1"
    )
    bands = parser.add_mutually_exclusive_group()
    bands.add_argument("--num-bands", type=int, default=2, help="quantile bands of train confusion (groups)")
    bands.add_argument("--threshold", type=float, nargs="+", default=None, help="fixed band edges in nats instead")
    parser.add_argument("--eta", type=float, default=0.01, help="GroupDRO step size of the q update")
    parser.add_argument("--adjustment", type=float, default=0.0, help="GroupDRO generalisation adjustment C")
    parser.add_argument("--balanced-sampler", action="store_true", help="GroupDRO run draws groups equally often")
    parser.add_argument("--progress", action="store_true", help="show Lightning progress bars")
    args = parser.parse_args(argv)
    for name, value in DEFAULTS[args.dataset].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.out = args.out or Path(f"runs/groupdro_{args.dataset}")
    return args


def load_splits(args: argparse.Namespace) -> Splits:
    """Digits from scikit-learn, or CIFAR-10 from ``--data-dir`` (training split augmented)."""
    if args.dataset == "digits":
        splits = load_digits_splits(seed=args.seed)
        return Splits(head(splits.train, args.train_subset), head(splits.val, args.test_subset), splits.class_names)
    if args.data_dir is None:
        raise SystemExit(
            "--dataset cifar10 needs --data-dir: the folder with cifar10_train.npz and cifar10_test.npz"
            " (../shared/data is used when it exists)."
        )
    return load_cifar10_splits(
        args.data_dir, train_subset=args.train_subset, test_subset=args.test_subset, seed=args.seed
    )


def head(dataset: ArrayDataset, n: int | None) -> ArrayDataset:
    """The first ``n`` samples of ``dataset`` (all of them when ``n`` is ``None``)."""
    if n is None or n >= len(dataset):
        return dataset
    return ArrayDataset(dataset.images[:n], dataset.targets[:n], augment=dataset.augment)


def new_model(args: argparse.Namespace, splits: Splits) -> SmallCNN:
    """A fresh SmallCNN (AdamW + cosine schedule over ``--epochs``), the same for every training."""
    in_channels = int(splits.train[0][0].shape[0])
    return SmallCNN(in_channels, len(splits.class_names), width=args.width, max_epochs=args.epochs)


def new_trainer(args: argparse.Namespace, callbacks: list[Any] | None = None) -> L.Trainer:
    """A CPU trainer without logger or checkpoints (the report writes its files itself)."""
    return L.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=args.progress,
        deterministic=True,
    )


def score(args: argparse.Namespace, splits: Splits) -> pd.DataFrame:
    """Step 1: the scoring run; returns the report's per-sample table (also on disk)."""
    L.seed_everything(args.seed, verbose=False)
    report = DifficultyReport(
        args.out / "difficulty",
        class_names=splits.class_names,
        group_bands=None if args.threshold else args.num_bands,
        group_thresholds=args.threshold,
    )
    train = DataLoader(IndexedDataset(splits.train), batch_size=args.batch_size, shuffle=True)
    val = DataLoader(IndexedDataset(splits.val), batch_size=512)
    trainer = new_trainer(args, [ConfusionScore(record="none"), report])
    trainer.fit(new_model(args, splits), train, val)
    assert report.table is not None
    return report.table


def split_column(table: pd.DataFrame, split: str, column: str, size: int) -> np.ndarray:
    """One column of one split, ordered by dataset index (checked to cover ``0 .. size - 1``)."""
    rows = table[table["split"] == split].sort_values("index")
    if not np.array_equal(rows["index"].to_numpy(), np.arange(size)):
        raise ValueError(f"The report's {split!r} rows do not cover dataset indices 0..{size - 1}.")
    return rows[column].to_numpy()


def read_groups(table: pd.DataFrame, run_dir: Path, splits: Splits) -> Groups:
    """Train and val groups through ``groups_from_run``, the hard subset from ``hard``, edges from groups.json."""
    manifest = GroupsManifest.from_json(run_dir / "groups.json")
    if min(manifest.sizes) == 0:
        confusion = split_column(table, "train", "confusion", len(splits.train))
        raise SystemExit(
            f"The band edges {list(manifest.edges)} leave a training band empty (sizes {list(manifest.sizes)});"
            f" train confusion spans [{confusion.min():.3f}, {confusion.max():.3f}] nats. Pick --threshold inside it."
        )
    # The user's path: the bands of each split, checked against the dataset's length and labels.
    train = groups_from_run(run_dir, splits.train, score="group", split="train", by_class=False)
    val = groups_from_run(run_dir, splits.val, score="group", split="val", by_class=False)
    hard = split_column(table, "val", "hard", len(splits.val)).astype(bool)
    return Groups(manifest, train, val, hard)


def retrain(args: argparse.Namespace, splits: Splits, module: L.LightningModule, sampler: Sampler | None) -> None:
    """Step 2: train ``module`` from its initial weights on the training split, no validation loop."""
    loader = DataLoader(
        IndexedDataset(splits.train), batch_size=args.batch_size, shuffle=sampler is None, sampler=sampler
    )
    new_trainer(args).fit(module, loader)


def train_erm(args: argparse.Namespace, splits: Splits) -> nn.Module:
    """Plain cross-entropy from a fresh model with seed ``--seed + 1``."""
    L.seed_everything(args.seed + 1, verbose=False)
    model = new_model(args, splits)
    retrain(args, splits, model, None)
    return model


def train_groupdro(args: argparse.Namespace, splits: Splits, groups: Groups) -> GroupDROModule:
    """GroupDRO over the train groups from the same fresh model (same seed, so same weights) as ERM."""
    L.seed_everything(args.seed + 1, verbose=False)
    module = GroupDROModule(
        new_model(args, splits),
        groups.train,
        num_groups=groups.manifest.num_groups,
        eta=args.eta,
        adjustment=args.adjustment,
    )
    sampler = None
    if args.balanced_sampler:
        sampler = group_balanced_sampler(groups.train, generator=torch.Generator().manual_seed(args.seed + 1))
    retrain(args, splits, module, sampler)
    return module


@torch.no_grad()
def predict(model: nn.Module, dataset: Dataset) -> np.ndarray:
    """Eval-mode argmax predictions over ``dataset`` in index order."""
    model.eval()
    batches = [model(x).argmax(dim=1) for x, _ in DataLoader(dataset, batch_size=512)]
    return torch.cat(batches).numpy()


def group_accuracies(correct: np.ndarray, groups: Groups) -> dict[str, Any]:
    """Average, worst-group, per-group and hard-subset accuracy on val (groups without samples skipped)."""
    per_group = {
        str(g): float(correct[groups.val == g].mean())
        for g in range(groups.manifest.num_groups)
        if (groups.val == g).any()
    }
    return {
        "average": float(correct.mean()),
        "worst_group": min(per_group.values()),
        "groups": per_group,
        "hard_subset": float(correct[groups.val_hard].mean()) if groups.val_hard.any() else float("nan"),
    }


def evaluate(model: nn.Module, splits: Splits, groups: Groups) -> dict[str, Any]:
    """Step 3 for one model: its val predictions scored per group."""
    correct = predict(model, splits.val) == splits.val.targets
    return group_accuracies(correct, groups)


def group_name(g: int, num_groups: int) -> str:
    """``easy`` / ``hard`` for two bands, else the band number."""
    if num_groups == 2:
        return ("easy band", "hard band")[g]
    return f"band {g}"


def format_table(results: dict[str, Any]) -> str:
    """The comparison as a markdown table, with band edges and sizes underneath."""
    setup, methods = results["groups"], results["methods"]
    num = len(setup["edges"]) + 1
    group_cols = [f"{group_name(g, num)} (n={setup['val_sizes'][g]})" for g in range(num) if setup["val_sizes"][g] > 0]
    header = ["method", "average", "worst-group", *group_cols, f"hard subset (n={setup['val_hard']})"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, acc in methods.items():
        cells = [name, f"{acc['average']:.4f}", f"{acc['worst_group']:.4f}"]
        cells += [f"{acc['groups'][str(g)]:.4f}" for g in range(num) if str(g) in acc["groups"]]
        cells.append(f"{acc['hard_subset']:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    edges = ", ".join(f"{e:.3f}" for e in setup["edges"])
    lines.append(
        f"\nVal accuracy of the retrained models (seed {results['setup']['seed'] + 1}); groups: confusion bands of"
        f" the scoring run, {setup['method']} edges [{edges}] nats fitted on train"
        f" (train sizes {setup['train_sizes']}); GroupDRO final q = {results['groupdro_q']}."
    )
    return "\n".join(lines)


def write_outputs(results: dict[str, Any], table: str, out: Path) -> None:
    """``results.json`` and ``results.md`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(table + "\n")


def quiet_lightning() -> None:
    """Keep the printed output to the results: no device banners or worker-count warnings."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    for message in (".*does not have many workers.*", ".*but have no `val_dataloader`.*", ".*LeafSpec.*"):
        warnings.filterwarnings("ignore", message)


def timed(name: str, seconds: dict[str, float], step: Callable[[], T]) -> T:
    """Run ``step``, store and print its wall-clock seconds under ``name``."""
    start = time.perf_counter()
    value = step()
    seconds[name] = round(time.perf_counter() - start, 1)
    print(f"{name}: {seconds[name]} s")
    return value


def collect_results(
    args: argparse.Namespace, groups: Groups, methods: dict[str, Any], dro: GroupDROModule, seconds: dict[str, float]
) -> dict[str, Any]:
    """Everything ``results.json`` holds: set-up, groups, accuracies, final q and timings."""
    return {
        "setup": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "groups": {
            "method": groups.manifest.method,
            "edges": list(groups.manifest.edges),
            "train_sizes": list(groups.manifest.sizes),
            "val_sizes": np.bincount(groups.val, minlength=groups.manifest.num_groups).tolist(),
            "val_hard": int(groups.val_hard.sum()),
        },
        "methods": methods,
        "groupdro_q": [round(q, 4) for q in dro.dro.q.tolist()],
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the three trainings, print the comparison and write it to ``--out``; returns the results."""
    args = parse_args(argv)
    quiet_lightning()
    torch.set_num_threads(args.num_threads)
    start = time.perf_counter()
    splits = load_splits(args)
    seconds: dict[str, float] = {}
    table = timed("scoring run", seconds, lambda: score(args, splits))
    groups = read_groups(table, args.out / "difficulty", splits)
    erm = timed("ERM retrain", seconds, lambda: train_erm(args, splits))
    dro = timed("GroupDRO retrain", seconds, lambda: train_groupdro(args, splits, groups))
    methods = {"ERM": evaluate(erm, splits, groups), "GroupDRO": evaluate(dro.model, splits, groups)}
    seconds["total"] = round(time.perf_counter() - start, 1)
    results = collect_results(args, groups, methods, dro, seconds)
    text = format_table(results)
    print(f"\n{text}\nTotal {seconds['total']} s (after imports); written to {args.out}/results.md and results.json")
    write_outputs(results, text, args.out)
    return results


if __name__ == "__main__":
    main()
