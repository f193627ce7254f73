"""Multi-seed ensemble confusion score (Albiero et al., Eq. 1-3) from per-epoch probability records.

Each training run (one seed) writes, per split, one probability record per epoch:

``<run_dir>/records/<split>/manifest.json``::

    {"format": "lightning-difficulty/records", "version": 1, "split": str, "num_samples": N,
     "num_classes": C, "kind": "probs" | "topk", "topk": k or null,
     "label_fingerprint": "sha256:..." or null, "epochs": [int, ...]}

- kind ``"probs"``: ``epoch_0003.probs.npy``, float32 ``(N, C)``;
- kind ``"topk"``: ``epoch_0003.topk_values.npy``, float32 ``(N, k)`` (descending) and
  ``epoch_0003.topk_indices.npy``, int32 ``(N, k)``.

A row of NaN marks a sample the run did not see that epoch. :func:`combine_runs` streams these
records epoch by epoch and turns them into one score per sample; higher = harder (more confused):

- ``p_t(x) = (1/M) sum_i f_t^(i)(x)`` (Eq. 1), ``s_t(x) = -sum_c p_t^c log p_t^c`` in nats with
  ``0 log 0 = 0`` (Eq. 2), ``s(x) = mean_t s_t(x)`` (Eq. 3);
- **(convention)** ``s_t(x)`` exists only for epochs in which *all* ``M`` runs saw ``x``; ``s(x)`` is
  the mean over those epochs, NaN when there is none. A run's own score (``M = 1``) averages over
  the epochs that run saw ``x``.

Top-k records keep only the ``k`` largest probabilities. Each model's vector is then completed with
the maximum-entropy choice: the remaining mass ``r = 1 - sum(top-k)`` spread evenly over the other
``C - k`` classes (see :func:`topk_reconstruct`, :func:`topk_entropy_bounds`). Error of the result:

- one model (``M = 1``, and the ``confusion_run<i>`` columns): the reconstructed entropy is the upper
  bound of :func:`topk_entropy_bounds`, so each epoch's error is at most ``upper - lower`` of that
  vector, and never more than :func:`max_entropy_error`;
- an ensemble: the per-model bound does **not** carry over (the even spreads of different models
  land on different classes). In 20,000 random Dirichlet ensembles (C <= 30, M = 2-4, tested
  while writing this module) about 4% had an ensemble error above the largest per-model gap. A
  provable bound follows from the continuity of entropy (Fannes-Audenaert): the reconstruction
  moves at most ``T = (1/M) sum_i r_i`` of probability mass (total variation), so per epoch
  ``|H(p_hat) - H(p)| <= T log(C - 1) + h(T)`` for ``T <= 1 - 1/C``, ``h`` the binary entropy.
  Keep ``k`` large enough that the tail mass ``r`` is small.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy.optimize import brentq

from lightning_difficulty.functional.confusion import entropy
from lightning_difficulty.storage.atomic import atomic_path, write_json, write_npy
from lightning_difficulty.storage.manifest import label_fingerprint as _label_fingerprint
from lightning_difficulty.storage.records import FORMAT as RECORDS_FORMAT_ID

__all__ = [
    "EntropyBounds",
    "EpochRecord",
    "RecordManifest",
    "RunRecords",
    "combine_runs",
    "ensemble_confusion",
    "max_entropy_error",
    "read_records",
    "topk_entropy_bounds",
    "topk_reconstruct",
    "write_epoch_record",
]

RECORDS_FORMAT = RECORDS_FORMAT_ID  # defined once, in storage/records.py, which writes the records
SUMMARY_FORMAT = "lightning-difficulty/ensemble"
_KINDS = ("probs", "topk")
_CHUNK_ELEMENTS = 1 << 21  # float64 values held per chunk of rows (16 MiB)


# ----------------------------------------------------------------------------------------------
# Pure maths
# ----------------------------------------------------------------------------------------------


def _seen_rows(block: np.ndarray, where: str) -> np.ndarray:
    """Rows (last axis) without NaN; a row that is only partly NaN is refused."""
    nan = np.isnan(block)
    some, every = nan.any(axis=-1), nan.all(axis=-1)
    if np.any(some & ~every):
        raise ValueError(
            f"Expected every row of {where} to be all finite (seen) or all NaN (unseen), but found"
            " rows that are only partly NaN. The record is corrupt."
        )
    return ~every


def _epoch_entropies(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Entropies of one epoch for a block ``(M, n, C)`` of probabilities (NaN rows = unseen).

    Returns ``(ensemble_entropy (n,), seen_by_all (n,), run_entropy (M, n), run_seen (M, n))``.
    """
    run_seen = ~np.isnan(stack).all(axis=-1)
    run_h = np.where(run_seen, entropy(np.nan_to_num(stack, nan=0.0)), 0.0)
    all_seen = run_seen.all(axis=0)
    ens_h = np.where(all_seen, entropy(np.nan_to_num(stack, nan=0.0).mean(axis=0)), 0.0)
    return ens_h, all_seen, run_h, run_seen


def ensemble_confusion(epoch_probs: Iterable[ArrayLike]) -> np.ndarray:
    """Ensemble confusion score from per-epoch probabilities (Eq. 1-3); higher = harder.

    The streaming counterpart of :func:`lightning_difficulty.functional.confusion.confusion_score`
    (which takes all epochs at once).

    Args:
        epoch_probs: for each epoch ``t`` an array ``(M, N, C)`` of the ``M`` models' softmax
            outputs; a row of NaN marks a sample a model did not see that epoch. Any iterable, so
            epochs can be produced lazily (only one is held at a time).

    Returns:
        float64 ``(N,)``: ``s(x) = mean_t H(mean_i f_t^(i)(x))`` in nats, averaged over the epochs
        in which all ``M`` models saw ``x`` **(convention)**; NaN if there is no such epoch.

    Example::

        >>> e0 = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])  # 2 models, 1 sample, 2 classes
        >>> e1 = np.array([[[1.0, 0.0]], [[1.0, 0.0]]])
        >>> round(float(ensemble_confusion([e0, e1])[0]), 4)  # (log 2 + 0) / 2
        0.3466
    """
    total: np.ndarray | None = None
    count: np.ndarray | None = None
    shape: tuple[int, ...] | None = None
    for t, probs in enumerate(epoch_probs):
        stack = np.asarray(probs, dtype=np.float64)
        if stack.ndim != 3 or (shape is not None and stack.shape[:2] != shape):
            raise ValueError(
                f"Expected each epoch of `epoch_probs` to be (M, N, C) with the same M and N, but got"
                f" shape {stack.shape} at epoch position {t}."
            )
        _seen_rows(stack, f"`epoch_probs` at epoch position {t}")
        ens_h, seen, _, _ = _epoch_entropies(stack)
        if total is None or count is None:
            shape, total, count = stack.shape[:2], np.zeros(stack.shape[1]), np.zeros(stack.shape[1])
        total += ens_h
        count += seen
    if total is None or count is None:
        raise ValueError("Expected argument `epoch_probs` to hold at least one epoch, but got none.")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


class EntropyBounds(NamedTuple):
    """Entropy of a distribution known only by its top-k probabilities (nats, per row)."""

    estimate: np.ndarray
    lower: np.ndarray
    upper: np.ndarray


def _check_topk_values(values: ArrayLike, num_classes: int) -> np.ndarray:
    vals = np.asarray(values, dtype=np.float64)
    if vals.ndim < 1 or vals.shape[-1] < 1:
        raise ValueError(f"Expected argument `values` to be (..., k) with k >= 1, but got shape {vals.shape}.")
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise ValueError(f"Expected argument `num_classes` to be an integer, but got {num_classes!r}.")
    if vals.shape[-1] > num_classes:
        raise ValueError(
            f"Expected at most `num_classes`={num_classes} top-k values per row, but got {vals.shape[-1]}."
        )
    finite = vals[~np.isnan(vals)]
    if finite.size and (finite.min() < 0 or finite.max() > 1):
        raise ValueError("Expected argument `values` to hold probabilities in [0, 1] (or NaN rows).")
    return vals


def topk_entropy_bounds(values: ArrayLike, num_classes: int) -> EntropyBounds:
    """Bounds on the entropy of a probability vector of which only the top-k entries are known.

    With the top-k probabilities ``v`` (any order), ``a = min(v)``, the remaining mass
    ``r = max(0, 1 - sum(v))`` and ``m = C - k`` other classes, each holding at most ``a``:

    - ``upper = H(v) + r log(m / r)``: ``r`` spread evenly (``r / m <= a``, so it is feasible), the
      most uniform completion;
    - ``lower = H(v) + j a log(1/a) + rho log(1/rho)`` with ``j = floor(r / a)``, ``rho = r - j a``:
      the greedy completion that fills classes up to the cap ``a``; it majorizes every other
      completion, so by Schur-concavity its entropy is the minimum;
    - ``estimate = upper``, i.e. the entropy of the even-spread reconstruction
      (:func:`topk_reconstruct`), so that a single run's top-k confusion equals the ``M = 1``
      ensemble.

    The true entropy lies in ``[lower, upper]``. Per row, since every completion term satisfies
    ``x log(1/x) >= x log(1/a)``::

        upper - lower <= r log(m a / r)

    and over all inputs (see :func:`max_entropy_error`)::

        max_entropy_error(C, k) = (C - k) / (k u*),  u* the root of  ln u = 1 + (C - k) / (k u),  u >= e.

    Float32 rounding that makes ``r > m a`` is absorbed by raising the cap to ``r / m``. NaN rows
    give NaN. Higher entropy = harder.

    Args:
        values: ``(..., k)`` top-k probabilities.
        num_classes: ``C``.

    Returns:
        :class:`EntropyBounds` ``(estimate, lower, upper)``, each of shape ``values.shape[:-1]``.

    Example::

        >>> b = topk_entropy_bounds([0.5, 0.3], num_classes=4)  # r = 0.2 over 2 classes, cap 0.3
        >>> round(float(b.lower), 4), round(float(b.upper), 4)
        (1.0297, 1.1683)
    """
    vals = _check_topk_values(values, num_classes)
    m = int(num_classes) - vals.shape[-1]
    head = entropy(vals)
    rest = np.clip(1.0 - vals.sum(axis=-1), 0.0, None)
    if m == 0:
        return EntropyBounds(estimate=head, lower=head.copy(), upper=head.copy())
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = np.where(rest > 0, rest * np.log(m / np.where(rest > 0, rest, 1.0)), 0.0)
        cap = np.maximum(vals.min(axis=-1), rest / m)
        safe_cap = np.where(cap > 0, cap, 1.0)
        full = np.where(rest > 0, np.floor(rest / safe_cap), 0.0)
        rem = np.where(rest > 0, rest - full * safe_cap, 0.0)
        greedy = full * safe_cap * -np.log(safe_cap) + np.where(
            rem > 0, -rem * np.log(np.where(rem > 0, rem, 1.0)), 0.0
        )
    upper = head + spread
    lower = np.minimum(head + greedy, upper)  # equal up to rounding when the completion is forced
    return EntropyBounds(estimate=upper, lower=lower, upper=upper)


def max_entropy_error(num_classes: int, topk: int) -> float:
    """Worst case of ``upper - lower`` in :func:`topk_entropy_bounds` over all probability vectors.

    With ``m = C - k``: ``upper - lower <= r log(m a / r)``; maximising over the cap ``a`` and the
    remaining mass ``r`` (subject to ``r <= m a`` and ``r <= 1 - k a``) gives, with ``u = m a / r``,
    ``max_{u >= e} m ln(u) / (m + k u)``, attained at the root ``u*`` of ``ln u = 1 + m / (k u)``,
    where it equals::

        max_entropy_error(C, k) = (C - k) / (k u*)        (0 when k = C)

    It is an upper bound on the gap of every row (tight up to the rounding of ``r / a`` to whole
    classes). E.g. C = 1000, k = 10 gives about 2.63 nats; C = 10, k = 1 about 1.10 nats.

    Example::

        >>> round(max_entropy_error(10, 1), 3)
        1.101
    """
    if isinstance(topk, bool) or not isinstance(topk, int) or not 1 <= topk <= num_classes:
        raise ValueError(f"Expected argument `topk` to be an integer in [1, {num_classes}], but got {topk!r}.")
    m, k = num_classes - topk, topk
    if m == 0:
        return 0.0
    root = brentq(lambda u: math.log(u) - 1.0 - m / (k * u), math.e, math.e * (1.0 + m / k))
    return m / (k * float(root))


def topk_reconstruct(values: ArrayLike, indices: ArrayLike, *, num_classes: int) -> np.ndarray:
    """Approximate full probability vectors from top-k records (maximum-entropy completion).

    Each row gets its top-k values at ``indices`` and the remaining mass ``max(0, 1 - sum(values))``
    spread evenly over the other ``C - k`` classes. NaN rows (unseen samples) stay NaN; their
    indices are ignored.

    Args:
        values: ``(n, k)`` top-k probabilities.
        indices: ``(n, k)`` their class indices.
        num_classes: ``C``.

    Returns:
        float64 ``(n, C)``.

    Example::

        >>> topk_reconstruct([[0.6]], [[2]], num_classes=3).tolist()
        [[0.2, 0.2, 0.6]]
    """
    vals = _check_topk_values(values, num_classes)
    idx = np.asarray(indices)
    if vals.ndim != 2 or idx.shape != vals.shape:
        raise ValueError(
            f"Expected `values` and `indices` to be (n, k) of one shape, but got {vals.shape} and {idx.shape}."
        )
    seen = _seen_rows(vals, "`values`")
    if np.any(seen[:, None] & ((idx < 0) | (idx >= num_classes))):
        raise ValueError(f"Expected argument `indices` to lie in [0, {num_classes}) on seen rows.")
    n, k = vals.shape
    m = num_classes - k
    rest = np.clip(1.0 - vals.sum(axis=1), 0.0, None)
    out = np.repeat((rest / m if m else np.zeros(n))[:, None], num_classes, axis=1)
    rows = np.flatnonzero(seen)
    out_rows = out[rows]
    np.put_along_axis(out_rows, idx[rows].astype(np.int64), vals[rows], axis=1)
    out[rows] = out_rows
    out[~seen] = np.nan
    return out


# ----------------------------------------------------------------------------------------------
# Records on disk
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordManifest:
    """Contents of ``<run_dir>/records/<split>/manifest.json`` (see the module docstring)."""

    split: str
    num_samples: int
    num_classes: int
    kind: str
    topk: int | None
    label_fingerprint: str | None
    epochs: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"Expected record `kind` to be one of {_KINDS}, but got {self.kind!r}.")
        for name in ("num_samples", "num_classes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Expected record `{name}` to be a positive integer, but got {value!r}.")
        if self.kind == "topk" and not (isinstance(self.topk, int) and 1 <= self.topk <= self.num_classes):
            raise ValueError(
                f"Expected record `topk` to be an integer in [1, {self.num_classes}] for kind 'topk',"
                f" but got {self.topk!r}."
            )
        epochs = tuple(int(e) for e in self.epochs)
        if len(set(epochs)) != len(epochs) or any(e < 0 for e in epochs):
            raise ValueError(f"Expected record `epochs` to be distinct non-negative integers, but got {epochs}.")
        object.__setattr__(self, "epochs", tuple(sorted(epochs)))
        object.__setattr__(self, "topk", self.topk if self.kind == "topk" else None)

    def to_dict(self) -> dict[str, Any]:
        """The JSON payload, with ``format`` and ``version``."""
        return {
            "format": RECORDS_FORMAT,
            "version": 1,
            "split": self.split,
            "num_samples": self.num_samples,
            "num_classes": self.num_classes,
            "kind": self.kind,
            "topk": self.topk,
            "label_fingerprint": self.label_fingerprint,
            "epochs": list(self.epochs),
        }

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> RecordManifest:
        """Read and validate a records manifest."""
        with open(path, encoding="utf-8") as handle:
            payload = json.load(handle)
        if not isinstance(payload, dict) or payload.get("format") != RECORDS_FORMAT:
            raise ValueError(f"Expected {path} to be a {RECORDS_FORMAT!r} manifest, but it is not.")
        if payload.get("version") != 1:
            raise ValueError(f"Expected {path} to hold version 1, but got {payload.get('version')!r}.")
        return cls(
            split=payload["split"],
            num_samples=payload["num_samples"],
            num_classes=payload["num_classes"],
            kind=payload["kind"],
            topk=payload.get("topk"),
            label_fingerprint=payload.get("label_fingerprint"),
            epochs=tuple(payload["epochs"]),
        )


def _records_dir(run_dir: str | os.PathLike[str], split: str) -> Path:
    return Path(run_dir) / "records" / split


def _epoch_files(folder: Path, epoch: int, kind: str) -> dict[str, Path]:
    stem = folder / f"epoch_{epoch:04d}"
    if kind == "probs":
        return {"probs": Path(f"{stem}.probs.npy")}
    return {"values": Path(f"{stem}.topk_values.npy"), "indices": Path(f"{stem}.topk_indices.npy")}


def write_epoch_record(
    run_dir: str | os.PathLike[str],
    probs: ArrayLike,
    *,
    split: str,
    epoch: int,
    kind: str = "probs",
    topk: int | None = None,
    label_fingerprint: str | None = None,
) -> Path:
    """Write one epoch's probabilities of one run in the records format (atomic writes).

    The epoch file(s) are written first, then the manifest (created, or checked for the same
    ``num_samples`` / ``num_classes`` / ``kind`` / ``topk`` / fingerprint and the epoch added).

    Args:
        run_dir: the run's directory.
        probs: ``(N, C)`` softmax outputs; NaN rows = samples not seen this epoch.
        split: split name.
        epoch: epoch number.
        kind: ``"probs"`` (full vectors) or ``"topk"`` (the ``topk`` largest, descending, ties by
            lower class index).
        topk: ``k`` for ``kind="topk"``.
        label_fingerprint: fingerprint of the split's labels, or ``None``.

    Returns:
        Path of the manifest.

    Example::

        >>> import tempfile
        >>> path = write_epoch_record(tempfile.mkdtemp(), np.eye(3), split="val", epoch=0)
        >>> path.name
        'manifest.json'
    """
    arr = np.asarray(probs, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"Expected argument `probs` to be (N, C), but got shape {arr.shape}.")
    seen = _seen_rows(arr, "`probs`")
    folder = _records_dir(run_dir, split)
    manifest_path = folder / "manifest.json"
    new = RecordManifest(split, arr.shape[0], arr.shape[1], kind, topk, label_fingerprint, (int(epoch),))
    if manifest_path.exists():
        old = RecordManifest.from_json(manifest_path)
        fields = ("num_samples", "num_classes", "kind", "topk", "label_fingerprint")
        diff = [
            f"{f}: {getattr(old, f)!r} vs {getattr(new, f)!r}" for f in fields if getattr(old, f) != getattr(new, f)
        ]
        if diff:
            raise ValueError(f"The record in {folder} disagrees with this epoch ({'; '.join(diff)}).")
        new = replace(old, epochs=(*old.epochs, int(epoch))) if epoch not in old.epochs else old
    files = _epoch_files(folder, int(epoch), kind)
    if kind == "probs":
        write_npy(files["probs"], arr)
    else:
        assert new.topk is not None
        order = np.argsort(-np.nan_to_num(arr, nan=0.0), axis=1, kind="stable")[:, : new.topk]
        values = np.take_along_axis(arr, order, axis=1)
        values[~seen] = np.nan
        indices = np.where(seen[:, None], order, -1).astype(np.int32)
        write_npy(files["values"], values.astype(np.float32))
        write_npy(files["indices"], indices)
    return write_json(manifest_path, new.to_dict())


@dataclass(frozen=True)
class EpochRecord:
    """One epoch of one run's record, memory-mapped (nothing is read until rows are asked for)."""

    kind: str
    num_classes: int
    arrays: dict[str, np.ndarray]

    def dense(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as float64 ``(n, C)`` probabilities (top-k: :func:`topk_reconstruct`)."""
        if self.kind == "probs":
            return np.asarray(self.arrays["probs"][start:stop], dtype=np.float64)
        return topk_reconstruct(
            self.arrays["values"][start:stop],
            self.arrays["indices"][start:stop],
            num_classes=self.num_classes,
        )


@dataclass(frozen=True)
class RunRecords:
    """A run's records of one split: its manifest and access to each epoch."""

    run_dir: Path
    manifest: RecordManifest

    def open_epoch(self, epoch: int) -> EpochRecord:
        """Memory-map the files of ``epoch`` and check their shapes."""
        if epoch not in self.manifest.epochs:
            raise ValueError(f"Run {self.run_dir} has no record of epoch {epoch}; it has {list(self.manifest.epochs)}.")
        folder = _records_dir(self.run_dir, self.manifest.split)
        n, c, k = self.manifest.num_samples, self.manifest.num_classes, self.manifest.topk
        width = c if self.manifest.kind == "probs" else k
        arrays: dict[str, np.ndarray] = {}
        for name, path in _epoch_files(folder, epoch, self.manifest.kind).items():
            if not path.exists():
                raise FileNotFoundError(f"Run {self.run_dir}: the manifest lists epoch {epoch}, but {path} is missing.")
            arr = np.load(path, mmap_mode="r")
            if arr.shape != (n, width):
                raise ValueError(f"Expected {path} to have shape {(n, width)}, but got {arr.shape}.")
            arrays[name] = arr
        return EpochRecord(kind=self.manifest.kind, num_classes=c, arrays=arrays)


def _available_splits(run_dir: Path) -> list[str]:
    root = run_dir / "records"
    return sorted(p.parent.name for p in root.glob("*/manifest.json")) if root.is_dir() else []


def read_records(run_dir: str | os.PathLike[str], *, split: str | None = None) -> RunRecords:
    """Open a run's records of ``split`` (default: its only split).

    Example::

        >>> import tempfile
        >>> run = tempfile.mkdtemp()
        >>> _ = write_epoch_record(run, np.eye(2), split="val", epoch=5)
        >>> read_records(run).manifest.epochs
        (5,)
    """
    root = Path(run_dir)
    splits = _available_splits(root)
    if split is None:
        if len(splits) != 1:
            raise ValueError(
                f"Expected run {root} to hold records of exactly one split when `split` is None, but found"
                f" {splits}. Pass split=..."
            )
        split = splits[0]
    path = _records_dir(root, split) / "manifest.json"
    if not path.exists():
        raise FileNotFoundError(f"Run {root} has no records of split {split!r} ({path}); it has {splits}.")
    manifest = RecordManifest.from_json(path)
    if manifest.split != split:
        raise ValueError(f"Expected {path} to describe split {split!r}, but it says {manifest.split!r}.")
    return RunRecords(run_dir=root, manifest=manifest)


# ----------------------------------------------------------------------------------------------
# Combining runs
# ----------------------------------------------------------------------------------------------


def _check_same(runs: Sequence[RunRecords], field: str, *, skip_none: bool = False) -> None:
    values = {str(r.run_dir): getattr(r.manifest, field) for r in runs}
    distinct = {v for v in values.values() if not (skip_none and v is None)}
    if len(distinct) > 1:
        listing = ", ".join(f"{run}: {value!r}" for run, value in values.items())
        raise ValueError(f"Expected all runs to have the same {field}, but got {listing}.")


def _read_labels(runs: Sequence[RunRecords], split: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Labels from the runs' ``scores.parquet`` (split, index, label), refusing disagreements."""
    n = runs[0].manifest.num_samples
    labels = np.zeros(n, dtype=np.int64)
    known = np.zeros(n, dtype=bool)
    source: dict[int, str] = {}
    for run in runs:
        path = run.run_dir / "scores.parquet"
        if not path.exists():
            continue
        table = pd.read_parquet(path)
        if "label" not in table.columns:
            continue
        table = table[table["split"] == split]
        index = table["index"].to_numpy(dtype=np.int64)
        value = table["label"].to_numpy(dtype=np.int64)
        if index.size and (index.min() < 0 or index.max() >= n):
            raise ValueError(f"{path}: indices of split {split!r} fall outside [0, {n}).")
        clash = known[index] & (labels[index] != value)
        if np.any(clash):
            i = int(index[np.argmax(clash)])
            raise ValueError(
                f"The runs disagree on the label of {split!r} sample {i}: {source[i]} says {labels[i]},"
                f" {path} says {int(value[np.argmax(clash)])}. They were not trained on the same data."
            )
        labels[index], known[index] = value, True
        source.update({int(i): str(path) for i in index})
    return (labels, known) if known.any() else None


def _accumulate(runs: Sequence[RunRecords], chunk_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Epoch-by-epoch sums; returns the ensemble score ``(N,)`` and the per-run scores ``(M, N)``."""
    n, m = runs[0].manifest.num_samples, len(runs)
    ens_sum, ens_cnt = np.zeros(n), np.zeros(n)
    run_sum, run_cnt = np.zeros((m, n)), np.zeros((m, n))
    for epoch in runs[0].manifest.epochs:
        records = [run.open_epoch(epoch) for run in runs]
        for start in range(0, n, chunk_rows):
            stop = min(n, start + chunk_rows)
            blocks = []
            for run, record in zip(runs, records, strict=True):
                block = record.dense(start, stop)
                _seen_rows(block, f"run {run.run_dir} epoch {epoch}")
                blocks.append(block)
            ens_h, seen, run_h, run_seen = _epoch_entropies(np.stack(blocks))
            ens_sum[start:stop] += ens_h
            ens_cnt[start:stop] += seen
            run_sum[:, start:stop] += run_h
            run_cnt[:, start:stop] += run_seen
    with np.errstate(invalid="ignore", divide="ignore"):
        ensemble = np.where(ens_cnt > 0, ens_sum / np.maximum(ens_cnt, 1), np.nan)
        per_run = np.where(run_cnt > 0, run_sum / np.maximum(run_cnt, 1), np.nan)
    return ensemble, per_run


def combine_runs(
    run_dirs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    split: str | None = None,
    chunk_rows: int | None = None,
) -> pd.DataFrame:
    """Combine several runs' (seeds') records into the ensemble confusion score (Eq. 1-3).

    Records are streamed epoch by epoch and in chunks of rows from memory-mapped files, so memory
    stays ``O(chunk_rows * M * C + M * N)`` whatever the number of epochs. Per split, runs must agree
    on ``num_samples``, ``num_classes``, the label fingerprint (where recorded) and the list of
    epochs; probability and top-k records may be mixed. See the module docstring for the
    convention on samples not seen by every run.

    Writes (atomically) ``out_dir/scores.parquet`` with columns ``split``, ``index``, ``label``
    (when a run's ``scores.parquet`` has labels; nullable ``Int64`` if some samples have none),
    ``confusion`` (ensemble) and ``confusion_run<i>`` (run ``i``'s own epoch-averaged entropy), and
    ``out_dir/summary.json`` (version 2: runs, M and, per split, epochs, sizes, ...). One score per
    sample; higher = harder.

    Args:
        run_dirs: the runs' directories (distinct).
        out_dir: output directory (created).
        split: split to combine; default: every split that all runs recorded, one after the other
            in the table.
        chunk_rows: rows per chunk; default about 2M float64 values per chunk.

    Returns:
        The table written to ``scores.parquet``.

    Example::

        >>> import tempfile, os
        >>> root = tempfile.mkdtemp()
        >>> for seed, p in enumerate([[[0.9, 0.1]], [[0.1, 0.9]]]):
        ...     _ = write_epoch_record(os.path.join(root, f"s{seed}"), np.array(p), split="val", epoch=0)
        >>> runs = [os.path.join(root, "s0"), os.path.join(root, "s1")]
        >>> table = combine_runs(runs, os.path.join(root, "ens"))
        >>> round(float(table["confusion"][0]), 4)  # entropy of (0.5, 0.5)
        0.6931
    """
    if not run_dirs:
        raise ValueError("Expected argument `run_dirs` to name at least one run, but got none.")
    resolved = [Path(d).resolve() for d in run_dirs]
    if len(set(resolved)) != len(resolved):
        raise ValueError(f"Expected distinct runs in `run_dirs`, but got duplicates: {[str(d) for d in run_dirs]}.")
    if chunk_rows is not None and (isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1):
        raise ValueError(f"Expected argument `chunk_rows` to be a positive integer, but got {chunk_rows!r}.")
    if split is None:
        per_run = {str(d): _available_splits(d) for d in resolved}
        splits = sorted(set.intersection(*(set(found) for found in per_run.values())))
        if not splits:
            raise ValueError(
                f"Expected the runs to share at least one split of records (records/<split>/manifest.json), but"
                f" they share none: {per_run}. Were they made with ConfusionScore(record='none')?"
            )
    else:
        splits = [split]
    tables, entries = zip(*(_combine_split(resolved, name, chunk_rows) for name in splits), strict=True)
    table = pd.concat(tables, ignore_index=True) if len(tables) > 1 else tables[0]

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "scores.parquet") as tmp:
        table.to_parquet(tmp, index=False)
    summary = {
        "format": SUMMARY_FORMAT,
        "version": 2,
        "runs": [str(d) for d in resolved],
        "M": len(resolved),
        "splits": dict(zip(splits, entries, strict=True)),
        "convention": "s_t(x) only for epochs in which all M runs saw x; s(x) = mean over those epochs",
    }
    write_json(out / "summary.json", summary)
    return table


def _combine_split(resolved: Sequence[Path], split: str, chunk_rows: int | None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One split's ensemble table and its summary entry."""
    runs = [read_records(d, split=split) for d in resolved]
    for field in ("num_samples", "num_classes", "epochs"):
        _check_same(runs, field)
    _check_same(runs, "label_fingerprint", skip_none=True)
    if not runs[0].manifest.epochs:
        raise ValueError(f"Expected the runs to have recorded at least one epoch of split {split!r}, but got none.")
    n, c, m = runs[0].manifest.num_samples, runs[0].manifest.num_classes, len(runs)
    ensemble, per_run = _accumulate(runs, chunk_rows or max(1, _CHUNK_ELEMENTS // (m * c)))
    fingerprints = {r.manifest.label_fingerprint for r in runs} - {None}
    columns: dict[str, Any] = {
        "split": np.full(n, split, dtype=object),
        "index": np.arange(n, dtype=np.int64),
    }
    labels = _read_labels(runs, split)
    if labels is not None:
        values, known = labels
        if known.all() and fingerprints and _label_fingerprint(values) not in fingerprints:
            raise ValueError(
                f"The labels in the runs' scores.parquet (fingerprint {_label_fingerprint(values)}) do not"
                f" match the records' label fingerprint {next(iter(fingerprints))}."
            )
        if known.all():
            columns["label"] = values
        else:
            partial = pd.array(values, dtype="Int64")
            partial[~known] = pd.NA
            columns["label"] = partial
    columns["confusion"] = ensemble
    for i in range(m):
        columns[f"confusion_run{i}"] = per_run[i]
    entry = {
        "epochs": list(runs[0].manifest.epochs),
        "num_samples": n,
        "num_classes": c,
        "kinds": [r.manifest.kind for r in runs],
        "topk": [r.manifest.topk for r in runs],
        "label_fingerprint": next(iter(fingerprints), None),
        "num_scored": int(np.isfinite(ensemble).sum()),
    }
    return pd.DataFrame(columns), entry
