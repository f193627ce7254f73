"""Which score finds mislabelled samples? CIFAR-10 with synthetic label noise, every score ranked.

A seeded ``--noise-rate`` share of a CIFAR-10 training subset gets a wrong label, in two settings:

- ``uniform``: the new label is drawn uniformly from the other nine classes;
- ``pair``: the new label is the class most confused with the true one (class-conditional "pair-flip"
  noise). "Most confused" is read off CIFAR-10H: for each class, the other class that human annotators
  chose most often for test images of that class (airplane<->ship, automobile<->truck, cat<->dog,
  deer<->horse, bird->frog, frog->cat). It uses no training data and no model.

Each setting trains the SmallCNN of ``examples/cifar10.py`` with ``ConfusionScore``, ``PredictionDepth``,
``DataDifficulty``, ``TrainingDynamics`` and ``DifficultyReport``, reads the training rows of
``scores.parquet`` and reports, for every score, the AUROC and the precision at the noise rate (among the
``noise_rate * N`` highest scores, the share that were flipped; the base rate is ``noise_rate``). Scores where
low means suspicious (``aum``, ``dm_confidence``) are negated. ``forgetting (never learned = inf)`` ranks
never-learned samples first, as Toneva et al. sort them.

    python examples/label_noise.py --data-dir ../shared/data                              # 10k images, 15 epochs
    python examples/label_noise.py --train-subset 3000 --test-subset 1000 --epochs 5      # a quick look
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
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score
from torch.utils.data import DataLoader

from lightning_difficulty import (
    ConfusionScore,
    DataDifficulty,
    DifficultyReport,
    IndexedDataset,
    PredictionDepth,
    read_scores,
)
from lightning_difficulty.demo.datasets import ArrayDataset, Splits, default_data_dir, load_cifar10_splits
from lightning_difficulty.demo.models import SmallCNN
from lightning_difficulty.functional.dynamics import forgetting_sort_key, precision_at_k

SETTINGS = ("uniform", "pair")
# score name -> (column of scores.parquet, sign that makes "higher = more likely flipped")
SCORES: dict[str, tuple[str, float]] = {
    "confusion": ("confusion", 1.0),
    "aum (negated)": ("aum", -1.0),
    "dm_confidence (negated)": ("dm_confidence", -1.0),
    "forgetting": ("forgetting", 1.0),
    "el2n": ("el2n", 1.0),
    "prediction_depth": ("prediction_depth", 1.0),
    "kdn": ("kdn", 1.0),
    "label_issue_score": ("label_issue_score", 1.0),
}
NEVER_LEARNED_KEY = "forgetting (never learned = inf)"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=default_data_dir(), help="folder with cifar10_*.npz")
    parser.add_argument("--out", type=Path, default=Path("runs/label_noise"))
    parser.add_argument("--train-subset", type=int, default=10000, help="training images (seeded random subset)")
    parser.add_argument("--test-subset", type=int, default=2000, help="first n test images (validation)")
    parser.add_argument("--noise-rate", type=float, default=0.2, help="share of training labels flipped")
    parser.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS))
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if not 0.0 < args.noise_rate < 1.0:
        parser.error(f"--noise-rate must be in (0, 1), but got {args.noise_rate}.")
    return args


# -- noise ------------------------------------------------------------------------------------------


def most_confused_partner(counts: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """For each class, the other class that annotators chose most often for images of that class.

    Args:
        counts: ``(N, C)`` annotator votes per image (CIFAR-10H).
        labels: ``(N,)`` the images' labels.

    Returns:
        ``(C,)`` int64 partner class (never the class itself; ties go to the lower index).

    Example::

        >>> most_confused_partner(np.array([[8, 1, 3], [0, 9, 1], [2, 0, 7]]), np.array([0, 1, 2])).tolist()
        [2, 2, 0]
    """
    votes = np.asarray(counts, dtype=np.float64)
    y = np.asarray(labels)
    if votes.ndim != 2 or y.shape != (votes.shape[0],):
        raise ValueError(f"Expected `counts` (N, C) and `labels` (N,), but got {votes.shape} and {y.shape}.")
    by_class = np.zeros((votes.shape[1], votes.shape[1]))
    np.add.at(by_class, y, votes)
    np.fill_diagonal(by_class, -np.inf)
    return by_class.argmax(axis=1).astype(np.int64)


def flip_labels(
    labels: np.ndarray,
    *,
    rate: float,
    num_classes: int,
    seed: int,
    partner: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Give a seeded ``round(rate * N)`` random samples a wrong label.

    Args:
        labels: ``(N,)`` clean labels.
        rate: share of samples to flip.
        num_classes: ``C``.
        seed: seed of the choice of samples and of the uniform new labels.
        partner: ``(C,)`` class each flipped sample moves to (pair noise); ``None`` draws the new label
            uniformly from the other ``C - 1`` classes.

    Returns:
        ``(noisy_labels, flipped)``: the new labels and the ``(N,)`` bool mask of flipped samples; every flipped
        sample's new label differs from its clean label.

    Example::

        >>> noisy, flipped = flip_labels(np.zeros(10, dtype=np.int64), rate=0.3, num_classes=3, seed=0)
        >>> int(flipped.sum()), bool((noisy[flipped] != 0).all()), bool((noisy[~flipped] == 0).all())
        (3, True, True)
    """
    y = np.asarray(labels, dtype=np.int64)
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"Expected argument `rate` in [0, 1], but got {rate!r}.")
    if partner is not None:
        partner = np.asarray(partner, dtype=np.int64)
        if partner.shape != (num_classes,) or (partner == np.arange(num_classes)).any():
            raise ValueError(
                f"Expected `partner` to map each of the {num_classes} classes to another class, but got {partner}."
            )
    rng = np.random.default_rng(seed)
    chosen = rng.choice(y.shape[0], size=round(rate * y.shape[0]), replace=False)
    noisy = y.copy()
    if partner is None:
        noisy[chosen] = (y[chosen] + rng.integers(1, num_classes, size=chosen.shape[0])) % num_classes
    else:
        noisy[chosen] = partner[y[chosen]]
    flipped = np.zeros(y.shape[0], dtype=bool)
    flipped[chosen] = True
    return noisy, flipped


# -- scores -> metrics --------------------------------------------------------------------------------


def noise_scores(table: pd.DataFrame) -> dict[str, np.ndarray]:
    """Every available score of the training rows, in index order, oriented so that higher = more suspicious.

    Scores whose column is missing from ``table`` are left out.
    """
    train = table[table["split"] == "train"].sort_values("index")
    scores = {
        name: sign * train[column].to_numpy(np.float64) for name, (column, sign) in SCORES.items() if column in train
    }
    if "forgetting" in train and "never_learned" in train:
        scores[NEVER_LEARNED_KEY] = forgetting_sort_key(
            train["forgetting"].to_numpy(np.float64), train["never_learned"].to_numpy(bool)
        )
    return scores


def detection_metrics(scores: dict[str, np.ndarray], flipped: np.ndarray) -> list[dict[str, Any]]:
    """AUROC and precision at the noise rate of each score for finding the ``flipped`` samples.

    Samples with a NaN score are left out of that score's metrics (``n`` says how many were used).

    Example::

        >>> rows = detection_metrics({"s": np.array([0.9, 0.2, 0.8, 0.1])}, np.array([True, False, False, False]))
        >>> rows[0]["auroc"], rows[0]["precision_at_noise_rate"], rows[0]["n"]
        (1.0, 1.0, 4)
    """
    rows = []
    for name, values in scores.items():
        if values.shape != flipped.shape:
            raise ValueError(f"Score {name!r} has {values.shape[0]} samples, but `flipped` has {flipped.shape[0]}.")
        keep = ~np.isnan(values)
        kept, positive = values[keep], flipped[keep]
        k = max(int(positive.sum()), 1)
        rows.append(
            {
                "score": name,
                # AUROC depends on the ranks only: ranking first admits the +inf of never-learned samples
                "auroc": float(roc_auc_score(positive, rankdata(kept))),
                "precision_at_noise_rate": precision_at_k(kept, positive, k),
                "n": int(keep.sum()),
            }
        )
    return rows


def region_shares(table: pd.DataFrame, flipped: np.ndarray) -> dict[str, dict[str, float]]:
    """Per data-map region (``dm_region``) of the training rows: its size and the share of flipped samples."""
    train = table[table["split"] == "train"].sort_values("index")
    if "dm_region" not in train:
        return {}
    regions = train["dm_region"].astype(str).to_numpy()
    return {
        str(region): {
            "count": int((regions == region).sum()),
            "flipped_share": float(flipped[regions == region].mean()),
        }
        for region in np.unique(regions)
    }


# -- training ------------------------------------------------------------------------------------------


def build_callbacks(reference: DataLoader, names: list[str]) -> list[Any]:
    try:
        from lightning_difficulty import TrainingDynamics  # type: ignore[attr-defined]
    except ImportError as error:
        raise SystemExit(
            "This example needs lightning_difficulty.TrainingDynamics (project issue 11), not found in this install."
        ) from error
    return [
        ConfusionScore(),
        PredictionDepth(layers="auto", k=30, reference_dataloader=reference),
        DataDifficulty(k=10, reference_dataloader=reference),
        TrainingDynamics(),
        DifficultyReport(class_names=names, grid_per_class=0, hard_fraction=None, group_bands=None),
    ]


def train_and_score(args: argparse.Namespace, splits: Splits, noisy: np.ndarray, out: Path) -> pd.DataFrame:
    """Train the SmallCNN on ``noisy`` labels with every difficulty callback; return ``scores.parquet``."""
    L.seed_everything(args.seed, verbose=False)
    train_set = ArrayDataset(splits.train.images, noisy, augment=True)
    reference = DataLoader(IndexedDataset(ArrayDataset(splits.train.images, noisy)), batch_size=512)
    train = DataLoader(IndexedDataset(train_set), batch_size=args.batch_size, shuffle=True)
    val = DataLoader(IndexedDataset(splits.val), batch_size=512)
    callbacks = build_callbacks(reference, splits.class_names)
    trainer = L.Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        logger=TensorBoardLogger(save_dir=str(out.parent), name=out.name, version=""),
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=not args.no_progress,
        enable_model_summary=False,
    )
    trainer.fit(SmallCNN(3, 10, width=args.width, max_epochs=args.epochs), train, val)
    return read_scores(callbacks[-1].run_dir(trainer))


def run_setting(args: argparse.Namespace, splits: Splits, setting: str, partner: np.ndarray) -> dict[str, Any]:
    clean = splits.train.targets
    noisy, flipped = flip_labels(
        clean,
        rate=args.noise_rate,
        num_classes=len(splits.class_names),
        seed=args.seed,
        partner=partner if setting == "pair" else None,
    )
    start = time.perf_counter()
    table = train_and_score(args, splits, noisy, args.out / setting)
    train = table[table["split"] == "train"].sort_values("index")
    val = table[table["split"] == "val"]
    return {
        "setting": setting,
        "minutes": round((time.perf_counter() - start) / 60, 1),
        "flipped": int(flipped.sum()),
        "train_accuracy_on_noisy_labels": float(train["correct"].mean()),
        "train_accuracy_on_clean_labels": float((train["prediction"].to_numpy() == clean).mean()),
        "val_accuracy": float(val["correct"].mean()),
        "metrics": sorted(detection_metrics(noise_scores(table), flipped), key=lambda r: -r["auroc"]),
        "dm_regions": region_shares(table, flipped),
    }


def format_markdown(results: dict[str, Any]) -> str:
    setup = results["setup"]
    lines = [
        f"CIFAR-10 label noise: {setup['train_subset']} training images, {setup['epochs']} epochs, "
        f"{setup['noise_rate']:.0%} of labels flipped (seed {setup['seed']})."
    ]
    for run in results["runs"]:
        lines.append(
            f"\n**{run['setting']}** ({run['flipped']} flipped, {run['minutes']} min; train accuracy "
            f"{run['train_accuracy_on_noisy_labels']:.3f} on noisy / {run['train_accuracy_on_clean_labels']:.3f} "
            f"on clean labels; val accuracy {run['val_accuracy']:.3f})\n"
        )
        lines.append(f"| score | AUROC | precision at {setup['noise_rate']:.0%} | n |\n|---|---|---|---|")
        for row in run["metrics"]:
            lines.append(f"| {row['score']} | {row['auroc']:.3f} | {row['precision_at_noise_rate']:.3f} | {row['n']} |")
        if run["dm_regions"]:
            lines.append("\n| dm_region | count | flipped share |\n|---|---|---|")
            for region, entry in run["dm_regions"].items():
                lines.append(f"| {region} | {entry['count']} | {entry['flipped_share']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.data_dir is None:
        raise SystemExit("--data-dir is required (the folder with cifar10_train.npz, cifar10_test.npz, cifar10h.npz)")
    torch.set_num_threads(args.threads)
    splits = load_cifar10_splits(
        args.data_dir, train_subset=args.train_subset, test_subset=args.test_subset, seed=args.seed
    )
    test_labels = np.load(Path(args.data_dir) / "cifar10_test.npz")["y"]
    partner = most_confused_partner(np.load(Path(args.data_dir) / "cifar10h.npz")["counts"], test_labels)
    results: dict[str, Any] = {
        "setup": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "pair_partner": {splits.class_names[c]: splits.class_names[p] for c, p in enumerate(partner)},
        "runs": [run_setting(args, splits, setting, partner) for setting in args.settings],
    }
    markdown = format_markdown(results)
    print("\n" + markdown)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    (args.out / "results.md").write_text(markdown + "\n")
    return results


if __name__ == "__main__":
    main()
