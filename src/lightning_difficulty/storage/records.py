"""The per-epoch probability records of a run: one format, written and read here.

Ensembles of seeds (Albiero et al., Eq. 1-3) need each epoch's probability vectors. Layout::

    <run_dir>/records/<split>/manifest.json
    <run_dir>/records/<split>/epoch_0003.probs.npy          float32 (N, C); NaN rows = not seen
    <run_dir>/records/<split>/epoch_0003.topk_values.npy    float32 (N, k), descending  (kind "topk")
    <run_dir>/records/<split>/epoch_0003.topk_indices.npy   int32   (N, k); -1 on unseen rows

``manifest.json`` (:class:`RecordManifest`)::

    {"format": "lightning-difficulty/records", "version": 1, "split": str, "num_samples": N,
     "num_classes": C, "kind": "probs" | "topk", "topk": k or null,
     "label_fingerprint": "sha256:..." or null, "epochs": [int, ...]}

Writers: :class:`EpochRecorder` streams a training run's rows (each rank appends its rows to a
private log of the open epoch with sequential writes and a bounded buffer; at epoch end rank 0 merges the
logs into the epoch file; the logs stay until the fit has finished, so a resume from any checkpoint of the
fit rebuilds its open epoch exactly; a sample seen more than once in one epoch, e.g. ``DistributedSampler``
padding, gets the mean of its probability vectors ("probs") or its first occurrence from the lowest rank ("topk"));
:func:`write_epoch_record` writes one whole epoch at once. Reader: :func:`read_records`, which
memory-maps each epoch (:class:`RunRecords`, :class:`EpochRecord`). Combining runs lives in
:mod:`lightning_difficulty.runs.combine`; the top-k maths in :mod:`lightning_difficulty.functional.topk`.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor

from lightning_difficulty.functional.topk import seen_rows, topk_reconstruct
from lightning_difficulty.storage.atomic import atomic_path, write_json, write_npy

LOG_BLOCK = 65_536
"""Rows of a rank's log read per step when an epoch is merged."""

__all__ = [
    "FORMAT",
    "EpochRecord",
    "EpochRecorder",
    "RecordManifest",
    "RunRecords",
    "available_splits",
    "epoch_files",
    "read_records",
    "records_dir",
    "write_epoch_record",
]

RecordKind = Literal["probs", "topk"]
FORMAT = "lightning-difficulty/records"
VERSION = 1
KINDS = ("probs", "topk")
RECORDS = "records"  # folder of a run's records
MANIFEST = "manifest.json"
# the files of one epoch per kind: key (as in EpochRecord.arrays) -> part of the file name
_PARTS = {"probs": {"probs": "probs"}, "topk": {"values": "topk_values", "indices": "topk_indices"}}


@dataclass(frozen=True)
class RecordManifest:
    """Contents of ``<run_dir>/records/<split>/manifest.json`` (see the module docstring).

    Example::

        >>> m = RecordManifest("val", num_samples=3, num_classes=2, kind="probs", topk=None,
        ...                    label_fingerprint=None, epochs=(2, 0))
        >>> m.epochs, m.to_dict()["format"]
        ((0, 2), 'lightning-difficulty/records')
    """

    split: str
    num_samples: int
    num_classes: int
    kind: str
    topk: int | None
    label_fingerprint: str | None
    epochs: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Expected record `kind` to be one of {KINDS}, but got {self.kind!r}.")
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
            "format": FORMAT,
            "version": VERSION,
            "split": self.split,
            "num_samples": self.num_samples,
            "num_classes": self.num_classes,
            "kind": self.kind,
            "topk": self.topk,
            "label_fingerprint": self.label_fingerprint,
            "epochs": list(self.epochs),
        }

    def write(self, folder: str | os.PathLike[str]) -> Path:
        """Write ``folder/manifest.json`` atomically; returns its path."""
        return write_json(Path(folder) / MANIFEST, self.to_dict())

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> RecordManifest:
        """Read and validate a records manifest; a damaged one is refused with a message naming the file."""
        fix = "rerun the run that wrote it, or leave this run out"
        try:
            with open(path, encoding="utf-8") as handle:
                payload = json.load(handle)
        except (ValueError, RecursionError) as err:  # not JSON, not UTF-8, or nested past Python's limit
            raise ValueError(
                f"{path} is not a readable records manifest (not JSON: {err}). It is damaged: {fix}."
            ) from None
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise ValueError(f"Expected {path} to be a {FORMAT!r} manifest, but it is not. It is damaged: {fix}.")
        if payload.get("version") != VERSION:
            raise ValueError(f"Expected {path} to hold version {VERSION}, but got {payload.get('version')!r}.")
        try:
            return cls(
                split=payload["split"],
                num_samples=payload["num_samples"],
                num_classes=payload["num_classes"],
                kind=payload["kind"],
                topk=payload.get("topk"),
                label_fingerprint=payload.get("label_fingerprint"),
                epochs=tuple(payload["epochs"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            detail = f"missing field {err}" if isinstance(err, KeyError) else str(err)
            raise ValueError(f"{path} is not a valid records manifest ({detail}). It is damaged: {fix}.") from None


def records_dir(run_dir: str | os.PathLike[str], split: str) -> Path:
    """``run_dir/records/split``.

    Example::

        >>> records_dir("run", "val").as_posix()
        'run/records/val'
    """
    return Path(run_dir) / RECORDS / split


def epoch_file(folder: str | os.PathLike[str], epoch: int | str, part: str) -> Path:
    """``folder/epoch_0003.<part>.npy`` (``epoch="*"`` gives the glob pattern)."""
    stem = f"epoch_{epoch:04d}" if isinstance(epoch, int) else f"epoch_{epoch}"
    return Path(folder) / f"{stem}.{part}.npy"


def epoch_files(folder: str | os.PathLike[str], epoch: int, kind: str) -> dict[str, Path]:
    """The files of one epoch of ``kind``: ``{"probs": ...}`` or ``{"values": ..., "indices": ...}``.

    Example::

        >>> {k: p.name for k, p in epoch_files("r", 3, "topk").items()}
        {'values': 'epoch_0003.topk_values.npy', 'indices': 'epoch_0003.topk_indices.npy'}
    """
    if kind not in _PARTS:
        raise ValueError(f"Expected record `kind` to be one of {KINDS}, but got {kind!r}.")
    return {key: epoch_file(folder, epoch, part) for key, part in _PARTS[kind].items()}


@dataclass
class EpochRecorder:
    """Streams one split's per-epoch softmax vectors to disk.

    Example::

        >>> import tempfile, torch
        >>> rec = EpochRecorder(Path(tempfile.mkdtemp()), "train", num_samples=3, num_classes=2)
        >>> rec.add(torch.tensor([2, 0]), torch.tensor([[0.9, 0.1], [0.2, 0.8]]))
        >>> rec.finish_epoch(0, world_size=1)
        >>> np.load(rec.epoch_path(0, "probs"))[2].astype(float).round(4).tolist()
        [0.9, 0.1]
    """

    directory: Path
    split: str
    num_samples: int
    num_classes: int
    kind: RecordKind = "probs"
    topk: int = 5
    rank: int = 0
    flush_rows: int = 65536
    label_fingerprint: str | None = None
    epochs: list[int] = field(default_factory=list)
    epoch: int = 0
    """The open epoch: the one whose log :meth:`add` appends to (the next one after :meth:`finish_epoch`)."""
    _buffer: list[tuple[Tensor, Tensor]] = field(default_factory=list, repr=False)
    _buffered_rows: int = 0

    def __post_init__(self) -> None:
        self.topk = min(self.topk, self.num_classes)
        self.directory = Path(self.directory) / self.split
        self.directory.mkdir(parents=True, exist_ok=True)

    @property
    def row_width(self) -> int:
        return self.num_classes if self.kind == "probs" else 2 * self.topk

    def epoch_path(self, epoch: int, part: str) -> Path:
        """File of ``epoch``; ``part`` is ``"probs"``, ``"topk_values"`` or ``"topk_indices"``."""
        return epoch_file(self.directory, epoch, part)

    def _log_paths(self, rank: int, epoch: int | None = None) -> tuple[Path, Path]:
        stem = f".log.e{self.epoch if epoch is None else epoch:04d}.rank{rank}"
        return self.directory / f"{stem}.idx", self.directory / f"{stem}.val"

    def _own_logs(self, folder: Path | None = None) -> dict[int, tuple[Path, Path]]:
        """This rank's logs on disk in ``folder`` (default: this recorder's), by epoch."""
        folder = self.directory if folder is None else Path(folder)
        found = {}
        for path in folder.glob(f".log.e*.rank{self.rank}.idx"):
            epoch = int(path.name.split(".")[2][1:])
            idx, val = self._log_paths(self.rank, epoch)
            found[epoch] = (folder / idx.name, folder / val.name)
        return found

    def add(self, indices: Tensor, probs: Tensor) -> None:
        """Buffer one batch (device tensors are copied to host at flush time only)."""
        if self.kind == "topk":
            values, classes = probs.topk(min(self.topk, probs.shape[1]), dim=1)
            probs = torch.cat([values, classes.to(values.dtype)], dim=1)
        self._buffer.append((indices.detach(), probs.detach().float()))
        self._buffered_rows += int(indices.shape[0])
        if self._buffered_rows >= self.flush_rows:
            self.flush()

    def flush(self) -> None:
        """Append buffered rows to this rank's log."""
        if not self._buffer:
            return
        idx = torch.cat([b[0] for b in self._buffer]).cpu().numpy().astype(np.int64)
        val = torch.cat([b[1] for b in self._buffer]).cpu().numpy().astype(np.float32)
        idx_path, val_path = self._log_paths(self.rank)
        with idx_path.open("ab") as fh:
            idx.tofile(fh)
        with val_path.open("ab") as fh:
            val.tofile(fh)
        self._buffer.clear()
        self._buffered_rows = 0

    def log_offsets(self) -> int:
        """Rows already in this rank's log (saved in checkpoints to truncate on resume)."""
        self.flush()
        idx_path, _ = self._log_paths(self.rank)
        return idx_path.stat().st_size // 8 if idx_path.exists() else 0

    def truncate_log(self, rows: int) -> bool:
        """Cut the open epoch's log of this rank back to ``rows`` rows (rows written after a checkpoint are
        dropped). Returns ``False`` when the log holds fewer rows than that (its rows are gone)."""
        idx_path, val_path = self._log_paths(self.rank)
        if not idx_path.exists():
            return rows == 0
        if idx_path.stat().st_size < rows * 8 or val_path.stat().st_size < rows * 4 * self.row_width:
            return False
        with idx_path.open("r+b") as fh:
            fh.truncate(rows * 8)
        with val_path.open("r+b") as fh:
            fh.truncate(rows * 4 * self.row_width)
        return True

    def keep_only(self, open_epoch: int | None) -> None:
        """Drop this rank's logs of every epoch that is neither finished nor ``open_epoch`` (a resumed run's
        abandoned future); on rank 0 also the epoch files not in :attr:`epochs`, and rewrite the manifest."""
        for epoch, paths in self._own_logs().items():
            if epoch not in self.epochs and epoch != open_epoch:
                for path in paths:
                    path.unlink(missing_ok=True)
        if self.rank != 0:
            return
        for parts in _PARTS.values():
            for part in parts.values():
                for path in self.directory.glob(epoch_file(self.directory, "*", part).name):
                    if int(path.name.split(".")[0].split("_")[1]) not in self.epochs:
                        path.unlink(missing_ok=True)
        if self.epochs:
            self.write_manifest()
        else:
            (self.directory / MANIFEST).unlink(missing_ok=True)

    def adopt(self, previous: Path) -> None:
        """Carry a resumed run's records over from ``previous`` (the same split's folder of the run that saved the
        checkpoint, e.g. an earlier ``version_N`` of the logger): on rank 0 the finished epochs, on every rank its
        own logs. Hard links where the filesystem allows, copies otherwise."""
        names = [path.name for paths in self._own_logs(previous).values() for path in paths]
        if self.rank == 0:
            names += [p.name for e in self.epochs for p in epoch_files(previous, e, self.kind).values()]
        for name in names:
            source, target = Path(previous) / name, self.directory / name
            if source.exists() and not target.exists():
                try:
                    os.link(source, target)
                except OSError:
                    shutil.copy2(source, target)

    def release_logs(self) -> None:
        """Delete this rank's logs (once the fit has finished: no checkpoint of it needs them any more)."""
        self.flush()
        for paths in self._own_logs().values():
            for path in paths:
                path.unlink(missing_ok=True)

    @staticmethod
    def discard_previous(root: Path, split: str) -> None:
        """Remove the records of an earlier run from ``root/split`` (only files of this format; nothing else)."""
        directory = Path(root) / split
        if not directory.is_dir():
            return
        patterns = [epoch_file(directory, "*", part).name for parts in _PARTS.values() for part in parts.values()]
        for pattern in (*patterns, ".log.*"):
            for path in directory.glob(pattern):
                path.unlink(missing_ok=True)
        (directory / MANIFEST).unlink(missing_ok=True)

    def discard_log(self) -> None:
        """Forget this rank's buffered rows and every log it wrote (a split starting afresh)."""
        self._buffer.clear()
        self._buffered_rows = 0
        for paths in self._own_logs().values():
            for path in paths:
                path.unlink(missing_ok=True)

    def finish_epoch(self, epoch: int, *, world_size: int) -> None:
        """Merge all ranks' logs into the epoch file. Call on rank 0 after every other rank flushed.

        The logs are read ``LOG_BLOCK`` rows at a time into memmapped outputs, so the merge holds O(N) counts,
        never the ``(N, C)`` epoch, in memory. The logs are kept (see :meth:`release_logs`)."""
        self.flush()
        files = epoch_files(self.directory, epoch, self.kind)
        if self.kind == "probs":
            with atomic_path(files["probs"]) as tmp:
                out = _new_npy(tmp, np.float32, (self.num_samples, self.num_classes), np.nan)
                self._merge_mean(out, epoch, world_size)
        else:
            shape = (self.num_samples, self.topk)
            with atomic_path(files["values"]) as values, atomic_path(files["indices"]) as classes:
                self._merge_first(
                    _new_npy(values, np.float32, shape, np.nan),
                    _new_npy(classes, np.int32, shape, -1),
                    epoch,
                    world_size,
                )
        if epoch not in self.epochs:
            self.epochs.append(epoch)
        self.epoch = epoch + 1  # the next epoch's rows go to a log of their own
        self.write_manifest()

    def _log_blocks(self, rank: int, epoch: int, *, backwards: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(dataset indices, row values)`` of a rank's log of ``epoch``, ``LOG_BLOCK`` rows at a time; rows
        routed to no sample (index outside ``[0, N)``: unlabelled or ignored presentations) are left out."""
        idx_path, val_path = self._log_paths(rank, epoch)
        if not idx_path.exists():
            return
        width = self.row_width
        rows = min(idx_path.stat().st_size // 8, val_path.stat().st_size // (4 * width))
        starts = range(0, rows, LOG_BLOCK)
        for start in reversed(starts) if backwards else starts:
            count = min(LOG_BLOCK, rows - start)
            idx = np.fromfile(idx_path, dtype=np.int64, count=count, offset=start * 8)
            val = np.fromfile(val_path, dtype=np.float32, count=count * width, offset=start * width * 4)
            keep = (idx >= 0) & (idx < self.num_samples)
            yield idx[keep], val.reshape(count, width)[keep]

    def _merge_mean(self, out: np.ndarray, epoch: int, world_size: int) -> None:
        """Mean of every logged row per sample (DDP padding logs a sample twice); NaN for samples never seen."""
        count = np.zeros(self.num_samples, dtype=np.int64)
        for rank in range(world_size):
            for idx, val in self._log_blocks(rank, epoch):
                while idx.size:  # one pass per repetition of an index inside the block
                    first = np.unique(idx, return_index=True)[1]
                    rows, seen = idx[first], count[idx[first]][:, None]
                    previous = np.where(seen > 0, out[rows], 0.0).astype(np.float64)
                    out[rows] = ((previous * seen + val[first]) / (seen + 1)).astype(np.float32)
                    count[rows] += 1
                    rest = np.ones(idx.size, dtype=bool)
                    rest[first] = False
                    idx, val = idx[rest], val[rest]
        out.flush()  # type: ignore[attr-defined]

    def _merge_first(self, values: np.ndarray, classes: np.ndarray, epoch: int, world_size: int) -> None:
        """The first logged row per sample, lower ranks first (blocks written backwards, so earlier rows win)."""
        k = self.topk
        for rank in reversed(range(world_size)):
            for idx, val in self._log_blocks(rank, epoch, backwards=True):
                rows = np.unique(idx, return_index=True)[1]  # first occurrence in this block
                values[idx[rows]] = val[rows, :k]
                classes[idx[rows]] = val[rows, k:].astype(np.int32)
        values.flush()  # type: ignore[attr-defined]
        classes.flush()  # type: ignore[attr-defined]

    def manifest(self) -> RecordManifest:
        """The manifest of the epochs finished so far."""
        return RecordManifest(
            split=self.split,
            num_samples=int(self.num_samples),
            num_classes=int(self.num_classes),
            kind=self.kind,
            topk=int(self.topk),
            label_fingerprint=self.label_fingerprint,
            epochs=tuple(self.epochs),
        )

    def write_manifest(self) -> None:
        """Write ``manifest.json`` (the same :class:`RecordManifest` that :func:`read_records` reads)."""
        self.manifest().write(self.directory)


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
    seen = seen_rows(arr, "`probs`")
    folder = records_dir(run_dir, split)
    manifest_path = folder / MANIFEST
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
    files = epoch_files(folder, int(epoch), kind)
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
    return new.write(folder)


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
        folder = records_dir(self.run_dir, self.manifest.split)
        n, c, k = self.manifest.num_samples, self.manifest.num_classes, self.manifest.topk
        width = c if self.manifest.kind == "probs" else k
        arrays: dict[str, np.ndarray] = {}
        for name, path in epoch_files(folder, epoch, self.manifest.kind).items():
            if not path.exists():
                raise FileNotFoundError(f"Run {self.run_dir}: the manifest lists epoch {epoch}, but {path} is missing.")
            try:
                arr = np.load(path, mmap_mode="r")
            except (ValueError, OSError, EOFError) as err:
                raise ValueError(
                    f"Could not read {path} ({err}): the record of epoch {epoch} is truncated or damaged (an"
                    " interrupted copy or write?). Rerun that run, or leave it out."
                ) from None
            if arr.shape != (n, width):
                raise ValueError(f"Expected {path} to have shape {(n, width)}, but got {arr.shape}.")
            arrays[name] = arr
        return EpochRecord(kind=self.manifest.kind, num_classes=c, arrays=arrays)


def available_splits(run_dir: str | os.PathLike[str]) -> list[str]:
    """Splits with a records manifest in ``run_dir/records``, sorted.

    Example::

        >>> import tempfile
        >>> run = tempfile.mkdtemp()
        >>> _ = write_epoch_record(run, np.eye(2), split="val", epoch=0)
        >>> available_splits(run)
        ['val']
    """
    root = Path(run_dir) / RECORDS
    return sorted(p.parent.name for p in root.glob(f"*/{MANIFEST}")) if root.is_dir() else []


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
    splits = available_splits(root)
    if split is None:
        if len(splits) != 1:
            raise ValueError(
                f"Expected run {root} to hold records of exactly one split when `split` is None, but found"
                f" {splits}. Pass split=..."
            )
        split = splits[0]
    path = records_dir(root, split) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"Run {root} has no records of split {split!r} ({path}); it has {splits}.")
    manifest = RecordManifest.from_json(path)
    if manifest.split != split:
        raise ValueError(f"Expected {path} to describe split {split!r}, but it says {manifest.split!r}.")
    return RunRecords(run_dir=root, manifest=manifest)


def _new_npy(path: Path, dtype: Any, shape: tuple[int, int], fill: float) -> np.ndarray:
    """A ``.npy`` memmap at ``path`` filled with ``fill``, ``LOG_BLOCK`` rows at a time."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    for start in range(0, shape[0], LOG_BLOCK):
        out[start : start + LOG_BLOCK] = fill
    return out
