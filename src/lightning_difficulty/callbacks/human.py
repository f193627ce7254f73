"""HumanAlignment: human difficulty from multi-annotator label counts (CIFAR-10H format)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
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
)
from lightning_difficulty.pipeline.capture import FitEndArrays
from lightning_difficulty.pipeline.splits import (
    check_split_name,
    fit_has_validation,
    split_loader,
    split_name,
    validation_loaders,
)

if TYPE_CHECKING:
    import lightning.pytorch as pl


class HumanAlignment(DifficultyCallback):
    """Human difficulty of one or more splits from annotator label counts, keyed by dataset index.

    Columns: ``human_difficulty`` (1 - share of annotators who chose the dataset label),
    ``human_entropy`` (nats; label-free ambiguity) and ``human_disagreement`` (1 - share of the most
    chosen class). One score per sample; higher = harder. Several splits fill the same columns.
    :class:`DifficultyReport` adds Spearman and Kendall correlations with the other perspectives to
    ``summary.json``.

    Args:
        annotations: the annotations of ``split``, or a mapping ``{split: annotations}`` for several splits.
            Each is an array or a ``.npy`` / ``.npz`` path holding counts ``(N, C)``, per-annotator labels
            ``(N, A)`` with -1 for "no label", or soft labels ``(N, C)``: each row the annotators' class
            probabilities (CIFAR-10H's ``cifar10h-probs``), rows summing to 1 (0 for "not annotated").
        split: the split the rows belong to when ``annotations`` is not a mapping (row ``i`` = dataset index ``i``).
        kind: ``"counts"``, ``"labels"``, ``"probs"`` or ``"auto"`` (``-1`` present: labels; non-integer
            values: probs; a value ``>= C``: counts; refused at construction when it cannot be told).

    Example::

        HumanAlignment("../shared/data/cifar10h.npz", split="val")
        HumanAlignment({"val": cifar10h_counts, "train": cifar10n_labels})
    """

    def __init__(
        self,
        annotations: ArrayLike | str | os.PathLike[str] | Mapping[str, ArrayLike | str | os.PathLike[str]],
        *,
        split: str = "val",
        kind: Literal["auto", "counts", "labels", "probs"] = "auto",
        key: str | None = None,
    ) -> None:
        super().__init__()
        if kind not in ("auto", "counts", "labels", "probs"):
            raise ValueError(f"Invalid value for kind={kind!r}. Choose 'auto', 'counts', 'labels' or 'probs'.")
        sources = dict(annotations) if isinstance(annotations, Mapping) else {split: annotations}
        if not sources:
            raise ValueError("Invalid value for annotations={}: give at least one split's annotations.")
        self.splits = tuple(
            check_split_name(name, "split" if len(sources) == 1 else "an annotations key") for name in sources
        )
        self.split = self.splits[0]
        self.kind = kind
        self.key = key
        self._annotations = {name: _Annotations.read(name, source, kind, key) for name, source in sources.items()}

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(split=self.splits[0] if len(self.splits) == 1 else self.splits)

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._checked: set[str] = set()
        if stage == "fit" and any(s != "train" for s in self.splits) and not fit_has_validation(trainer):
            names = [s for s in self.splits if s != "train"]
            raise ValueError(
                f"HumanAlignment: annotations for split(s) {names}, but the fit has no validation dataloader (or "
                "limit_val_batches=0). Pass the annotated data as `val_dataloaders`, or annotate 'train'."
            )

    @override
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check_splits(trainer)

    @override
    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "fit":
            self._check_splits(trainer)

    def _check_splits(self, trainer: pl.Trainer) -> None:
        """Each annotated split exists and has one row per sample; checked as soon as its loaders are loaded
        (the sanity check or the first training batch), never after training."""
        for name, annotated in self._annotations.items():
            loaded = trainer.train_dataloader if name == "train" else trainer.val_dataloaders
            if name in self._checked or loaded is None:
                continue
            loader = split_loader(trainer, name)
            if loader is None:
                known = ["train", *(split_name(i) for i in range(len(validation_loaders(trainer))))]
                raise ValueError(f"Invalid value for split={name!r}: the trainer has the splits {known}.")
            annotated.check_rows(len(loader.dataset))
            self._checked.add(name)

    @override
    def compute(self, trainer: pl.Trainer, arrays: FitEndArrays) -> Contribution:
        missing = [name for name in self.splits if name not in arrays.splits]
        if missing:
            raise ValueError(f"Invalid value for split={missing[0]!r}. The trainer has splits {sorted(arrays.splits)}.")
        columns: dict[str, dict[str, np.ndarray]] = {}
        summary: dict[str, Any] = {"splits": {}}
        shared: dict[str, np.ndarray] = {}
        for name, annotated in self._annotations.items():
            data = arrays.splits[name]
            counts = annotated.counts(num_classes=int(data.logits.shape[1]))
            columns[name], summary["splits"][name] = _split_columns(name, counts, np.asarray(data.labels))
            shared[name] = counts
        return Contribution(columns=columns, info=_COLUMN_INFO, summary=summary, annotation_counts=shared)


@dataclass(frozen=True)
class _Annotations:
    """One split's annotations, checked as far as possible before the number of classes is known."""

    split: str
    raw: np.ndarray
    kind: str

    @classmethod
    def read(cls, split: str, source: Any, kind: str, key: str | None) -> _Annotations:
        where = f"annotations of split {split!r}"
        if isinstance(source, (str, os.PathLike)) and not os.path.exists(source):
            raise FileNotFoundError(
                f"Invalid value for annotations={os.fspath(source)!r} ({where}): no such file. Pass a .npy/.npz path "
                "or the array itself (CIFAR-10H: `cifar10h.npz`, key 'counts', rows in the official test order)."
            )
        raw, implied = _raw_array(source, key)
        if kind == "auto" and implied is not None:
            kind = implied
        if raw.ndim != 2 or raw.shape[0] == 0 or raw.shape[1] == 0 or raw.dtype.kind not in "iuf":
            raise ValueError(
                f"Invalid {where}: expected a non-empty numeric (N, C) or (N, A) matrix, but got shape {raw.shape} and "
                f"dtype {raw.dtype}."
            )
        if raw.dtype.kind == "f" and not np.isfinite(raw).all():
            rows = np.flatnonzero(~np.isfinite(raw).all(axis=1))[:5].tolist()
            raise ValueError(
                f"Invalid {where}: rows {rows}... hold NaN or inf. Give counts (N, C) >= 0, per-annotator labels "
                "(N, A) with -1 for 'no label', or soft labels (N, C) whose rows sum to 1."
            )
        integral = raw.dtype.kind in "iu" or bool((raw == np.round(raw)).all())
        if kind == "auto":
            kind = _resolve_kind(where, raw, integral)
        if kind == "probs":
            _check_probabilities(where, raw)
        elif not integral:
            raise ValueError(
                f"Invalid {where} for kind={kind!r}: they hold non-integer values. For soft labels (rows of class "
                "probabilities) pass kind='probs'."
            )
        return cls(split, raw, kind)

    def check_rows(self, num_samples: int) -> None:
        if self.raw.shape[0] != num_samples:
            raise ValueError(
                f"Invalid annotations for split {self.split!r}: {self.raw.shape[0]} rows but the split has "
                f"{num_samples} samples. Row i must hold the annotations of dataset index i (CIFAR-10H: the official "
                "test order); for a subset of the split, pass the matching rows (e.g. `counts[subset_indices]`)."
            )

    def counts(self, *, num_classes: int) -> np.ndarray:
        """``(N, C)`` annotator counts (float shares for soft labels); all-zero rows = not annotated."""
        if self.kind != "probs":
            kind: Literal["counts", "labels"] = "counts" if self.kind == "counts" else "labels"
            return annotations_to_counts(self.raw, num_classes=num_classes, kind=kind, allow_unannotated=True)
        if self.raw.shape[1] != num_classes:
            raise ValueError(
                f"Invalid annotations of split {self.split!r}: soft labels need one column per class "
                f"({num_classes}), but got shape {self.raw.shape}."
            )
        return self.raw.astype(np.float64)


def _resolve_kind(where: str, raw: np.ndarray, integral: bool) -> str:
    if not integral:
        return "probs"
    if (raw == -1).any():
        return "labels"
    if raw.max() >= raw.shape[1]:  # a label of an (N, A) matrix with A == C columns cannot be that large
        return "counts" if raw.min() >= 0 else "labels"
    raise ValueError(
        f"Cannot tell whether the {where} (shape {raw.shape}) hold counts or per-annotator labels: every value lies "
        f"in [0, {raw.shape[1] - 1}] and none is -1, which both readings allow. Pass kind='counts' or kind='labels'."
    )


def _check_probabilities(where: str, raw: np.ndarray) -> None:
    sums = raw.sum(axis=1)
    bad = np.flatnonzero((raw < 0).any(axis=1) | ((np.abs(sums - 1) > 1e-3) & (sums != 0)))
    if bad.size:
        raise ValueError(
            f"Invalid {where} as soft labels: rows {bad[:5].tolist()} have negative values or do not sum to 1 (e.g. "
            f"{float(sums[bad[0]]):.4g}). Each row must hold the annotators' class probabilities (all zero: not "
            "annotated); for counts pass kind='counts'."
        )


def _split_columns(split: str, counts: np.ndarray, labels: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    annotated = counts.sum(axis=1) > 0
    if not annotated.all():
        rank_zero_warn(
            f"HumanAlignment(split={split!r}): {int((~annotated).sum())} samples have no annotation; their "
            "human columns are NaN."
        )
    columns = {
        name: np.full(len(labels), np.nan) for name in ("human_difficulty", "human_entropy", "human_disagreement")
    }
    rows = annotated & (labels >= 0)
    part = counts[rows]
    columns["human_difficulty"][rows] = human_difficulty(part, labels[rows])
    columns["human_entropy"][annotated] = human_entropy(counts[annotated])
    columns["human_disagreement"][annotated] = human_max_disagreement(counts[annotated])
    per_image = counts.sum(axis=1)
    soft = counts.dtype.kind == "f"
    summary = {
        "annotators_per_sample": None if soft else {"min": int(per_image.min()), "median": float(np.median(per_image))},
        "annotated": int(annotated.sum()),
        "mean_human_difficulty": float(np.nanmean(columns["human_difficulty"])) if rows.any() else None,
    }
    return columns, summary


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


def _raw_array(source: Any, key: str | None) -> tuple[np.ndarray, str | None]:
    """The array and, for an ``.npz`` entry named ``counts`` / ``labels`` / ``probs``, the kind its name implies."""
    if isinstance(source, (str, os.PathLike)):
        loaded = np.load(source, mmap_mode="r")
        if hasattr(loaded, "files"):
            name = key or next((k for k in ("counts", "labels", "probs") if k in loaded.files), loaded.files[0])
            return np.asarray(loaded[name]), name if name in ("counts", "labels", "probs") else None
        return np.asarray(loaded), None
    return np.asarray(source), None
