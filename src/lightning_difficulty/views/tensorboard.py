"""Find the TensorBoard writer of a trainer, and log per-epoch curves to every logger."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn

if TYPE_CHECKING:
    import lightning.pytorch as pl


def tensorboard_logger(trainer: pl.Trainer) -> TensorBoardLogger | None:
    """The trainer's first :class:`TensorBoardLogger`, or ``None`` (other loggers are left alone)."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger
    return None


def tensorboard_writer(trainer: pl.Trainer) -> Any | None:
    """The ``SummaryWriter`` behind the trainer's TensorBoard logger, or ``None``."""
    logger = tensorboard_logger(trainer)
    return None if logger is None else logger.experiment


def warn_no_tensorboard(trainer: pl.Trainer, what: str) -> None:
    """One warning that TensorBoard-only views are skipped (the table and the scalars are still written)."""
    rank_zero_warn(
        f"lightning-difficulty: {what} need a TensorBoardLogger and are skipped (the trainer's loggers: "
        f"{[type(x).__name__ for x in trainer.loggers] or 'none'}). The per-sample table, summary.json and the "
        "per-epoch scalars are written regardless."
    )


def log_histograms(trainer: pl.Trainer, split: str, per_sample: dict[str, np.ndarray]) -> None:
    """Per-sample distributions as TensorBoard histograms ``difficulty/<name>/<split>`` at the global step."""
    if not trainer.is_global_zero:
        return
    writer = tensorboard_writer(trainer)
    if writer is None:
        if trainer.loggers:
            warn_no_tensorboard(trainer, "per-epoch histograms")
        return
    for name, values in per_sample.items():
        if values.size:
            writer.add_histogram(f"difficulty/{name}/{split}", values, trainer.global_step)
