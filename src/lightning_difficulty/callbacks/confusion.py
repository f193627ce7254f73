"""ConfusionScore: per-sample softmax entropy averaged over epochs, from the ordinary training loop."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from torch import Tensor
from typing_extensions import override

from lightning_difficulty.callbacks.accumulator import PerSampleAccumulator, RecordMode, SampleState
from lightning_difficulty.callbacks.base import ColumnInfo, Contribution
from lightning_difficulty.data import BatchKeys
from lightning_difficulty.functional.confusion import mean_over_epochs, softmax_entropy
from lightning_difficulty.pipeline.capture import FitEndArrays

if TYPE_CHECKING:
    import lightning.pytorch as pl


class ConfusionScore(PerSampleAccumulator):
    r"""Per-sample confusion score: the softmax entropy (nats) averaged over the epochs a sample was seen.

    Reads the training (and validation) forward passes: one softmax and one ``index_add`` per batch, no
    extra forward. Sanity-check batches never count. A sample presented again in one epoch on one process (a
    sampler that repeats it) counts with its first presentation, in the table and the records alike; a
    ``DistributedSampler`` padding duplicate on another process counts once with the mean of the two
    entropies. Scores are keyed by dataset index, so batches must carry it (see
    :class:`~lightning_difficulty.IndexedDataset`). A single-logit binary model is scored
    with the two-class entropy of ``sigmoid``.

    Args:
        splits: which loops to score: ``"train"`` and/or ``"val"`` (all validation dataloaders).
        record: per-epoch probability record for ensembles (``lightning-difficulty combine``):
            ``"probs"`` full vectors, ``"topk"`` the ``topk`` largest (for many classes), ``"none"``,
            or ``"auto"`` (``"probs"`` up to 100 classes, else ``"topk"``).
        topk: vector length of the ``"topk"`` record.
        batch_keys: where the index/target are in the batch.
        logits_from: name of the submodule whose output are the logits (default: the module's forward).
        record_dir: where records go (default ``<run dir>/records``, beside the report's table).
        num_classes: the model's number of classes when some of them no label uses (see
            :class:`~lightning_difficulty.callbacks.accumulator.PerSampleAccumulator`).

    Example::

        trainer = L.Trainer(callbacks=[ConfusionScore(), DifficultyReport()])
        trainer.fit(model, DataLoader(IndexedDataset(train_set)), DataLoader(IndexedDataset(val_set)))
        ConfusionScore.scores["train"]      # (N,) float64, NaN for samples never seen
    """

    values = ("confusion",)
    states = (SampleState("entropy_sum"), SampleState("epochs_seen", np.int32))
    needs_labels = False

    def __init__(
        self,
        splits: tuple[str, ...] | list[str] = ("train", "val"),
        *,
        record: RecordMode = "auto",
        topk: int = 5,
        batch_keys: BatchKeys | None = None,
        logits_from: str | None = None,
        record_dir: str | None = None,
        num_classes: int | None = None,
    ) -> None:
        super().__init__(
            splits,
            batch_keys=batch_keys,
            logits_from=logits_from,
            record=record,
            topk=topk,
            record_dir=record_dir,
            num_classes=num_classes,
        )

    @override
    def per_batch(self, logits: Tensor, targets: Tensor) -> dict[str, Tensor]:
        return {"confusion": softmax_entropy(logits)}

    @override
    def fold(self, states: dict[str, np.ndarray], epoch: dict[str, np.ndarray], seen: np.ndarray) -> None:
        states["entropy_sum"][seen] += epoch["confusion"][seen]
        states["epochs_seen"][seen] += 1

    @override
    def split_columns(self, states: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, np.ndarray]:
        return {"confusion": mean_over_epochs(states["entropy_sum"], states["epochs_seen"])}

    @property
    def scores(self) -> dict[str, np.ndarray]:
        """``split -> (N,)`` confusion scores (mean entropy over the epochs each sample was seen)."""
        return {split: cols["confusion"] for split, cols in self.columns().items()}

    @property
    def epoch_means(self) -> dict[str, dict[int, float]]:
        """``split -> {epoch: mean entropy over the samples seen that epoch}``."""
        return {s: {e: v["confusion"] for e, v in per.items()} for s, per in self.epoch_scalars().items()}

    @override
    def column_info(self) -> dict[str, ColumnInfo]:
        num_classes = max((acc.num_classes for acc in self._accumulators.values()), default=0)
        return {
            "confusion": ColumnInfo(
                "softmax entropy averaged over the epochs the sample was seen (Simsek et al. 2022); NaN = never seen",
                unit="nats",
                range=(0.0, float(np.log(num_classes))) if num_classes else None,
                higher_is_harder=True,
                perspective=True,
            )
        }

    @override
    def compute(self, trainer: pl.Trainer, arrays: FitEndArrays) -> Contribution:
        summary: dict[str, Any] = {
            split: {"epochs": len(means), "mean_confusion_per_epoch": means}
            for split, means in self.epoch_means.items()
        }
        if self.history:
            summary["history"] = self.history
        return Contribution(columns=self.columns(), info=self.column_info(), summary=summary)
