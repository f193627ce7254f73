"""DataDifficulty (kDN on raw inputs) inside Lightning runs, against scikit-learn brute-force neighbours."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from sklearn.neighbors import NearestNeighbors

from lightning_difficulty import DataDifficulty, DifficultyReport
from tests.helpers import TinyMLP, blobs
from tests.helpers_integration import ImageMLP, fit, image_blobs, measure_summary


def _sklearn_kdn(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray, k: int) -> dict:
    """kDN with true labels: training samples leave themselves out, validation samples query the train set."""
    train_x = train_x.reshape(len(train_x), -1).astype(np.float64)
    val_x = val_x.reshape(len(val_x), -1).astype(np.float64)
    _, ids = NearestNeighbors(n_neighbors=k + 1, algorithm="brute").fit(train_x).kneighbors(train_x)
    loo = np.array([[j for j in row if j != i][:k] for i, row in enumerate(ids)])
    _, val_ids = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(train_x).kneighbors(val_x)
    train_kdn = np.array([np.mean(train_y[row] != train_y[i]) for i, row in enumerate(loo)])
    val_kdn = np.array([np.mean(train_y[row] != val_y[i]) for i, row in enumerate(val_ids)])
    return {"train": train_kdn, "val": val_kdn}


def _table(root: Path) -> pd.DataFrame:
    return pd.read_parquet(root / "scores.parquet").sort_values(["split", "index"])


def test_kdn_matches_sklearn_on_flat_inputs(tmp_path: Path) -> None:
    train_set, val_set = blobs(60, seed=1), blobs(20, seed=2)
    data = DataDifficulty(k=5)
    trainer = fit(
        tmp_path, TinyMLP(), [data, DifficultyReport(dirpath=tmp_path / "out", grid_per_class=0)], train_set, val_set
    )
    (train_x, train_y), (val_x, val_y) = train_set.tensors, val_set.tensors
    expected = _sklearn_kdn(train_x.numpy(), train_y.numpy(), val_x.numpy(), val_y.numpy(), k=5)
    table = _table(tmp_path / "out")
    for split in ("train", "val"):
        got = table.loc[table["split"] == split, "kdn"].to_numpy()
        np.testing.assert_allclose(got, expected[split], atol=1e-12, err_msg=split)
        assert measure_summary(trainer, data)[split]["mean_kdn"] == pytest.approx(expected[split].mean())
    assert 0 < table["kdn"].mean() < 1  # overlapping blobs: some neighbourhoods disagree, most agree


def test_input_size_pools_images_before_the_neighbour_search(tmp_path: Path) -> None:
    # 6x6 -> 4x4 adaptive pooling has overlapping windows, so this is not a plain 2x2 mean
    train_set, val_set = image_blobs(48, side=6, seed=1), image_blobs(16, side=6, seed=2)
    report = DifficultyReport(dirpath=tmp_path / "out", grid_per_class=0, keep_cache=True)
    fit(tmp_path, ImageMLP(side=6), [DataDifficulty(k=5, input_size=4), report], train_set, val_set)

    def pooled(x: torch.Tensor) -> np.ndarray:
        return F.adaptive_avg_pool2d(x, 4).flatten(1).numpy()

    (train_x, train_y), (val_x, val_y) = train_set.tensors, val_set.tensors
    expected = _sklearn_kdn(pooled(train_x), train_y.numpy(), pooled(val_x), val_y.numpy(), k=5)
    unpooled = _sklearn_kdn(train_x.numpy(), train_y.numpy(), val_x.numpy(), val_y.numpy(), k=5)
    assert any(not np.array_equal(expected[s], unpooled[s]) for s in expected)  # pooling changes the answer
    table = _table(tmp_path / "out")
    for split in ("train", "val"):
        np.testing.assert_allclose(table.loc[table["split"] == split, "kdn"].to_numpy(), expected[split], atol=1e-12)
    cached = np.load(tmp_path / "out" / "cache" / "val" / "inputs.npy")
    np.testing.assert_allclose(cached, pooled(val_x), rtol=1e-6)


@pytest.mark.parametrize("k", [0, -3, 2.5, "5", None])
def test_invalid_k(k: object) -> None:
    with pytest.raises(ValueError, match=r"Expected argument `k` to be a positive integer, but got"):
        DataDifficulty(k=k)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [0, -1, 2.0])
def test_invalid_input_size(size: object) -> None:
    with pytest.raises(ValueError, match="`input_size`"):
        DataDifficulty(input_size=size)  # type: ignore[arg-type]


def test_k_larger_than_the_reference_set(tmp_path: Path) -> None:
    # 12 training samples leave 11 neighbours each with leave-one-out
    callbacks = [DataDifficulty(k=12), DifficultyReport(dirpath=tmp_path / "out", grid_per_class=0)]
    with pytest.raises(ValueError, match=r"`k` <= 11"):
        fit(tmp_path, TinyMLP(), callbacks, blobs(12, seed=1), blobs(4, seed=2), epochs=1)
