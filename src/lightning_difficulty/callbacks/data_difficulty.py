"""DataDifficulty: kDN (k-disagreeing neighbours, Smith et al. 2014) in input space."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from torch.utils.data import DataLoader
from typing_extensions import override

from lightning_difficulty.callbacks._probe import ProbeConfig, neighbour_labels_by_split
from lightning_difficulty.callbacks.base import DifficultyCallback
from lightning_difficulty.functional.knn import neighbour_disagreement
from lightning_difficulty.pipeline.capture import fit_end_arrays

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
        index: ``"flat"`` (exact), ``"ivf"`` or ``"hnsw"``.
        reference_dataloader: un-augmented training data (default: the training dataloader, un-shuffled).

    Example::

        trainer = L.Trainer(callbacks=[ConfusionScore(), DataDifficulty(k=10), DifficultyReport()])
    """

    def __init__(
        self,
        k: int = 10,
        *,
        input_size: int | None = None,
        index: Literal["flat", "ivf", "hnsw"] = "flat",
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
        self.reference_dataloader = reference_dataloader

    @override
    def needs_pass_inputs(self) -> bool:
        return True

    @override
    def _compute(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        arrays = fit_end_arrays(trainer, pl_module)
        if trainer.is_global_zero:
            reference = arrays["train"]
            assert reference.inputs is not None
            queries = {split: data.inputs for split, data in arrays.items() if data.inputs is not None}
            neighbours = neighbour_labels_by_split(reference.inputs, np.asarray(reference.labels), queries, self.probe)
            self.results = {
                split: {"kdn": neighbour_disagreement(labels, np.asarray(arrays[split].labels))}
                for split, labels in neighbours.items()
            }

    @override
    def summary(self) -> dict[str, Any]:
        return {
            split: {"mean_kdn": float(cols["kdn"].mean()), "k": self.probe.k} for split, cols in self.results.items()
        }
