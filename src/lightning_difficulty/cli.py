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
from typing import Any, Literal

DESCRIPTION = """\
Per-sample difficulty of a PyTorch Lightning classifier's training and validation data.

RUN is a difficulty folder: the one that holds scores.parquet (e.g. runs/demo/difficulty); a run folder
above it (e.g. runs/demo) is resolved to the one difficulty folder inside it. Output folders must be new,
empty or an earlier output of the same command: a run or files the package did not write are never
overwritten. Run `lightning-difficulty COMMAND --help` for a command's options.
"""


class _HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to an option's help only when there is a default worth saying.

    Left out: ``None`` and ``False`` defaults, required options, and help texts that already describe
    their default (they contain "default").
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            default is None
            or default is False
            or default is argparse.SUPPRESS
            or action.required
            or not action.option_strings
            or "default" in text.lower()
        ):
            return text
        return f"{text} (default: %(default)s)"


class _TopHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The top-level help: the description as written (paragraphs), the commands listed once."""


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


def _note(message: str) -> None:
    """A remark on stderr (stdout stays clean for --json)."""
    if message:
        print(f"note: {message}", file=sys.stderr)


def _run_dir(path: str, *, name: str, holds: Literal["scores", "records"] = "scores") -> Path:
    """The difficulty folder meant by ``path`` (a run folder above it is resolved, and a note says so)."""
    from lightning_difficulty.runs.folders import resolve_run_dir

    folder, note = resolve_run_dir(path, holds=holds, name=name)
    _note(note)
    return folder


def _demo(args: argparse.Namespace) -> int:
    from lightning_difficulty.demo.run import format_summary, run_demo

    progress = sys.stdout.isatty() if args.progress is None else args.progress
    result = run_demo(args.out, epochs=args.epochs, seed=args.seed, progress=progress)
    print(format_summary(result))
    return 0


def _compare(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from lightning_difficulty.runs.compare import compare_runs

    run_a, run_b = _run_dir(args.run_a, name="RUN_A"), _run_dir(args.run_b, name="RUN_B")
    result = compare_runs(run_a, run_b, split=args.split, score=args.score, hard_fraction=args.hard_fraction)
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
    from lightning_difficulty.storage.outputs import OutputFolder

    runs = [_run_dir(run, name="RUN", holds="records") for run in args.runs]
    OutputFolder.claim(args.out, command="combine", option="-o")  # the same check combine_runs makes, worded for -o
    table = combine_runs(runs, args.out, split=args.split)
    splits = ", ".join(sorted(table["split"].unique()))
    print(f"Wrote {Path(args.out) / 'scores.parquet'}: {len(table)} rows ({splits}), ensemble of {len(runs)} runs")
    print("ensemble confusion (nats) per split:")
    print(table.groupby("split")["confusion"].describe().to_string())
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from lightning_difficulty.runs.compare import evaluate_predictions
    from lightning_difficulty.storage.outputs import OutputFolder

    run = _run_dir(args.run, name="RUN")
    logdir = OutputFolder.claim(args.logdir, command="evaluate", option="--logdir") if args.logdir else None
    predictions = _load_predictions(args.predictions)
    table = evaluate_predictions(run, predictions, split=args.split, num_bands=args.bands, source=args.predictions)
    is_band = table["band"].str.isdigit()
    if logdir is not None:
        from torch.utils.tensorboard import SummaryWriter

        from lightning_difficulty.views.figures import accuracy_by_band_comparison_figure

        logdir.prepare()
        with SummaryWriter(str(logdir.path)) as writer:
            writer.add_figure(
                "difficulty/error_by_confusion_band", accuracy_by_band_comparison_figure({args.name: table[is_band]})
            )
        logdir.commit()  # an earlier evaluate's figure is replaced, not added to
    if args.json:
        print(json.dumps(table.to_dict("records"), indent=2))
        return 0
    print(
        f"{args.name} on split {args.split!r} of {run}: {int(table[is_band]['count'].sum())} samples "
        f"(row i of {args.predictions} = dataset index i); {args.bands} equal-width bands of the run's confusion "
        "(nats, higher = harder)"
    )
    print(table.to_string(index=False, na_rep="", float_format=lambda v: f"{v:.4f}"))
    return 0


def _load_predictions(path: str) -> Any:
    """The PREDICTIONS array; a missing, unreadable or non-.npy file is refused naming it and the fix."""
    import numpy as np

    fix = "Save the model's classes (N,) or logits (N, C) with numpy.save(PATH, array)."
    try:
        loaded = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"PREDICTIONS {path} does not exist. {fix}") from None
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"Could not read PREDICTIONS {path} as a .npy array of numbers ({err}). {fix}") from None
    if not isinstance(loaded, np.ndarray):
        loaded.close()
        raise ValueError(f"PREDICTIONS {path} is an .npz archive, not one array. {fix}")
    return loaded


def build_parser() -> argparse.ArgumentParser:
    """The ``lightning-difficulty`` argument parser (every option has its help)."""
    parser = argparse.ArgumentParser(
        prog="lightning-difficulty", description=DESCRIPTION, formatter_class=_TopHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")
    defaults = _HelpFormatter

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
    compare.add_argument(
        "run_a", metavar="RUN_A", help="difficulty folder of run A (holds scores.parquet), or the run folder above it"
    )
    compare.add_argument("run_b", metavar="RUN_B", help="difficulty folder of run B, or the run folder above it")
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
    combine.add_argument(
        "runs", nargs="+", metavar="RUN", help="difficulty folders of the runs (hold records/), or the run folders"
    )
    combine.add_argument(
        "-o",
        "--out",
        required=True,
        help="output folder: new, empty, or an earlier combine output (replaced); never a run's folder",
    )
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
    evaluate.add_argument(
        "run", metavar="RUN", help="reference run's difficulty folder (holds scores.parquet), or the run folder"
    )
    evaluate.add_argument(
        "predictions",
        metavar="PREDICTIONS",
        help=".npy with the model's classes (N,) or logits (N, C); row i = dataset index i of SPLIT",
    )
    evaluate.add_argument("--split", default="val", help="split the predictions belong to")
    evaluate.add_argument("--bands", type=_bands, default=10, help="number of equal-width confusion bands (>= 2)")
    evaluate.add_argument(
        "--logdir",
        help="also write a TensorBoard figure to this log folder: new, empty, or an earlier evaluate's (replaced)",
    )
    evaluate.add_argument("--name", default="model", help="the model's name in the printout and the figure")
    evaluate.add_argument("--json", action="store_true", help="print the table as JSON records")
    evaluate.set_defaults(func=_evaluate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status: 2 for a usage or data error, with a one-line message that
    names the file and the fix; 1 for an unexpected failure (a bug), also without a traceback unless
    ``LIGHTNING_DIFFICULTY_TRACEBACK=1``; 130 when interrupted.

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
    except (ValueError, OSError) as err:  # the package's refusals: bad data, bad folders, missing files
        print(f"lightning-difficulty {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lightning-difficulty {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # a bug: one line for the user, the traceback on request
        if os.environ.get("LIGHTNING_DIFFICULTY_TRACEBACK") == "1":
            raise
        print(
            f"lightning-difficulty {args.command}: internal error: {type(err).__name__}: {err}. This is a bug in "
            "lightning-difficulty: please report it with the command you ran (LIGHTNING_DIFFICULTY_TRACEBACK=1 "
            "shows the traceback).",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
