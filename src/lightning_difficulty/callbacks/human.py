"""HumanAlignment: human difficulty from multi-annotator label counts (CIFAR-10H format)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from lightning.pytorch.utilities import rank_zero_warn
from numpy.typing import ArrayLike
from typing_extensions import override

from lightning_difficulty.callbacks.base import ColumnInfo, Contribution, DifficultyCallback
from lightning_difficulty.functional.human import (
    annotations_to_counts,
    human_difficulty,
    human_entropy,
    human_max_disagreement,
    load_annotations,
)
from lightning_difficulty.pipeline.capture import FitEndArrays
from lightning_difficulty.pipeline.splits import split_loader, split_name, validation_loaders

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
                "or the array itself (CIFAR-10H: `cifar10h.npz`, key 'counts', rows in the official test order)."
            )
        raw = _raw_array(annotations, key)
        if raw.dtype.kind == "f" and not np.isfinite(raw).all():
            rows = np.flatnonzero(~np.isfinite(raw).all(axis=1))[:5].tolist()
            raise ValueError(
                f"Invalid annotations: rows {rows}... hold NaN or inf. Give counts (N, C) >= 0 or per-annotator labels "
                "(N, A) with -1 for 'no label'."
            )
        self._num_rows = int(raw.shape[0])

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(split=self.split)

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check_split(trainer)

    @override
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            self._check_split(trainer)

    def _check_split(self, trainer: pl.Trainer) -> None:
        loader = split_loader(trainer, self.split)
        if loader is None:
            not_loaded = trainer.train_dataloader if self.split == "train" else trainer.val_dataloaders
            if not_loaded is None:
                return  # that loop's loaders are not loaded yet: checked again when it starts
            known = ["train", *(split_name(i) for i in range(len(validation_loaders(trainer))))]
            raise ValueError(f"Invalid value for split={self.split!r}: the trainer has the splits {known}.")
        num_samples = len(loader.dataset)
        if self._num_rows != num_samples:
            raise ValueError(
                f"Invalid annotations for split {self.split!r}: {self._num_rows} rows but the split has {num_samples} "
                "samples. Row i must hold the annotations of dataset index i (CIFAR-10H: the official test order); "
                "for a subset of the split, pass the matching rows (e.g. `counts[subset_indices]`)."
            )

    @override
    def compute(self, trainer: pl.Trainer, arrays: FitEndArrays) -> Contribution:
        if self.split not in arrays.splits:
            raise ValueError(f"Invalid value for split={self.split!r}. The trainer has splits {sorted(arrays.splits)}.")
        data = arrays.splits[self.split]
        labels = np.asarray(data.labels)
        num_classes = int(data.logits.shape[1])
        if isinstance(self._source, (str, os.PathLike)):
            counts = load_annotations(
                self._source, num_classes=num_classes, kind=self.kind, key=self.key, allow_unannotated=True
            )
        else:
            counts = annotations_to_counts(
                self._source, num_classes=num_classes, kind=self.kind, allow_unannotated=True
            )
        annotated = counts.sum(axis=1) > 0
        if not annotated.all():
            rank_zero_warn(
                f"HumanAlignment(split={self.split!r}): {int((~annotated).sum())} samples have no annotation; their "
                "human columns are NaN."
            )
        columns = {
            name: np.full(len(labels), np.nan) for name in ("human_difficulty", "human_entropy", "human_disagreement")
        }
        rows, part = annotated, counts[annotated]
        columns["human_difficulty"][rows] = human_difficulty(part, labels[rows])
        columns["human_entropy"][rows] = human_entropy(part)
        columns["human_disagreement"][rows] = human_max_disagreement(part)
        per_image = counts.sum(axis=1)
        summary = {
            "split": self.split,
            "annotators_per_sample": {"min": int(per_image.min()), "median": float(np.median(per_image))},
            "mean_human_difficulty": float(np.nanmean(columns["human_difficulty"])),
        }
        return Contribution(
            columns={self.split: columns},
            info=_COLUMN_INFO,
            summary=summary,
            annotation_counts={self.split: counts},
        )


_COLUMN_INFO = {
    "human_difficulty": ColumnInfo(
        "1 - share of annotators who chose the dataset label", range=(0.0, 1.0), higher_is_harder=True, perspective=True
    ),
    "human_entropy": ColumnInfo(
        "entropy of the annotators' label distribution (label-free ambiguity)", unit="nats", higher_is_harder=True
    ),
    "human_disagreement": ColumnInfo(
        "1 - share of annotators who chose the most chosen class", range=(0.0, 1.0), higher_is_harder=True
    ),
}


def _raw_array(source: Any, key: str | None) -> np.ndarray:
    if isinstance(source, (str, os.PathLike)):
        loaded = np.load(source, mmap_mode="r")
        if hasattr(loaded, "files"):
            name = key or next((k for k in ("counts", "labels") if k in loaded.files), loaded.files[0])
            return np.asarray(loaded[name])
        return np.asarray(loaded)
    return np.asarray(source)
