"""Figures and markdown tables for the difficulty report.

Every function takes arrays that were computed elsewhere (scores, prediction depths, band tables,
error categories) and returns a :class:`matplotlib.figure.Figure` (or a markdown string); none
computes a difficulty score. Counting and averaging that a picture needs (histograms, the nodes of
the difficulty flow) happens here. Figures are built without pyplot, so no global backend is set;
render them with :func:`lightning_difficulty.views.images.figure_to_image` or ``fig.savefig``.

Score convention throughout: one score per sample; higher = harder.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

import numpy as np
import numpy.typing as npt
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.collections import PatchCollection
from matplotlib.colors import LogNorm, Normalize, to_rgba_array
from matplotlib.figure import Figure
from matplotlib.patches import Patch, PathPatch, Rectangle
from matplotlib.path import Path as MplPath
from matplotlib.ticker import MaxNLocator

from lightning_difficulty.views.style import LABEL, NOTE, TICK, readable

if TYPE_CHECKING:
    import pandas as pd

BandTable: TypeAlias = "Mapping[str, npt.ArrayLike] | pd.DataFrame"
"""A pandas DataFrame or a dict of equal-length arrays with columns band, mean_score, count, error_rate."""

_BAND_COLUMNS = ("band", "mean_score", "count", "error_rate")
_BAR_COLOUR = "#4c72b0"
_SETTLED_CORRECT_COLOUR = "#b0b0b0"
_SETTLED_WRONG_COLOUR = "#505050"

_PATTERN_MEANINGS = {
    "1a": "clean, representative, easy",
    "1b": "learned features misaligned with the task, or a spurious pattern",
    "2a": "generalises through task-aligned low-level patterns",
    "2b": "misleading raw-feature similarity (e.g. background)",
    "3a": "subtle high-level patterns; noise or outliers handled",
    "3b": "robustness broken by noise, outliers or non-standard features",
    "4a": "generalises with high-level features",
    "4b": "too little training on complex features, or too little capacity",
    "5a": "lucky guess or overfitting",
    "5b": "likely irreducible error",
    "6": "ambiguous to humans but representative in the data",
}


# ----------------------------------------------------------------------------- validation helpers
def _vector(name: str, values: npt.ArrayLike, *, length: int | None = None) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"Expected argument `{name}` to be a 1-D array, but got shape {array.shape}.")
    if length is not None and array.shape[0] != length:
        raise ValueError(
            f"Expected argument `{name}` to have {length} entries (one per sample), but got {array.shape[0]}."
        )
    return array


def _integers(name: str, array: np.ndarray, *, low: int, high: int) -> np.ndarray:
    """Check that ``array`` holds whole numbers in ``[low, high]`` and return it as int64."""
    if array.size == 0:
        return array.astype(np.int64)
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"Expected argument `{name}` to hold integers, but got dtype {array.dtype}.")
    if not np.all(np.isfinite(array)) or not np.all(np.mod(array, 1) == 0):
        raise ValueError(f"Expected argument `{name}` to hold whole numbers, but it holds fractions or NaN.")
    if array.min() < low or array.max() > high:
        raise ValueError(
            f"Expected argument `{name}` to lie in [{low}, {high}], but got values in [{array.min()}, {array.max()}]."
        )
    return array.astype(np.int64)


def _booleans(name: str, values: npt.ArrayLike, *, length: int) -> np.ndarray:
    array = _vector(name, values, length=length)
    if array.dtype != np.bool_ and not np.all(np.isin(array, (0, 1))):
        raise ValueError(f"Expected argument `{name}` to hold booleans (or 0/1), but got other values.")
    return array.astype(bool)


def _class_count(num_classes: int | None, *arrays: np.ndarray) -> int:
    if num_classes is not None:
        return num_classes
    return int(max((int(a.max()) for a in arrays if a.size), default=0)) + 1


def _class_colours(num_classes: int) -> np.ndarray:
    """One RGBA colour per class: tab10 up to 10 classes, tab20 up to 20, turbo beyond."""
    if num_classes <= 10:
        return np.asarray(colormaps["tab10"](np.arange(num_classes)))
    if num_classes <= 20:
        return np.asarray(colormaps["tab20"](np.arange(num_classes)))
    return np.asarray(colormaps["turbo"](np.linspace(0.05, 0.95, num_classes)))


def _band_columns(table: BandTable, name: str) -> dict[str, np.ndarray]:
    missing = [column for column in _BAND_COLUMNS if column not in table]
    if missing:
        raise ValueError(
            f"Expected argument `{name}` to have columns {list(_BAND_COLUMNS)}, but {missing} are missing."
        )
    band = np.asarray(table["band"])
    columns = {"band": band.astype(str)}
    for column in _BAND_COLUMNS[1:]:
        columns[column] = _vector(f"{name}['{column}']", table[column], length=band.shape[0]).astype(float)
    error = columns["error_rate"][np.isfinite(columns["error_rate"])]
    if error.size and (error.min() < 0.0 or error.max() > 1.0):
        raise ValueError(
            f"Expected `{name}['error_rate']` to hold fractions in [0, 1], but got values in"
            f" [{error.min()}, {error.max()}]. Divide percentages by 100."
        )
    return columns


def _new_figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _annotate_counts(ax: Axes, positions: np.ndarray, heights: np.ndarray, counts: np.ndarray) -> None:
    for x, height, count in zip(positions, heights, counts, strict=True):
        ax.annotate(
            f"n={int(count)}",
            (float(x), float(height)),
            xytext=(0, 2),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=NOTE,
        )


def _format_rho(rho: float | None) -> str:
    return "n/a" if rho is None or not math.isfinite(rho) else f"{rho:.3f}"


# ----------------------------------------------------------------------------- confusion bands
MIN_ERRORS_FOR_RHO = 3
"""Below this many errors, a band/error correlation is shown with a caveat: a few errors decide it."""


def _band_labels(table: BandTable, columns: dict[str, np.ndarray]) -> tuple[list[str], str]:
    """Tick labels (edges ``low-high`` when the table has them, else band and mean score) and the axis label."""
    count = columns["count"]
    if "low" in table and "high" in table:
        low = _vector("band_table['low']", table["low"], length=count.shape[0]).astype(float)
        high = _vector("band_table['high']", table["high"], length=count.shape[0]).astype(float)
        return [f"{a:.2f}\n-{b:.2f}" for a, b in zip(low, high, strict=True)], "confusion band (nats)"
    labels = [
        f"{band}\n{score:.2f}" if n > 0 and math.isfinite(score) else f"{band}\nempty"
        for band, score, n in zip(columns["band"], columns["mean_score"], count, strict=True)
    ]
    return labels, "confusion band (mean, nats)"


@readable
def error_rate_by_band_figure(band_table: BandTable, *, rho: float | None, split: str) -> Figure:
    """Top-1 error per confusion band, in the manner of Albiero et al. (Fig. 2, right).

    One bar per band (in the table's order) with the band's edges (columns ``low`` and ``high``,
    when the table has them) or its name and mean confusion score under it, and its sample count
    above the bar; an empty band says "empty" and has no bar. The title carries the Pearson
    correlation between the score and the error, computed by the caller; when fewer than
    :data:`MIN_ERRORS_FOR_RHO` samples are wrong, a note says that rho rests on that few errors.

    Args:
        band_table: DataFrame or dict with columns ``band``, ``mean_score``, ``count`` and
            ``error_rate`` (a fraction in [0, 1]; NaN for an empty band), optionally ``low`` and
            ``high`` (band edges, nats).
        rho: Pearson's rho between band score and error (``None`` or NaN shows "n/a").
        split: name of the split, e.g. ``"train"`` or ``"val"``.

    Example::

        >>> table = {"band": ["low", "high"], "mean_score": [0.1, 1.5], "count": [90, 10],
        ...          "error_rate": [0.05, 0.6]}
        >>> error_rate_by_band_figure(table, rho=0.98, split="val").axes[0].get_title().endswith("0.980")
        True
    """
    columns = _band_columns(band_table, "band_table")
    positions = np.arange(columns["band"].shape[0])
    error = 100.0 * np.nan_to_num(columns["error_rate"], nan=0.0)
    fig = _new_figure(max(6.0, 0.8 * positions.size + 2.0), 4.5)
    ax = fig.add_subplot()
    ax.bar(positions, error, color=_BAR_COLOUR)
    _annotate_counts(ax, positions, error, columns["count"])
    labels, axis_label = _band_labels(band_table, columns)
    ax.set_xticks(positions, labels=labels, fontsize=NOTE)
    ax.set_ylim(0.0, 112.0)
    ax.set_xlabel(axis_label)
    ax.set_ylabel("top-1 error (%)")
    ax.set_title(f"Error by confusion band ({split}), $\\rho$ = {_format_rho(rho)}")
    errors = round(float(np.nansum(columns["count"] * columns["error_rate"])))
    if rho is not None and math.isfinite(rho) and errors < MIN_ERRORS_FOR_RHO:
        note = f"rho rests on {errors} error{'s' if errors != 1 else ''} only"
        ax.text(0.02, 0.97, note, transform=ax.transAxes, ha="left", va="top", fontsize=LABEL, color="#b2182b")
    return fig


@readable
def accuracy_by_band_comparison_figure(tables: Mapping[str, BandTable]) -> Figure:
    """Top-1 error of several models per confusion band and on the hardest band (Albiero et al., Fig. 4).

    Left: error (%) against the band's mean confusion score, one line per model. Right: each
    model's overall error (count-weighted over bands) next to its error on the table's last
    non-empty row, taken as the hardest band (pass a two-band table to compare on a hard subset).

    Args:
        tables: model name -> band table with columns ``band``, ``mean_score``, ``count``,
            ``error_rate`` (fraction in [0, 1]).

    Example::

        >>> t = {"band": ["easy", "hard"], "mean_score": [0.2, 2.0], "count": [8, 2],
        ...      "error_rate": [0.1, 0.5]}
        >>> len(accuracy_by_band_comparison_figure({"small": t, "large": t}).axes)
        2
    """
    if len(tables) == 0:
        raise ValueError("Expected argument `tables` to hold at least one model's band table, but got none.")
    fig = _new_figure(11.0, 4.5)
    lines, bars = fig.subplots(1, 2, width_ratios=[3, 2])
    colours = _class_colours(len(tables))
    overall, hardest = [], []
    for colour, (model, table) in zip(colours, tables.items(), strict=True):
        columns = _band_columns(table, f"tables['{model}']")
        known = np.isfinite(columns["error_rate"]) & np.isfinite(columns["mean_score"])
        lines.plot(
            columns["mean_score"][known],
            100.0 * columns["error_rate"][known],
            "o-",
            color=colour,
            label=model,
        )
        weights = np.where(known, columns["count"], 0.0)
        total = weights.sum()
        errors = np.where(known, columns["error_rate"], 0.0)
        overall.append(100.0 * float((weights * errors).sum() / total) if total > 0 else math.nan)
        filled = np.flatnonzero(known & (columns["count"] > 0))
        hardest.append(100.0 * float(columns["error_rate"][filled[-1]]) if filled.size else math.nan)
    lines.set_xlabel("mean confusion score of the band (nats)")
    lines.set_ylabel("top-1 error (%)")
    lines.set_title("Top-1 error by confusion band")
    lines.legend(fontsize=TICK)
    positions = np.arange(len(tables))
    bars.bar(positions - 0.2, np.nan_to_num(overall), width=0.4, label="all bands", color="#8da0cb")
    bars.bar(positions + 0.2, np.nan_to_num(hardest), width=0.4, label="hardest band", color="#e78ac3")
    bars.set_xticks(positions, labels=list(tables), rotation=30, ha="right", fontsize=TICK)
    bars.set_xlabel("model")
    bars.set_ylabel("top-1 error (%)")
    bars.set_title("Overall vs hardest band")
    bars.legend(fontsize=TICK)
    return fig


# ----------------------------------------------------------------------------- prediction depth
def _depths(name: str, values: npt.ArrayLike, num_probes: int) -> tuple[np.ndarray, np.ndarray]:
    """Prediction depths without NaN entries as int64, and the mask of the entries kept."""
    if isinstance(num_probes, bool) or not isinstance(num_probes, int) or num_probes < 1:
        raise ValueError(f"Expected argument `num_probes` to be a positive integer, but got {num_probes!r}.")
    array = _vector(name, values)
    kept = ~np.isnan(array) if np.issubdtype(array.dtype, np.floating) else np.ones(array.shape, dtype=bool)
    return _integers(name, array[kept], low=0, high=num_probes), kept


def _depth_ticks(ax: Axes, num_probes: int) -> None:
    positions = np.arange(num_probes + 1)
    labels = [str(depth) for depth in positions[:-1]] + [f"{num_probes}\nnever"]
    ax.set_xticks(positions, labels=labels, fontsize=TICK)
    ax.set_xlabel("prediction depth (0 = input probe)")


@readable
def prediction_depth_histogram_figure(pd_values: npt.ArrayLike, *, num_probes: int, split: str) -> Figure:
    """Histogram of prediction depth (Baldock et al.): one bar per whole depth with its count; NaN entries
    (samples not probed) are left out.

    Args:
        pd_values: (N,) prediction depths, whole numbers in ``[0, num_probes]``.
        num_probes: number of k-NN probes L + 1 (the input counts); ``PD == num_probes`` means
            the sample never settles.
        split: name of the split.

    Example::

        >>> prediction_depth_histogram_figure([0, 1, 1, 3], num_probes=3, split="val").axes[0].get_title()
        'Prediction depth (val, n=4)'
    """
    depth, _ = _depths("pd_values", pd_values, num_probes)
    counts = np.bincount(depth, minlength=num_probes + 1)
    fig = _new_figure(max(6.0, 0.5 * num_probes + 3.0), 4.0)
    ax = fig.add_subplot()
    positions = np.arange(num_probes + 1)
    ax.bar(positions, counts, width=0.8, color=_BAR_COLOUR)  # one bar per whole depth
    _annotate_counts(ax, positions, counts, counts)
    _depth_ticks(ax, num_probes)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(0.0, 1.12 * max(int(counts.max()), 1))
    ax.set_ylabel("samples")
    ax.set_title(f"Prediction depth ({split}, n={depth.size})")
    return fig


@readable
def accuracy_by_depth_figure(pd_values: npt.ArrayLike, correct: npt.ArrayLike, *, num_probes: int) -> Figure:
    """Accuracy of the network per prediction depth, with the sample count of each depth.

    Args:
        pd_values: (N,) prediction depths in ``[0, num_probes]``; NaN entries are left out.
        correct: (N,) whether the network's final prediction equals the label.
        num_probes: number of k-NN probes L + 1.

    Example::

        >>> fig = accuracy_by_depth_figure([0, 0, 2], [True, False, True], num_probes=2)
        >>> fig.axes[0].get_ylabel()
        'accuracy (%)'
    """
    array = _vector("pd_values", pd_values)
    hits = _booleans("correct", correct, length=array.shape[0])
    depth, kept = _depths("pd_values", array, num_probes)
    counts = np.bincount(depth, minlength=num_probes + 1)
    right = np.bincount(depth, weights=hits[kept].astype(float), minlength=num_probes + 1)
    accuracy = 100.0 * np.divide(right, counts, out=np.zeros(counts.shape), where=counts > 0)
    positions = np.arange(num_probes + 1)
    fig = _new_figure(max(6.0, 0.5 * num_probes + 3.0), 4.0)
    ax = fig.add_subplot()
    ax.bar(positions, accuracy, color=_BAR_COLOUR)
    _annotate_counts(ax, positions, accuracy, counts)
    _depth_ticks(ax, num_probes)
    ax.set_ylim(0.0, 108.0)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"Accuracy by prediction depth (n={depth.size})")
    return fig


@readable
def probe_accuracy_figure(layer_names: Sequence[str], accuracies: Mapping[str, npt.ArrayLike]) -> Figure:
    """Per-probe k-NN accuracy curves, e.g. against the labels and agreement with the final prediction.

    Args:
        layer_names: one name per probe, input first.
        accuracies: series name -> (len(layer_names),) fractions in [0, 1], one line each, e.g.
            ``{"k-NN vs labels": acc, "k-NN vs final prediction": agreement}``.

    Example::

        >>> series = {"vs labels": [0.3, 0.9], "vs prediction": [0.3, 1.0]}
        >>> fig = probe_accuracy_figure(["input", "fc"], series)
        >>> len(fig.axes[0].get_lines())
        2
    """
    if not isinstance(accuracies, Mapping) or len(accuracies) == 0:
        raise ValueError(
            "Expected argument `accuracies` to be a non-empty mapping from series name to per-layer values,"
            f" but got {type(accuracies).__name__}."
        )
    names = list(layer_names)
    positions = np.arange(len(names))
    fig = _new_figure(max(6.0, 0.6 * len(names) + 3.0), 4.0)
    ax = fig.add_subplot()
    for series, values in accuracies.items():
        ax.plot(positions, _vector(f"accuracies['{series}']", values, length=len(names)), "o-", label=series)
    ax.set_xticks(positions, labels=names, rotation=30, ha="right", fontsize=TICK)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("probe (layer), input first")
    ax.set_ylabel("fraction of samples")
    ax.set_title("k-NN probe accuracy per layer")
    ax.legend(fontsize=TICK)
    ax.grid(alpha=0.3)
    return fig


# ----------------------------------------------------------------------------- difficulty flow
@dataclass(frozen=True)
class DifficultyFlowCounts:
    """Nodes and flows of the difficulty flow view (see :func:`difficulty_flow_counts`).

    Node order in every column: the C class nodes (samples not yet settled, by the probe's
    predicted class), then ``settled_correct`` (index C), then ``settled_wrong`` (index C + 1).

    Attributes:
        node_counts: (P, C + 2) samples per node, per probe column.
        node_label_counts: (P, C + 2, C) the same, split by true label.
        label_flows: (P - 1, C + 2, C + 2, C); ``label_flows[l, a, b, c]`` counts samples of
            true label c in node a at column l and in node b at column l + 1.
    """

    node_counts: np.ndarray
    node_label_counts: np.ndarray
    label_flows: np.ndarray

    @property
    def flows(self) -> np.ndarray:
        """(P - 1, C + 2, C + 2) samples moving from node a at column l to node b at column l + 1."""
        return self.label_flows.sum(axis=-1)

    @property
    def num_classes(self) -> int:
        """Number of classes C."""
        return int(self.node_counts.shape[1]) - 2

    @property
    def settled_correct(self) -> int:
        """Node index of samples past their prediction depth whose final prediction is correct."""
        return self.num_classes

    @property
    def settled_wrong(self) -> int:
        """Node index of samples past their prediction depth whose final prediction is wrong."""
        return self.num_classes + 1


def _flow_inputs(
    probe_predictions: npt.ArrayLike,
    final_prediction: npt.ArrayLike,
    labels: npt.ArrayLike,
    prediction_depth: npt.ArrayLike,
    num_classes: int | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    probes = np.asarray(probe_predictions)
    if probes.ndim != 2 or probes.shape[0] < 1 or probes.shape[1] < 1:
        raise ValueError(
            "Expected argument `probe_predictions` to have shape (L + 1, N) with at least one probe and one"
            f" sample, but got shape {probes.shape}."
        )
    num_probes, num_samples = probes.shape
    final = _vector("final_prediction", final_prediction, length=num_samples)
    truth = _vector("labels", labels, length=num_samples)
    depth = _vector("prediction_depth", prediction_depth, length=num_samples)
    classes = _class_count(num_classes, probes.ravel(), final, truth)
    if isinstance(classes, bool) or classes < 1:
        raise ValueError(f"Expected argument `num_classes` to be a positive integer, but got {num_classes!r}.")
    probes = _integers("probe_predictions", probes.ravel(), low=0, high=classes - 1).reshape(probes.shape)
    final = _integers("final_prediction", final, low=0, high=classes - 1)
    truth = _integers("labels", truth, low=0, high=classes - 1)
    depth = _integers("prediction_depth", depth, low=0, high=num_probes)
    return probes, final, truth, depth, classes


def _check_settled_agree(probes: np.ndarray, final: np.ndarray, depth: np.ndarray) -> None:
    """Past its prediction depth a sample's probes must all predict its final prediction."""
    settled = depth[None, :] <= np.arange(probes.shape[0])[:, None]
    clash = settled & (probes != final[None, :])
    if clash.any():
        layer, sample = (int(i[0]) for i in np.nonzero(clash))
        raise ValueError(
            f"Expected argument `prediction_depth` to agree with `probe_predictions`: sample {sample} has"
            f" prediction depth {depth[sample]} but probe {layer} predicts {probes[layer, sample]}, not its"
            f" final prediction {final[sample]}. Pass the depths computed from these probe predictions."
        )


def difficulty_flow_counts(
    probe_predictions: npt.ArrayLike,
    final_prediction: npt.ArrayLike,
    labels: npt.ArrayLike,
    prediction_depth: npt.ArrayLike,
    *,
    num_classes: int | None = None,
) -> DifficultyFlowCounts:
    """Count the nodes and flows of the DifficultyEyes-style difficulty flow.

    Column l (probe l = 0..L, the input first) sorts every sample into one node: a sample whose
    prediction depth is at most l has settled (every later probe agrees with the network's final
    prediction) and goes to "settled correct" or "settled wrong" depending on whether the final
    prediction equals the label; any other sample goes to the node of the class that probe l
    predicts. A sample with depth L + 1 never settles.

    Args:
        probe_predictions: (L + 1, N) class predicted by each k-NN probe.
        final_prediction: (N,) the network's own prediction.
        labels: (N,) true labels.
        prediction_depth: (N,) prediction depth in ``[0, L + 1]``, computed from the same probes.
        num_classes: number of classes C; by default the largest class index seen plus one.

    Returns:
        The counts, see :class:`DifficultyFlowCounts`.

    Example::

        >>> counts = difficulty_flow_counts([[1, 0], [1, 1]], [1, 1], [1, 0], [0, 1])
        >>> counts.node_counts.tolist()  # columns: class 0, class 1, settled correct, settled wrong
        [[1, 0, 1, 0], [0, 0, 1, 1]]
    """
    probes, final, truth, depth, classes = _flow_inputs(
        probe_predictions, final_prediction, labels, prediction_depth, num_classes
    )
    _check_settled_agree(probes, final, depth)
    num_nodes = classes + 2
    settled = depth[None, :] <= np.arange(probes.shape[0])[:, None]
    settled_node = np.where(final == truth, classes, classes + 1)
    node = np.where(settled, settled_node[None, :], probes)
    node_counts = np.stack([np.bincount(column, minlength=num_nodes) for column in node])
    node_label_counts = np.stack(
        [np.bincount(column * classes + truth, minlength=num_nodes * classes) for column in node]
    ).reshape(-1, num_nodes, classes)
    label_flows = np.zeros((node.shape[0] - 1, num_nodes, num_nodes, classes), dtype=np.int64)
    for column, (source, target) in enumerate(itertools.pairwise(node)):
        np.add.at(label_flows[column], (source, target, truth), 1)
    return DifficultyFlowCounts(node_counts, node_label_counts, label_flows)


def _node_spans(counts: np.ndarray, order: Sequence[int], unit: float, gap: float) -> dict[int, tuple[float, float]]:
    """(top, bottom) of every non-empty node, stacked downwards from 0 in ``order`` with gaps."""
    spans: dict[int, tuple[float, float]] = {}
    top = 0.0
    for node in order:
        if counts[node] > 0:
            spans[node] = (top, top - counts[node] * unit)
            top -= counts[node] * unit + gap
    return spans


def _band_path(x0: float, x1: float, source: tuple[float, float], target: tuple[float, float]) -> MplPath:
    """A band from the span ``source`` at x0 to the span ``target`` at x1 with cubic Bezier edges."""
    middle = 0.5 * (x0 + x1)
    vertices = [
        (x0, source[0]),
        (middle, source[0]),
        (middle, target[0]),
        (x1, target[0]),
        (x1, target[1]),
        (middle, target[1]),
        (middle, source[1]),
        (x0, source[1]),
        (x0, source[0]),
    ]
    codes = [MplPath.MOVETO] + [MplPath.CURVE4] * 3 + [MplPath.LINETO] + [MplPath.CURVE4] * 3 + [MplPath.CLOSEPOLY]
    return MplPath(vertices, codes)


def _segment_tops(
    label_counts: np.ndarray, spans: dict[int, tuple[float, float]], unit: float
) -> dict[tuple[int, int], float]:
    """Top of each true-label segment inside each node of one column (segments in label order)."""
    tops: dict[tuple[int, int], float] = {}
    for node, (top, _) in spans.items():
        for label, count in enumerate(label_counts[node]):
            tops[node, label] = top
            top -= count * unit
    return tops


def _flow_patches(
    counts: DifficultyFlowCounts,
    spans: list[dict[int, tuple[float, float]]],
    order: Sequence[int],
    link_colours: np.ndarray,
    *,
    unit: float,
    width: float,
) -> PatchCollection:
    """One band per (source node, true label, target node), joining the label's segments of both nodes.

    Out of a segment the bands go in target order, into a segment in source order, so each band
    leaves and enters the rectangles of the very samples it carries.
    """
    patches, colours = [], []
    for column, flows in enumerate(counts.label_flows):
        out_top = _segment_tops(counts.node_label_counts[column], spans[column], unit)
        in_top = _segment_tops(counts.node_label_counts[column + 1], spans[column + 1], unit)
        for source in order:
            for label in range(counts.num_classes):
                for target in order:
                    height = flows[source, target, label] * unit
                    if height == 0:
                        continue
                    start, end = out_top[source, label], in_top[target, label]
                    band = _band_path(
                        column + width / 2, column + 1 - width / 2, (start, start - height), (end, end - height)
                    )
                    out_top[source, label] -= height
                    in_top[target, label] -= height
                    patches.append(PathPatch(band))
                    colours.append(link_colours[label] if source < counts.num_classes else link_colours[source])
    return PatchCollection(patches, facecolors=colours, edgecolors="none", alpha=0.35)


def _node_patches(
    counts: DifficultyFlowCounts,
    spans: list[dict[int, tuple[float, float]]],
    class_colours: np.ndarray,
    *,
    unit: float,
    width: float,
) -> PatchCollection:
    """Each node as a bar stacked by true label."""
    patches, colours = [], []
    for column, column_spans in enumerate(spans):
        for node, (top, _) in column_spans.items():
            for label, count in enumerate(counts.node_label_counts[column, node]):
                if count > 0:
                    patches.append(Rectangle((column - width / 2, top - count * unit), width, count * unit))
                    colours.append(class_colours[label])
                    top -= count * unit
    return PatchCollection(patches, facecolors=colours, edgecolors="none")


def _node_frames(
    ax: Axes,
    counts: DifficultyFlowCounts,
    spans: list[dict[int, tuple[float, float]]],
    frame_colours: np.ndarray,
    *,
    width: float,
) -> None:
    """A frame per node in its predicted class's colour; settled nodes in black, wrong ones hatched."""
    for column, column_spans in enumerate(spans):
        for node, (top, bottom) in column_spans.items():
            ax.add_patch(
                Rectangle(
                    (column - width / 2, bottom),
                    width,
                    top - bottom,
                    fill=False,
                    edgecolor=frame_colours[node],
                    linewidth=1.6,
                    hatch="///" if node == counts.settled_wrong else None,
                )
            )


def _label_nodes(
    ax: Axes,
    counts: DifficultyFlowCounts,
    spans: list[dict[int, tuple[float, float]]],
    names: Sequence[str],
    *,
    min_height: float,
) -> None:
    """Name the nodes left of the first column and right of the last one (when tall enough)."""
    last = len(spans) - 1
    for column, x, align in ((0, -0.12, "right"), (last, last + 0.12, "left")):
        for node, (top, bottom) in spans[column].items():
            if top - bottom >= min_height:
                text = f"{names[node]} ({counts.node_counts[column, node]})"
                ax.text(x, 0.5 * (top + bottom), text, ha=align, va="center", fontsize=NOTE)


@readable
def difficulty_flow_figure(
    probe_predictions: npt.ArrayLike,
    final_prediction: npt.ArrayLike,
    labels: npt.ArrayLike,
    prediction_depth: npt.ArrayLike,
    *,
    layer_names: Sequence[str],
    class_names: Sequence[str] | None = None,
) -> Figure:
    """Sankey-style difficulty flow across the probes, after DifficultyEyes' difficulty flow view.

    One column per probe (input first). In each column, samples that have not yet reached their
    prediction depth are grouped by the class that probe predicts (frame colour = predicted class);
    samples past their depth are collapsed into "settled correct" (top, black frame) and "settled
    wrong" (bottom, hatched). Every node is a bar stacked by true label (fill colour). Bands
    between neighbouring columns join the true-label segments holding the same samples, with
    widths proportional to counts, coloured by true label (grey once settled). The counts come
    from :func:`difficulty_flow_counts`.

    Args:
        probe_predictions: (L + 1, N) class predicted by each k-NN probe.
        final_prediction: (N,) the network's own prediction.
        labels: (N,) true labels.
        prediction_depth: (N,) prediction depth in ``[0, L + 1]`` from the same probes.
        layer_names: L + 1 probe names, input first.
        class_names: one name per class; by default ``"0"``, ``"1"``, ...

    Example::

        >>> fig = difficulty_flow_figure([[1, 0], [1, 1]], [1, 1], [1, 0], [0, 1],
        ...                              layer_names=["input", "fc"])
        >>> fig.axes[0].get_xlabel()
        'probe (layer), input first'
    """
    num_classes = None if class_names is None else len(class_names)
    counts = difficulty_flow_counts(
        probe_predictions, final_prediction, labels, prediction_depth, num_classes=num_classes
    )
    num_probes = counts.node_counts.shape[0]
    names_of_layers = list(layer_names)
    if len(names_of_layers) != num_probes:
        raise ValueError(
            f"Expected argument `layer_names` to name all {num_probes} probes (input first), but got"
            f" {len(names_of_layers)} names."
        )
    classes = [str(c) for c in range(counts.num_classes)] if class_names is None else list(class_names)
    class_colours = _class_colours(counts.num_classes)
    link_colours = np.concatenate([class_colours, to_rgba_array([_SETTLED_CORRECT_COLOUR, _SETTLED_WRONG_COLOUR])])
    frame_colours = np.concatenate([class_colours, to_rgba_array(["black", "black"])])
    order = [counts.settled_correct, *range(counts.num_classes), counts.settled_wrong]
    unit, gap, width = 1.0 / float(counts.node_counts[0].sum()), 0.02, 0.16
    spans = [_node_spans(column, order, unit, gap) for column in counts.node_counts]

    fig = _new_figure(max(8.0, 1.1 * num_probes + 3.5), 7.0)
    ax = fig.add_subplot()
    ax.add_collection(_flow_patches(counts, spans, order, link_colours, unit=unit, width=width))
    ax.add_collection(_node_patches(counts, spans, class_colours, unit=unit, width=width))
    _node_frames(ax, counts, spans, frame_colours, width=width)
    _label_nodes(ax, counts, spans, [*classes, "settled correct", "settled wrong"], min_height=0.025)
    lowest = min(bottom for column in spans for _, bottom in column.values())
    ax.set_xlim(-1.3, num_probes - 1 + 1.3)
    ax.set_ylim(lowest - 0.02, 0.02)
    ax.set_xticks(np.arange(num_probes), labels=names_of_layers, rotation=30, ha="right", fontsize=TICK)
    ax.set_yticks([])
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    ax.set_xlabel("probe (layer), input first")
    ax.set_ylabel("samples (height ∝ count)")
    handles = [Patch(facecolor=colour, label=name) for colour, name in zip(class_colours, classes, strict=True)]
    handles += [
        Patch(facecolor=_SETTLED_CORRECT_COLOUR, edgecolor="black", label="settled, correct"),
        Patch(facecolor=_SETTLED_WRONG_COLOUR, edgecolor="black", hatch="///", label="settled, wrong"),
    ]
    ax.legend(
        handles=handles,
        title="fill and links: true label\nframe: predicted class",
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
        fontsize=NOTE,
        title_fontsize=TICK,
    )
    num_samples = int(counts.node_counts[0].sum())
    ax.set_title(f"Difficulty flow: probe votes until each sample settles (n={num_samples})")
    return fig


# ----------------------------------------------------------------------------- perspectives
def _bin_edges(values: np.ndarray, max_bins: int = 20) -> np.ndarray:
    """Histogram edges: one bin per distinct value when there are few (e.g. kDN, PD), else even bins."""
    distinct = np.unique(values)
    if distinct.size == 0:
        return np.array([0.0, 1.0])
    if distinct.size == 1:
        return np.array([distinct[0] - 0.5, distinct[0] + 0.5])
    if distinct.size <= max_bins:
        middles = 0.5 * (distinct[1:] + distinct[:-1])
        first = distinct[0] - (middles[0] - distinct[0])
        last = distinct[-1] + (distinct[-1] - middles[-1])
        return np.concatenate([[first], middles, [last]])
    return np.linspace(distinct[0], distinct[-1], max_bins + 1)


def _share_norm(shares: Sequence[np.ndarray]) -> Normalize:
    """One colour scale for a row of share maps: logarithmic from the smallest non-zero share to the largest.

    A linear scale leaves every cell but the fullest one dark when one cell holds most samples; on a
    log scale a cell holding one sample in a thousand is still visible. Falls back to linear when
    all non-zero shares are equal.
    """
    filled = np.concatenate([share[share > 0] for share in shares])
    if filled.size == 0:
        return Normalize(vmin=0.0, vmax=1.0)
    low, high = float(filled.min()), float(filled.max())
    return LogNorm(vmin=low, vmax=high) if high > low else Normalize(vmin=0.0, vmax=high)


@readable
def perspective_heatmaps_figure(perspectives: Mapping[str, npt.ArrayLike], correct: npt.ArrayLike) -> Figure:
    """2-D histograms of every pair of difficulty perspectives, split by model correctness.

    One row per pair (e.g. human vs data, human vs model, data vs model), with correctly and
    wrongly classified samples side by side. Cells show the share of the group's samples, on one
    logarithmic colour scale per row (empty cells blank), so sparse cells stay visible next to a full
    one. Samples with NaN in either perspective of a pair are left out of it.

    Args:
        perspectives: name -> (N,) difficulty per sample (higher = harder), at least two.
        correct: (N,) whether the network's prediction equals the label.

    Example::

        >>> rng = np.random.default_rng(0)
        >>> scores = {"data": rng.random(20), "model": rng.random(20)}
        >>> fig = perspective_heatmaps_figure(scores, rng.random(20) > 0.5)
        >>> len(fig.axes)  # two heatmaps and a colour bar
        3
    """
    if len(perspectives) < 2:
        raise ValueError(
            f"Expected argument `perspectives` to hold at least two perspectives, but got {list(perspectives)}."
        )
    hits = _booleans("correct", correct, length=np.asarray(correct).shape[0])
    values = {
        name: _vector(f"perspectives['{name}']", array, length=hits.shape[0]).astype(float)
        for name, array in perspectives.items()
    }
    pairs = list(itertools.combinations(values, 2))
    fig = _new_figure(12.5, 3.8 * len(pairs) + 0.5)
    axes = fig.subplots(len(pairs), 2, squeeze=False)
    for row, (first, second) in enumerate(pairs):
        x, y = values[first], values[second]
        kept = np.isfinite(x) & np.isfinite(y)
        x_edges, y_edges = _bin_edges(x[kept]), _bin_edges(y[kept])
        groups = (("correct", kept & hits), ("wrong", kept & ~hits))
        shares = [
            np.histogram2d(x[mask], y[mask], bins=[x_edges, y_edges])[0] / max(int(mask.sum()), 1) for _, mask in groups
        ]
        norm = _share_norm(shares)
        for column, ((group, mask), share) in enumerate(zip(groups, shares, strict=True)):
            ax = axes[row, column]
            shown = np.ma.masked_less_equal(share.T, 0.0)  # empty cells stay blank (white)
            mesh = ax.pcolormesh(x_edges, y_edges, shown, cmap="viridis", norm=norm)
            ax.set_xlabel(first)
            ax.set_ylabel(second)
            ax.set_title(f"{second} vs {first}: {group} (n={int(mask.sum())})", fontsize=TICK)
        scale = "log scale" if isinstance(norm, LogNorm) else "linear"
        fig.colorbar(mesh, ax=axes[row, :], label=f"share of group ({scale})")
    fig.suptitle("Perspectives: correct vs wrong")
    return fig


# ----------------------------------------------------------------------------- model performance
MAX_MATRIX_INCHES = 20.0
"""Largest side of the confusion-matrix figure: beyond about 30 classes the cells shrink instead."""
MAX_NAMED_CLASSES = 60
"""Classes up to which the confusion matrix names every class on its axes (class indices beyond)."""


@readable
def confusion_matrix_figure(
    labels: npt.ArrayLike,
    predictions: npt.ArrayLike,
    *,
    class_names: Sequence[str] | None = None,
    normalize: bool = True,
) -> Figure:
    """Confusion matrix (rows = true, columns = predicted class), DifficultyEyes' model performance view.

    Args:
        labels: (N,) true classes.
        predictions: (N,) predicted classes.
        class_names: one name per class; by default the classes seen, named by index.
        normalize: divide each row by its total (per-class recall on the diagonal).

    Example::

        >>> confusion_matrix_figure([0, 1, 1], [0, 1, 0]).axes[0].get_title()
        'Confusion matrix (n=3, rows normalised)'
    """
    truth = _vector("labels", labels)
    predicted = _vector("predictions", predictions, length=truth.shape[0])
    classes = _class_count(None if class_names is None else len(class_names), truth, predicted)
    truth = _integers("labels", truth, low=0, high=classes - 1)
    predicted = _integers("predictions", predicted, low=0, high=classes - 1)
    matrix = np.bincount(truth * classes + predicted, minlength=classes * classes).reshape(classes, classes)
    shown = matrix.astype(float)
    if normalize:
        totals = shown.sum(axis=1, keepdims=True)
        shown = np.divide(shown, totals, out=np.zeros_like(shown), where=totals > 0)
    names = [str(c) for c in range(classes)] if class_names is None else list(class_names)
    side = min(max(5.0, 0.55 * classes + 2.5), MAX_MATRIX_INCHES)  # 1,000 classes: a heat map, not a table
    fig = _new_figure(side + 1.0, side)
    ax = fig.add_subplot()
    image = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else max(float(shown.max()), 1.0))
    if classes <= 20:
        threshold = 0.5 * (1.0 if normalize else max(float(shown.max()), 1.0))
        for (row, column), value in np.ndenumerate(shown):
            text = f"{value:.2f}" if normalize else str(int(value))
            colour = "white" if value > threshold else "black"
            ax.text(column, row, text, ha="center", va="center", fontsize=NOTE, color=colour)
    if classes <= MAX_NAMED_CLASSES:
        ticks = np.arange(classes)
        ax.set_xticks(ticks, labels=names, rotation=45, ha="right", fontsize=TICK)
        ax.set_yticks(ticks, labels=names, fontsize=TICK)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"Confusion matrix (n={truth.size}{', rows normalised' if normalize else ''})")
    fig.colorbar(image, ax=ax, label="share of the true class" if normalize else "samples")
    return fig


def _categorical(name: str, values: npt.ArrayLike, *, length: int | None = None) -> np.ndarray:
    array = _vector(name, values, length=length)
    return array.astype(str) if array.dtype == object else array


@readable
def category_shares_figure(categories: npt.ArrayLike, groups: npt.ArrayLike, *, group_name: str) -> Figure:
    """Stacked bars: the share of each error category within each group.

    Groups (e.g. confusion band index or DifficultyEyes pattern) and categories are shown in sorted
    order; pass integer band indices to keep bands in score order.

    Args:
        categories: (N,) error category of each sample (e.g. "fine-grained", "model failure").
        groups: (N,) group of each sample.
        group_name: what the groups are, for the title and the axis.

    Example::

        >>> fig = category_shares_figure(["a", "b", "a"], [0, 0, 1], group_name="confusion band")
        >>> fig.axes[0].get_title()
        'Error categories by confusion band'
    """
    category = _categorical("categories", categories)
    group = _categorical("groups", groups, length=category.shape[0])
    category_values, category_index = np.unique(category, return_inverse=True)
    group_values, group_index = np.unique(group, return_inverse=True)
    width = category_values.size
    counts = np.bincount(group_index * width + category_index, minlength=group_values.size * width)
    counts = counts.reshape(group_values.size, width)
    totals = counts.sum(axis=1)
    shares = counts / np.maximum(totals, 1)[:, None]
    positions = np.arange(group_values.size)
    fig = _new_figure(max(6.0, 0.6 * group_values.size + 4.0), 4.5)
    ax = fig.add_subplot()
    bottom = np.zeros(group_values.size)
    for index, (value, colour) in enumerate(zip(category_values, _class_colours(width), strict=True)):
        ax.bar(positions, shares[:, index], bottom=bottom, color=colour, label=str(value))
        bottom += shares[:, index]
    _annotate_counts(ax, positions, bottom, totals)
    ax.set_xticks(positions, labels=[str(value) for value in group_values], fontsize=TICK)
    ax.set_ylim(0.0, 1.1)
    ax.set_xlabel(group_name)
    ax.set_ylabel("share of samples")
    ax.set_title(f"Error categories by {group_name}")
    ax.legend(title="category", loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=NOTE)
    return fig


# ----------------------------------------------------------------------------- markdown tables
def _markdown_cell(value: object) -> str:
    text = f"{float(value):.4g}" if isinstance(value, float | np.floating) else str(value)
    return text.replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def dict_table_markdown(rows: Sequence[Mapping[str, object]], columns: Sequence[str]) -> str:
    """A markdown table (as TensorBoard's text plugin renders it) with one line per row.

    Floats are written with 4 significant digits, missing cells are left empty and ``|`` is escaped.

    Example::

        >>> print(dict_table_markdown([{"band": "low", "error": 0.051234}], ["band", "error"]))
        | band | error |
        | --- | --- |
        | low | 0.05123 |
    """
    if len(columns) == 0:
        raise ValueError("Expected argument `columns` to name at least one column, but got none.")
    lines = [
        "| " + " | ".join(_markdown_cell(column) for column in columns) + " |",
        "| " + " | ".join("---" for _ in columns) + " |",
    ]
    for row in rows:
        lines.append("| " + " | ".join(_markdown_cell(row.get(column, "")) for column in columns) + " |")
    return "\n".join(lines)


def pattern_table_markdown(summary: Mapping[str, int | Mapping[str, object]]) -> str:
    """Markdown table of DifficultyEyes pattern counts (Table 1 ids such as ``"1a"``, ``"5b"``, ``"6"``).

    Each value is either a count or a mapping of further columns (e.g. ``{"count": 12,
    "accuracy": 0.9}``). A "meaning" column is filled in for the known pattern ids, and a "share"
    column (count / total) is added when every row has a count and none gives a share.

    Example::

        >>> print(pattern_table_markdown({"1a": 3, "6": 1}))
        | pattern | meaning | count | share |
        | --- | --- | --- | --- |
        | 1a | clean, representative, easy | 3 | 0.75 |
        | 6 | ambiguous to humans but representative in the data | 1 | 0.25 |
    """
    rows: list[dict[str, object]] = []
    for pattern, value in summary.items():
        fields = dict(value) if isinstance(value, Mapping) else {"count": value}
        rows.append({"pattern": pattern, "meaning": _PATTERN_MEANINGS.get(str(pattern), ""), **fields})
    columns = list(dict.fromkeys(column for row in rows for column in row)) or ["pattern", "meaning", "count"]
    counts = [row.get("count") for row in rows]
    whole = [int(c) for c in counts if isinstance(c, int | np.integer)]
    if "share" not in columns and rows and len(whole) == len(rows):
        total = sum(whole)
        for row, count in zip(rows, whole, strict=True):
            row["share"] = count / total if total else math.nan
        columns.append("share")
    return dict_table_markdown(rows, columns)
