"""Hard-subset and group manifests: small JSON files that pin a selection to one dataset.

A manifest records which samples were chosen (or how samples were banded), from which score, and a
fingerprint of the dataset's labels, so that applying it to a different split, a shuffled copy or a
new dataset version is refused instead of silently selecting the wrong samples.

Scores follow the project convention: one score per sample; higher = harder.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from torch.utils.data import Dataset

from lightning_difficulty.functional.bands import band_edges, select_hard, threshold_bands
from lightning_difficulty.storage.atomic import write_json

__all__ = [
    "GroupsManifest",
    "HardSubset",
    "HardSubsetManifest",
    "label_fingerprint",
]

_HARD_FORMAT = "lightning-difficulty/hard-subset"
_GROUPS_FORMAT = "lightning-difficulty/groups"
_LABEL_ATTRIBUTES = ("targets", "labels", "y")


def label_fingerprint(labels: ArrayLike) -> str:
    """``"sha256:<hex>"`` of the labels as little-endian int64 (C order), preceded by their count.

    The hash covers the length (8-byte little-endian) followed by the raw bytes, so it changes with
    any relabelled, reordered, added or removed sample.

    Args:
        labels: 1-D integer class labels (integral floats are accepted).

    Example::

        >>> label_fingerprint([0, 1, 1])[:15]
        'sha256:256f2f23'
    """
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"Expected argument `labels` to be 1-D, but got shape {arr.shape}.")
    if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
        arr = arr.astype(np.int64)
    if arr.size and arr.dtype.kind not in "iub":
        raise ValueError(f"Expected argument `labels` to hold integer labels, but got dtype {arr.dtype}.")
    data = np.ascontiguousarray(arr, dtype="<i8")
    digest = hashlib.sha256()
    digest.update(int(data.size).to_bytes(8, "little"))
    digest.update(data.tobytes())
    return f"sha256:{digest.hexdigest()}"


def _read_json(path: str | os.PathLike[str], expected_format: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            payload = json.load(handle)
    except (ValueError, RecursionError) as err:  # not JSON, not UTF-8, or nested past Python's limit
        raise ValueError(
            f"{path} is not a readable {expected_format!r} manifest (not JSON: {err}). The file is damaged or is"
            " another file: write it again (e.g. rerun the report) or remove it."
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != expected_format:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"Expected {path} to hold format {expected_format!r}, but got {found!r}.")
    if payload.get("version") != 1:
        raise ValueError(
            f"Expected {path} to hold version 1 of {expected_format!r}, but got {payload.get('version')!r}."
            " Upgrade lightning-difficulty to read it."
        )
    return payload


@contextmanager
def _fields_of(path: str | os.PathLike[str], expected_format: str) -> Iterator[None]:
    """Turn a missing or mistyped field of the manifest at ``path`` into a ValueError that names the file."""
    try:
        yield
    except (KeyError, TypeError, ValueError) as err:
        detail = f"missing field {err}" if isinstance(err, KeyError) else str(err)
        raise ValueError(
            f"{path} is not a valid {expected_format!r} manifest ({detail}). The file is damaged or was edited by"
            " hand: write it again (e.g. rerun the report) or remove it."
        ) from None


def _check_size(dataset_size: int) -> None:
    if isinstance(dataset_size, bool) or not isinstance(dataset_size, int) or dataset_size < 1:
        raise ValueError(f"Expected `dataset_size` to be a positive integer, but got {dataset_size!r}.")


@dataclass(frozen=True)
class HardSubsetManifest:
    """The hardest samples of one split, as chosen by
    :func:`~lightning_difficulty.functional.bands.select_hard`.

    Attributes:
        split: name of the split the indices refer to (e.g. ``"train"``).
        indices: ascending dataset indices of the selected samples.
        score: name of the score used (e.g. ``"confusion"``); higher = harder.
        threshold: the lowest selected score.
        dataset_size: length of the dataset the indices refer to.
        fraction: the requested fraction, if the selection was by fraction.
        top_k: the requested count, if the selection was by count.
        label_fingerprint: :func:`label_fingerprint` of the dataset's labels, or ``None``.
        metadata: free-form JSON-serialisable information (runs, epochs, ...).
        version: format version (1).

    Example::

        >>> m = HardSubsetManifest.from_scores([0.1, 2.0, 0.3, 1.5], split="val", top_k=2)
        >>> m.indices, m.threshold
        ((1, 3), 1.5)
    """

    split: str
    indices: tuple[int, ...]
    score: str
    threshold: float
    dataset_size: int
    fraction: float | None = None
    top_k: int | None = None
    label_fingerprint: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    version: int = 1

    def __post_init__(self) -> None:
        _check_size(self.dataset_size)
        idx = np.asarray(self.indices, dtype=np.int64)
        if idx.ndim != 1 or idx.size == 0:
            raise ValueError("Expected `indices` to be a non-empty sequence of dataset indices.")
        if idx.min() < 0 or idx.max() >= self.dataset_size:
            raise ValueError(
                f"Expected `indices` to lie in [0, {self.dataset_size}), but got values in"
                f" [{int(idx.min())}, {int(idx.max())}]."
            )
        if np.any(np.diff(idx) <= 0):
            raise ValueError("Expected `indices` to be strictly increasing (sorted, no duplicates).")
        if self.version != 1:
            raise ValueError(f"Expected `version` to be 1, but got {self.version!r}.")
        object.__setattr__(self, "indices", tuple(int(i) for i in idx))

    @classmethod
    def from_scores(
        cls,
        scores: ArrayLike,
        *,
        split: str,
        score: str = "confusion",
        fraction: float | None = None,
        top_k: int | None = None,
        labels: ArrayLike | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> HardSubsetManifest:
        """Select the hardest samples of ``scores`` (indexed by dataset index) into a manifest.

        Exactly one of ``fraction`` / ``top_k``, as in
        :func:`~lightning_difficulty.functional.bands.select_hard`; ``labels`` (the dataset's
        labels in index order) adds the fingerprint.
        """
        selection = select_hard(scores, fraction=fraction, top_k=top_k)
        return cls(
            split=split,
            indices=tuple(selection.indices.tolist()),
            score=score,
            threshold=selection.threshold,
            dataset_size=int(np.asarray(scores).shape[0]),
            fraction=fraction,
            top_k=top_k,
            label_fingerprint=None if labels is None else label_fingerprint(labels),
            metadata=dict(metadata or {}),
        )

    def to_json(self, path: str | os.PathLike[str]) -> Path:
        """Write the manifest as JSON to ``path`` atomically (temporary file + ``os.replace``)."""
        payload = {
            "format": _HARD_FORMAT,
            "version": self.version,
            "split": self.split,
            "score": self.score,
            "threshold": self.threshold,
            "fraction": self.fraction,
            "top_k": self.top_k,
            "dataset_size": self.dataset_size,
            "label_fingerprint": self.label_fingerprint,
            "metadata": self.metadata,
            "indices": list(self.indices),
        }
        return write_json(path, payload)

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> HardSubsetManifest:
        """Read a manifest written by :meth:`to_json`, checking its format and version."""
        payload = _read_json(path, _HARD_FORMAT)
        with _fields_of(path, _HARD_FORMAT):
            return cls(
                split=payload["split"],
                indices=tuple(payload["indices"]),
                score=payload["score"],
                threshold=float(payload["threshold"]),
                dataset_size=payload["dataset_size"],
                fraction=payload.get("fraction"),
                top_k=payload.get("top_k"),
                label_fingerprint=payload.get("label_fingerprint"),
                metadata=payload.get("metadata", {}),
            )


def _dataset_labels(dataset: Any) -> Any | None:
    """Labels from an attribute (no item is read): ``targets`` / ``labels`` / ``y``, or ``None``."""
    for name in _LABEL_ATTRIBUTES:
        value = getattr(dataset, name, None)
        if value is not None:
            return value
    return None


def _item_label(item: Any) -> int | None:
    """The integer label of one item (``(x, y, ...)`` or a mapping with ``"target"`` / ``"label"``), or ``None``."""
    if isinstance(item, Mapping):
        value = next((item[key] for key in ("target", "label") if key in item), None)
    elif isinstance(item, (tuple, list)) and len(item) >= 2:
        value = item[1]
    else:
        return None
    arr = np.asarray(value)
    if arr.ndim != 0 or arr.dtype.kind not in "iubf" or (arr.dtype.kind == "f" and arr != np.round(arr)):
        return None  # a one-hot / soft label, or no label at all: nothing to fingerprint
    return int(arr)


def _labels_from_items(dataset: Any) -> np.ndarray | None:
    """Every item's label, read through ``dataset[i]`` (``len(dataset)`` reads); ``None`` if one has none."""
    labels = np.empty(len(dataset), dtype=np.int64)
    for i in range(len(dataset)):
        label = _item_label(dataset[i])
        if label is None:
            return None
        labels[i] = label
    return labels


def _readable_labels(dataset: Any) -> Any | None:
    """The dataset's labels: an attribute when one exists (cheap), else read item by item (O(N) reads).

    An :class:`~lightning_difficulty.data.IndexedDataset` is looked through to the dataset it wraps.
    """
    from lightning_difficulty.data import IndexedDataset

    inner: Any = dataset.dataset if isinstance(dataset, IndexedDataset) else dataset
    found = _dataset_labels(inner)
    tensors = getattr(inner, "tensors", None)
    if found is None and isinstance(tensors, tuple) and len(tensors) > 1:
        found = tensors[1]  # a TensorDataset(x, y)
    return found if found is not None else _labels_from_items(inner)


class HardSubset(Dataset):
    """The samples of ``dataset`` listed in a :class:`HardSubsetManifest`, in manifest order.

    On construction, ``len(dataset)`` must equal the manifest's ``dataset_size``, and when the manifest
    holds a label fingerprint, the dataset's labels must give the same :func:`label_fingerprint`. The
    labels are, in this order: the ``labels`` argument; the dataset's ``targets`` / ``labels`` / ``y``
    attribute (for an :class:`~lightning_difficulty.data.IndexedDataset`, the wrapped dataset's; a
    ``TensorDataset``'s second tensor); else every item's label, read through the dataset itself (items
    ``(x, y, ...)`` or mappings with ``"target"`` / ``"label"``). That last way reads all ``len(dataset)``
    items once (O(N), slow for a large image dataset that decodes files): pass ``labels=`` to avoid it.
    When no label can be read, a warning says the check was not made.

    Args:
        dataset: the full dataset the manifest was made for (any map-style dataset).
        manifest_or_path: a :class:`HardSubsetManifest` or the path of its JSON file.
        labels: the dataset's labels in index order (skips reading them from the dataset).

    Raises:
        ValueError: the dataset's size or labels differ from those the manifest was made for.

    Example::

        >>> m = HardSubsetManifest.from_scores([0.1, 2.0, 0.3], split="val", top_k=1, labels=[0, 1, 0])
        >>> HardSubset(["a", "b", "c"], m, labels=[0, 1, 0])[0]
        'b'
    """

    def __init__(
        self,
        dataset: Any,
        manifest_or_path: HardSubsetManifest | str | os.PathLike[str],
        *,
        labels: ArrayLike | None = None,
    ) -> None:
        manifest = (
            manifest_or_path
            if isinstance(manifest_or_path, HardSubsetManifest)
            else HardSubsetManifest.from_json(manifest_or_path)
        )
        if len(dataset) != manifest.dataset_size:
            raise ValueError(
                f"The hard-subset manifest of split {manifest.split!r} was made for a dataset of"
                f" {manifest.dataset_size} samples, but got a dataset of {len(dataset)}. Use the same"
                " split, unfiltered, as when the scores were computed."
            )
        if manifest.label_fingerprint is not None:
            self._check_labels(
                manifest, labels if labels is not None else _readable_labels(dataset), labels is not None
            )
        self.dataset = dataset
        self.manifest = manifest
        self.indices = manifest.indices

    @staticmethod
    def _check_labels(manifest: HardSubsetManifest, found: Any | None, passed: bool = False) -> None:
        if found is None:
            warnings.warn(
                f"HardSubset: the hard-subset manifest of split {manifest.split!r} holds a label fingerprint, but"
                " this dataset's labels could not be read (no `targets`/`labels`/`y` attribute, and its items are not"
                " `(x, y, ...)` nor mappings with 'target'/'label' holding integer labels), so it was not checked"
                " that the dataset"
                " is the one the manifest was made for. Pass `labels=` (the labels in index order) to check it.",
                stacklevel=3,
            )
            return
        found = np.asarray(found)
        if found.ndim != 1:
            source = "the `labels` passed" if passed else "this dataset's labels"
            raise ValueError(
                f"HardSubset: {source} have shape {found.shape}, one row per sample (one-hot or soft labels?), but the"
                f" hard-subset manifest of split {manifest.split!r} was fingerprinted from integer class labels, one"
                " per sample. Pass `labels=` with the class indices in index order, e.g. `labels=one_hot.argmax(1)`."
            )
        actual = label_fingerprint(found)
        if actual != manifest.label_fingerprint:
            raise ValueError(
                f"The labels of this dataset (fingerprint {actual}) differ from those the"
                f" hard-subset manifest of split {manifest.split!r} was made from (fingerprint"
                f" {manifest.label_fingerprint}). The dataset is probably a different split, a"
                " shuffled or re-ordered copy, or another version of the data."
            )

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        return self.dataset[self.indices[i]]


@dataclass(frozen=True)
class GroupsManifest:
    """How one split's samples were cut into score bands (groups), e.g. for GroupDRO.

    Band ``b`` holds the scores with ``edges[b-1] <= s < edges[b]`` (see
    :mod:`lightning_difficulty.functional.bands`), so ``len(sizes) == len(edges) + 1``.

    Attributes:
        split: name of the split.
        score: name of the score (higher = harder).
        method: ``"quantile"`` or ``"threshold"``.
        edges: the inner band edges.
        sizes: number of samples in each band.
        dataset_size: length of the dataset (``sum(sizes)``).
        label_fingerprint: :func:`label_fingerprint` of the dataset's labels, or ``None``.
        metadata: free-form JSON-serialisable information.
        version: format version (1).

    Example::

        >>> g = GroupsManifest.from_scores([1.0, 6.0, 5.0, 2.0], split="train", thresholds=[5.0])
        >>> g.sizes, g.assign([1.0, 6.0, 5.0, 2.0]).tolist()
        ((2, 2), [0, 1, 1, 0])
    """

    split: str
    score: str
    method: str
    edges: tuple[float, ...]
    sizes: tuple[int, ...]
    dataset_size: int
    label_fingerprint: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    version: int = 1

    def __post_init__(self) -> None:
        _check_size(self.dataset_size)
        if self.method not in ("quantile", "threshold"):
            raise ValueError(f"Expected `method` to be 'quantile' or 'threshold', but got {self.method!r}.")
        edges = tuple(float(e) for e in self.edges)
        sizes = tuple(int(s) for s in self.sizes)
        if len(sizes) != len(edges) + 1:
            raise ValueError(f"Expected one more size than edges, but got {len(sizes)} sizes and {len(edges)} edges.")
        if sum(sizes) != self.dataset_size or min(sizes) < 0:
            raise ValueError(
                f"Expected `sizes` {list(sizes)} to be non-negative and to sum to dataset_size={self.dataset_size}."
            )
        if self.version != 1:
            raise ValueError(f"Expected `version` to be 1, but got {self.version!r}.")
        object.__setattr__(self, "edges", edges)
        object.__setattr__(self, "sizes", sizes)

    @property
    def num_groups(self) -> int:
        """Number of bands."""
        return len(self.sizes)

    @classmethod
    def from_scores(
        cls,
        scores: ArrayLike,
        *,
        split: str,
        score: str = "confusion",
        num_bands: int | None = None,
        thresholds: Sequence[float] | None = None,
        labels: ArrayLike | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> GroupsManifest:
        """Band ``scores`` by quantiles (``num_bands``) or fixed ``thresholds`` (exactly one)."""
        if (num_bands is None) == (thresholds is None):
            raise ValueError(
                "Expected exactly one of `num_bands` and `thresholds`, but got"
                f" num_bands={num_bands!r}, thresholds={thresholds!r}."
            )
        if num_bands is not None:
            edges, method = band_edges(scores, num_bands=num_bands), "quantile"
        else:
            edges, method = np.asarray(thresholds, dtype=np.float64), "threshold"
        bands = threshold_bands(scores, thresholds=edges)
        return cls(
            split=split,
            score=score,
            method=method,
            edges=tuple(edges.tolist()),
            sizes=tuple(np.bincount(bands, minlength=edges.size + 1).tolist()),
            dataset_size=int(bands.size),
            label_fingerprint=None if labels is None else label_fingerprint(labels),
            metadata=dict(metadata or {}),
        )

    def assign(self, scores: ArrayLike) -> np.ndarray:
        """Band id of each sample of ``scores`` with these edges.

        When ``scores`` covers the whole split (length ``dataset_size``), the band sizes must equal
        ``sizes``; a mismatch means the scores are not the ones the manifest was made from.
        """
        bands = threshold_bands(scores, thresholds=self.edges)
        if bands.size == self.dataset_size:
            counts = tuple(np.bincount(bands, minlength=self.num_groups).tolist())
            if counts != self.sizes:
                raise ValueError(
                    f"The scores give band sizes {list(counts)}, but the groups manifest of split"
                    f" {self.split!r} records {list(self.sizes)}. The scores differ from those the"
                    " manifest was made from."
                )
        return bands

    def to_json(self, path: str | os.PathLike[str]) -> Path:
        """Write the manifest as JSON to ``path`` atomically (temporary file + ``os.replace``)."""
        payload = {
            "format": _GROUPS_FORMAT,
            "version": self.version,
            "split": self.split,
            "score": self.score,
            "method": self.method,
            "edges": list(self.edges),
            "sizes": list(self.sizes),
            "dataset_size": self.dataset_size,
            "label_fingerprint": self.label_fingerprint,
            "metadata": self.metadata,
        }
        return write_json(path, payload)

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> GroupsManifest:
        """Read a manifest written by :meth:`to_json`, checking its format and version."""
        payload = _read_json(path, _GROUPS_FORMAT)
        with _fields_of(path, _GROUPS_FORMAT):
            return cls(
                split=payload["split"],
                score=payload["score"],
                method=payload["method"],
                edges=tuple(payload["edges"]),
                sizes=tuple(payload["sizes"]),
                dataset_size=payload["dataset_size"],
                label_fingerprint=payload.get("label_fingerprint"),
                metadata=payload.get("metadata", {}),
            )
