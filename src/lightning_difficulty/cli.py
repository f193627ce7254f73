"""Command line: ``lightning-difficulty demo | compare | combine | evaluate``. Owns nothing but arguments.

Only the standard library is imported at module level, so ``--help`` and ``--version`` answer at
once; each command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

DESCRIPTION = """\
Per-sample difficulty of a PyTorch Lightning classifier's training and validation data.

  demo      train a small CNN on scikit-learn's digits with every callback and print what it found
  compare   how well two runs agree on which samples are hard (Spearman, Kendall, hard-subset overlap)
  combine   the ensemble confusion score of several runs (seeds) from their per-epoch records
  evaluate  any model's error rate per confusion band and on the hard subset of a reference run

RUN is a difficulty folder: the one that holds scores.parquet (e.g. runs/demo/difficulty).
Run `lightning-difficulty COMMAND --help` for a command's options.
"""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lightning-difficulty")
    except PackageNotFoundError:  # running from a source tree that was not installed
        return "unknown (not installed)"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {value:g}")
    return value


def _bands(text: str) -> int:
    value = _positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"expected at least 2 bands, got {value}")
    return value


def _demo(args: argparse.Namespace) -> int:
    from lightning_difficulty.demo.run import format_summary, run_demo

    progress = sys.stdout.isatty() if args.progress is None else args.progress
    result = run_demo(args.out, epochs=args.epochs, seed=args.seed, progress=progress)
    print(format_summary(result))
    return 0


def _compare(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from lightning_difficulty.runs.compare import compare_runs

    result = compare_runs(args.run_a, args.run_b, split=args.split, score=args.score, hard_fraction=args.hard_fraction)
    if args.json:
        print(json.dumps(asdict(result), indent=2))
        return 0
    print(f"split {result.split!r}, score {result.score!r}, {result.n} samples scored by both runs")
    print(f"  Spearman rho {result.spearman:.4f}   Kendall tau {result.kendall:.4f}")
    print(
        f"  hard subsets ({result.hard_rule}): {result.hard_overlap:.1%} of A's are hard in B "
        f"(Jaccard {result.hard_jaccard:.3f})"
    )
    for profile in result.runs:
        line = f"  {profile['run']}: accuracy {profile.get('accuracy', float('nan')):.4f}"
        shares = profile.get("error_shares")
        if shares:
            line += "; errors: " + ", ".join(f"{k} {v:.1%}" for k, v in shares.items() if v)
        print(line)
    return 0


def _combine(args: argparse.Namespace) -> int:
    from lightning_difficulty.runs.combine import combine_runs

    table = combine_runs(args.runs, args.out, split=args.split)
    splits = ", ".join(sorted(table["split"].unique()))
    print(f"Wrote {Path(args.out) / 'scores.parquet'}: {len(table)} rows ({splits}), ensemble of {len(args.runs)} runs")
    print("ensemble confusion (nats) per split:")
    print(table.groupby("split")["confusion"].describe().to_string())
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from lightning_difficulty.runs.compare import evaluate_predictions

    table = evaluate_predictions(args.run, np.load(args.predictions), split=args.split, num_bands=args.bands)
    is_band = table["band"].str.isdigit()
    if args.logdir:
        from torch.utils.tensorboard import SummaryWriter

        from lightning_difficulty.views.figures import accuracy_by_band_comparison_figure

        with SummaryWriter(args.logdir) as writer:
            writer.add_figure(
                "difficulty/error_by_confusion_band", accuracy_by_band_comparison_figure({args.name: table[is_band]})
            )
    if args.json:
        print(json.dumps(table.to_dict("records"), indent=2))
        return 0
    print(
        f"{args.name} on split {args.split!r} of {args.run}: {int(table[is_band]['count'].sum())} samples "
        f"(row i of {args.predictions} = dataset index i); {args.bands} equal-width bands of the run's confusion "
        "(nats, higher = harder)"
    )
    print(table.to_string(index=False, na_rep="", float_format=lambda v: f"{v:.4f}"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``lightning-difficulty`` argument parser (every option has its help)."""
    parser = argparse.ArgumentParser(
        prog="lightning-difficulty", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    defaults = argparse.ArgumentDefaultsHelpFormatter

    demo = commands.add_parser(
        "demo",
        help="train a small CNN on scikit-learn's digits with every callback and print a summary",
        description="Train a small CNN on scikit-learn's bundled digits (1,438 train / 359 val images, a fixed "
        "split) with ConfusionScore, PredictionDepth, DataDifficulty and DifficultyReport, then print what it "
        "found and the commands to look further. Writes OUT/difficulty/ and TensorBoard logs in OUT.",
        formatter_class=defaults,
    )
    demo.add_argument(
        "--out", default="runs/demo", help="output folder: new, empty, or a previous demo run (only its files go)"
    )
    demo.add_argument("--epochs", type=_positive_int, default=30, help="training epochs (>= 1)")
    demo.add_argument(
        "--seed", type=int, default=0, help="training seed (weights, shuffling); the train/val split never changes"
    )
    demo.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show progress bars (default: only when stdout is a terminal)",
    )
    demo.set_defaults(func=_demo)

    compare = commands.add_parser(
        "compare",
        help="how well two runs agree on which samples are hard (Spearman, Kendall, hard-subset overlap)",
        description="Rank agreement of two runs' scores on the samples of one split (Spearman rho, Kendall tau), "
        "the overlap of their hard subsets, and each run's accuracy and error-category shares. Both runs must "
        "hold the same samples (same dataset indices and labels).",
        formatter_class=defaults,
    )
    compare.add_argument("run_a", metavar="RUN_A", help="difficulty folder of run A (holds scores.parquet)")
    compare.add_argument("run_b", metavar="RUN_B", help="difficulty folder of run B")
    compare.add_argument("--split", default="val", help="split to compare (train, val, val_1, ...)")
    compare.add_argument(
        "--score",
        default="confusion",
        help="score to rank by: confusion, prediction_depth, kdn, kdn:<layer>, human_difficulty, ... "
        "(one score per sample, higher = harder)",
    )
    compare.add_argument(
        "--hard-fraction",
        type=_fraction,
        default=None,
        help="each run's hard subset is its top FRACTION (0 < FRACTION <= 1) by --score, ties by index "
        "(default: each run's own hard column with --score confusion, else the top 10%%)",
    )
    compare.add_argument("--json", action="store_true", help="print the result as JSON")
    compare.set_defaults(func=_compare)

    combine = commands.add_parser(
        "combine",
        help="ensemble confusion score of several runs (seeds) from their per-epoch records (Eq. 1-3)",
        description="Combine several runs (e.g. seeds) of one dataset into the ensemble confusion score of "
        "Albiero et al. (Eq. 1-3): per epoch, the entropy of the runs' mean softmax, averaged over epochs. Reads "
        "each RUN/records/ and writes OUT/scores.parquet (split, index, label, confusion, confusion_run<i>) and "
        "OUT/summary.json. The runs must have recorded the same epochs of the same samples.",
        formatter_class=defaults,
    )
    combine.add_argument("runs", nargs="+", metavar="RUN", help="difficulty folders of the runs (hold records/)")
    combine.add_argument("-o", "--out", required=True, help="output folder (created)")
    combine.add_argument(
        "--split", default=None, help="combine only this split (default: every split all runs recorded)"
    )
    combine.set_defaults(func=_combine)

    evaluate = commands.add_parser(
        "evaluate",
        help="any model's error rate per confusion band and on the hard subset of a reference run",
        description="Score any model's predictions against a reference run's difficulty (Albiero et al., Fig. 4): "
        "its error rate in each equal-width confusion band of the reference run, on the run's hard subset and "
        "overall. PREDICTIONS is a .npy file with one row per sample of SPLIT: row i = dataset index i.",
        formatter_class=defaults,
    )
    evaluate.add_argument("run", metavar="RUN", help="reference run's difficulty folder (holds scores.parquet)")
    evaluate.add_argument(
        "predictions",
        metavar="PREDICTIONS",
        help=".npy with the model's classes (N,) or logits (N, C); row i = dataset index i of SPLIT",
    )
    evaluate.add_argument("--split", default="val", help="split the predictions belong to")
    evaluate.add_argument("--bands", type=_bands, default=10, help="number of equal-width confusion bands (>= 2)")
    evaluate.add_argument("--logdir", help="also write a TensorBoard figure to this log folder")
    evaluate.add_argument("--name", default="model", help="the model's name in the printout and the figure")
    evaluate.add_argument("--json", action="store_true", help="print the table as JSON records")
    evaluate.set_defaults(func=_evaluate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for a usage or data error, with a one-line message).

    Example::

        main(["compare", "runs/a/difficulty", "runs/b/difficulty", "--score", "kdn"])
    """
    args = build_parser().parse_args(argv)
    try:
        code = int(args.func(args))
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # the reader (e.g. `| head`) stopped reading: quit quietly, as other command-line tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except (ValueError, OSError) as err:
        print(f"lightning-difficulty {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
