"""The contract between difficulty callbacks and :class:`DifficultyReport`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from lightning.pytorch.callbacks import Callback

if TYPE_CHECKING:
    import lightning.pytorch as pl

Columns = dict[str, dict[str, np.ndarray]]
"""``split -> column name -> (N,) array`` keyed by dataset index."""


def split_name(dataloader_idx: int) -> str:
    """``"val"`` for the first validation dataloader, ``"val_<i>"`` for the others."""
    return "val" if dataloader_idx == 0 else f"val_{dataloader_idx}"


def split_loader(trainer: pl.Trainer, split: str) -> Any:
    """The trainer's dataloader of ``split`` (``"train"``, ``"val"``, ``"val_<i>"``), the inverse of
    :func:`split_name`."""
    if split == "train":
        return trainer.train_dataloader
    loaders: Any = trainer.val_dataloaders
    position = 0 if split == "val" else int(split.split("_")[1])
    return loaders[position] if isinstance(loaders, (list, tuple)) else loaders


def default_run_dir(trainer: pl.Trainer) -> Path:
    """``<trainer.log_dir>/difficulty`` (the same path on every rank)."""
    root = trainer.log_dir or trainer.default_root_dir
    return Path(root) / "difficulty"


def run_dir(trainer: pl.Trainer) -> Path:
    """The run's output folder: the first callback with a ``run_dir(trainer)`` method sets it (the
    :class:`DifficultyReport`, with its ``dirpath``); otherwise ``<trainer.log_dir>/difficulty``."""
    for cb in trainer.callbacks:  # type: ignore[attr-defined]
        resolve = getattr(cb, "run_dir", None)
        if callable(resolve):
            return Path(resolve(trainer))
    return default_run_dir(trainer)


class DifficultyCallback(Callback):
    """A callback that contributes per-sample columns to the difficulty table.

    Subclasses compute at fit end in :meth:`_compute` (run once per fit through :meth:`compute`, on
    every rank because it may run collective operations), store ``split -> column -> array`` in
    ``self.results`` and add scalars through :meth:`summary`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.results: Columns = {}
        self._computed_step: int | None = None

    def compute(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Finish the computation once per fit (later calls at the same global step do nothing)."""
        if self._computed_step == trainer.global_step:
            return
        self._compute(trainer, pl_module)
        self._computed_step = trainer.global_step

    def _compute(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The fit-end work; default: nothing (the callback accumulated during training)."""

    def columns(self) -> Columns:
        """Per-sample columns for every split this callback knows."""
        return self.results

    def summary(self) -> dict[str, Any]:
        """Scalars for ``summary.json``."""
        return {}

    def prepare_pass(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Called before the fit-end pass reads :meth:`pass_layers` (e.g. to resolve layer names)."""

    def pass_layers(self) -> dict[str, Any]:
        """Layers (name -> reduction) this callback needs captured in the fit-end evaluation pass."""
        return {}

    def needs_pass_inputs(self) -> bool:
        """Whether the fit-end evaluation pass must keep the raw inputs."""
        return False
