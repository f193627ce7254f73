"""The per-batch path of the training-time measures never synchronises the device (no host read of a tensor).

On a GPU each host read (``bool(t)``, ``t.item()``, ``t.tolist()``, ``t.cpu()``, ``t.numpy()``) stalls the
pipeline. After the first batch of a split (whose checks may read values once), the package makes none: every
such call made from a frame of ``lightning_difficulty`` during a training or validation batch is counted.
A CUDA test with ``torch.cuda.set_sync_debug_mode("error")`` checks the same on a GPU when there is one.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch

from lightning_difficulty import ConfusionScore, DifficultyReport, TrainingDynamics
from tests.helpers import TinyMLP, loaders, trainer_kwargs

HOST_READS = ("__bool__", "item", "tolist", "cpu", "numpy")


def _from_package() -> bool:
    frame = sys._getframe(2)
    while frame is not None:
        if "lightning_difficulty" in frame.f_code.co_filename:
            return True
        frame = frame.f_back
    return False


class SyncSpy:
    """Counts host reads made from the package while ``active``."""

    def __init__(self) -> None:
        self.active = False
        self.calls: list[str] = []
        self.originals = {name: getattr(torch.Tensor, name) for name in HOST_READS}

    def install(self) -> None:
        for name, original in self.originals.items():

            def spy(tensor: torch.Tensor, *args: Any, __name: str = name, __original: Any = original) -> Any:
                if self.active and _from_package():
                    self.calls.append(__name)
                return __original(tensor, *args)

            setattr(torch.Tensor, name, spy)

    def remove(self) -> None:
        for name, original in self.originals.items():
            setattr(torch.Tensor, name, original)


class Window(L.Callback):
    """Opens the spy at a batch's start (first in the callback list) or closes it at its end (last)."""

    def __init__(self, spy: SyncSpy, *, opens: bool) -> None:
        self.spy, self.opens = spy, opens

    def _start(self, batch_idx: int) -> None:
        if self.opens and batch_idx >= 1:
            self.spy.active = True

    def _end(self) -> None:
        if not self.opens:
            self.spy.active = False

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self._start(batch_idx)

    def on_train_batch_end(self, *args: Any) -> None:
        self._end()

    def on_validation_batch_start(
        self, trainer: L.Trainer, pl_module: Any, batch: Any, batch_idx: int, *a: Any
    ) -> None:
        if not trainer.sanity_checking:
            self._start(batch_idx)

    def on_validation_batch_end(self, *args: Any) -> None:
        self._end()


def test_training_time_measures_make_no_host_read_after_the_first_batch(tmp_path: Path) -> None:
    spy = SyncSpy()
    callbacks = [
        Window(spy, opens=True),
        ConfusionScore(),
        TrainingDynamics(),
        DifficultyReport(tmp_path / "out"),
        Window(spy, opens=False),
    ]
    train, val = loaders(48, 21, batch_size=8)
    spy.install()
    try:
        L.Trainer(max_epochs=2, callbacks=callbacks, **trainer_kwargs(tmp_path)).fit(TinyMLP(), train, val)
    finally:
        spy.remove()
    assert spy.calls == []
    assert (tmp_path / "out" / "scores.parquet").exists()  # the run went through the spied batches


def test_the_spy_sees_a_host_read() -> None:
    # the check above cannot pass vacuously: a read from the package's code is counted
    from lightning_difficulty.data import class_targets

    spy = SyncSpy()
    spy.install()
    spy.active = True
    try:
        class_targets(torch.tensor([[0.0, 1.0]]), where="batch")  # one-hot rows are checked on the host
    finally:
        spy.remove()
    assert "__bool__" in spy.calls


class SyncErrors(L.Callback):
    """Around the callbacks' batch-end hooks (where the measures read the batch): any synchronisation raises."""

    def __init__(self, *, opens: bool) -> None:
        self.opens = opens

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if batch_idx >= 1:
            torch.cuda.set_sync_debug_mode("error" if self.opens else "default")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_no_synchronisation_on_cuda(tmp_path: Path) -> None:  # pragma: no cover - GPU only
    train, _ = loaders(48, 21, batch_size=8)
    callbacks = [
        SyncErrors(opens=True),
        ConfusionScore(splits=["train"]),
        TrainingDynamics(),
        DifficultyReport(tmp_path),
        SyncErrors(opens=False),
    ]
    try:
        L.Trainer(max_epochs=1, callbacks=callbacks, **trainer_kwargs(tmp_path, accelerator="gpu")).fit(
            TinyMLP(), train
        )
    finally:
        torch.cuda.set_sync_debug_mode("default")
