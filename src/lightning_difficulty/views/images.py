"""Image views: display-ready image batches, the easiest/hardest grid and the instance view.

Everything here takes arrays that were computed elsewhere (scores, labels, neighbour distances)
and only arranges them; no score is computed. Figures are plain :class:`matplotlib.figure.Figure`
objects drawn without pyplot, so no global backend is set or needed.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lightning_difficulty.views.style import LABEL, NOTE, TICK, readable

ImageLike = npt.ArrayLike | torch.Tensor
"""A numpy array, a torch tensor or anything ``np.asarray`` accepts."""

_EASY_COLOUR = "#1a9850"
_HARD_COLOUR = "#d73027"


def _to_numpy(values: ImageLike) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        tensor = values.detach().cpu()
        if tensor.dtype in (torch.float16, torch.bfloat16):
            tensor = tensor.float()
        return tensor.numpy()
    return np.asarray(values)


def _channels_first(array: np.ndarray) -> np.ndarray:
    if array.ndim == 3:
        return array[:, None]
    if array.ndim == 4 and array.shape[1] in (1, 3):
        return array
    if array.ndim == 4 and array.shape[-1] in (1, 3):
        return array.transpose(0, 3, 1, 2)
    raise ValueError(
        "Expected argument `inputs` to have shape (N, C, H, W), (N, H, W, C) or (N, H, W) with C in {1, 3},"
        f" but got shape {array.shape}. Select the image channels before calling."
    )


def _outside_unit_range(array: np.ndarray) -> bool:
    if array.dtype == np.uint8 or array.size == 0:
        return False
    return bool(array.min() < 0 or array.max() > 1)


def _unit_range(array: np.ndarray, scale_each: bool) -> np.ndarray:
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    values = array.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError("Expected argument `inputs` to hold finite values, but it contains NaN or inf.")
    if values.size == 0 or not scale_each:
        return np.clip(values, 0.0, 1.0).astype(np.float32)
    low = values.min(axis=(1, 2, 3), keepdims=True)
    span = values.max(axis=(1, 2, 3), keepdims=True) - low
    scaled = np.divide(values - low, span, out=np.zeros_like(values), where=span > 0)
    return scaled.astype(np.float32)


def to_display_images(inputs: ImageLike, *, scale_each: bool | None = None) -> np.ndarray:
    """Turn a batch of images into float32 RGB of shape (N, 3, H, W) with values in [0, 1].

    Layouts: (N, C, H, W) is assumed when dimension 1 has 1 or 3 entries, otherwise (N, H, W, C)
    when the last dimension has 1 or 3 entries; (N, H, W) is grayscale. ``uint8`` input is divided
    by 255. Float (or other integer) input already inside [0, 1] is kept as is; otherwise, e.g.
    for mean/std-normalised tensors, each image is min-max scaled to [0, 1] on its own (a constant
    image becomes black). Grayscale is replicated to three channels.

    Args:
        inputs: a numpy array or torch tensor of images.
        scale_each: force (``True``) or skip (``False``, values are then clipped to [0, 1]) the
            per-image min-max scaling of non-``uint8`` input; by default it is applied exactly
            when some value lies outside [0, 1]. Pass the decision for the whole set when
            converting it chunk by chunk.

    Returns:
        float32 array of shape (N, 3, H, W) in [0, 1].

    Example::

        >>> to_display_images(np.full((2, 4, 4), 255, dtype=np.uint8)).shape
        (2, 3, 4, 4)
    """
    array = _channels_first(_to_numpy(inputs))
    if array.dtype == np.bool_:
        array = array.astype(np.float32)
    display = _unit_range(array, _outside_unit_range(array) if scale_each is None else scale_each)
    if display.shape[1] == 1:
        display = np.repeat(display, 3, axis=1)
    return np.ascontiguousarray(display, dtype=np.float32)


def _single_image(image: ImageLike, name: str) -> np.ndarray:
    """One image in any layout accepted by :func:`to_display_images`, as (H, W, 3) in [0, 1]."""
    array = _to_numpy(image)
    if array.ndim not in (2, 3):
        raise ValueError(
            f"Expected argument `{name}` to be one image of shape (C, H, W), (H, W, C) or (H, W),"
            f" but got shape {array.shape}."
        )
    return to_display_images(array[None])[0].transpose(1, 2, 0)


def _show(ax: Axes, image_hwc: np.ndarray, caption: str, *, edge: str | None = None) -> None:
    ax.imshow(image_hwc, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(caption, fontsize=NOTE)
    if edge is not None:
        for spine in ax.spines.values():
            spine.set_edgecolor(edge)
            spine.set_linewidth(2.0)


def _blank(ax: Axes, *, keep_labels: bool) -> None:
    """Hide an unused cell; the first cell of a row keeps room for the row's label."""
    if not keep_labels:
        ax.axis("off")
        return
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _easiest_and_hardest(scores: np.ndarray, members: np.ndarray, per_class: int) -> np.ndarray:
    """Indices of up to ``per_class`` easiest then up to ``per_class`` hardest members, by ascending score.

    The hardest are taken first, so with fewer than ``2 * per_class`` members no sample is shown twice.
    """
    ranked = members[np.argsort(scores[members], kind="stable")]
    hardest = ranked[-per_class:] if ranked.size else ranked
    rest = ranked[: ranked.size - hardest.size]
    return np.concatenate([rest[:per_class], hardest])


def _check_scores_and_labels(
    scores: npt.ArrayLike, labels: npt.ArrayLike, num_images: int, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    score_array = np.asarray(scores, dtype=np.float64)
    label_array = np.asarray(labels)
    for name, array in (("scores", score_array), ("labels", label_array)):
        if array.shape != (num_images,):
            raise ValueError(
                f"Expected argument `{name}` to have shape ({num_images},) to match `images`,"
                f" but got shape {array.shape}."
            )
    if num_images and not np.issubdtype(label_array.dtype, np.integer):
        raise ValueError(f"Expected argument `labels` to hold integers, but got dtype {label_array.dtype}.")
    if num_images and (label_array.min() < 0 or label_array.max() >= num_classes):
        raise ValueError(
            f"Expected argument `labels` to lie in [0, {num_classes - 1}] (one entry of `class_names` per"
            f" class), but got values in [{label_array.min()}, {label_array.max()}]."
        )
    return score_array, label_array


@readable
def hardest_easiest_grid_figure(
    images: ImageLike,
    scores: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    class_names: Sequence[str],
    per_class: int = 4,
    indices: npt.ArrayLike | None = None,
) -> Figure:
    """Per class (one row each), the easiest and the hardest samples with their scores as captions.

    Scores follow the project convention: one score per sample, higher = harder. Within a row the
    ``per_class`` lowest-scoring samples (green frames) come first and the ``per_class``
    highest-scoring ones (red frames) last, all in ascending score order, so the hardest sample of a
    class is at the right end. Samples with a NaN score are left out. Small images are upsampled
    with nearest-neighbour interpolation.

    Args:
        images: (N, C, H, W), (N, H, W, C) or (N, H, W) images, see :func:`to_display_images`.
        scores: (N,) difficulty scores, higher = harder.
        labels: (N,) integer class of each sample, in ``[0, len(class_names))``.
        class_names: one name per class; one row per class.
        per_class: how many easiest and how many hardest samples to show per class.
        indices: (N,) dataset index of each image; when given, each caption reads ``#index`` above
            the score, so an image can be traced to its row of ``scores.parquet``.

    Returns:
        A figure with ``len(class_names) * 2 * per_class`` image axes.

    Example::

        >>> fig = hardest_easiest_grid_figure(np.random.rand(8, 3, 4, 4), np.arange(8.0),
        ...                                   np.array([0, 1] * 4), class_names=["a", "b"], per_class=1)
        >>> len(fig.axes)
        4
    """
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"Expected argument `per_class` to be a positive integer, but got {per_class!r}.")
    if len(class_names) == 0:
        raise ValueError("Expected argument `class_names` to name at least one class, but got none.")
    display = to_display_images(images)
    score_array, label_array = _check_scores_and_labels(scores, labels, len(display), len(class_names))
    index_array = _check_indices(indices, len(display))
    num_columns = 2 * per_class
    fig = Figure(figsize=(1.15 * num_columns + 1.0, 1.3 * len(class_names) + 0.8), layout="constrained")
    axes = fig.subplots(len(class_names), num_columns, squeeze=False)
    finite = np.isfinite(score_array)
    for row, class_name in enumerate(class_names):
        members = np.flatnonzero((label_array == row) & finite)
        chosen = _easiest_and_hardest(score_array, members, per_class)
        num_easy = chosen.size - min(per_class, members.size)
        slots = list(range(num_easy)) + list(range(num_columns - (chosen.size - num_easy), num_columns))
        for slot, index in zip(slots, chosen, strict=True):
            edge = _EASY_COLOUR if slot < per_class else _HARD_COLOUR
            caption = f"{score_array[index]:.3g}"
            if index_array is not None:
                caption = f"#{index_array[index]}\n{caption}"
            _show(axes[row, slot], display[index].transpose(1, 2, 0), caption, edge=edge)
        for slot in set(range(num_columns)) - set(slots):
            _blank(axes[row, slot], keep_labels=slot == 0)
        axes[row, 0].set_ylabel(class_name, fontsize=LABEL)
    what = "#index, score" if index_array is not None else "score"
    fig.suptitle(f"Easiest (green) and hardest (red) per class; caption: {what}")
    return fig


def _check_indices(indices: npt.ArrayLike | None, length: int, name: str = "indices") -> np.ndarray | None:
    if indices is None:
        return None
    array = np.asarray(indices)
    if array.shape != (length,) or (length and not np.issubdtype(array.dtype, np.integer)):
        raise ValueError(
            f"Expected argument `{name}` to hold {length} integer dataset indices, one per image, but got shape"
            f" {array.shape} and dtype {array.dtype}."
        )
    return array


_QUERY_WRAP = 22
_NEIGHBOUR_WRAP = 13
"""Characters per caption line: captions wrap instead of spilling past their column (or the figure)."""


@readable
def neighbour_strip_figure(
    query_image: ImageLike,
    query_caption: str,
    rows: Sequence[tuple[str, Sequence[tuple[ImageLike, str]]]],
    *,
    query_index: int | None = None,
    neighbour_indices: Sequence[Sequence[int]] | None = None,
) -> Figure:
    """The instance view: a sample and its nearest training neighbours in several spaces.

    The query sits in the wider left column; each row shows the neighbours found in one space (the
    input, then each probe layer) with the captions given, e.g. the neighbour's label and its
    distance. Neighbours and distances are computed by the caller. Captions wrap onto several lines
    rather than being cut at the edge of their column.

    Args:
        query_image: one image, (C, H, W), (H, W, C) or (H, W).
        query_caption: caption of the query, e.g. its label, prediction and scores.
        rows: ``(row_title, [(image, caption), ...])`` per space, in display order.
        query_index: the query's dataset index; when given, its caption starts with ``#index``.
        neighbour_indices: per row, the neighbours' dataset indices (in the training split); when
            given, each neighbour's caption starts with ``#index``.

    Returns:
        A figure with one axes for the query plus one per neighbour (or per empty row).

    Example::

        >>> img = np.zeros((3, 4, 4))
        >>> fig = neighbour_strip_figure(img, "query", [("input", [(img, "d=0.0")])], query_index=7)
        >>> len(fig.axes), fig.axes[0].get_title()
        (2, '#7 query')
    """
    query = _single_image(query_image, "query_image")
    if neighbour_indices is not None and [len(ids) for ids in neighbour_indices] != [len(n) for _, n in rows]:
        raise ValueError(
            "Expected argument `neighbour_indices` to hold one dataset index per neighbour of each row, "
            f"{[len(n) for _, n in rows]}, but got {[len(ids) for ids in neighbour_indices]}."
        )
    num_neighbours = max((len(neighbours) for _, neighbours in rows), default=0)
    num_rows, num_columns = max(len(rows), 1), 1 + max(num_neighbours, 1)
    fig = Figure(figsize=(1.55 * num_columns + 1.9, 1.75 * num_rows + 0.8), layout="constrained")
    grid = fig.add_gridspec(num_rows, num_columns, width_ratios=[2.2] + [1.0] * (num_columns - 1))
    caption = query_caption if query_index is None else f"#{query_index} {query_caption}"
    _show(fig.add_subplot(grid[:, 0]), query, textwrap.fill(caption, _QUERY_WRAP))
    for row, (row_title, neighbours) in enumerate(rows):
        if len(neighbours) == 0:
            ax = fig.add_subplot(grid[row, 1])
            ax.axis("off")
            ax.text(0.0, 0.5, f"{row_title}: no neighbours", fontsize=TICK, va="center")
            continue
        for column, (image, text) in enumerate(neighbours):
            ax = fig.add_subplot(grid[row, column + 1])
            if neighbour_indices is not None:
                text = f"#{neighbour_indices[row][column]} {text}"
            _show(ax, _single_image(image, f"rows[{row}] image {column}"), textwrap.fill(text, _NEIGHBOUR_WRAP))
            if column == 0:
                ax.set_ylabel(row_title, fontsize=TICK)
    fig.suptitle("Sample (left) and its nearest training neighbours per layer")
    return fig


def figure_to_image(fig: Figure) -> np.ndarray:
    """Render a figure with the Agg canvas and return its pixels as uint8 of shape (H, W, 3).

    Example::

        >>> figure_to_image(Figure(figsize=(1, 1), dpi=10)).shape
        (10, 10, 3)
    """
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Save a figure (format from the file suffix, e.g. ``.png``, ``.pdf``, ``.svg``), creating folders.

    Returns:
        The path written.

    Example::

        save_figure(error_rate_by_band_figure(table, rho=0.97, split="val"), "report/bands.png")
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target)
    return target
