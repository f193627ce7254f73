"""Lightning callbacks that record per-sample difficulty."""

from lightning_difficulty.callbacks.base import DifficultyCallback
from lightning_difficulty.callbacks.confusion import ConfusionScore
from lightning_difficulty.callbacks.data_difficulty import DataDifficulty
from lightning_difficulty.callbacks.human import HumanAlignment
from lightning_difficulty.callbacks.prediction_depth import PredictionDepth
from lightning_difficulty.callbacks.report import DifficultyReport

__all__ = [
    "ConfusionScore",
    "DataDifficulty",
    "DifficultyCallback",
    "DifficultyReport",
    "HumanAlignment",
    "PredictionDepth",
]
