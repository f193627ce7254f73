"""DataDifficulty: kDN (k-disagreeing neighbours, Smith et al. 2014) in input space."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from torch.utils.data import DataLoader
from typing_extensions import override

from lightning_difficulty.callbacks._probe import InputShapeGuard, check_k_fits_reference
from lightning_difficulty.callbacks.base import ColumnInfo, Contribution, DifficultyCallback
from lightning_difficulty.data import BatchKeys
from lightning_difficulty.pipeline.capture import CaptureRequest, FitEndArrays
from lightning_difficulty.pipeline.neighbours import ProbeConfig

if TYPE_CHECKING:
    import lightning.pytorch as pl


class DataDifficulty(DifficultyCallback):
    """kDN per sample: the share of its ``k`` nearest training inputs whose true label differs from its own.

    The data perspective of DifficultyEyes: computed on the raw (flattened) inputs with ground-truth
    labels, independent of the model. Training samples leave themselves out. One score per sample in
    ``[0, 1]``; higher = harder. Column: ``kdn``.

    Args:
        k: neighbours (Smith et al.: 5-10).
        input_size: average-pool image inputs to ``input_size x input_size`` first (for large images).
        index: ``"auto"`` (exact below 1,000,000 training rows, IVF from there on), ``"flat"`` (exact),
            ``"ivf"`` or ``"hnsw"``. When it resolves to the same index as PredictionDepth's input probe, the two
            share one input-space search.
        reference_dataloader: un-augmented training data (default: the training dataloader, un-shuffled).

    Example::

        trainer = L.Trainer(callbacks=[ConfusionScore(), DataDifficulty(k=10), DifficultyReport()])
    """

    def __init__(
        self,
        k: int = 10,
        *,
        input_size: int | None = None,
        index: Literal["auto", "flat", "ivf", "hnsw"] = "auto",
        reference_dataloader: DataLoader | None = None,
        use_gpu: bool | Literal["auto"] = "auto",
    ) -> None:
        super().__init__()
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"Expected argument `k` to be a positive integer, but got {k!r}.")
        if input_size is not None and (not isinstance(input_size, int) or input_size < 1):
            raise ValueError(
                f"Expected argument `input_size` to be a positive integer or None, but got {input_size!r}."
            )
        self.probe = ProbeConfig(k, index, (), use_gpu)
        self.input_size = input_size
        self._input_shape = InputShapeGuard("DataDifficulty", input_size=input_size)
        self.reference_dataloader = reference_dataloader

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(k=self.probe.k, input_size=self.input_size)

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._input_shape.reset()

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        check_k_fits_reference(trainer, self.probe.k, self.reference_dataloader, "DataDifficulty")

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._input_shape.check(batch, BatchKeys())

    @override
    def on_validation_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if trainer.state.fn == "fit":
            self._input_shape.check(batch, BatchKeys())

    @override
    def capture_request(self) -> CaptureRequest:
        return CaptureRequest(
            inputs=True,
            input_size=self.input_size,
            reference_dataloader=self.reference_dataloader,
            input_search=self.probe,
        )

    @override
    def compute(self, trainer: pl.Trainer, arrays: FitEndArrays) -> Contribution:
        found = arrays.input_neighbours(self.probe)  # shared with PredictionDepth's input probe; collective
        if not trainer.is_global_zero:
            return Contribution()
        reference_labels = np.asarray(arrays.splits["train"].labels)
        columns = {
            split: {"kdn": answer.disagreement(reference_labels, np.asarray(arrays.splits[split].labels))}
            for split, answer in found.items()
        }
        info = {
            "kdn": ColumnInfo(
                f"share of the k={self.probe.k} nearest training inputs whose label differs from the sample's own "
                "(Smith et al. 2014; data difficulty)",
                range=(0.0, 1.0),
                higher_is_harder=True,
                perspective=True,
            )
        }
        summary = {split: {"mean_kdn": float(c["kdn"].mean()), "k": self.probe.k} for split, c in columns.items()}
        return Contribution(columns=columns, info=info, summary=summary)
