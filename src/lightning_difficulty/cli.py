"""Command line: ``lightning-difficulty demo | compare | combine | evaluate``. Owns nothing but arguments."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def _demo(args: argparse.Namespace) -> int:
    from lightning_difficulty.demo.run import format_summary, run_demo

    result = run_demo(args.out, epochs=args.epochs, seed=args.seed, progress=not args.no_progress)
    print(format_summary(result))
    return 0


def _compare(args: argparse.Namespace) -> int:
    from lightning_difficulty.runs.compare import compare_runs, comparison_json

    result = compare_runs(args.run_a, args.run_b, split=args.split, score=args.score)
    if args.json:
        print(comparison_json(result))
        return 0
    print(f"split {result.split!r}, score {result.score!r}, {result.n} samples scored by both runs")
    print(f"  Spearman rho {result.spearman:.4f}   Kendall tau {result.kendall:.4f}")
    if result.hard_overlap is not None:
        print(f"  hard subsets: {result.hard_overlap:.1%} of A's are hard in B (Jaccard {result.hard_jaccard:.3f})")
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
    print(f"Wrote {args.out}/scores.parquet: {len(table)} rows, ensemble of {len(args.runs)} runs")
    print(table.groupby("split")["confusion"].describe().to_string())
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from lightning_difficulty.runs.compare import evaluate_predictions

    table = evaluate_predictions(args.run, np.load(args.predictions), split=args.split, num_bands=args.bands)
    if args.logdir:
        from torch.utils.tensorboard import SummaryWriter

        from lightning_difficulty.views.figures import accuracy_by_band_comparison_figure

        bands = table[table["band"].str.isdigit()]
        with SummaryWriter(args.logdir) as writer:
            writer.add_figure(
                "difficulty/error_by_confusion_band", accuracy_by_band_comparison_figure({args.name: bands})
            )
    print(table.to_string(index=False) if not args.json else json.dumps(table.to_dict("records"), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lightning-difficulty", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="train a small CNN on the bundled digits and report difficulty")
    demo.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    demo.add_argument("--epochs", type=int, default=30)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    demo.set_defaults(func=_demo)

    compare = commands.add_parser("compare", help="agreement of two runs' scores (Spearman, Kendall, hard overlap)")
    compare.add_argument("run_a", help="difficulty folder of run A (with scores.parquet)")
    compare.add_argument("run_b", help="difficulty folder of run B")
    compare.add_argument("--split", default="val")
    compare.add_argument("--score", default="confusion")
    compare.add_argument("--json", action="store_true")
    compare.set_defaults(func=_compare)

    combine = commands.add_parser("combine", help="ensemble confusion score of several seeds (Eq. 1-3)")
    combine.add_argument("runs", nargs="+", help="difficulty folders of the runs (with records/)")
    combine.add_argument("-o", "--out", required=True, help="output folder")
    combine.add_argument("--split", default=None, help="only this split (default: every split)")
    combine.set_defaults(func=_combine)

    evaluate = commands.add_parser("evaluate", help="any model's error per confusion band and on the hard subset")
    evaluate.add_argument("run", help="reference run's difficulty folder")
    evaluate.add_argument("predictions", help=".npy with the model's classes (N,) or logits (N, C)")
    evaluate.add_argument("--split", default="val")
    evaluate.add_argument("--bands", type=int, default=10)
    evaluate.add_argument("--logdir", help="also write a TensorBoard figure here")
    evaluate.add_argument("--name", default="model", help="model name in the figure")
    evaluate.add_argument("--json", action="store_true")
    evaluate.set_defaults(func=_evaluate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, FileNotFoundError) as err:
        print(f"lightning-difficulty {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
