"""Find the TensorBoard writer of a trainer, if it has one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lightning.pytorch.loggers import TensorBoardLogger

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
