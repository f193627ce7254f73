"""Transfer across models: compare two runs' difficulty scores, and evaluate any model per confusion band."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import kendalltau, spearmanr

from lightning_difficulty.functional.bands import band_error_correlation
from lightning_difficulty.functional.errors import error_category_summary
from lightning_difficulty.storage.table import read_scores


@dataclass(frozen=True)
class RunComparison:
    """Agreement of two runs' scores on the samples both scored."""

    split: str
    score: str
    n: int
    spearman: float
    kendall: float
    hard_overlap: float | None
    hard_jaccard: float | None
    runs: list[dict[str, Any]]


def compare_runs(
    run_a: str | Path, run_b: str | Path, *, split: str = "val", score: str = "confusion"
) -> RunComparison:
    """Spearman / Kendall tau between two runs' scores and the overlap of their hard subsets.

    ``hard_overlap`` is the share of run A's hard samples that are also hard in run B; ``runs`` lists
    each run's accuracy and, when present, its error-category shares (Peychev et al.: better models
    make fewer model failures).

    Example::

        result = compare_runs("runs/small/difficulty", "runs/large/difficulty")
        print(result.kendall)
    """
    tables = [_split_rows(read_scores(run), split, run) for run in (run_a, run_b)]
    _check_same_samples(tables, (run_a, run_b), split)
    for table, run in zip(tables, (run_a, run_b), strict=True):
        if score not in table:
            raise ValueError(f"Run {run} has no column {score!r}; available: {sorted(table.columns)}.")
    merged = tables[0][["index", score]].merge(tables[1][["index", score]], on="index", suffixes=("_a", "_b"))
    merged = merged.dropna()
    if len(merged) < 2:
        raise ValueError(f"The runs share {len(merged)} scored samples of split {split!r}; need at least 2.")
    a, b = merged[f"{score}_a"].to_numpy(), merged[f"{score}_b"].to_numpy()
    overlap = jaccard = None
    if all("hard" in t for t in tables):
        hard_a = set(tables[0].loc[tables[0]["hard"], "index"])
        hard_b = set(tables[1].loc[tables[1]["hard"], "index"])
        overlap = len(hard_a & hard_b) / max(len(hard_a), 1)
        jaccard = len(hard_a & hard_b) / max(len(hard_a | hard_b), 1)
    return RunComparison(
        split=split,
        score=score,
        n=len(merged),
        spearman=float(spearmanr(a, b).statistic),
        kendall=float(kendalltau(a, b).statistic),
        hard_overlap=overlap,
        hard_jaccard=jaccard,
        runs=[_run_profile(t, run) for t, run in zip(tables, (run_a, run_b), strict=True)],
    )


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
    run_dir: str | Path, predictions: np.ndarray, *, split: str = "val", num_bands: int = 10
) -> pd.DataFrame:
    """Any model's error per confusion band and on the hard subset of a reference run (Albiero Fig. 4).

    Args:
        run_dir: the reference run (its ``scores.parquet`` gives labels, confusion and ``hard``).
        predictions: the model's predicted classes ``(N,)`` or logits ``(N, C)`` for ``split``, row i =
            dataset index i.
        split: the split the predictions belong to.
        num_bands: equal-width confusion bands.

    Returns:
        One row per band plus ``"hard subset"`` and ``"all"`` rows: ``band``, ``mean_score``, ``count``,
        ``error_rate`` (NaN for an empty band).

    Example::

        table = evaluate_predictions("runs/demo/difficulty", big_model_logits, split="val")
    """
    rows = _split_rows(read_scores(run_dir), split, run_dir).sort_values("index")
    pred = np.asarray(predictions)
    pred = pred.argmax(axis=1) if pred.ndim == 2 else pred
    if pred.shape != (len(rows),):
        raise ValueError(
            f"Expected `predictions` for the {len(rows)} samples of split {split!r} (row i = dataset index i), "
            f"but got shape {np.asarray(predictions).shape}."
        )
    correct = pred == rows["label"].to_numpy()
    scores = rows["confusion"].to_numpy(float)
    by_band = band_error_correlation(scores, correct, num_bands=num_bands, binning="width")
    out = pd.DataFrame(
        {
            "band": [str(b) for b in range(num_bands)],
            "mean_score": by_band.mean_score,
            "count": by_band.table.count,
            "error_rate": by_band.table.error,
        }
    )
    subsets = [("all", np.ones(len(rows), dtype=bool))]
    if "hard" in rows:
        subsets.insert(0, ("hard subset", rows["hard"].to_numpy(bool)))
    summary = pd.DataFrame(
        {
            "band": [name for name, _ in subsets],
            "mean_score": [float(scores[m].mean()) for _, m in subsets],
            "count": [int(m.sum()) for _, m in subsets],
            "error_rate": [float(1 - correct[m].mean()) for _, m in subsets],
        }
    )
    return pd.concat([out, summary], ignore_index=True)


def comparison_json(result: RunComparison) -> str:
    return json.dumps(result.__dict__, indent=2)
