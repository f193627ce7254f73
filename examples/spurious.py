"""A spurious correlation with unknown groups: difficulty scores find the minority, GroupDRO fixes it.

Data: scikit-learn's digits as a two-class task (digit < 5 against digit >= 5). Most training images of
class 1 carry a shortcut (a bright patch in the top-left corner) and most of class 0 do not: the patch
agrees with the label for ``--agreement`` (95 %) of the training images of each class and for 50 % of the
validation and test images. The true groups (class x patch) are used only to evaluate and by the oracle.

Per seed, with the same architecture (``SmallCNN``), budget and initial weights for every method:

1. a first ERM run with ``ConfusionScore``, ``TrainingDynamics`` and ``DifficultyReport`` writes a run folder;
   it is shorter (``--first-epochs``, a third of the budget), like JTT's first model;
2. groupings are derived from that folder with ``groups_from_run`` (the user's path): the ten quantile
   confusion bands of ``groups.json``; and, split by class, the first model's errors and the hardest
   ``--hard-fraction`` (10 %) by confusion, ``label_issue_score`` and AUM;
3. retrainings: ERM; GroupDRO on each derived grouping; JTT-style upweighting of the error set and of the AUM
   hard group (a ``group_balanced_sampler`` draws it as often as the rest); oracle GroupDRO on the true groups;
4. average and worst-group test accuracy (true groups), and how well each grouping's hard group finds the
   true minority (precision, recall). Means and sample standard deviations (ddof 1) over the seeds.

    python examples/spurious.py --quick            # one seed, about a minute on 2 cores
    python examples/spurious.py --quick --json     # last line: {method: {"average": ..., "worst_group": ...}}
    python examples/spurious.py                    # three seeds: the table with mean and std
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
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler

from lightning_difficulty import (
    ConfusionScore,
    DifficultyReport,
    GroupDROModule,
    IndexedDataset,
    TrainingDynamics,
    group_balanced_sampler,
    groups_from_run,
)
from lightning_difficulty.demo.datasets import ArrayDataset
from lightning_difficulty.demo.models import SmallCNN

MODES: dict[str, dict[str, Any]] = {
    "full": {"seeds": 3, "epochs": 30, "first_epochs": 10},
    "quick": {"seeds": 1, "epochs": 12, "first_epochs": 4},
}


# Derived methods: method -> (how it retrains, the grouping it uses); JTT-style = upweighting the hard group.
METHODS: dict[str, tuple[str, str]] = {
    "groupdro_confusion_bands": ("groupdro", "confusion_bands"),
    "groupdro_confusion_by_class": ("groupdro", "confusion_by_class"),
    "groupdro_errors_by_class": ("groupdro", "errors_by_class"),
    "groupdro_label_issue_score_by_class": ("groupdro", "label_issue_score_by_class"),
    "groupdro_aum_by_class": ("groupdro", "aum_by_class"),
    "jtt_errors": ("jtt", "errors_by_class"),
    "jtt_aum": ("jtt", "aum_by_class"),
}


@dataclass
class SpuriousSet:
    """Images with the shortcut painted in, the class labels, the shortcut flags and the true groups."""

    data: ArrayDataset
    shortcut: np.ndarray

    @property
    def labels(self) -> np.ndarray:
        """Class labels in index order."""
        return self.data.targets

    @property
    def groups(self) -> np.ndarray:
        """True group ``2 * label + shortcut``: 0 and 3 are the majority, 1 and 2 the minority."""
        return 2 * self.labels + self.shortcut

    @property
    def minority(self) -> np.ndarray:
        """Where the shortcut disagrees with the label."""
        return self.shortcut != self.labels


@dataclass
class Benchmark:
    """The three splits of one seed."""

    train: SpuriousSet
    val: SpuriousSet
    test: SpuriousSet


@dataclass
class Grouping:
    """A derived grouping: group ids for the retraining and the hard group it proposes as the minority."""

    groups: np.ndarray
    hard: np.ndarray


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; ``None`` values come from :data:`MODES` (``--quick`` or full)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one seed and a shorter budget")
    parser.add_argument("--json", action="store_true", help="print the accuracies as one JSON object last")
    parser.add_argument("--out", type=Path, default=Path("runs/spurious"), help="output folder")
    parser.add_argument("--seeds", type=int, default=None, help="seeds 0 .. n-1 (data split, shortcut, weights)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs of every retraining")
    parser.add_argument("--first-epochs", type=int, default=None, help="epochs of the first (scoring) run")
    parser.add_argument("--agreement", type=float, default=0.95, help="shortcut-label agreement in training")
    parser.add_argument("--patch", type=int, default=2, help="side of the bright patch in pixels")
    parser.add_argument("--train-size", type=int, default=None, help="training images (default: all 1,097)")
    parser.add_argument("--test-size", type=int, default=400, help="test images (validation: 300)")
    parser.add_argument("--width", type=int, default=8, help="SmallCNN width")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--eta", type=float, default=0.1, help="GroupDRO step size of the q update")
    parser.add_argument("--bands", type=int, default=10, help="quantile confusion bands of the first run's groups.json")
    parser.add_argument("--hard-fraction", type=float, default=0.1, help="hard share of a continuous score")
    parser.add_argument("--num-threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    for name, value in MODES["quick" if args.quick else "full"].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def add_shortcut(images: np.ndarray, labels: np.ndarray, agreement: float, patch: int, seed: int) -> SpuriousSet:
    """Paint the patch on a class-balanced, exact share of images: agreement ``a`` in every class.

    In class 1, ``round(a * n_1)`` images get the patch; in class 0, ``round((1 - a) * n_0)`` do.
    """
    rng = np.random.default_rng(seed)
    shortcut = np.zeros(len(labels), dtype=np.int64)
    for label in (0, 1):
        members = rng.permutation(np.flatnonzero(labels == label))
        agree = round(agreement * members.size)
        with_patch = members[:agree] if label == 1 else members[agree:]
        shortcut[with_patch] = 1
    painted = images.copy()
    painted[shortcut == 1, :, :patch, :patch] = 1.0  # the brightest value of the normalised images
    return SpuriousSet(ArrayDataset(painted, labels), shortcut)


def make_benchmark(args: argparse.Namespace, seed: int) -> Benchmark:
    """Digits split by a seeded shuffle into test (``--test-size``), validation (300) and training."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = ((digits.images.astype(np.float32) / 16.0 - 0.5) / 0.5)[:, None]
    labels = (digits.target >= 5).astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(labels))
    test, val, train = (
        order[: args.test_size],
        order[args.test_size : args.test_size + 300],
        order[args.test_size + 300 :],
    )
    train = train[: args.train_size]
    return Benchmark(
        add_shortcut(images[train], labels[train], args.agreement, args.patch, seed),
        add_shortcut(images[val], labels[val], 0.5, args.patch, seed + 1000),
        add_shortcut(images[test], labels[test], 0.5, args.patch, seed + 2000),
    )


def new_model(args: argparse.Namespace, epochs: int, seed: int) -> SmallCNN:
    """The same fresh SmallCNN (AdamW, cosine schedule) for every method of one seed."""
    L.seed_everything(seed, verbose=False)
    return SmallCNN(1, 2, width=args.width, max_epochs=epochs)


def fit(args: argparse.Namespace, module: L.LightningModule, loader: DataLoader, epochs: int, **kwargs: Any) -> None:
    """A quiet CPU fit without logger or checkpoints."""
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        deterministic=True,
        callbacks=kwargs.pop("callbacks", None),
    )
    trainer.fit(module, loader, **kwargs)


def train_loader(args: argparse.Namespace, bench: Benchmark, seed: int, sampler: Sampler | None = None) -> DataLoader:
    """Batches ``(image, label, index)`` of the training split, shuffled unless a sampler draws them."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        IndexedDataset(bench.train.data),
        batch_size=args.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        generator=generator if sampler is None else None,
    )


def first_run(args: argparse.Namespace, bench: Benchmark, seed: int, run_dir: Path) -> Path:
    """The scoring run: ERM with the package's callbacks; returns the report's folder."""
    callbacks = [
        ConfusionScore(record="none"),
        TrainingDynamics(record="none"),
        DifficultyReport(run_dir, group_bands=args.bands),
    ]
    val = DataLoader(IndexedDataset(bench.val.data), batch_size=512)
    model = new_model(args, args.first_epochs, seed)
    fit(args, model, train_loader(args, bench, seed), args.first_epochs, val_dataloaders=val, callbacks=callbacks)
    return run_dir


def grouping_requests(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The ``groups_from_run`` arguments of every derived grouping."""
    requests: dict[str, dict[str, Any]] = {"confusion_bands": {"score": "group", "by_class": False}}
    for score in ("confusion", "errors", "label_issue_score", "aum"):
        fraction = None if score == "errors" else args.hard_fraction
        requests[f"{score}_by_class"] = {"score": score, "by_class": True, "hard_fraction": fraction}
    return requests


def derive_groupings(
    args: argparse.Namespace, run_dir: Path, bench: Benchmark
) -> tuple[dict[str, Grouping], dict[str, str]]:
    """Every derived grouping, read from the run folder through ``groups_from_run``, and those it refused.

    A refusal (e.g. a first model without a single training error) is kept with its reason, and the methods
    that need that grouping are left out of this seed.
    """
    train = IndexedDataset(bench.train.data)
    found: dict[str, Grouping] = {}
    refused: dict[str, str] = {}
    for name, kwargs in grouping_requests(args).items():
        try:
            groups = groups_from_run(run_dir, train, **kwargs)
        except ValueError as error:
            refused[name] = str(error)
            continue
        found[name] = Grouping(groups, groups == groups.max() if name == "confusion_bands" else groups % 2 == 1)
    return found, refused


def train_erm(args: argparse.Namespace, bench: Benchmark, seed: int, sampler: Sampler | None = None) -> nn.Module:
    """Cross-entropy from the seed's initial weights (``sampler``: JTT-style upweighting)."""
    model = new_model(args, args.epochs, seed)
    fit(args, model, train_loader(args, bench, seed, sampler), args.epochs)
    return model


def train_groupdro(args: argparse.Namespace, bench: Benchmark, seed: int, groups: np.ndarray) -> nn.Module:
    """GroupDRO over ``groups`` from the seed's initial weights."""
    module = GroupDROModule(new_model(args, args.epochs, seed), groups, eta=args.eta)
    fit(args, module, train_loader(args, bench, seed), args.epochs)
    return module.model


def jtt_sampler(grouping: Grouping, seed: int) -> Sampler:
    """Draw the hard group as often as the rest (JTT's upweighting with ``lambda = N_rest / N_hard``)."""
    return group_balanced_sampler(grouping.hard.astype(np.int64), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def predict(model: nn.Module, data: ArrayDataset) -> np.ndarray:
    """Eval-mode argmax predictions in index order."""
    model.eval()
    return model(data.images).argmax(dim=1).numpy()


def group_accuracies(correct: np.ndarray, groups: np.ndarray) -> dict[str, float]:
    """Average accuracy and worst-group accuracy (lowest over the groups that have samples)."""
    correct, groups = np.asarray(correct, dtype=bool), np.asarray(groups)
    if correct.shape != groups.shape or correct.size == 0:
        raise ValueError(
            f"Expected `correct` and `groups` of one equal, non-zero length, got {correct.shape}, {groups.shape}."
        )
    per_group = [correct[groups == g].mean() for g in np.unique(groups)]
    return {"average": float(correct.mean()), "worst_group": float(min(per_group))}


def precision_recall(hard: np.ndarray, minority: np.ndarray) -> dict[str, float]:
    """Precision and recall of a proposed hard group against the true minority."""
    found = int((hard & minority).sum())
    return {"precision": found / max(int(hard.sum()), 1), "recall": found / max(int(minority.sum()), 1)}


def train_method(args: argparse.Namespace, bench: Benchmark, seed: int, method: str, grouping: Grouping) -> nn.Module:
    """One derived method: GroupDRO over the grouping, or JTT-style upweighting of its hard group."""
    if METHODS[method][0] == "groupdro":
        return train_groupdro(args, bench, seed, grouping.groups)
    return train_erm(args, bench, seed, jtt_sampler(grouping, seed))


def run_seed(args: argparse.Namespace, seed: int, log: Callable[[str], None]) -> dict[str, Any]:
    """All methods for one seed: test accuracies per method, precision/recall per derived grouping."""
    bench = make_benchmark(args, seed)
    start = time.perf_counter()
    run_dir = first_run(args, bench, seed, args.out / f"seed{seed}" / "first_run")
    groupings, refused = derive_groupings(args, run_dir, bench)
    for name, reason in refused.items():
        log(f"seed {seed}: grouping {name} refused, its methods left out: {reason}")
    models: dict[str, nn.Module] = {"erm": train_erm(args, bench, seed)}
    for method, (_, grouping) in METHODS.items():
        if grouping in groupings:
            models[method] = train_method(args, bench, seed, method, groupings[grouping])
    models["oracle"] = train_groupdro(args, bench, seed, bench.train.groups)
    accuracy = {
        name: group_accuracies(predict(model, bench.test.data) == bench.test.labels, bench.test.groups)
        for name, model in models.items()
    }
    found = {name: precision_recall(g.hard, bench.train.minority) for name, g in groupings.items()}
    log(f"seed {seed}: {time.perf_counter() - start:.1f} s")
    return {"accuracy": accuracy, "groupings": found, "refused": refused}


def aggregate(per_seed: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    """``name -> metric -> {"mean", "std"}`` over the seeds that have ``name`` (sample std, ddof 1; 0 for one).

    ``"seeds"`` holds how many seeds that is (fewer than all when a grouping was refused for some).
    """
    names = list(dict.fromkeys(name for s in per_seed for name in s[key]))
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        runs = [s[key][name] for s in per_seed if name in s[key]]
        out[name] = {
            metric: {
                "mean": float(np.mean([r[metric] for r in runs])),
                "std": float(np.std([r[metric] for r in runs], ddof=1)) if len(runs) > 1 else 0.0,
            }
            for metric in runs[0]
        }
        out[name]["seeds"] = len(runs)
    return out


def format_table(results: dict[str, Any]) -> str:
    """Markdown tables: accuracies per method, then precision/recall per derived grouping."""
    lines = ["| method | average | worst-group |", "|---|---|---|"]
    seeds = results["setup"]["seeds"]
    for name, acc in results["accuracy"].items():
        cells = [f"{acc[m]['mean'] * 100:.1f} ± {acc[m]['std'] * 100:.1f}" for m in ("average", "worst_group")]
        note = "" if acc["seeds"] == seeds else f" ({acc['seeds']} of {seeds} seeds)"
        lines.append(f"| {name}{note} | {cells[0]} | {cells[1]} |")
    lines += ["", "| grouping | precision | recall |", "|---|---|---|"]
    for name, pr in results["groupings"].items():
        cells = [f"{pr[m]['mean'] * 100:.1f} ± {pr[m]['std'] * 100:.1f}" for m in ("precision", "recall")]
        note = "" if pr["seeds"] == seeds else f" ({pr['seeds']} of {seeds} seeds)"
        lines.append(f"| {name}{note} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def quiet_lightning() -> None:
    """Keep the output to the results."""
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    quiet = (
        ".*does not have many workers.*",
        ".*but have no `val_dataloader`.*",
        ".*LeafSpec.*",
        ".*TensorBoardLogger.*",
    )
    for message in quiet:
        warnings.filterwarnings("ignore", message)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run every seed, print the table (and the JSON line) and write ``results.json`` / ``results.md``."""
    args = parse_args(argv)
    quiet_lightning()
    torch.set_num_threads(args.num_threads)
    log = (lambda _: None) if args.json else print
    start = time.perf_counter()
    per_seed = [run_seed(args, seed, log) for seed in range(args.seeds)]
    results = {
        "setup": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "accuracy": aggregate(per_seed, "accuracy"),
        "groupings": aggregate(per_seed, "groupings"),
        "per_seed": per_seed,
        "seconds": round(time.perf_counter() - start, 1),
    }
    table = format_table(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    (args.out / "results.md").write_text(table + "\n")
    log(f"{table}\n\n{results['seconds']} s; written to {args.out}/results.md and results.json")
    if args.json:
        means = {k: {m: v[m]["mean"] for m in ("average", "worst_group")} for k, v in results["accuracy"].items()}
        print(json.dumps(means))
    return results


if __name__ == "__main__":
    main()
