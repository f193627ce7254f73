"""Lightning callbacks that record per-sample difficulty, and the report that composes them."""

from lightning_difficulty.callbacks.accumulator import PerSampleAccumulator, SampleState
from lightning_difficulty.callbacks.base import ColumnInfo, Contribution, DifficultyCallback
from lightning_difficulty.callbacks.confusion import ConfusionScore
from lightning_difficulty.callbacks.data_difficulty import DataDifficulty
from lightning_difficulty.callbacks.dynamics import TrainingDynamics
from lightning_difficulty.callbacks.human import HumanAlignment
from lightning_difficulty.callbacks.prediction_depth import PredictionDepth
from lightning_difficulty.callbacks.report import DifficultyReport

__all__ = [
    "ColumnInfo",
    "ConfusionScore",
    "Contribution",
    "DataDifficulty",
    "DifficultyCallback",
    "DifficultyReport",
    "HumanAlignment",
    "PerSampleAccumulator",
    "PredictionDepth",
    "SampleState",
    "TrainingDynamics",
]
