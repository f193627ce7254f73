"""TrainingDynamics: data maps, forgetting events, AUM and EL2N from the logits the loss sees."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from torch import Tensor
from typing_extensions import override

from lightning_difficulty.callbacks.accumulator import PerSampleAccumulator, SampleState
from lightning_difficulty.callbacks.base import ColumnInfo, Contribution
from lightning_difficulty.functional import dynamics as F
from lightning_difficulty.pipeline.capture import FitEndArrays
from lightning_difficulty.views.dynamics import log_data_maps

if TYPE_CHECKING:
    import lightning.pytorch as pl

_STATES = {
    **F.DataMapState.zeros(0).as_states(),
    **F.ForgettingState.zeros(0).as_states(),
    **F.AumState.zeros(0).as_states(),
}


class TrainingDynamics(PerSampleAccumulator):
    """Per-sample training dynamics over the training forward passes (train mode, the logits of the loss).

    Columns (one row per sample; an epoch counts a sample's first presentation on each process, and a padding
    duplicate on another process is averaged with it): ``dm_confidence``, ``dm_variability`` (ddof 0),
    ``dm_correctness`` and ``dm_region`` (Swayamdipta et al. 2020); ``forgetting`` and ``never_learned``
    (Toneva et al. 2019); ``aum`` (Pleiss et al. 2020, lower = more likely mislabelled); ``el2n`` at the last
    epoch the sample was seen (Paul et al. 2021).

    Example::

        trainer = L.Trainer(callbacks=[TrainingDynamics(), DifficultyReport()])
    """

    values = ("p_label", "correct", "margin", "el2n")
    scalars = ("aum_mean", "forgetting_events")
    states = (
        *(SampleState(name, array.dtype) for name, array in _STATES.items()),
        SampleState("el2n_last", np.float64, float("nan")),
    )

    def __init__(self, splits: tuple[str, ...] | list[str] = ("train",), **kwargs: object) -> None:
        super().__init__(splits, **kwargs)  # type: ignore[arg-type]

    @override
    def per_batch(self, logits: Tensor, targets: Tensor) -> dict[str, Tensor]:
        return {
            "p_label": F.label_probability(logits, targets),
            "correct": F.is_correct(logits, targets),
            "margin": F.logit_margin(logits, targets),
            "el2n": F.el2n(logits, targets),
        }

    @override
    def fold(self, states: dict[str, np.ndarray], epoch: dict[str, np.ndarray], seen: np.ndarray) -> None:
        states.update(
            F.fold_data_map(F.DataMapState.from_states(states), epoch["p_label"], epoch["correct"], seen).as_states()
        )
        states.update(F.fold_forgetting(F.ForgettingState.from_states(states), epoch["correct"], seen).as_states())
        states.update(F.fold_aum(F.AumState.from_states(states), epoch["margin"], seen).as_states())
        states["el2n_last"][seen] = epoch["el2n"][seen]

    @override
    def split_columns(self, states: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, Any]:
        """The columns; ``never_learned`` is a nullable boolean array (NA: never seen)."""
        data_map, forgetting = F.DataMapState.from_states(states), F.ForgettingState.from_states(states)
        confidence, variability = F.dm_confidence(data_map), F.dm_variability(data_map)
        return {
            "dm_confidence": confidence,
            "dm_variability": variability,
            "dm_correctness": F.dm_correctness(data_map),
            "dm_region": F.data_map_regions(confidence, variability),
            "forgetting": F.forgetting(forgetting),
            # nullable: NA for a sample never seen (neither learned nor not), never Python objects
            "never_learned": pd.arrays.BooleanArray(F.never_learned(forgetting), data_map.dm_epochs == 0),
            "aum": F.aum(F.AumState.from_states(states)),
            "el2n": states["el2n_last"].copy(),
        }

    @override
    def state_scalars(self, states: dict[str, np.ndarray]) -> dict[str, float]:
        """Per epoch: the mean AUM so far and the forgetting events so far (cumulative)."""
        aum = F.aum(F.AumState.from_states(states))
        return {
            "aum_mean": float(np.nanmean(aum)) if np.isfinite(aum).any() else float("nan"),
            "forgetting_events": float(states["forgetting_count"].sum()),
        }

    @override
    def column_info(self) -> dict[str, ColumnInfo]:
        return COLUMN_INFO

    @override
    def compute(self, trainer: pl.Trainer, arrays: FitEndArrays) -> Contribution:
        contribution = super().compute(trainer, arrays)
        contribution.views.append(log_data_maps)
        return contribution


COLUMN_INFO = {
    "dm_confidence": ColumnInfo(
        "mean over epochs of p(label) (data maps)", range=(0.0, 1.0), higher_is_harder=False, perspective=True
    ),
    "dm_variability": ColumnInfo("std over epochs of p(label), ddof 0 (data maps)", range=(0.0, 0.5)),
    "dm_correctness": ColumnInfo("share of epochs where argmax == label", range=(0.0, 1.0), higher_is_harder=False),
    "dm_region": ColumnInfo("easy (confidence >= 0.5), ambiguous (variability >= 0.2), hard, or unseen"),
    "forgetting": ColumnInfo(
        "correct-to-wrong transitions between consecutive epochs",
        unit="events",
        higher_is_harder=True,
        perspective=True,
    ),
    "never_learned": ColumnInfo("never correct in any epoch (kept apart from the forgetting count)"),
    "aum": ColumnInfo(
        "area under the margin: mean over epochs of z_label - max other logit",
        unit="logit",
        higher_is_harder=False,
        perspective=True,
    ),
    "el2n": ColumnInfo(
        "|| softmax - onehot(label) ||_2 at the last epoch seen",
        range=(0.0, float(np.sqrt(2))),
        higher_is_harder=True,
        perspective=True,
    ),
}
