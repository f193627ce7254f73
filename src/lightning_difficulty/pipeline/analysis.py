"""Table-level analyses the report derives from the per-sample columns (no Lightning, no TensorBoard).

Each function takes the table of one split (a DataFrame) and returns new columns or a summary.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from lightning_difficulty.functional.bands import select_hard, threshold_bands
from lightning_difficulty.functional.errors import (
    OovScorer,
    classify_errors,
    cooccurrence_rates,
    error_category_summary,
    load_superclass_map,
    valid_labels_from_counts,
)
from lightning_difficulty.functional.human import perspective_correlations
from lightning_difficulty.functional.taxonomy import (
    TaxonomyThresholds,
    binarise_perspectives,
    difficulty_pattern,
    pattern_summary,
)
from lightning_difficulty.storage.manifest import GroupsManifest, HardSubsetManifest, label_fingerprint


def correlations(rows: pd.DataFrame, perspectives: Sequence[str]) -> dict[str, dict[str, float]]:
    """Spearman and Kendall correlations of human difficulty with every other perspective present.

    Rows where either score is missing (NaN) are left out of each pair.
    """
    others = [c for c in perspectives if c in rows and c != "human_difficulty"]
    table = {c: rows[c].to_numpy(dtype=float) for c in [*others, "human_difficulty"]}
    return perspective_correlations(table, reference="human_difficulty", others=others)


def model_perspective(rows: pd.DataFrame) -> str | None:
    """Prediction depth when present, else confusion (DifficultyEyes' model perspective)."""
    for name in ("prediction_depth", "confusion"):
        if name in rows and rows[name].notna().all():
            return name
    return None


def difficulty_patterns(rows: pd.DataFrame, thresholds: TaxonomyThresholds) -> Patterns | None:
    """DifficultyEyes Table 1 ids for a split that has human, data and model perspectives, else None.

    ``Patterns.degenerate`` names each perspective whose threshold marks no sample (or every sample) high:
    half of Table 1 is then empty, e.g. a ``"q0.8"`` prediction-depth threshold when more than 20 % of the
    samples never settle (the quantile is the largest depth, and nothing is strictly above it).
    """
    model = model_perspective(rows)
    needed = ("human_difficulty", "kdn", "correct")
    if model is None or any(c not in rows or rows[c].isna().any() for c in needed):
        return None
    flags = binarise_perspectives(
        rows["human_difficulty"].to_numpy(float),
        rows["kdn"].to_numpy(float),
        rows[model].to_numpy(float),
        thresholds=thresholds,
        model_perspective=model,  # type: ignore[arg-type]
    )
    high = {"human": flags.human_high, "data": flags.data_high, model: flags.model_high}
    cuts = {"human": flags.human_threshold, "data": flags.data_threshold, model: flags.model_threshold}
    degenerate = [
        f"{name} > {cuts[name]:g} marks {'no' if not values.any() else 'every'} sample high"
        for name, values in high.items()
        if values.all() or not values.any()
    ]
    ids = difficulty_pattern(flags.human_high, flags.data_high, flags.model_high, rows["correct"].to_numpy(bool))
    return Patterns(ids, degenerate)


@dataclass(frozen=True)
class Patterns:
    """Pattern ids of a split, and the perspectives whose threshold split nothing (see :func:`difficulty_patterns`)."""

    ids: np.ndarray
    degenerate: list[str]


def pattern_blocker(rows: pd.DataFrame) -> str:
    """Why :func:`difficulty_patterns` gives no pattern for these rows (for the warning)."""
    needed = {"human_difficulty": "HumanAlignment", "kdn": "DataDifficulty", "correct": "the fit-end pass"}
    missing = [f"{c} ({owner})" for c, owner in needed.items() if c not in rows]
    if model_perspective(rows) is None:
        missing.append("prediction_depth (PredictionDepth) or a complete confusion (ConfusionScore)")
    if missing:
        return "needs " + ", ".join(missing)
    partial = [c for c in needed if rows[c].isna().any()]
    return f"some samples lack {partial}"


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

            ids = cifar10_superclasses()[0]
            if num_classes != len(ids):
                raise ValueError(
                    f"Invalid value for ErrorTaxonomy(superclasses='cifar10'): the shipped map covers {len(ids)} "
                    f"classes but the model has {num_classes}. Pass a map of your classes (dict or JSON path)."
                )
            return ids
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


def hard_column(rows: pd.DataFrame, spec: HardSubsetSpec) -> tuple[np.ndarray, HardSubsetManifest | None]:
    """``(hard (N,) bool, manifest)`` of one split; rows are dataset indices ``0..N-1``.

    Only scored rows (finite ``spec.score``) can be hard; the fraction is of the scored rows. Without any
    scored row: all False and no manifest.
    """
    hard = np.zeros(len(rows), dtype=bool)
    if spec.score not in rows:
        return hard, None
    scores = rows[spec.score].to_numpy(float)
    scored = np.flatnonzero(np.isfinite(scores))
    if scored.size == 0:
        return hard, None
    top_k = None if spec.top_k is None else min(spec.top_k, scored.size)
    selection = select_hard(scores[scored], fraction=spec.fraction if top_k is None else None, top_k=top_k)
    chosen = np.sort(scored[selection.indices])
    hard[chosen] = True
    labels = rows["label"].to_numpy(np.int64)
    manifest = HardSubsetManifest(
        split=str(rows["split"].iloc[0]),
        indices=tuple(chosen.tolist()),
        score=spec.score,
        threshold=selection.threshold,
        dataset_size=len(rows),
        fraction=spec.fraction if top_k is None else None,
        top_k=top_k,
        label_fingerprint=label_fingerprint(labels) if (labels >= 0).all() else None,
    )
    return hard, manifest


def group_manifest(rows: pd.DataFrame, spec: GroupSpec) -> GroupsManifest | None:
    """Fit the band edges on the scored rows of one split (``None`` without scored rows)."""
    if spec.score not in rows:
        return None
    scores = rows[spec.score].to_numpy(float)
    scored = np.isfinite(scores)
    if not scored.any():
        return None
    labels = rows["label"].to_numpy(np.int64)
    return GroupsManifest.from_scores(
        scores[scored],
        split=str(rows["split"].iloc[0]),
        score=spec.score,
        num_bands=spec.num_bands if spec.thresholds is None else None,
        thresholds=spec.thresholds,
        labels=labels if scored.all() and (labels >= 0).all() else None,
    )


def group_column(rows: pd.DataFrame, manifest: GroupsManifest) -> np.ndarray:
    """Band id of every row with the manifest's edges (-1 where the score is missing)."""
    if manifest.score not in rows:
        return np.full(len(rows), -1, dtype=np.int64)
    scores = rows[manifest.score].to_numpy(float)
    groups = np.full(len(rows), -1, dtype=np.int64)
    seen = np.isfinite(scores)
    if seen.any():  # a split that no run scored keeps -1 everywhere
        groups[seen] = threshold_bands(scores[seen], thresholds=manifest.edges)
    return groups


def confusion_band_edges(table: pd.DataFrame, num_bands: int, *, fitted_on: str = "train") -> tuple[np.ndarray, str]:
    """Equal-width band edges of ``confusion`` fitted on one split (``fitted_on`` if scored, else the first
    scored split), so band ``b`` is the same range of nats in every split. Returns ``(edges, split)``."""
    scored = table[np.isfinite(table["confusion"].to_numpy(float))]
    splits = list(dict.fromkeys(scored["split"]))
    split = fitted_on if fitted_on in splits else splits[0]
    values = scored.loc[scored["split"] == split, "confusion"].to_numpy(float)
    return np.linspace(values.min(), values.max(), num_bands + 1)[1:-1], split


def band_column(scores: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Band id per sample for ``edges`` (-1 where the score is missing)."""
    bands = np.full(len(scores), -1, dtype=np.int64)
    seen = np.isfinite(scores)
    bands[seen] = np.searchsorted(edges, scores[seen], side="right")
    return bands
