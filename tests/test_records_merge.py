"""The per-epoch record merge streams the ranks' logs in blocks: same answer as a numpy reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_difficulty.storage import records
from lightning_difficulty.storage.records import EpochRecorder, epoch_files

N, C, TOPK = 11, 6, 3


def _logs(tmp_path: Path, kind: str) -> tuple[list[EpochRecorder], list[tuple[np.ndarray, np.ndarray]]]:
    """Two ranks' logs with repeats inside a rank (across blocks) and across ranks; samples 9, 10 never seen."""
    rng = np.random.default_rng(0)
    ranks = [np.array([0, 2, 4, 6, 8, 0, 2, 3]), np.array([1, 3, 5, 7, 1, 6])]
    written = []
    recorders = []
    for rank, indices in enumerate(ranks):
        probs = rng.dirichlet(np.ones(C), size=len(indices)).astype(np.float32)
        recorder = EpochRecorder(tmp_path, "train", N, C, kind=kind, topk=TOPK, rank=rank)  # type: ignore[arg-type]
        recorder.add(torch.from_numpy(indices), torch.from_numpy(probs))
        recorder.flush()
        recorders.append(recorder)
        written.append((indices, probs))
    return recorders, written


def test_probs_merge_in_blocks_is_the_mean_of_every_logged_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(records, "LOG_BLOCK", 3)  # repeats fall in other blocks than their first row
    recorders, written = _logs(tmp_path, "probs")
    recorders[0].finish_epoch(0, world_size=2)
    total, count = np.zeros((N, C)), np.zeros(N)
    for indices, probs in written:
        for i, row in zip(indices, probs, strict=True):
            total[i] += row
            count[i] += 1
    expected = np.full((N, C), np.nan)
    expected[count > 0] = total[count > 0] / count[count > 0, None]
    merged = np.load(epoch_files(tmp_path / "train", 0, "probs")["probs"])
    np.testing.assert_allclose(merged, expected, rtol=1e-6)
    assert np.isnan(merged[[9, 10]]).all() and not np.isnan(merged[:9]).any()


def test_topk_merge_in_blocks_keeps_the_first_row_of_the_lowest_rank(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(records, "LOG_BLOCK", 3)
    recorders, written = _logs(tmp_path, "topk")
    recorders[0].finish_epoch(0, world_size=2)
    expected_values = np.full((N, TOPK), np.nan)
    expected_classes = np.full((N, TOPK), -1)
    for indices, probs in reversed(written):  # rank 0 wins over rank 1; inside a rank the first row wins
        for i, row in reversed(list(zip(indices, probs, strict=True))):
            order = np.argsort(-row, kind="stable")[:TOPK]
            expected_values[i], expected_classes[i] = row[order], order
    files = epoch_files(tmp_path / "train", 0, "topk")
    np.testing.assert_allclose(np.load(files["values"]), expected_values, rtol=1e-7)
    np.testing.assert_array_equal(np.load(files["indices"]), expected_classes)
