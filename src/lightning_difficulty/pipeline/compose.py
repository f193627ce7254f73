"""Compose the callbacks' contributions into one table, and summarise a split (no Lightning, no files)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from lightning.pytorch.utilities import rank_zero_warn
from scipy.special import softmax
from scipy.stats import spearmanr

from lightning_difficulty.functional.bands import band_error_correlation
from lightning_difficulty.functional.dynamics import self_confidence_score
from lightning_difficulty.pipeline import analysis
from lightning_difficulty.pipeline.capture import ROW_BLOCK, FitEndArrays
from lightning_difficulty.pipeline.contribution import ColumnInfo, Contribution
from lightning_difficulty.storage.table import build_table

if TYPE_CHECKING:
    from lightning_difficulty.callbacks.base import DifficultyCallback


BASE_COLUMNS: dict[str, ColumnInfo] = {
    "split": ColumnInfo("'train' (the k-NN reference), 'val', 'val_1', ...: the dataloader the sample came from"),
    "index": ColumnInfo("dataset index: position of the sample in its split's dataset"),
    "label": ColumnInfo("dataset label (-1: no label)"),
    "prediction": ColumnInfo("the final model's prediction (eval mode, fit end)"),
    "correct": ColumnInfo("prediction == label"),
    "label_issue_score": ColumnInfo(
        "1 - p(label) of the final model in eval mode (self-confidence, cleanlab's convention): how likely the "
        "label is wrong",
        range=(0.0, 1.0),
        higher_is_harder=True,
        perspective=True,
    ),
    "confusion_band": ColumnInfo(
        "equal-width band of `confusion`, edges fitted on the training split and shared by every split "
        "(summary.json: confusion_bands); -1 = not scored",
        unit="band",
        higher_is_harder=True,
    ),
    "hard": ColumnInfo("in the hard subset: top share by `confusion` of the split's scored samples"),
    "group": ColumnInfo("GroupDRO group: confusion band with edges from groups.json; -1 = not scored", unit="band"),
    "pattern": ColumnInfo("DifficultyEyes Table 1 pattern id (1a ... 6) from human x data x model x correct"),
    "error_category": ColumnInfo("error taxonomy (Peychev et al. 2023): 'correct' or the first category that applies"),
}


def compose_table(
    arrays: FitEndArrays,
    contributions: Mapping[str, tuple[DifficultyCallback, Contribution]],
    skipped: list[str],
) -> tuple[pd.DataFrame, dict[str, ColumnInfo], Contribution]:
    """``(table, column info, shared inputs)``: the pass's labels and predictions plus every callback's columns.

    Callbacks that produce one column for disjoint splits fill it together (e.g. human annotations of the
    training and the validation split). A column that two callbacks produce for the same split is kept from
    the first; the later callback's copies are renamed ``<Class>#<n>:<column>`` (``n`` counts instances of
    that class) and a warning names both.
    """
    columns: dict[str, dict[str, np.ndarray]] = {}
    for split, data in arrays.splits.items():
        labels = np.asarray(data.labels)
        predictions = data.predictions
        columns[split] = {
            "label": labels,
            "prediction": predictions,
            "correct": predictions == labels,
            "label_issue_score": _self_confidence_issue(data.logits, labels),
        }
    info: dict[str, ColumnInfo] = {}
    owners: dict[tuple[str, str], str] = {}  # (split, column) -> the callback that produced it
    seen_classes: dict[str, int] = {}
    shared = Contribution()
    sizes = {split: len(cols["label"]) for split, cols in columns.items()}
    keyed_by_training = _training_label_agreement(columns, contributions, skipped)
    for key, (cb, part) in contributions.items():
        wrong = {s: len(next(iter(c.values()))) for s, c in part.columns.items() if c and s in sizes}
        wrong = {s: n for s, n in wrong.items() if n != sizes[s]}
        if wrong:
            reason = f"{key}: its columns have {wrong} rows but the fit-end pass has {sizes}"
            skipped.append(reason)
            rank_zero_warn(f"DifficultyReport skipped {reason}.")
            continue
        name = type(cb).__name__
        seen_classes[name] = seen_classes.get(name, 0) + 1
        prefix = ""
        produced = {(split, c) for split, cols in part.columns.items() for c in cols if c != "label"}
        clash = sorted(produced & owners.keys())
        if clash:
            prefix = f"{name}#{seen_classes[name]}:"
            first = owners[clash[0]]
            rank_zero_warn(
                f"{key} produces the columns {sorted({c for _, c in clash})} of split {clash[0][0]!r} that {first} "
                f"already produced: its columns are prefixed {prefix!r}."
            )
            skipped.append(f"column names of {key}: prefixed {prefix!r} (clash with {first})")
        for split, cols in part.columns.items():
            target = columns.setdefault(split, {})
            for column, values in cols.items():
                if column == "label":
                    target.setdefault("label", values)
                    continue
                target[prefix + column] = values
                owners.setdefault((split, prefix + column), key)
        info.update({prefix + column: meta for column, meta in part.info.items()})
        shared.annotation_counts.update(part.annotation_counts)
        if shared.neighbours is None and part.neighbours is not None:
            shared.neighbours, shared.probe_names, shared.embeddings = (
                part.neighbours,
                part.probe_names,
                part.embeddings,
            )
    for split, labels in keyed_by_training.items():  # the pass read the split in another order: keep no row of it
        n = len(labels)
        for column in [c for c in columns[split] if c not in ("label", *_training_columns(contributions, split))]:
            values = columns[split][column]
            columns[split][column] = np.full(n, -1 if values.dtype.kind in "iu" else np.nan)
        columns[split]["label"] = labels
    return build_table(columns), info, shared


def _training_columns(contributions: Mapping[str, tuple[DifficultyCallback, Contribution]], split: str) -> list[str]:
    """Columns of ``split`` from measures read during training (those that report the labels they saw)."""
    return [
        c for _, part in contributions.values() if "label" in part.columns.get(split, {}) for c in part.columns[split]
    ]


def _training_label_agreement(
    columns: dict[str, dict[str, np.ndarray]],
    contributions: Mapping[str, tuple[DifficultyCallback, Contribution]],
    skipped: list[str],
) -> dict[str, np.ndarray]:
    """Splits whose fit-end pass labels disagree with the labels the training loop saw at the same index (a
    ``reference_dataloader`` in another order): ``split -> the training loop's labels``."""
    out: dict[str, np.ndarray] = {}
    for key, (_, part) in contributions.items():
        for split, cols in part.columns.items():
            seen, passed = cols.get("label"), columns.get(split, {}).get("label")
            if seen is None or passed is None or split in out or len(seen) != len(passed):
                continue
            both = (np.asarray(seen) >= 0) & (passed >= 0)
            differ = int((np.asarray(seen)[both] != passed[both]).sum())
            if differ:
                reason = (
                    f"the fit-end pass of split {split!r}: at {differ} of {int(both.sum())} indices its label differs "
                    f"from the label {key} saw during training, so the pass read the split in another order (a "
                    "`reference_dataloader` must hold the training samples in the same order). Its columns of "
                    "that split are left empty; the training-time columns are kept"
                )
                skipped.append(reason)
                rank_zero_warn(f"DifficultyReport skipped {reason}.")
                out[split] = np.asarray(seen)
    return out


def _self_confidence_issue(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """:func:`~lightning_difficulty.functional.dynamics.self_confidence_score` of the labelled rows; NaN elsewhere."""
    out = np.full(len(labels), np.nan)
    for start in range(0, len(labels), ROW_BLOCK):  # (N, C) logits may not fit in memory at once
        block, rows = np.asarray(logits[start : start + ROW_BLOCK], dtype=np.float64), labels[start : start + ROW_BLOCK]
        known = (rows >= 0) & (rows < block.shape[1])
        out[start : start + len(rows)][known] = self_confidence_score(softmax(block[known], axis=1), rows[known])
    return out


def summarise_split(
    rows: pd.DataFrame, perspectives: Sequence[str], num_bands: int, band_edges: Sequence[float] | None
) -> dict[str, Any]:
    """Accuracy, labelled confusion quartiles, error rate per confusion band, correlations, patterns, errors."""
    entry: dict[str, Any] = {"num_samples": len(rows)}
    labelled = rows["label"].to_numpy() >= 0 if "label" in rows else np.ones(len(rows), dtype=bool)
    if not labelled.all():
        entry["num_labelled"] = int(labelled.sum())
    if "correct" in rows:  # over the labelled rows: an unlabelled sample is neither right nor wrong
        entry["accuracy"] = float(rows["correct"].to_numpy(bool)[labelled].mean()) if labelled.any() else None
    if "confusion" in rows:
        confusion = rows["confusion"].to_numpy(float)
        seen = np.isfinite(confusion)
        entry["num_scored"] = int(seen.sum())
        if seen.sum() > 1:
            q25, q50, q75 = np.quantile(confusion[seen], [0.25, 0.5, 0.75]).tolist()
            entry["confusion_quartiles"] = {"q25": q25, "median": q50, "q75": q75}
            if "correct" in rows:
                scored = seen & labelled
                entry["error_by_confusion_band"] = band_summary(
                    confusion[scored], rows["correct"].to_numpy(bool)[scored], num_bands, band_edges
                )
    if "human_difficulty" in rows and rows["human_difficulty"].notna().any():
        entry["human_correlations"] = analysis.correlations(rows, perspectives)
    pairs = score_correlations(rows, perspectives)
    if pairs:
        entry["score_correlations"] = pairs
    if "pattern" in rows and rows["pattern"].notna().all():
        entry["patterns"] = analysis.pattern_report(rows)
        entry["model_perspective"] = analysis.model_perspective(rows)
    if "error_category" in rows and rows["error_category"].notna().all():
        entry["error_categories"] = analysis.error_report(rows, band_column="confusion_band")
    return entry


def score_correlations(rows: pd.DataFrame, scores: Sequence[str]) -> dict[str, dict[str, float]]:
    """Spearman rho of every pair of the scores present, over the rows where both are finite.

    ``{"a|b": {"spearman": rho, "n": rows}}``; a pair with fewer than 3 rows or a constant score is left out.
    """
    present = [c for c in scores if c in rows and pd.api.types.is_numeric_dtype(rows[c])]
    out: dict[str, dict[str, float]] = {}
    for i, a in enumerate(present):
        for b in present[i + 1 :]:
            x, y = rows[a].to_numpy(float), rows[b].to_numpy(float)
            both = np.isfinite(x) & np.isfinite(y)
            if both.sum() < 3 or np.ptp(x[both]) == 0 or np.ptp(y[both]) == 0:
                continue
            out[f"{a}|{b}"] = {"spearman": float(spearmanr(x[both], y[both]).statistic), "n": int(both.sum())}
    return out


def band_summary(
    confusion: np.ndarray, correct: np.ndarray, num_bands: int, edges: Sequence[float] | None
) -> dict[str, Any]:
    """Error rate per confusion band with Pearson rho; ``pearson_rho_note`` says why rho is null or weak."""
    result = band_error_correlation(confusion, correct, num_bands=num_bands, edges=edges)
    lows = np.concatenate([[min(confusion.min(), result.edges[0] if result.edges.size else np.inf)], result.edges])
    highs = np.concatenate([result.edges, [max(confusion.max(), result.edges[-1] if result.edges.size else -np.inf)]])
    bands = [
        {
            "band": b,
            "low": float(lows[b]),
            "high": float(highs[b]),
            "mean_score": float(result.mean_score[b]),
            "count": int(result.table.count[b]),
            "error_rate": float(result.table.error[b]),
        }
        for b in range(num_bands)
    ]
    out: dict[str, Any] = {"pearson_rho": float(result.rho), "edges": result.edges.tolist(), "bands": bands}
    errors = int((~correct).sum())
    if not np.isfinite(result.rho):
        out["pearson_rho_note"] = (
            "undefined: no errors in this split" if errors == 0 else "undefined: fewer than two non-empty bands"
        )
    elif errors < 5:
        out["pearson_rho_note"] = f"computed from only {errors} errors: not meaningful"
    return out
