"""HumanAlignment: human difficulty from multi-annotator label counts (CIFAR-10H format)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import ArrayLike
from typing_extensions import override

from lightning_difficulty.callbacks.base import DifficultyCallback, split_loader
from lightning_difficulty.functional.human import (
    annotations_to_counts,
    human_difficulty,
    human_entropy,
    human_max_disagreement,
    load_annotations,
)
from lightning_difficulty.pipeline.capture import fit_end_arrays

if TYPE_CHECKING:
    import lightning.pytorch as pl


class HumanAlignment(DifficultyCallback):
    """Human difficulty of one split from annotator label counts, keyed by dataset index.

    Columns: ``human_difficulty`` (1 - share of annotators who chose the dataset label),
    ``human_entropy`` (nats; label-free ambiguity) and ``human_disagreement`` (1 - share of the most
    chosen class). One score per sample; higher = harder. :class:`DifficultyReport` adds Spearman and
    Kendall correlations with the other perspectives to ``summary.json``.

    Args:
        annotations: counts ``(N, C)`` or per-annotator labels ``(N, A)`` with -1 for "no label", as an
            array or a ``.npy`` / ``.npz`` path.
        split: the split the rows belong to (row ``i`` = dataset index ``i``).
        kind: ``"counts"``, ``"labels"`` or ``"auto"`` (see
            :func:`~lightning_difficulty.functional.human.annotations_to_counts`).

    Example::

        HumanAlignment(annotations="../shared/data/cifar10h.npz", split="val")
    """

    def __init__(
        self,
        annotations: ArrayLike | str | os.PathLike[str],
        *,
        split: str = "val",
        kind: Literal["auto", "counts", "labels"] = "auto",
        key: str | None = None,
    ) -> None:
        super().__init__()
        self.split = split
        self.kind = kind
        self.key = key
        self._source = annotations
        if isinstance(annotations, (str, os.PathLike)) and not os.path.exists(annotations):
            raise FileNotFoundError(
                f"Invalid value for annotations={os.fspath(annotations)!r}: no such file. Pass a .npy/.npz path "
                "or the array itself."
            )
        self.counts: np.ndarray | None = None

    @override
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.split.startswith("val") and self.counts is None:
            self._check_rows(len(split_loader(trainer, self.split).dataset))

    def _check_rows(self, num_samples: int) -> None:
        rows = _num_rows(self._source, self.key)
        if rows != num_samples:
            raise ValueError(
                f"Invalid annotations for split {self.split!r}: {rows} rows but the split has {num_samples} samples. "
                "Row i must hold the annotations of dataset index i (CIFAR-10H: the official test order); "
                "pass the matching split or subset the annotations."
            )

    @override
    def _compute(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        arrays = fit_end_arrays(trainer, pl_module)
        if self.split not in arrays:
            raise ValueError(f"Invalid value for split={self.split!r}. The trainer has splits {sorted(arrays)}.")
        data = arrays[self.split]
        labels = np.asarray(data.labels)
        self._check_rows(len(labels))
        num_classes = int(data.logits.shape[1])
        if isinstance(self._source, (str, os.PathLike)):
            counts = load_annotations(self._source, num_classes=num_classes, kind=self.kind, key=self.key)
        else:
            counts = annotations_to_counts(self._source, num_classes=num_classes, kind=self.kind)
        self.counts = counts
        self.results = {
            self.split: {
                "human_difficulty": human_difficulty(counts, labels),
                "human_entropy": human_entropy(counts),
                "human_disagreement": human_max_disagreement(counts),
            }
        }

    @override
    def summary(self) -> dict[str, Any]:
        if self.counts is None:
            return {}
        per_image = self.counts.sum(axis=1)
        return {
            "split": self.split,
            "annotators_per_sample": {"min": int(per_image.min()), "median": float(np.median(per_image))},
            "mean_human_difficulty": float(self.results[self.split]["human_difficulty"].mean()),
        }


def _num_rows(source: Any, key: str | None) -> int:
    if isinstance(source, (str, os.PathLike)):
        loaded = np.load(source, mmap_mode="r")
        if hasattr(loaded, "files"):
            name = key or next((k for k in ("counts", "labels") if k in loaded.files), loaded.files[0])
            return int(loaded[name].shape[0])
        return int(loaded.shape[0])
    return int(np.asarray(source).shape[0])
