"""Transfer across models: compare two runs' difficulty scores, and evaluate any model per confusion band."""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import kendalltau, spearmanr

from lightning_difficulty.functional.bands import band_error_correlation, select_hard
from lightning_difficulty.functional.errors import error_category_summary
from lightning_difficulty.storage.table import read_scores

SCORE_COLUMNS = ("confusion", "prediction_depth", "kdn", "human_difficulty", "human_entropy", "human_disagreement")
"""Columns that :func:`compare_runs` can rank (one score per sample, higher = harder), besides the patterns below."""
SCORE_PATTERNS = (r"kdn:.+", r"confusion_run\d+")
DEFAULT_HARD_FRACTION = 0.1
"""Share of each run's scored samples that :func:`compare_runs` takes as hard when ``hard`` does not apply."""


def is_score_column(name: str) -> bool:
    """Whether a ``scores.parquet`` column is a difficulty score (higher = harder) that :func:`compare_runs` can rank.

    Example::

        >>> is_score_column("kdn:block1"), is_score_column("label")
        (True, False)
    """
    return name in SCORE_COLUMNS or any(re.fullmatch(pattern, name) for pattern in SCORE_PATTERNS)


@dataclass(frozen=True)
class RunComparison:
    """Agreement of two runs' scores on the samples both scored.

    ``hard_overlap``: share of run A's hard samples that are also hard in run B; ``hard_jaccard``: size of
    the intersection over the union; ``hard_rule``: how each run's hard subset was chosen.
    """

    split: str
    score: str
    n: int
    spearman: float
    kendall: float
    hard_overlap: float
    hard_jaccard: float
    hard_rule: str
    runs: list[dict[str, Any]]


def compare_runs(
    run_a: str | Path,
    run_b: str | Path,
    *,
    split: str = "val",
    score: str = "confusion",
    hard_fraction: float | None = None,
) -> RunComparison:
    """Spearman / Kendall tau between two runs' scores and the overlap of their hard subsets.

    Each run's hard subset is its own ``hard`` column (top confusion, as the report chose it) when
    ``score`` is ``"confusion"``, both runs have that column and ``hard_fraction`` is not given;
    otherwise it is the top ``hard_fraction`` (default :data:`DEFAULT_HARD_FRACTION`) of the run's
    scored samples by ``score``, ties broken by the smaller dataset index. ``runs`` lists each run's
    accuracy and, when present, its error-category shares (Peychev et al.: better models make fewer
    model failures).

    Args:
        run_a: difficulty folder of run A (holds ``scores.parquet``).
        run_b: difficulty folder of run B, made on the same samples.
        split: the split to compare.
        score: a difficulty score column both runs hold (:func:`is_score_column`; higher = harder).
        hard_fraction: share in (0, 1] of each run's scored samples taken as its hard subset, by ``score``.

    Raises:
        ValueError: the runs hold other samples, ``score`` is not a score both hold, or ``hard_fraction``
            is outside (0, 1].

    Example::

        result = compare_runs("runs/small/difficulty", "runs/large/difficulty", score="kdn", hard_fraction=0.2)
        print(result.kendall, result.hard_overlap, result.hard_rule)
    """
    if hard_fraction is not None and (
        isinstance(hard_fraction, bool) or not isinstance(hard_fraction, (int, float)) or not 0 < hard_fraction <= 1
    ):
        raise ValueError(f"Expected argument `hard_fraction` to be in (0, 1] or None, but got {hard_fraction!r}.")
    tables = [_split_rows(read_scores(run), split, run) for run in (run_a, run_b)]
    _check_same_samples(tables, (run_a, run_b), split)
    _check_score_column(tables, score)
    merged = tables[0][["index", score]].merge(tables[1][["index", score]], on="index", suffixes=("_a", "_b"))
    merged = merged.dropna()
    if len(merged) < 2:
        raise ValueError(f"The runs share {len(merged)} scored samples of split {split!r}; need at least 2.")
    a, b = merged[f"{score}_a"].to_numpy(float), merged[f"{score}_b"].to_numpy(float)
    (hard_a, hard_b), rule = _hard_sets(tables, score, hard_fraction)
    return RunComparison(
        split=split,
        score=score,
        n=len(merged),
        spearman=float(spearmanr(a, b).statistic),
        kendall=float(kendalltau(a, b).statistic),
        hard_overlap=len(hard_a & hard_b) / max(len(hard_a), 1),
        hard_jaccard=len(hard_a & hard_b) / max(len(hard_a | hard_b), 1),
        hard_rule=rule,
        runs=[_run_profile(t, run) for t, run in zip(tables, (run_a, run_b), strict=True)],
    )


def _check_score_column(tables: list[pd.DataFrame], score: str) -> None:
    valid = sorted(c for c in set(tables[0].columns) & set(tables[1].columns) if is_score_column(c))
    if score not in valid:
        raise ValueError(
            f"Argument `score` / --score {score!r} is not a difficulty score held by both runs. Choose one of "
            f"{valid} (one score per sample, higher = harder)."
        )


def _hard_sets(
    tables: list[pd.DataFrame], score: str, hard_fraction: float | None
) -> tuple[tuple[set[int], set[int]], str]:
    """Each run's hard dataset indices and the rule that chose them (see :func:`compare_runs`)."""
    if hard_fraction is None and score == "confusion" and all("hard" in t for t in tables):
        hard = [set(t.loc[t["hard"].fillna(False).to_numpy(bool), "index"].tolist()) for t in tables]
        return (hard[0], hard[1]), "each run's hard column, top confusion"
    fraction = DEFAULT_HARD_FRACTION if hard_fraction is None else float(hard_fraction)
    top = [_top_fraction(t, score, fraction) for t in tables]
    return (top[0], top[1]), f"top {fraction * 100:g}% by {score} in each run, ties by index"


def _top_fraction(rows: pd.DataFrame, score: str, fraction: float) -> set[int]:
    """The top ``fraction`` of a run's scored rows by ``score`` (ties by the smaller index), as dataset indices."""
    scored = rows[rows[score].notna()].sort_values("index")
    if scored.empty:
        return set()
    chosen = select_hard(scored[score].to_numpy(float), fraction=fraction).indices
    return set(scored["index"].to_numpy()[chosen].tolist())


def _check_same_samples(tables: list[pd.DataFrame], runs: tuple[str | Path, str | Path], split: str) -> None:
    """Refuse runs whose split holds other samples (index i must be the same image in both)."""
    a, b = (t.sort_values("index")[["index", "label"]].to_numpy() for t in tables)
    if a.shape != b.shape or not (a == b).all():
        raise ValueError(
            f"Runs {runs[0]} and {runs[1]} have different samples in split {split!r} ({len(a)} vs {len(b)} rows, "
            "or other labels at the same index): their scores cannot be compared sample by sample. Compare runs "
            "made on the same dataset (same subset and order)."
        )


def _split_rows(table: pd.DataFrame, split: str, run: str | Path) -> pd.DataFrame:
    rows = table[table["split"] == split]
    if rows.empty:
        raise ValueError(f"Run {run} has no rows for split {split!r}; splits: {sorted(table['split'].unique())}.")
    return rows


def _run_profile(rows: pd.DataFrame, run: str | Path) -> dict[str, Any]:
    profile: dict[str, Any] = {"run": str(run)}
    if "correct" in rows:
        profile["accuracy"] = float(rows["correct"].mean())
    if "error_category" in rows:
        summary = error_category_summary(rows["error_category"].to_numpy(str))
        profile["error_shares"] = {cat: float(v["error_share"]) for cat, v in summary.items() if cat != "correct"}
    return profile


def evaluate_predictions(
    run_dir: str | Path,
    predictions: np.ndarray,
    *,
    split: str = "val",
    num_bands: int = 10,
    source: str | os.PathLike[str] | None = None,
) -> pd.DataFrame:
    """Any model's error per confusion band and on the hard subset of a reference run (Albiero Fig. 4).

    The bands are ``num_bands`` equal-width bands over ``[min, max]`` of the run's confusion on
    ``split`` (samples never scored are left out of the bands but counted in ``"all"``).

    Args:
        run_dir: the reference run (its ``scores.parquet`` gives labels, confusion and ``hard``).
        predictions: the model's predicted classes ``(N,)`` or logits ``(N, C)`` for ``split``, row i =
            dataset index i; classes must lie in ``[0, C)``, ``C`` being the reference run's class count
            (:func:`reference_class_count`).
        split: the split the predictions belong to.
        num_bands: equal-width confusion bands.
        source: where ``predictions`` came from (e.g. the ``.npy`` file), named in error messages.

    Returns:
        One row per band plus ``"hard subset"`` and ``"all"`` rows: ``band``, ``confusion_low`` and
        ``confusion_high`` (the band's edges in nats; NaN for the other rows), ``mean_score``, ``count``,
        ``error_rate`` (NaN for an empty band).

    Raises:
        ValueError: ``predictions`` has the wrong shape, non-integer classes, classes outside ``[0, C)``,
            logits of another width than ``C`` or rows of logits that are not all finite (a diverged model).

    Example::

        table = evaluate_predictions("runs/demo/difficulty", big_model_logits, split="val")
    """
    table = read_scores(run_dir)
    rows = _split_rows(table, split, run_dir).sort_values("index")
    num_classes, reference = reference_class_count(run_dir, table)
    where = "argument `predictions`" if source is None else f"`predictions` ({source})"
    pred = _predicted_classes(predictions, len(rows), split, num_classes, reference, where)
    correct = pred == rows["label"].to_numpy()
    scores = rows["confusion"].to_numpy(float)
    scored = np.isfinite(scores)
    if not scored.any():
        raise ValueError(f"Run {run_dir} has no scored sample (finite confusion) in split {split!r}.")
    edges = np.linspace(scores[scored].min(), scores[scored].max(), num_bands + 1)
    by_band = band_error_correlation(scores[scored], correct[scored], num_bands=num_bands, edges=edges[1:-1])
    out = pd.DataFrame(
        {
            "band": [str(b) for b in range(num_bands)],
            "confusion_low": edges[:-1],
            "confusion_high": edges[1:],
            "mean_score": by_band.mean_score,
            "count": by_band.table.count,
            "error_rate": by_band.table.error,
        }
    )
    subsets = [("all", np.ones(len(rows), dtype=bool))]
    if "hard" in rows:
        subsets.insert(0, ("hard subset", rows["hard"].fillna(False).to_numpy(bool)))
    summary = pd.DataFrame(
        {
            "band": [name for name, _ in subsets],
            "confusion_low": np.nan,
            "confusion_high": np.nan,
            "mean_score": [_mean(scores[m & scored]) for _, m in subsets],
            "count": [int(m.sum()) for _, m in subsets],
            "error_rate": [_mean(~correct[m]) for _, m in subsets],
        }
    )
    return pd.concat([out, summary], ignore_index=True)


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else float("nan")


def reference_class_count(run_dir: str | Path, table: pd.DataFrame) -> tuple[int, str]:
    """``(C, where C came from)``: the number of classes of a run.

    Read from the run's ``columns.json`` (the ``confusion`` column ranges over ``[0, log C]`` nats) when
    it is there; otherwise the largest label or prediction of its table, plus one.

    Example::

        num_classes, source = reference_class_count("runs/demo/difficulty", read_scores("runs/demo/difficulty"))
    """
    folder = Path(run_dir) if Path(run_dir).is_dir() else Path(run_dir).parent
    try:
        payload = json.loads((folder / "columns.json").read_text(encoding="utf-8"))
        high = payload["columns"]["confusion"]["range"][1]
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        high = None
    if isinstance(high, (int, float)) and not isinstance(high, bool) and high > 0:
        return round(math.exp(high)), f"columns.json: `confusion` ranges over [0, log C] = [0, {high:.4f}] nats"
    columns = [c for c in ("label", "prediction") if c in table]
    largest = int(max(table[c].max() for c in columns))
    return largest + 1, f"the largest {' or '.join(columns)} in its scores.parquet, plus one (no columns.json)"


def _predicted_classes(
    predictions: Any, n: int, split: str, num_classes: int, source: str, where: str = "argument `predictions`"
) -> np.ndarray:
    """``(n,)`` int64 classes in ``[0, num_classes)`` from classes ``(n,)`` or logits ``(n, num_classes)``.

    ``source`` says where ``num_classes`` came from; ``where`` names the predictions in messages.
    """
    pred = np.asarray(predictions)
    if pred.ndim not in (1, 2) or pred.shape[0] != n:
        raise ValueError(
            f"Expected {where} for the {n} samples of split {split!r} (row i = dataset index i), "
            f"but got shape {pred.shape}."
        )
    fix = (
        f"Pass the model's predicted classes in the reference run's class order, or its ({n}, {num_classes}) "
        "logits; a model trained on other classes cannot be scored against this run."
    )
    if pred.ndim == 2:
        if pred.shape[1] != num_classes:
            raise ValueError(
                f"Expected {where} as logits to have one column per class of the reference run "
                f"({num_classes}; {source}), but got {pred.shape[1]} columns. {fix}"
            )
        if pred.dtype.kind not in "iubf":
            raise ValueError(f"Expected {where} as logits to hold numbers, but got dtype {pred.dtype}.")
        broken = ~np.isfinite(pred).all(axis=1)
        if broken.any():
            raise ValueError(
                f"Expected {where} as logits to be finite, but {int(broken.sum())} of {n} rows hold NaN or infinite "
                f"values (the first is row {int(np.argmax(broken))}): the model diverged or its export failed, and "
                "argmax would score those rows as class 0. Export the logits of a model that trained without "
                "diverging."
            )
        return pred.argmax(axis=1).astype(np.int64)
    if pred.dtype.kind == "f" and not np.all(np.isfinite(pred) & (pred == np.round(pred))):
        bad = pred[~(np.isfinite(pred) & (pred == np.round(pred)))][0]
        raise ValueError(
            f"Expected {where} (N,) to hold class indices, but got the non-integer value {bad}. "
            f"Probabilities or scores must be passed as ({n}, {num_classes}) logits or probabilities."
        )
    if pred.dtype.kind not in "iubf":
        raise ValueError(f"Expected {where} to hold class indices, but got dtype {pred.dtype}.")
    classes = pred.astype(np.int64)
    outside = (classes < 0) | (classes >= num_classes)
    if outside.any():
        raise ValueError(
            f"Expected {where} to hold classes in [0, {num_classes - 1}] (the reference run has "
            f"{num_classes} classes; {source}), but got {int(outside.sum())} of {n} outside it (values from "
            f"{int(classes.min())} to {int(classes.max())}). {fix}"
        )
    return classes


def comparison_json(result: RunComparison) -> str:
    """The comparison as indented JSON (every field of :class:`RunComparison`)."""
    return json.dumps(result.__dict__, indent=2)
