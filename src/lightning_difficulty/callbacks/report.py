"""DifficultyReport: at fit end, the per-sample table, summaries and TensorBoard views."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback
from typing_extensions import override

from lightning_difficulty.callbacks._distributed import barrier
from lightning_difficulty.callbacks.base import Columns, DifficultyCallback, default_run_dir
from lightning_difficulty.functional.bands import band_error_correlation
from lightning_difficulty.inference import SplitArrays, fit_end_arrays
from lightning_difficulty.io import write_json
from lightning_difficulty.table import build_table, write_table

if TYPE_CHECKING:
    import lightning.pytorch as pl


class DifficultyReport(Callback):
    """Write the per-sample difficulty table and the TensorBoard views at the end of ``fit``.

    Runs the final model once in eval mode over the training data (un-shuffled) and every
    validation dataloader for ``label`` / ``prediction`` / ``correct``, gathers the columns of every
    other difficulty callback in the trainer, and on global rank 0 writes atomically:

    - ``scores.parquet``: one row per (split, index);
    - ``summary.json``: accuracy, confusion quartiles, error rate by confusion band and more.

    With a :class:`~lightning.pytorch.loggers.TensorBoardLogger` it also logs figures and image
    grids (no logger or another logger: files only).

    Args:
        dirpath: output folder (default ``<trainer.log_dir>/difficulty``).
        num_bands: confusion bands for the "error rate by confusion band" figure.
        grid_per_class: samples per class on each side of the hardest/easiest grids.
        class_names: names for figures (default ``"0"``, ``"1"``, ...).
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
        class_names: list[str] | None = None,
        keep_cache: bool = False,
    ) -> None:
        if not isinstance(num_bands, int) or num_bands < 2:
            raise ValueError(f"Expected argument `num_bands` to be an integer >= 2, but got {num_bands!r}.")
        if not isinstance(grid_per_class, int) or grid_per_class < 0:
            raise ValueError(f"Expected argument `grid_per_class` to be a non-negative integer, but got {grid_per_class!r}.")
        self.dirpath = Path(dirpath) if dirpath is not None else None
        self.num_bands = num_bands
        self.grid_per_class = grid_per_class
        self.class_names = class_names
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
        arrays = fit_end_arrays(trainer, pl_module, run_dir / "cache")
        if trainer.is_global_zero:
            self.table = build_table(_merge_columns(arrays, callbacks))
            self.summary = self._summarise(self.table, callbacks)
            write_table(self.table, run_dir / "scores.parquet")
            write_json(run_dir / "summary.json", self.summary)
            self._log_views(trainer, arrays)
        barrier()
        if trainer.is_global_zero and not self.keep_cache:
            shutil.rmtree(run_dir / "cache", ignore_errors=True)

    # -- summaries -------------------------------------------------------------------------------
    def _summarise(self, table: pd.DataFrame, callbacks: list[DifficultyCallback]) -> dict[str, Any]:
        summary: dict[str, Any] = {"splits": {}}
        for split, rows in table.groupby("split", sort=False):
            entry: dict[str, Any] = {"num_samples": len(rows)}
            if "correct" in rows:
                entry["accuracy"] = float(rows["correct"].mean())
            if "confusion" in rows and rows["confusion"].notna().any():
                confusion = rows["confusion"].to_numpy()
                seen = ~np.isnan(confusion)
                entry["confusion_quartiles"] = np.quantile(confusion[seen], [0.25, 0.5, 0.75]).tolist()
                if "correct" in rows and seen.sum() > 1:
                    entry["error_by_confusion_band"] = _band_summary(
                        confusion[seen], rows["correct"].to_numpy()[seen], self.num_bands
                    )
            summary["splits"][str(split)] = entry
        for cb in callbacks:
            part = cb.summary()
            if part:
                summary[type(cb).__name__] = part
        return summary

    # -- TensorBoard -------------------------------------------------------------------------------
    def _log_views(self, trainer: pl.Trainer, arrays: dict[str, SplitArrays]) -> None:
        from lightning_difficulty.views.figures import error_rate_by_band_figure
        from lightning_difficulty.views.tensorboard import tensorboard_writer

        writer = tensorboard_writer(trainer)
        if writer is None or self.table is None:
            return
        step = trainer.current_epoch
        for split, rows in self.table.groupby("split", sort=False):
            split = str(split)
            band = self.summary["splits"][split].get("error_by_confusion_band")
            if band is not None:
                fig = error_rate_by_band_figure(pd.DataFrame(band["bands"]), rho=band["pearson_rho"], split=split)
                writer.add_figure(f"difficulty/error_rate_by_confusion_band/{split}", fig, step)
            if "confusion" in rows and "label" in rows and self.grid_per_class > 0:
                self._log_grid(writer, trainer, split, rows, step)
        writer.flush()

    def _log_grid(self, writer: Any, trainer: pl.Trainer, split: str, rows: pd.DataFrame, step: int) -> None:
        from lightning_difficulty.views.images import hardest_easiest_grid_figure

        dataset = _split_dataset(trainer, split)
        if dataset is None:
            return
        scored = rows[rows["confusion"].notna()]
        chosen = []
        for _, group in scored.groupby("label"):
            ordered = group.sort_values("confusion")
            chosen.append(ordered.head(self.grid_per_class))
            chosen.append(ordered.tail(self.grid_per_class))
        picked = pd.concat(chosen).drop_duplicates("index")
        images = torch.stack([torch.as_tensor(np.asarray(dataset[int(i)][0])) for i in picked["index"]])
        num_classes = int(rows["label"].max()) + 1
        names = self.class_names or [str(c) for c in range(num_classes)]
        fig = hardest_easiest_grid_figure(
            images, picked["confusion"].to_numpy(), picked["label"].to_numpy(), class_names=names,
            per_class=self.grid_per_class,
        )
        writer.add_figure(f"difficulty/hardest_easiest/{split}", fig, step)


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
    return {"pearson_rho": float(result.rho), "bands": bands}


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


def _split_dataset(trainer: pl.Trainer, split: str) -> Any:
    if split == "train":
        loader: Any = trainer.train_dataloader
    else:
        loaders = trainer.val_dataloaders
        position = 0 if split == "val" else int(split.split("_")[1])
        loader = loaders[position] if isinstance(loaders, (list, tuple)) else loaders
    return getattr(loader, "dataset", None)
