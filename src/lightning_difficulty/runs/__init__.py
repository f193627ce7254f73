"""Run-level tools that read finished runs: the table, comparisons, predictions of other models, seed ensembles."""

from lightning_difficulty.runs.combine import combine_runs
from lightning_difficulty.runs.compare import compare_runs, evaluate_predictions
from lightning_difficulty.runs.summary import measure_summary, read_summary
from lightning_difficulty.storage.table import read_scores

__all__ = ["combine_runs", "compare_runs", "evaluate_predictions", "measure_summary", "read_scores", "read_summary"]
