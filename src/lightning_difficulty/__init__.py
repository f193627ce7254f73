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
from lightning_difficulty.ensemble import combine_runs
from lightning_difficulty.functional.taxonomy import TaxonomyThresholds
from lightning_difficulty.groupdro import GroupDROLoss, GroupDROModule, group_balanced_sampler
from lightning_difficulty.manifest import GroupsManifest, HardSubset, HardSubsetManifest
from lightning_difficulty.table import read_scores
from lightning_difficulty.transfer import compare_runs, evaluate_predictions

__version__ = "0.1.0"

__all__ = [
    "BatchKeys",
    "ConfusionScore",
    "DataDifficulty",
    "DifficultyCallback",
    "DifficultyReport",
    "ErrorTaxonomy",
    "GroupDROLoss",
    "GroupDROModule",
    "GroupsManifest",
    "HardSubset",
    "HardSubsetManifest",
    "HumanAlignment",
    "IndexedDataset",
    "MissingIndexError",
    "PredictionDepth",
    "TaxonomyThresholds",
    "combine_runs",
    "compare_runs",
    "evaluate_predictions",
    "group_balanced_sampler",
    "read_scores",
]
