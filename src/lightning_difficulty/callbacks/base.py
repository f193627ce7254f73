"""The contract between difficulty callbacks and the report that composes their results.

Data flows one way: a callback declares what it needs from the fit-end capture pass
(:class:`~lightning_difficulty.pipeline.capture.CaptureRequest`), the report runs the pass once and
calls :meth:`DifficultyCallback.compute` with the arrays, and the callback returns a
:class:`Contribution` (columns, their meaning, a summary, views, shared inputs). Nobody reads another
callback's attributes.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from typing_extensions import override

from lightning_difficulty.pipeline.capture import CaptureRequest, FitEndArrays
from lightning_difficulty.pipeline.contribution import ColumnInfo, Columns, Contribution, Neighbours, View

if TYPE_CHECKING:
    import lightning.pytorch as pl

__all__ = [
    "ColumnInfo",
    "Columns",
    "Contribution",
    "DifficultyCallback",
    "Neighbours",
    "ReportComposer",
    "View",
    "check_writable",
    "composer_of",
    "default_run_dir",
    "output_dir",
]


class ReportComposer(Callback):
    """Marker of the callback that owns the fit-end pipeline and the run folder (:class:`DifficultyReport`)."""

    def run_dir(self, trainer: pl.Trainer) -> Path:
        return default_run_dir(trainer)


def default_run_dir(trainer: pl.Trainer) -> Path:
    """``<trainer.log_dir>/difficulty`` (the same path on every rank)."""
    root = trainer.log_dir or trainer.default_root_dir
    return Path(root) / "difficulty"


def composer_of(trainer: pl.Trainer) -> ReportComposer | None:
    """The trainer's report, if it has one."""
    return next((cb for cb in trainer.callbacks if isinstance(cb, ReportComposer)), None)  # type: ignore[attr-defined]


def output_dir(trainer: pl.Trainer) -> Path:
    """The run folder: the report's ``dirpath`` when the trainer has a report, else ``<log_dir>/difficulty``."""
    composer = composer_of(trainer)
    return composer.run_dir(trainer) if composer is not None else default_run_dir(trainer)


def check_writable(folder: Path, *, owner: str) -> None:
    """Create ``folder`` and write and remove a probe file in it, before training: a folder that cannot hold the
    run's files is refused now, not after the training time is spent."""
    probe = folder / f".write-probe-{uuid.uuid4().hex}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise PermissionError(
            f"{owner}: cannot write into the output folder {folder} ({type(err).__name__}: {err.strerror or err}). "
            "Pass a folder you can create and write to (`DifficultyReport(dirpath=...)`, or the Trainer's "
            "`default_root_dir` / logger `save_dir`)."
        ) from err


UNPACK_HINT = (
    "lightning-difficulty: batches from IndexedDataset are (input, target, index) so that every score is keyed "
    "by dataset index. Unpack three parts in your steps: `x, y, index = batch` (or `x, y, _ = batch`)."
)


class DifficultyCallback(Callback):
    """A callback that contributes per-sample columns to the difficulty table.

    Subclasses override :meth:`capture_request` (what they need from the fit-end pass; ``None`` for
    nothing) and :meth:`compute` (called by the report once per fit, on every rank, with the pass's
    arrays). Callbacks that compute at fit end need a :class:`DifficultyReport` in the trainer: without one
    they stop at ``setup`` with an error that says so.
    """

    needs_report: bool = True

    def capture_request(self) -> CaptureRequest | None:
        """What this callback needs from the fit-end capture pass (``None``: nothing)."""
        return None

    def compute(self, trainer: pl.Trainer, arrays: FitEndArrays) -> Contribution:
        """The fit-end work. Runs on every rank (it may call collectives); only rank 0's result is written."""
        return Contribution()

    @override
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        """Point a step that fails to unpack the ``(input, target, index)`` batch to the fix."""
        if isinstance(exception, ValueError) and "too many values to unpack" in str(exception):
            notes = getattr(exception, "__notes__", [])
            if not any(UNPACK_HINT in note for note in notes):
                exception.add_note(UNPACK_HINT)

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and self.needs_report and composer_of(trainer) is None:
            raise MisconfigurationException(
                f"{type(self).__name__} computes its scores at the end of fit, which the DifficultyReport runs, but "
                "the trainer has no DifficultyReport. Add one: "
                f"`Trainer(callbacks=[{type(self).__name__}(...), DifficultyReport()])`."
            )
