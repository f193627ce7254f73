"""Table-level analyses the report derives from the per-sample columns (no Lightning, no TensorBoard).

Each function takes the table of one split (a DataFrame) and returns new columns or a summary.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from lightning_difficulty.functional.bands import threshold_bands
from lightning_difficulty.functional.errors import (
    OovScorer,
    classify_errors,
    cooccurrence_rates,
    error_category_summary,
    load_superclass_map,
    valid_labels_from_counts,
)
from lightning_difficulty.functional.human import perspective_correlations
from lightning_difficulty.functional.taxonomy import TaxonomyThresholds, assign_patterns, pattern_summary
from lightning_difficulty.storage.manifest import GroupsManifest, HardSubsetManifest

PERSPECTIVES = ("confusion", "prediction_depth", "kdn", "human_difficulty")


def correlations(rows: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Spearman and Kendall correlations of human difficulty with every other perspective present."""
    others = [c for c in PERSPECTIVES[:-1] if c in rows]
    table = {c: rows[c].to_numpy(dtype=float) for c in [*others, "human_difficulty"]}
    return perspective_correlations(table, reference="human_difficulty", others=others)


def model_perspective(rows: pd.DataFrame) -> str | None:
    """Prediction depth when present, else confusion (DifficultyEyes' model perspective)."""
    for name in ("prediction_depth", "confusion"):
        if name in rows and rows[name].notna().all():
            return name
    return None


def difficulty_patterns(rows: pd.DataFrame, thresholds: TaxonomyThresholds) -> np.ndarray | None:
    """DifficultyEyes Table 1 ids for a split that has human, data and model perspectives, else None."""
    model = model_perspective(rows)
    needed = ("human_difficulty", "kdn", "correct")
    if model is None or any(c not in rows or rows[c].isna().any() for c in needed):
        return None
    return assign_patterns(
        rows["human_difficulty"].to_numpy(float),
        rows["kdn"].to_numpy(float),
        rows[model].to_numpy(float),
        rows["correct"].to_numpy(bool),
        thresholds=thresholds,
        model_perspective=model,  # type: ignore[arg-type]
    )


def pattern_report(rows: pd.DataFrame) -> dict[str, Any]:
    """Counts and shares (of samples and of errors) per pattern id."""
    return pattern_summary(rows["pattern"].to_numpy(str), rows["correct"].to_numpy(bool))


@dataclass(frozen=True)
class ErrorTaxonomy:
    """Options for the error taxonomy (Peychev et al. 2023), applied by :class:`DifficultyReport`.

    Args:
        superclasses: class -> superclass map (dict or JSON path); ``"cifar10"`` for the shipped map.
        min_share: with annotator counts (HumanAlignment), a class chosen by at least this share of
            annotators is a valid label.
        cooccurrence: ``(C, C)`` co-occurrence counts, rates or booleans; by default derived as rates
            ``P(b valid | a valid)`` from the annotators' valid labels when they exist.
        cooccurrence_threshold: a pair is "common" at or above this value (default 0.05 for rates).
        non_prototypical: dataset indices of non-prototypical samples of the split.
        oov_scorer: optional open-world scorer ``(indices, predictions) -> bool`` (off by default).

    Example::

        DifficultyReport(error_taxonomy=ErrorTaxonomy(superclasses="cifar10"))
    """

    superclasses: Mapping[Any, Any] | str | os.PathLike[str] | None = None
    min_share: float = 0.1
    cooccurrence: ArrayLike | None = None
    cooccurrence_threshold: float = 0.05
    non_prototypical: ArrayLike | None = None
    oov_scorer: OovScorer | None = None

    def superclass_ids(self, num_classes: int) -> np.ndarray | None:
        if self.superclasses is None:
            return None
        if isinstance(self.superclasses, str) and self.superclasses == "cifar10":
            from lightning_difficulty.functional.errors import cifar10_superclasses

            return cifar10_superclasses()[0]
        return load_superclass_map(self.superclasses, num_classes=num_classes)[0]


def error_categories(rows: pd.DataFrame, config: ErrorTaxonomy, counts: np.ndarray | None) -> np.ndarray:
    """One ``error_category`` per row (``"correct"`` for correct samples)."""
    labels = rows["label"].to_numpy(np.int64)
    num_classes = int(max(labels.max(), rows["prediction"].max())) + 1 if counts is None else counts.shape[1]
    valid = valid_labels_from_counts(counts, labels, min_share=config.min_share) if counts is not None else None
    cooccurrence = config.cooccurrence
    if cooccurrence is None and valid is not None:
        cooccurrence = cooccurrence_rates(valid)
    return classify_errors(
        labels,
        rows["prediction"].to_numpy(np.int64),
        valid_labels=valid,
        superclass=config.superclass_ids(num_classes),
        oov_scorer=config.oov_scorer,
        cooccurrence=cooccurrence,
        cooccurrence_threshold=config.cooccurrence_threshold,
        non_prototypical=config.non_prototypical,
    )


def error_report(rows: pd.DataFrame, *, band_column: str | None = None) -> dict[str, Any]:
    """Category counts and shares, overall and per confusion band / pattern when present."""
    categories = rows["error_category"].to_numpy(str)
    out: dict[str, Any] = {"overall": error_category_summary(categories)}
    for name in (band_column, "pattern"):
        if name and name in rows:
            out[f"by_{name}"] = error_category_summary(categories, by=rows[name].astype(str).to_numpy())
    return out


@dataclass(frozen=True)
class HardSubsetSpec:
    """Which samples form the hard benchmark: the top ``fraction`` (or ``top_k``) by ``score`` in each split.

    The manifest (``hard_subset.json``) is written for ``split``.
    """

    fraction: float | None = 0.1
    top_k: int | None = None
    split: str = "val"
    score: str = "confusion"


@dataclass(frozen=True)
class GroupSpec:
    """GroupDRO groups from confusion bands: ``num_bands`` quantile bands or fixed ``thresholds`` (nats).

    Edges are fitted on ``split`` (the training data, which GroupDRO retrains on) and applied to every
    split. Albiero et al. split ImageNet at 5 nats: ``GroupSpec(thresholds=(5.0,))``.
    """

    num_bands: int | None = 2
    thresholds: tuple[float, ...] | None = None
    split: str = "train"
    score: str = "confusion"


def _finite_scores(rows: pd.DataFrame, score: str) -> np.ndarray | None:
    scores = rows[score].to_numpy(float) if score in rows else None
    return scores if scores is not None and np.isfinite(scores).all() else None


def hard_column(rows: pd.DataFrame, spec: HardSubsetSpec) -> HardSubsetManifest | None:
    """Mark ``rows["hard"]`` and return the split's manifest (``None`` without finite scores)."""
    scores = _finite_scores(rows, spec.score)
    if scores is None:
        return None
    manifest = HardSubsetManifest.from_scores(
        scores,
        split=str(rows["split"].iloc[0]),
        score=spec.score,
        fraction=spec.fraction if spec.top_k is None else None,
        top_k=spec.top_k,
        labels=rows["label"].to_numpy(np.int64),
    )
    hard = np.zeros(len(rows), dtype=bool)
    hard[np.asarray(manifest.indices)] = True
    rows["hard"] = hard
    return manifest


def group_manifest(rows: pd.DataFrame, spec: GroupSpec) -> GroupsManifest | None:
    """Fit the band edges on one split (``None`` without finite scores)."""
    scores = _finite_scores(rows, spec.score)
    if scores is None:
        return None
    return GroupsManifest.from_scores(
        scores,
        split=str(rows["split"].iloc[0]),
        score=spec.score,
        num_bands=spec.num_bands if spec.thresholds is None else None,
        thresholds=spec.thresholds,
        labels=rows["label"].to_numpy(np.int64),
    )


def group_column(rows: pd.DataFrame, manifest: GroupsManifest) -> np.ndarray:
    """Band id of every row with the manifest's edges (-1 where the score is missing)."""
    scores = rows[manifest.score].to_numpy(float)
    groups = np.full(len(rows), -1, dtype=np.int64)
    seen = np.isfinite(scores)
    groups[seen] = threshold_bands(scores[seen], thresholds=manifest.edges)
    return groups
