"""Every callback under DDP (two ``ddp_spawn`` CPU processes) against the same fit in one process.

One 2-process fit and one 1-process fit per concern, shared by all callbacks (ConfusionScore,
PredictionDepth, DataDifficulty, TrainingDynamics and the DifficultyReport that writes the table):

- ``trained``: a model that learns (lr 0.2). The DDP ranks read a strided, non-shuffled
  ``DistributedSampler``-like sampler with batch 4, so the union of the two ranks' batches is exactly
  the one process's batch of 8 and both fits train the same model. 48 training samples (even: no
  training padding, see below); the 21 validation samples are padded to 22 on the ranks, and the
  fit-end pass gets strided shards of different lengths (11 / 10).
- ``frozen``: lr 0, Lightning's own shuffled ``DistributedSampler``; 45 training samples are padded
  with a duplicate, and the fit-end shards of both splits have different lengths (23 / 22, 11 / 10).
  This cannot share the trained fit: a padded duplicate is trained on twice, at another step than its
  original, so a learning model under DDP differs from one process that sees each sample once. Only
  a frozen model makes "DDP with padding == one unpadded process" exact.

The reference is the one-process fit: the table (every column of every callback) and the per-epoch
records must be the same.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from lightning_difficulty import ConfusionScore, DataDifficulty, DifficultyReport, PredictionDepth, TrainingDynamics
from lightning_difficulty.runs.summary import measure_summary, read_summary
from tests.helpers import StridedSampler, TinyMLP, loaders, trainer_kwargs

K = 5
PROBES = ("input", "hidden", "out")
N_VAL = 21
DYNAMICS_COLUMNS = ["dm_confidence", "dm_variability", "dm_correctness", "forgetting", "never_learned", "aum", "el2n"]
# the std over epochs of nearly constant float32 probabilities: the summation order of the DDP gradient
# reduce moves it by ~5e-8 absolute (test_dynamics_callback checks it against numpy with the same atol)
SPREAD = "dm_variability"


def _assert_tables_equal(single: pd.DataFrame, ddp: pd.DataFrame, columns: list[str], *, rtol: float) -> None:
    """``columns`` equal to ``rtol``; the spread column (if among them) also to an absolute 1e-7."""
    plain = [c for c in columns if c != SPREAD]
    pd.testing.assert_frame_equal(single[plain], ddp[plain], rtol=rtol)
    if SPREAD in columns:
        pd.testing.assert_series_equal(single[SPREAD], ddp[SPREAD], rtol=rtol, atol=1e-7)


def _fit(root: Path, devices: int, n_train: int, lr: float, *, strided: bool = False) -> pd.DataFrame:
    """Two epochs with every callback; returns the report's table."""
    # One process with batch 2B sees exactly the union of what two DDP ranks with batch B see, when the
    # DDP sampler does not shuffle (``strided``); Lightning's own DDP training sampler always shuffles.
    torch.set_num_threads(1)
    batch = 8 if devices == 1 else 4
    train, val = loaders(n_train, N_VAL, batch_size=batch)
    extra: dict = {}
    if strided:
        train = DataLoader(train.dataset, batch_size=batch, sampler=StridedSampler(n_train))
        val = DataLoader(val.dataset, batch_size=batch, sampler=StridedSampler(N_VAL))
        extra["use_distributed_sampler"] = False
    callbacks = [
        ConfusionScore(),
        PredictionDepth(layers=["hidden", "out"], k=K, reduction=None),
        DataDifficulty(k=K),
        TrainingDynamics(),
        DifficultyReport(dirpath=root / "out", grid_per_class=0),
    ]
    strategy = "ddp_spawn" if devices > 1 else "auto"
    trainer = L.Trainer(
        max_epochs=2, callbacks=callbacks, **trainer_kwargs(root, devices=devices, strategy=strategy, **extra)
    )
    trainer.fit(TinyMLP(lr=lr), train, val)
    return pd.read_parquet(root / "out" / "scores.parquet")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, pd.DataFrame, Path]:
    """(one process, two DDP processes, root) for a learning model."""
    root = tmp_path_factory.mktemp("trained")
    single = _fit(root / "one", 1, 48, lr=0.2)
    ddp = _fit(root / "two", 2, 48, lr=0.2, strided=True)
    return single, ddp, root


@pytest.fixture(scope="module")
def frozen(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, pd.DataFrame, Path]:
    """(one process, two DDP processes, root) for a frozen model and Lightning's padded training sampler."""
    root = tmp_path_factory.mktemp("frozen")
    single = _fit(root / "one", 1, 45, lr=0.0)
    ddp = _fit(root / "two", 2, 45, lr=0.0)
    return single, ddp, root


def test_ddp_matches_one_process_including_sampler_padding(trained: tuple) -> None:
    # a trained model; the validation set of 21 is padded to 22 by the strided (DistributedSampler-like) sampler
    single, ddp, root = trained
    assert list(single.columns) == list(ddp.columns)
    _assert_tables_equal(single, ddp, list(single.columns), rtol=1e-5)
    assert single["confusion"].notna().all()
    for split in ("train", "val"):
        name = Path("out") / "records" / split / "epoch_0001.probs.npy"
        np.testing.assert_allclose(np.load(root / "one" / name), np.load(root / "two" / name), rtol=1e-5)


def test_ddp_training_padding_with_a_frozen_model(frozen: tuple) -> None:
    # Lightning's own shuffled DistributedSampler; 45 training samples are padded with a duplicate
    single, ddp, _ = frozen
    pd.testing.assert_frame_equal(single, ddp, rtol=1e-6, atol=1e-10)  # explicit: Welford variances agree to rounding


def test_prediction_depth_ddp_matches_one_process(frozen: tuple) -> None:
    # odd split sizes (45, 21): the strided shards of the fit-end pass have different lengths
    single, ddp, _ = frozen
    columns = ["split", "index", "label", "prediction", "prediction_depth"]
    columns += [f"{kind}:{p}" for kind in ("knn", "kdn") for p in PROBES]
    pd.testing.assert_frame_equal(single[columns], ddp[columns])
    assert len(single) == 45 + N_VAL
    # the probes' search was split: each rank indexed half of the training rows, rank 0 merged the answers
    root = frozen[2]
    ranks = {
        run: measure_summary(read_summary(root / run / "out"), "PredictionDepth")["search_ranks"]
        for run in ("one", "two")
    }
    assert ranks == {"one": 1, "two": 2}


@pytest.mark.parametrize("run", ["trained", "frozen"])
def test_training_dynamics_and_kdn_match_one_process(run: str, request: pytest.FixtureRequest) -> None:
    single, ddp, _ = request.getfixturevalue(run)
    train = single["split"] == "train"
    assert single.loc[train, DYNAMICS_COLUMNS].notna().all().all()  # the training loop fills every column
    assert single["kdn"].between(0, 1).all() and single["kdn"].gt(0).any()  # overlapping blobs: some disagree
    _assert_tables_equal(single, ddp, [*DYNAMICS_COLUMNS, "dm_region", "kdn"], rtol=1e-5)


class PerRankFolderReport(DifficultyReport):
    """A report whose run folder differs per rank: two nodes without a shared filesystem."""

    def run_dir(self, trainer: L.Trainer) -> Path:
        return super().run_dir(trainer) / f"node{trainer.global_rank}"


def test_a_run_folder_the_ranks_do_not_share_is_refused_before_training(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    train, val = loaders(16, 8, batch_size=4)
    callbacks = [ConfusionScore(), PerRankFolderReport(dirpath=tmp_path / "out", grid_per_class=0)]
    trainer = L.Trainer(max_epochs=1, callbacks=callbacks, **trainer_kwargs(tmp_path, devices=2, strategy="ddp_spawn"))
    with pytest.raises(Exception, match=r"not shared by the 2 ranks.*sees 1 of their tokens"):
        trainer.fit(TinyMLP(), train, val)
    assert not list((tmp_path / "out").rglob("scores.parquet"))  # stopped at setup: nothing was trained or written
