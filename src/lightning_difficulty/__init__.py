"""Per-sample difficulty analysis for PyTorch Lightning classifiers."""

from lightning_difficulty.callbacks import (
    ColumnInfo,
    ConfusionScore,
    Contribution,
    DataDifficulty,
    DifficultyCallback,
    DifficultyReport,
    HumanAlignment,
    PerSampleAccumulator,
    PredictionDepth,
    SampleState,
    TrainingDynamics,
)
from lightning_difficulty.data import BatchKeys, IndexedDataset, MissingIndexError
from lightning_difficulty.functional.taxonomy import TaxonomyThresholds
from lightning_difficulty.groupdro import GroupDROLoss, GroupDROModule, group_balanced_sampler
from lightning_difficulty.pipeline.analysis import ErrorTaxonomy
from lightning_difficulty.pipeline.capture import CaptureRequest
from lightning_difficulty.runs.combine import combine_runs
from lightning_difficulty.runs.compare import compare_runs, evaluate_predictions
from lightning_difficulty.storage.manifest import GroupsManifest, HardSubset, HardSubsetManifest
from lightning_difficulty.storage.table import read_scores

__version__ = "0.1.0"

__all__ = [
    "BatchKeys",
    "CaptureRequest",
    "ColumnInfo",
    "Contribution",
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
    "PerSampleAccumulator",
    "PredictionDepth",
    "SampleState",
    "TaxonomyThresholds",
    "TrainingDynamics",
    "combine_runs",
    "compare_runs",
    "evaluate_predictions",
    "group_balanced_sampler",
    "read_scores",
]
