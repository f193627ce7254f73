"""Per-sample difficulty analysis for PyTorch Lightning classifiers.

Names are imported on first use (PEP 562), so ``import lightning_difficulty`` and the command line's
``--help`` stay fast; ``from lightning_difficulty import ConfusionScore`` works as usual.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
    from lightning_difficulty.groups import groups_from_run
    from lightning_difficulty.pipeline.analysis import ErrorTaxonomy
    from lightning_difficulty.pipeline.capture import CaptureRequest
    from lightning_difficulty.runs.combine import combine_runs
    from lightning_difficulty.runs.compare import compare_runs, evaluate_predictions
    from lightning_difficulty.storage.manifest import GroupsManifest, HardSubset, HardSubsetManifest
    from lightning_difficulty.storage.table import read_scores

_LOCATIONS = {
    "BatchKeys": "lightning_difficulty.data",
    "CaptureRequest": "lightning_difficulty.pipeline.capture",
    "ColumnInfo": "lightning_difficulty.callbacks",
    "ConfusionScore": "lightning_difficulty.callbacks",
    "Contribution": "lightning_difficulty.callbacks",
    "DataDifficulty": "lightning_difficulty.callbacks",
    "DifficultyCallback": "lightning_difficulty.callbacks",
    "DifficultyReport": "lightning_difficulty.callbacks",
    "ErrorTaxonomy": "lightning_difficulty.pipeline.analysis",
    "GroupDROLoss": "lightning_difficulty.groupdro",
    "GroupDROModule": "lightning_difficulty.groupdro",
    "GroupsManifest": "lightning_difficulty.storage.manifest",
    "HardSubset": "lightning_difficulty.storage.manifest",
    "HardSubsetManifest": "lightning_difficulty.storage.manifest",
    "HumanAlignment": "lightning_difficulty.callbacks",
    "IndexedDataset": "lightning_difficulty.data",
    "MissingIndexError": "lightning_difficulty.data",
    "PerSampleAccumulator": "lightning_difficulty.callbacks",
    "PredictionDepth": "lightning_difficulty.callbacks",
    "SampleState": "lightning_difficulty.callbacks",
    "TaxonomyThresholds": "lightning_difficulty.functional.taxonomy",
    "TrainingDynamics": "lightning_difficulty.callbacks",
    "combine_runs": "lightning_difficulty.runs.combine",
    "compare_runs": "lightning_difficulty.runs.compare",
    "evaluate_predictions": "lightning_difficulty.runs.compare",
    "group_balanced_sampler": "lightning_difficulty.groupdro",
    "groups_from_run": "lightning_difficulty.groups",
    "read_scores": "lightning_difficulty.storage.table",
}

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
    "groups_from_run",
    "read_scores",
]


def __getattr__(name: str) -> Any:
    if name in _LOCATIONS:
        value = getattr(importlib.import_module(_LOCATIONS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lightning_difficulty' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
