"""Per-sample difficulty analysis for PyTorch Lightning classifiers."""

from lightning_difficulty.callbacks import ConfusionScore, DifficultyCallback, DifficultyReport
from lightning_difficulty.data import BatchKeys, IndexedDataset, MissingIndexError
from lightning_difficulty.table import read_scores

__version__ = "0.1.0"

__all__ = [
    "BatchKeys",
    "ConfusionScore",
    "DifficultyCallback",
    "DifficultyReport",
    "IndexedDataset",
    "MissingIndexError",
    "read_scores",
]
