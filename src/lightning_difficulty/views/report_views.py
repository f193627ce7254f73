"""Log the report's views to TensorBoard: the report owns files and views, the scores arrive ready."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from lightning_difficulty.pipeline.contribution import Neighbours
from lightning_difficulty.views import figures
from lightning_difficulty.views.images import hardest_easiest_grid_figure, neighbour_strip_figure, to_display_images
from lightning_difficulty.views.projector import write_projector

ImageFetcher = Callable[[str, Sequence[int]], torch.Tensor]
"""``(split, dataset indices) -> stacked inputs``; ``None`` where the inputs are not images."""


MAX_GRID_CLASSES = 20
"""Rows (classes) of the hardest/easiest grid; with more classes the grid shows the most confused ones."""
MAX_FLOW_CLASSES = 20
"""Class nodes of the difficulty flow; with more classes the least predicted ones share an "other" node."""


@dataclass
class ViewOptions:
    """How the views look: class names, grid sizes, the projector's split and sample cap."""

    class_names: list[str]
    grid_per_class: int = 4
    projector_split: str = "val"
    projector_max_samples: int = 4000
    instances_per_pattern: int = 1
    neighbours: int = 5


@dataclass
class ViewContext:
    """Everything a view may draw from: the finished table and summary, and the shared fit-end inputs."""

    writer: Any
    log_dir: str
    table: pd.DataFrame
    summary: dict[str, Any]
    step: int
    options: ViewOptions
    images: ImageFetcher | None = None
    neighbours: Neighbours | None = None
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)
    perspectives: tuple[str, ...] = ()


def log_report_views(ctx: ViewContext) -> None:
    """The report's own views of every split, and the projector of ``options.projector_split``."""
    for split, rows in ctx.table.groupby("split", sort=False):
        summary = ctx.summary["splits"][str(split)]
        log_split_views(ctx.writer, str(split), rows, summary, ctx.step, ctx.options, ctx.images, ctx.perspectives)
    split = ctx.options.projector_split
    if split in ctx.embeddings:
        rows = ctx.table[ctx.table["split"] == split]
        write_projection(ctx.log_dir, rows, ctx.embeddings[split], ctx.step, ctx.options, ctx.images)


def log_depth_views(ctx: ViewContext, *, probes: list[str]) -> None:
    """Prediction-depth figures of every split, and the instance views where images and neighbours exist."""
    for split, rows in ctx.table.groupby("split", sort=False):
        if "prediction_depth" not in rows:
            continue
        scored = rows[rows["prediction_depth"].notna()]  # train_queries may score a sample of the rows
        if scored.empty:
            continue
        log_split_depth_views(ctx.writer, str(split), scored, probes, ctx.step, ctx.options)
        if ctx.images is not None and ctx.neighbours is not None:
            train_labels = ctx.table.loc[ctx.table["split"] == "train", "label"].to_numpy()
            found = ctx.neighbours[str(split)]
            log_instance_views(ctx.writer, str(split), rows, found, train_labels, ctx.step, ctx.options, ctx.images)


def log_split_views(
    writer: Any,
    split: str,
    rows: pd.DataFrame,
    summary: dict[str, Any],
    step: int,
    options: ViewOptions,
    fetch: ImageFetcher | None,
    perspectives: tuple[str, ...] = (),
) -> None:
    """Every per-split figure the table supports (columns decide which)."""
    band = summary.get("error_by_confusion_band")
    if band is not None:
        fig = figures.error_rate_by_band_figure(pd.DataFrame(band["bands"]), rho=band["pearson_rho"], split=split)
        writer.add_figure(f"difficulty/error_rate_by_confusion_band/{split}", fig, step)
    if "correct" in rows:
        fig = figures.confusion_matrix_figure(
            rows["label"].to_numpy(), rows["prediction"].to_numpy(), class_names=options.class_names
        )
        writer.add_figure(f"difficulty/confusion_matrix/{split}", fig, step)
    present = {c: rows[c].to_numpy(float) for c in eyes_perspectives(perspectives, rows)}
    if len(present) >= 2 and "correct" in rows:
        fig = figures.perspective_heatmaps_figure(present, rows["correct"].to_numpy(bool))
        writer.add_figure(f"difficulty/perspectives/{split}", fig, step)
    if "confusion" in rows and options.grid_per_class > 0 and fetch is not None:
        _log_grid(writer, split, rows, step, options, fetch)
    if "human_correlations" in summary:
        table = [{"perspective": k, **v} for k, v in summary["human_correlations"].items()]
        columns = ["perspective", "spearman", "spearman_p", "kendall", "kendall_p", "n"]
        writer.add_text(f"difficulty/human_correlations/{split}", figures.dict_table_markdown(table, columns), step)
    if "error_categories" in summary:
        overall = summary["error_categories"]["overall"]
        table = [{"category": k, **v} for k, v in overall.items()]
        columns = ["category", "count", "share", "error_share"]
        writer.add_text(f"difficulty/error_categories/{split}", figures.dict_table_markdown(table, columns), step)
    if "pattern" in rows and "patterns" in summary:
        writer.add_text(f"difficulty/patterns/{split}", figures.pattern_table_markdown(summary["patterns"]), step)
    if "error_category" in rows:
        for group in ("confusion_band", "pattern"):
            if group in rows:
                wrong = rows[rows["error_category"] != "correct"]
                fig = figures.category_shares_figure(
                    wrong["error_category"], wrong[group].astype(str), group_name=group
                )
                writer.add_figure(f"difficulty/error_categories_by_{group}/{split}", fig, step)


EYES = (("prediction_depth", "confusion"), ("kdn", "kdn:input"), ("human_difficulty",))
"""DifficultyEyes' model, data and human perspectives: the first column of each present is the one shown."""


def eyes_perspectives(perspectives: Sequence[str], rows: pd.DataFrame) -> list[str]:
    """The perspectives figure's columns: one per DifficultyEyes perspective, topped up to two from the others (every
    pair of every perspective column grows as its square: 8 columns would be 28 rows of heatmaps).

    Example::

        >>> rows = pd.DataFrame({"confusion": [0.1], "kdn": [0.2], "aum": [1.0], "prediction_depth": [2]})
        >>> eyes_perspectives(["confusion", "kdn", "aum", "prediction_depth"], rows)
        ['prediction_depth', 'kdn']
    """
    present = [c for c in perspectives if c in rows and rows[c].notna().all()]
    chosen = [hit for names in EYES if (hit := next((c for c in names if c in present), None)) is not None]
    chosen += [c for c in present if c not in chosen][: max(0, 2 - len(chosen))]
    return chosen


def log_split_depth_views(
    writer: Any, split: str, rows: pd.DataFrame, probes: list[str], step: int, options: ViewOptions
) -> None:
    """Prediction-depth histogram, accuracy vs depth, per-probe accuracy and the difficulty flow."""
    depth = rows["prediction_depth"].to_numpy().astype(np.int64)  # scored rows only: whole numbers
    num_probes = len(probes)
    writer.add_figure(
        f"difficulty/prediction_depth/{split}",
        figures.prediction_depth_histogram_figure(depth, num_probes=num_probes, split=split),
        step,
    )
    writer.add_histogram(
        f"difficulty/prediction_depth_hist/{split}", depth, step, bins=np.arange(-0.5, num_probes + 1.5)
    )
    correct = rows["correct"].to_numpy(bool)
    writer.add_figure(
        f"difficulty/accuracy_by_depth/{split}",
        figures.accuracy_by_depth_figure(depth, correct, num_probes=num_probes),
        step,
    )
    votes = np.stack([rows[f"knn:{p}"].to_numpy() for p in probes]).astype(np.int64)
    labels, final = rows["label"].to_numpy(), rows["prediction"].to_numpy()
    accuracies = {
        "probe vs label": (votes == labels).mean(axis=1),
        "probe vs final prediction": (votes == final).mean(axis=1),
    }
    writer.add_figure(f"difficulty/probe_accuracy/{split}", figures.probe_accuracy_figure(probes, accuracies), step)
    names = list(options.class_names)
    if len(names) > MAX_FLOW_CLASSES:  # the flow counts grow with classes cubed: group the rare ones
        votes, final, labels, names = _group_rare_classes(votes, final, labels, names, MAX_FLOW_CLASSES - 1)
    fig = figures.difficulty_flow_figure(votes, final, labels, depth, layer_names=probes, class_names=names)
    writer.add_figure(f"difficulty/difficulty_flow/{split}", fig, step)


def _group_rare_classes(
    votes: np.ndarray, final: np.ndarray, labels: np.ndarray, names: list[str], keep: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """The ``keep`` classes the model predicts most stay (renumbered); every other class becomes "other".
    Equal classes stay equal, so a sample's settled probes still agree with its final prediction.

    Example::

        >>> v, f, y, n = _group_rare_classes(np.array([[5, 2]]), np.array([5, 5]), np.array([5, 1]), list("abcdef"), 1)
        >>> v.tolist(), f.tolist(), y.tolist(), n
        ([[0, 1]], [0, 0], [0, 1], ['f', 'other'])
    """
    kept = np.argsort(-np.bincount(final, minlength=len(names)), kind="stable")[:keep]
    mapping = np.full(len(names), keep, dtype=np.int64)
    mapping[kept] = np.arange(keep)
    return mapping[votes], mapping[final], mapping[labels], [names[c] for c in kept] + ["other"]


def _log_grid(
    writer: Any, split: str, rows: pd.DataFrame, step: int, options: ViewOptions, fetch: ImageFetcher
) -> None:
    scored = rows[rows["confusion"].notna()]
    names = list(options.class_names)
    labels = scored["label"]
    if len(names) > MAX_GRID_CLASSES:  # one row per class: keep the most confused classes (ImageNet has 1,000)
        shown = sorted(scored.groupby("label")["confusion"].mean().nlargest(MAX_GRID_CLASSES).index)
        scored = scored[scored["label"].isin(shown)]
        labels = scored["label"].map({c: row for row, c in enumerate(shown)})
        names = [f"{names[c]} (#{c})" for c in shown]
    chosen = []
    for _, group in scored.assign(row=labels).groupby("row"):
        ordered = group.sort_values("confusion")
        chosen += [ordered.head(options.grid_per_class), ordered.tail(options.grid_per_class)]
    picked = pd.concat(chosen).drop_duplicates("index")
    fig = hardest_easiest_grid_figure(
        fetch(split, picked["index"].tolist()),
        picked["confusion"].to_numpy(),
        picked["row"].to_numpy(),
        class_names=names,
        per_class=options.grid_per_class,
        indices=picked["index"].to_numpy(),
    )
    writer.add_figure(f"difficulty/hardest_easiest/{split}", fig, step)


def write_projection(
    log_dir: str,
    rows: pd.DataFrame,
    embeddings: np.ndarray,
    step: int,
    options: ViewOptions,
    fetch: ImageFetcher | None,
) -> None:
    """Projector embedding of the query split with every per-sample column as metadata and sprites."""
    keep = rows["index"].to_numpy()
    if len(keep) > options.projector_max_samples:
        keep = np.sort(np.random.default_rng(0).choice(keep, options.projector_max_samples, replace=False))
    selected = rows.set_index("index").loc[keep]
    metadata: dict[str, np.ndarray] = {"index": keep}
    for column in selected.columns:  # every column of the table: colour or filter by any of them
        values = selected[column].to_numpy()
        metadata[column] = np.round(values, 3) if values.dtype.kind == "f" else values
    for column in ("label", "prediction"):
        if column in metadata:
            metadata[f"{column}_name"] = np.asarray(options.class_names)[metadata[column]]
    images = None if fetch is None else to_display_images(fetch(options.projector_split, keep.tolist()))
    write_projector(
        log_dir,
        f"difficulty/{options.projector_split}",
        np.asarray(embeddings)[keep],
        metadata,
        images=images,
        global_step=step,
    )


def log_instance_views(
    writer: Any,
    split: str,
    rows: pd.DataFrame,
    neighbours: dict[str, tuple[np.ndarray, np.ndarray]],
    train_labels: np.ndarray,
    step: int,
    options: ViewOptions,
    fetch: ImageFetcher,
) -> None:
    """For the most telling samples of each pattern: the sample and its nearest training neighbours per probe.

    ``neighbours``: ``probe -> (distances (N, k), training ids (N, k))`` of the split, row i = dataset index i.
    """
    picks = _interesting_samples(rows, options.instances_per_pattern)
    if not picks:
        return
    chosen = np.asarray([i for _, i in picks])
    found = {
        probe: (d[chosen, : options.neighbours], i[chosen, : options.neighbours])
        for probe, (d, i) in neighbours.items()
    }
    names = options.class_names
    for position, (pattern, index) in enumerate(picks):
        row = rows[rows["index"] == index].iloc[0]
        strips = []
        for probe, (dist, ids) in found.items():
            images = fetch("train", ids[position].tolist())
            strips.append(
                (
                    probe,
                    [
                        (images[j], f"{names[train_labels[t]]} d={dist[position, j]:.2f}")
                        for j, t in enumerate(ids[position])
                    ],
                )
            )
        label, prediction = int(row["label"]), int(row["prediction"])
        caption = f"#{index} pattern {pattern}: label {names[label]}, pred {names[prediction]}"
        fig = neighbour_strip_figure(fetch(split, [index])[0], caption, strips)
        writer.add_figure(f"difficulty/instances/{split}/pattern_{pattern}", fig, step)


def _interesting_samples(rows: pd.DataFrame, per_pattern: int) -> list[tuple[str, int]]:
    if "pattern" not in rows or per_pattern <= 0:
        return []
    score = "prediction_depth" if "prediction_depth" in rows else "confusion"
    picks = []
    for pattern, group in rows.groupby("pattern"):
        for index in group.nlargest(per_pattern, score)["index"]:
            picks.append((str(pattern), int(index)))
    return picks
