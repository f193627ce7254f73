"""The data map (Swayamdipta et al. 2020): confidence against variability, coloured by correctness."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure

from lightning_difficulty.functional.dynamics import CONFIDENCE_THRESHOLD, VARIABILITY_THRESHOLD
from lightning_difficulty.views.style import LABEL, readable

if TYPE_CHECKING:
    from lightning_difficulty.views.report_views import ViewContext


@readable
def data_map_figure(confidence: np.ndarray, variability: np.ndarray, correctness: np.ndarray, *, split: str) -> Figure:
    """Scatter of ``variability`` (x) against ``confidence`` (y), coloured by ``correctness``, regions outlined.

    Example::

        >>> fig = data_map_figure(np.array([0.9, 0.2]), np.array([0.05, 0.3]), np.array([1.0, 0.4]), split="train")
        >>> fig.axes[0].get_xlabel()
        'variability (std of p(label) over epochs)'
    """
    fig = Figure(figsize=(6.5, 5.5), layout="constrained")
    ax = fig.add_subplot()
    points = ax.scatter(variability, confidence, c=correctness, cmap="coolwarm_r", vmin=0, vmax=1, s=6, alpha=0.7)
    fig.colorbar(points, ax=ax, label="correctness")
    ax.axhline(CONFIDENCE_THRESHOLD, color="0.3", lw=1, ls="--")
    ax.axvline(VARIABILITY_THRESHOLD, color="0.3", lw=1, ls="--")
    top = max(0.5, float(np.nanmax(variability)) if variability.size else 0.5)
    for x, y, text in (
        (0.01, 0.97, "easy"),
        (0.01, 0.03, "hard"),
        (VARIABILITY_THRESHOLD + 0.01, 0.5, "ambiguous"),
    ):
        ax.text(x, y, text, fontsize=LABEL, color="0.2", va="center")
    ax.set(xlim=(0, top), ylim=(0, 1), title=f"data map [{split}], n={len(confidence)}")
    ax.set_xlabel("variability (std of p(label) over epochs)")
    ax.set_ylabel("confidence (mean p(label))")
    return fig


def log_data_maps(ctx: ViewContext) -> None:
    """The data map of every split that has one (``TrainingDynamics``' columns)."""
    for split, rows in ctx.table.groupby("split", sort=False):
        if "dm_confidence" not in rows:
            continue
        seen = rows[rows["dm_confidence"].notna()]
        if seen.empty:
            continue
        fig = data_map_figure(
            seen["dm_confidence"].to_numpy(float),
            seen["dm_variability"].to_numpy(float),
            seen["dm_correctness"].to_numpy(float),
            split=str(split),
        )
        ctx.writer.add_figure(f"difficulty/data_map/{split}", fig, ctx.step)
