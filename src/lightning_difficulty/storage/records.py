"""Per-epoch probability records on disk, for ensembles of seeds (Eq. 1-3 need each epoch's vectors).

Layout (read by :mod:`lightning_difficulty.runs.combine`)::

    <run_dir>/records/<split>/manifest.json
    <run_dir>/records/<split>/epoch_0003.probs.npy          float32 (N, C); NaN rows = not seen
    <run_dir>/records/<split>/epoch_0003.topk_values.npy    float32 (N, k)  (kind "topk")
    <run_dir>/records/<split>/epoch_0003.topk_indices.npy   int32   (N, k)

While an epoch runs, each rank appends its rows to a private log (sequential writes, bounded
buffer); at epoch end rank 0 merges the logs into the epoch file. A sample seen more than once in
one epoch (``DistributedSampler`` padding) gets the mean of its probability vectors ("probs") or
its first occurrence from the lowest rank ("topk").
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from lightning_difficulty.storage.atomic import write_json, write_npy

RecordKind = Literal["probs", "topk"]
FORMAT = "lightning-difficulty/records"


@dataclass
class EpochRecorder:
    """Streams one split's per-epoch softmax vectors to disk.

    Example::

        >>> import tempfile, torch
        >>> rec = EpochRecorder(Path(tempfile.mkdtemp()), "train", num_samples=3, num_classes=2)
        >>> rec.add(torch.tensor([2, 0]), torch.tensor([[0.9, 0.1], [0.2, 0.8]]))
        >>> rec.finish_epoch(0, world_size=1)
        >>> np.load(rec.epoch_path(0, "probs"))[2].tolist()
        [0.8999999761581543, 0.10000000149011612]
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
        return self.directory / f"epoch_{epoch:04d}.{part}.npy"

    def _log_paths(self, rank: int) -> tuple[Path, Path]:
        return self.directory / f".log.rank{rank}.idx", self.directory / f".log.rank{rank}.val"

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

    def truncate_log(self, rows: int) -> None:
        """Cut this rank's log back to ``rows`` rows (rows written after a checkpoint are dropped)."""
        idx_path, val_path = self._log_paths(self.rank)
        if not idx_path.exists():
            return
        with idx_path.open("r+b") as fh:
            fh.truncate(rows * 8)
        with val_path.open("r+b") as fh:
            fh.truncate(rows * 4 * self.row_width)

    @staticmethod
    def discard_previous(root: Path, split: str) -> None:
        """Remove the records of an earlier run from ``root/split`` (only files of this format; nothing else)."""
        directory = Path(root) / split
        if not directory.is_dir():
            return
        patterns = ("epoch_*.probs.npy", "epoch_*.topk_values.npy", "epoch_*.topk_indices.npy", ".log.rank*")
        for pattern in patterns:
            for path in directory.glob(pattern):
                path.unlink(missing_ok=True)
        (directory / "manifest.json").unlink(missing_ok=True)

    def discard_log(self) -> None:
        self._buffer.clear()
        self._buffered_rows = 0
        for path in self._log_paths(self.rank):
            path.unlink(missing_ok=True)

    def finish_epoch(self, epoch: int, *, world_size: int) -> None:
        """Merge all ranks' logs into the epoch file. Call on rank 0 after every other rank flushed."""
        self.flush()
        if self.kind == "probs":
            merged = self._merge_mean(world_size)
            write_npy(self.epoch_path(epoch, "probs"), merged)
        else:
            values, classes = self._merge_first(world_size)
            write_npy(self.epoch_path(epoch, "topk_values"), values)
            write_npy(self.epoch_path(epoch, "topk_indices"), classes)
        for rank in range(world_size):
            for path in self._log_paths(rank):
                path.unlink(missing_ok=True)
        if epoch not in self.epochs:
            self.epochs.append(epoch)
        self.write_manifest()

    def _read_log(self, rank: int) -> tuple[np.ndarray, np.ndarray]:
        idx_path, val_path = self._log_paths(rank)
        if not idx_path.exists():
            return np.empty(0, np.int64), np.empty((0, self.row_width), np.float32)
        idx = np.fromfile(idx_path, dtype=np.int64)
        val = np.fromfile(val_path, dtype=np.float32).reshape(-1, self.row_width)
        return idx, val[: len(idx)]

    def _merge_mean(self, world_size: int) -> np.ndarray:
        total = np.zeros((self.num_samples, self.num_classes), dtype=np.float64)
        count = np.zeros(self.num_samples, dtype=np.int64)
        for rank in range(world_size):
            idx, val = self._read_log(rank)
            np.add.at(total, idx, val)
            np.add.at(count, idx, 1)
        out = np.full((self.num_samples, self.num_classes), np.nan, dtype=np.float32)
        seen = count > 0
        out[seen] = (total[seen] / count[seen, None]).astype(np.float32)
        return out

    def _merge_first(self, world_size: int) -> tuple[np.ndarray, np.ndarray]:
        k = self.topk
        values = np.full((self.num_samples, k), np.nan, dtype=np.float32)
        classes = np.full((self.num_samples, k), -1, dtype=np.int32)
        for rank in reversed(range(world_size)):  # lower ranks overwrite higher ones
            idx, val = self._read_log(rank)
            rows = np.unique(idx, return_index=True)[1]  # first occurrence in this log
            values[idx[rows]] = val[rows, :k]
            classes[idx[rows]] = val[rows, k:].astype(np.int32)
        return values, classes

    def write_manifest(self) -> None:
        write_json(
            self.directory / "manifest.json",
            {
                "format": FORMAT,
                "version": 1,
                "split": self.split,
                "num_samples": self.num_samples,
                "num_classes": self.num_classes,
                "kind": self.kind,
                "topk": self.topk if self.kind == "topk" else None,
                "label_fingerprint": self.label_fingerprint,
                "epochs": sorted(self.epochs),
            },
        )


def read_manifest(directory: Path) -> dict:
    """Read ``records/<split>/manifest.json``."""
    return json.loads((Path(directory) / "manifest.json").read_text())
