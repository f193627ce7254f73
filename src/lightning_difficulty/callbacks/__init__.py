"""Lightning callbacks that record per-sample difficulty."""

from lightning_difficulty.callbacks.base import DifficultyCallback
from lightning_difficulty.callbacks.confusion import ConfusionScore
from lightning_difficulty.callbacks.report import DifficultyReport

__all__ = ["ConfusionScore", "DifficultyCallback", "DifficultyReport"]
