"""DifficultyReport: at fit end, the per-sample table, summaries and TensorBoard views."""

from __future__ import annotations

import dataclasses
import functools
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from lightning_difficulty.callbacks._distributed import barrier
from lightning_difficulty.callbacks.base import Columns, DifficultyCallback, default_run_dir, split_loader
from lightning_difficulty.data import item_input
from lightning_difficulty.functional.bands import band_error_correlation
from lightning_difficulty.functional.taxonomy import TaxonomyThresholds
from lightning_difficulty.pipeline import analysis
from lightning_difficulty.pipeline.analysis import ErrorTaxonomy, GroupSpec, HardSubsetSpec
from lightning_difficulty.pipeline.capture import SplitArrays, collect_request, fit_end_arrays
from lightning_difficulty.storage.atomic import write_json
from lightning_difficulty.storage.table import build_table, write_table

if TYPE_CHECKING:
    import lightning.pytorch as pl


class DifficultyReport(Callback):
    """Write the per-sample difficulty table and the TensorBoard views at the end of ``fit``.

    Runs the final model once in eval mode over the training data (un-shuffled) and every
    validation dataloader for ``label`` / ``prediction`` / ``correct``, gathers the columns of every
    other difficulty callback in the trainer, derives the DifficultyEyes ``pattern`` and the
    ``error_category`` where their inputs exist, and on global rank 0 writes atomically:

    - ``scores.parquet``: one row per (split, index);
    - ``summary.json``: accuracy, confusion quartiles, error rate by confusion band, correlations
      between perspectives, pattern and error-category counts.

    With a :class:`~lightning.pytorch.loggers.TensorBoardLogger` it also logs figures, image grids
    and a Projector embedding (no logger or another logger: files only).

    Args:
        dirpath: output folder (default ``<trainer.log_dir>/difficulty``).
        num_bands: confusion bands for the "error rate by confusion band" figure and ``confusion_band``.
        grid_per_class: samples per class on each side of the hardest/easiest grids (0: none).
        class_names: names for figures (default ``"0"``, ``"1"``, ...).
        taxonomy: thresholds that binarise the perspectives for the ``pattern`` column.
        error_taxonomy: options for the ``error_category`` column (default: off).
        hard_fraction: share of each split that forms the hard subset (``hard`` column); ``None`` to skip.
        hard_top_k: a fixed number of hard samples per split instead of ``hard_fraction``.
        hard_split: the split whose hard subset is written to ``hard_subset.json``.
        group_bands: GroupDRO groups as this many quantile bands of confusion (``group`` column,
            ``groups.json``), edges fitted on the training split; ``None`` to skip.
        group_thresholds: fixed band edges in nats instead (Albiero et al. split ImageNet at ``(5.0,)``).
        projector_split: split shown in TensorBoard's Projector (needs PredictionDepth for embeddings).
        keep_cache: keep the fit-end pass arrays (``cache/``: logits, layer embeddings) on disk.

    Example::

        trainer = L.Trainer(callbacks=[ConfusionScore(), DifficultyReport()])
        trainer.fit(model, train_loader, val_loader)
        table = read_scores(trainer.log_dir + "/difficulty")
    """

    def __init__(
        self,
        dirpath: str | Path | None = None,
        *,
        num_bands: int = 10,
        grid_per_class: int = 4,
        class_names: Sequence[str] | None = None,
        taxonomy: TaxonomyThresholds | None = None,
        error_taxonomy: ErrorTaxonomy | None = None,
        hard_fraction: float | None = 0.1,
        hard_top_k: int | None = None,
        hard_split: str = "val",
        group_bands: int | None = 2,
        group_thresholds: Sequence[float] | None = None,
        projector_split: str = "val",
        keep_cache: bool = False,
    ) -> None:
        if not isinstance(num_bands, int) or num_bands < 2:
            raise ValueError(f"Expected argument `num_bands` to be an integer >= 2, but got {num_bands!r}.")
        if not isinstance(grid_per_class, int) or grid_per_class < 0:
            raise ValueError(
                f"Expected argument `grid_per_class` to be a non-negative integer, but got {grid_per_class!r}."
            )
        self.dirpath = Path(dirpath) if dirpath is not None else None
        self.num_bands = num_bands
        self.grid_per_class = grid_per_class
        self.class_names = list(class_names) if class_names is not None else None
        self.taxonomy = taxonomy or TaxonomyThresholds()
        self.error_taxonomy = error_taxonomy
        self.hard_subset = (
            HardSubsetSpec(hard_fraction, hard_top_k, hard_split) if hard_fraction or hard_top_k else None
        )
        self.groups = (
            GroupSpec(group_bands, tuple(group_thresholds) if group_thresholds else None)
            if group_bands or group_thresholds
            else None
        )
        self.projector_split = projector_split
        self.keep_cache = keep_cache
        self.table: pd.DataFrame | None = None
        self.summary: dict[str, Any] = {}

    def run_dir(self, trainer: pl.Trainer) -> Path:
        return self.dirpath if self.dirpath is not None else default_run_dir(trainer)

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        run_dir = self.run_dir(trainer)
        callbacks = [cb for cb in trainer.callbacks if isinstance(cb, DifficultyCallback)]  # type: ignore[attr-defined]
        for cb in callbacks:
            cb.compute(trainer, pl_module)
        arrays = fit_end_arrays(trainer, pl_module)
        if trainer.is_global_zero:
            table = build_table(_merge_columns(arrays, callbacks))
            self.table, self.summary = self._analyse(table, callbacks)
            self._write_manifests(run_dir, trainer)
            write_table(self.table, run_dir / "scores.parquet")
            write_json(run_dir / "summary.json", self.summary)
            self._log_views(trainer, pl_module, arrays, callbacks)
        barrier()
        if trainer.is_global_zero and not self.keep_cache:
            shutil.rmtree(run_dir / "cache", ignore_errors=True)

    # -- analyses ----------------------------------------------------------------------------------
    def _analyse(self, table: pd.DataFrame, callbacks: list[DifficultyCallback]) -> tuple[pd.DataFrame, dict[str, Any]]:
        summary: dict[str, Any] = {"splits": {}}
        parts = []
        for split, rows in table.groupby("split", sort=False):
            rows = rows.copy()
            entry = self._summarise_split(rows)
            if "human_difficulty" in rows and rows["human_difficulty"].notna().any():
                entry["human_correlations"] = analysis.correlations(rows)
            patterns = analysis.difficulty_patterns(rows, self.taxonomy)
            if patterns is not None:
                rows["pattern"] = patterns
                entry["patterns"] = analysis.pattern_report(rows)
                entry["model_perspective"] = analysis.model_perspective(rows)
            if self.error_taxonomy is not None and "correct" in rows:
                counts = _annotation_counts(callbacks, str(split))
                rows["error_category"] = analysis.error_categories(rows, self.error_taxonomy, counts)
                entry["error_categories"] = analysis.error_report(rows, band_column="confusion_band")
            summary["splits"][str(split)] = entry
            parts.append(rows)
        for cb in callbacks:
            part = cb.summary()
            if part:
                summary[type(cb).__name__] = part
        return pd.concat(parts, ignore_index=True), summary

    def _summarise_split(self, rows: pd.DataFrame) -> dict[str, Any]:
        entry: dict[str, Any] = {"num_samples": len(rows)}
        if "correct" in rows:
            entry["accuracy"] = float(rows["correct"].mean())
        if "confusion" in rows and rows["confusion"].notna().sum() > 1:
            confusion = rows["confusion"].to_numpy()
            seen = ~np.isnan(confusion)
            entry["confusion_quartiles"] = np.quantile(confusion[seen], [0.25, 0.5, 0.75]).tolist()
            if "correct" in rows:
                band = _band_summary(confusion[seen], rows["correct"].to_numpy()[seen], self.num_bands)
                entry["error_by_confusion_band"] = band
                bands = np.full(len(rows), -1, dtype=np.int64)
                bands[seen] = np.searchsorted(band["edges"], confusion[seen], side="right")
                rows["confusion_band"] = bands
        return entry

    def _write_manifests(self, run_dir: Path, trainer: pl.Trainer) -> None:
        """Hard subset and GroupDRO groups: columns in the table, manifests beside it."""
        assert self.table is not None
        parts = dict(tuple(self.table.groupby("split", sort=False)))
        metadata = {"epochs": trainer.current_epoch, "global_step": trainer.global_step, "run_dir": str(run_dir)}
        if self.hard_subset is not None:
            for split, rows in parts.items():
                manifest = analysis.hard_column(rows, self.hard_subset)
                if manifest is not None and split == self.hard_subset.split:
                    manifest = dataclasses.replace(manifest, metadata=metadata)
                    manifest.to_json(run_dir / "hard_subset.json")
                    self.summary["hard_subset"] = {
                        "split": split,
                        "size": len(manifest.indices),
                        "threshold": manifest.threshold,
                    }
        fitted = parts.get(self.groups.split) if self.groups is not None else None
        groups = (
            analysis.group_manifest(fitted, self.groups) if fitted is not None and self.groups is not None else None
        )
        if groups is not None:
            groups = dataclasses.replace(groups, metadata=metadata)
            groups.to_json(run_dir / "groups.json")
            for rows in parts.values():
                rows["group"] = analysis.group_column(rows, groups)
            self.summary["groups"] = {"split": groups.split, "edges": list(groups.edges), "sizes": list(groups.sizes)}
        self.table = pd.concat(parts.values(), ignore_index=True)

    # -- TensorBoard -------------------------------------------------------------------------------
    def _log_views(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        arrays: dict[str, SplitArrays],
        callbacks: list[DifficultyCallback],
    ) -> None:
        from lightning_difficulty.callbacks.prediction_depth import PredictionDepth
        from lightning_difficulty.views import report_views
        from lightning_difficulty.views.tensorboard import tensorboard_logger

        logger = tensorboard_logger(trainer)
        if logger is None or self.table is None:
            return
        writer, step = logger.experiment, trainer.current_epoch
        num_classes = int(next(iter(arrays.values())).logits.shape[1])
        options = report_views.ViewOptions(
            class_names=self.class_names or [str(c) for c in range(num_classes)],
            grid_per_class=self.grid_per_class,
            projector_split=self.projector_split,
        )

        keys = collect_request(trainer, pl_module).batch_keys  # the keys the fit-end pass used

        def fetch(split: str, indices: Sequence[int]) -> torch.Tensor:
            dataset = split_loader(trainer, split).dataset
            return torch.stack([torch.as_tensor(np.asarray(item_input(dataset[int(i)], keys))) for i in indices])

        images = fetch if _is_image(fetch("train", [0])[0]) else None  # tabular inputs: no image views

        depth = next((cb for cb in callbacks if isinstance(cb, PredictionDepth) and cb.results), None)
        for split, rows in self.table.groupby("split", sort=False):
            split = str(split)
            report_views.log_split_views(writer, split, rows, self.summary["splits"][split], step, options, images)
            if depth is not None and "prediction_depth" in rows:
                report_views.log_depth_views(writer, split, rows, depth.probe_names, step, options)
            if depth is not None and "prediction_depth" in rows and images is not None:
                train_labels = np.asarray(arrays["train"].labels)
                report_views.log_instance_views(
                    writer,
                    split,
                    rows,
                    functools.partial(depth.nearest_neighbours, split),
                    train_labels,
                    step,
                    options,
                    images,
                )
        if depth is not None and self.projector_split in arrays and len(depth.probe_names) > 2:
            penultimate = depth.probe_names[-2]
            rows = self.table[self.table["split"] == self.projector_split]
            embeddings = arrays[self.projector_split].layers[penultimate]
            report_views.write_projection(logger.log_dir, rows, embeddings, step, options, images)
        writer.flush()


def _is_image(sample: torch.Tensor) -> bool:
    """(H, W), or (C, H, W) / (H, W, C) with 1 or 3 channels: what the image views can draw."""
    return sample.ndim == 2 or (sample.ndim == 3 and (sample.shape[0] in (1, 3) or sample.shape[-1] in (1, 3)))


def _band_summary(confusion: np.ndarray, correct: np.ndarray, num_bands: int) -> dict[str, Any]:
    result = band_error_correlation(confusion, correct.astype(bool), num_bands=num_bands)
    lows = np.concatenate([[confusion.min()], result.edges])
    highs = np.concatenate([result.edges, [confusion.max()]])
    bands = [
        {
            "band": b,
            "low": float(lows[b]),
            "high": float(highs[b]),
            "mean_score": float(result.mean_score[b]),
            "count": int(result.table.count[b]),
            "error_rate": float(result.table.error[b]),
        }
        for b in range(num_bands)
    ]
    return {"pearson_rho": float(result.rho), "edges": result.edges.tolist(), "bands": bands}


def _merge_columns(arrays: dict[str, SplitArrays], callbacks: list[DifficultyCallback]) -> Columns:
    columns: Columns = {}
    for split, data in arrays.items():
        labels = np.asarray(data.labels)
        predictions = data.predictions
        columns[split] = {"label": labels, "prediction": predictions, "correct": predictions == labels}
    for cb in callbacks:
        for split, cols in cb.columns().items():
            target = columns.setdefault(split, {})
            for name, values in cols.items():
                target.setdefault(name, values)
    return columns


def _annotation_counts(callbacks: list[DifficultyCallback], split: str) -> np.ndarray | None:
    from lightning_difficulty.callbacks.human import HumanAlignment

    for cb in callbacks:
        if isinstance(cb, HumanAlignment) and cb.split == split:
            return cb.counts
    return None
