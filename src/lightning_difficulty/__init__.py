"""Per-sample difficulty analysis for PyTorch Lightning classifiers."""

from lightning_difficulty.analysis import ErrorTaxonomy
from lightning_difficulty.callbacks import (
    ConfusionScore,
    DataDifficulty,
    DifficultyCallback,
    DifficultyReport,
    HumanAlignment,
    PredictionDepth,
)
from lightning_difficulty.data import BatchKeys, IndexedDataset, MissingIndexError
from lightning_difficulty.functional.taxonomy import TaxonomyThresholds
from lightning_difficulty.table import read_scores

__version__ = "0.1.0"

__all__ = [
    "BatchKeys",
    "ConfusionScore",
    "DataDifficulty",
    "DifficultyCallback",
    "DifficultyReport",
    "ErrorTaxonomy",
    "HumanAlignment",
    "IndexedDataset",
    "MissingIndexError",
    "PredictionDepth",
    "TaxonomyThresholds",
    "read_scores",
]
