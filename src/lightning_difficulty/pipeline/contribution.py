"""What a difficulty callback hands to the report at fit end: columns, their meaning, a summary, views."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from lightning_difficulty.views.report_views import ViewContext

Columns = dict[str, dict[str, np.ndarray]]
"""``split -> column name -> (N,) array`` keyed by dataset index."""

View = Callable[["ViewContext"], None]
"""A TensorBoard view a callback contributes; the report calls it once with the finished table."""

Neighbours = dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]
"""``split -> probe -> (distances (N, k), training ids (N, k))``, nearest first, row i = dataset index i."""


@dataclass(frozen=True)
class ColumnInfo:
    """What a column means: written to ``columns.json`` and the parquet schema metadata.

    Example::

        >>> ColumnInfo("softmax entropy averaged over epochs", unit="nats", higher_is_harder=True).unit
        'nats'
    """

    description: str
    unit: str | None = None
    range: tuple[float, float] | None = None
    higher_is_harder: bool | None = None
    perspective: bool = False
    """A difficulty perspective: drawn in the perspective heatmaps and correlated with the others."""


@dataclass
class Contribution:
    """What one callback adds to the report at fit end.

    ``annotation_counts`` (split -> ``(N, C)`` annotator counts) and ``neighbours`` / ``probe_names`` /
    ``embeddings`` are shared inputs: the report passes them on (error taxonomy, instance views, dashboard).
    """

    columns: Columns = field(default_factory=dict)
    info: dict[str, ColumnInfo] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    views: list[View] = field(default_factory=list)
    annotation_counts: dict[str, np.ndarray] = field(default_factory=dict)
    neighbours: Neighbours | None = None
    probe_names: tuple[str, ...] = ()
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)
