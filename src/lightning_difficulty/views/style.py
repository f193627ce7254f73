"""Font sizes that keep figures readable at TensorBoard's default thumbnail size.

TensorBoard's Images tab shows a figure scaled down to its card (a few hundred pixels wide), so the
figures use larger type than matplotlib's defaults, set once here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from matplotlib import rc_context

NOTE = 11
"""Annotations inside a plot: counts above bars, node labels, cell values, image captions."""
TICK = 12
"""Tick labels and legends."""
LABEL = 13
"""Axis labels and sub-figure titles."""

RC: dict[Any, Any] = {
    "font.size": TICK,
    "axes.titlesize": 15,
    "axes.labelsize": LABEL,
    "xtick.labelsize": TICK,
    "ytick.labelsize": TICK,
    "legend.fontsize": TICK,
    "legend.title_fontsize": TICK,
    "figure.titlesize": 16,
}

P = ParamSpec("P")
R = TypeVar("R")


def readable(build: Callable[P, R]) -> Callable[P, R]:
    """Run a figure-building function with the larger font sizes of :data:`RC`.

    Example::

        >>> from matplotlib.figure import Figure
        >>> @readable
        ... def empty() -> Figure:
        ...     fig = Figure()
        ...     fig.add_subplot().set_title("t")
        ...     return fig
        >>> empty().axes[0].title.get_fontsize()
        15.0
    """

    @functools.wraps(build)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with rc_context(RC):
            return build(*args, **kwargs)

    return wrapper
