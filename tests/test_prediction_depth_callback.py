"""PredictionDepth inside real Lightning runs, against an independent recomputation with scikit-learn.

Hand-built depth cases live in test_prediction_depth.py; here the callback's whole path (hooks, fit-end
pass, probes, leave-one-out, vote, depth, kDN, table) is checked end to end.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier, NearestNeighbors

from lightning_difficulty import DifficultyReport, PredictionDepth
from tests.helpers import TinyMLP, blobs
from tests.helpers_integration import (
    LossModuleMLP,
    ReversedMLP,
    SingleLeafModel,
    WrappedMLP,
    fit,
    literal_prediction_depth,
    majority_vote,
    measure_summary,
    run_forward,
)

K = 5
PROBES = ("input", "hidden", "out")


def _reference(model: TinyMLP, train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray) -> dict[str, dict]:
    """Votes, kDN w.r.t. the prediction, final prediction and depth per split, with sklearn brute force."""
    embeddings: dict[str, dict[str, np.ndarray]] = {}
    finals = {}
    for split, x in (("train", train_x), ("val", val_x)):
        logits, layers = run_forward(model, torch.tensor(x, dtype=torch.float32), ["hidden", "out"])
        embeddings[split] = {"input": x.reshape(len(x), -1).astype(np.float64), **layers}
        finals[split] = logits.argmax(axis=1)
    out: dict[str, dict] = {split: {} for split in ("train", "val")}
    for probe in PROBES:
        reference = embeddings["train"][probe]
        clf = KNeighborsClassifier(n_neighbors=K, algorithm="brute").fit(reference, train_y)
        out["val"][f"knn:{probe}"] = clf.predict(embeddings["val"][probe])
        _, val_ids = (
            NearestNeighbors(n_neighbors=K, algorithm="brute").fit(reference).kneighbors(embeddings["val"][probe])
        )
        _, ids = NearestNeighbors(n_neighbors=K + 1, algorithm="brute").fit(reference).kneighbors(reference)
        loo = np.array([[j for j in row if j != i][:K] for i, row in enumerate(ids)])
        assert loo.shape == (len(reference), K)
        out["train"][f"knn:{probe}"] = majority_vote(train_y[loo], 4)
        for split, neighbour_ids in (("train", loo), ("val", val_ids)):
            out[split][f"kdn:{probe}"] = (train_y[neighbour_ids] != finals[split][:, None]).mean(axis=1)
            out[split][f"neighbours:{probe}"] = neighbour_ids
    for split in out:
        votes = np.stack([out[split][f"knn:{p}"] for p in PROBES])
        out[split]["prediction"] = finals[split]
        out[split]["prediction_depth"] = literal_prediction_depth(votes, finals[split])
    return out


def test_table_matches_sklearn_recomputation(tmp_path: Path) -> None:
    train_set, val_set = blobs(120, seed=1), blobs(40, seed=2)
    model = TinyMLP()
    depth = PredictionDepth(layers=["hidden", "out"], k=K, reduction=None)
    report = DifficultyReport(dirpath=tmp_path / "out", keep_cache=True, grid_per_class=0)
    trainer = fit(tmp_path, model, [depth, report], train_set, val_set, epochs=3)

    train_x, train_y = train_set.tensors[0].numpy(), train_set.tensors[1].numpy()
    expected = _reference(model, train_x, train_y, val_set.tensors[0].numpy())
    table = pd.read_parquet(tmp_path / "out" / "scores.parquet")
    # the neighbours kept for the instance views and the dashboard are those of the probes' own search
    dashboard = tmp_path / "out" / "dashboard"
    descriptor = json.loads((dashboard / "dashboard.json").read_text())
    for split in ("train", "val"):
        stored = descriptor["splits"][split]["neighbours"]
        ids = np.load(dashboard / stored["ids"])
        for p, probe in enumerate(stored["probes"]):
            np.testing.assert_array_equal(ids[:, p, :K], expected[split].pop(f"neighbours:{probe}"), err_msg=probe)
    for split in ("train", "val"):
        rows = table[table["split"] == split].sort_values("index")
        for column, values in expected[split].items():
            got = rows[column].to_numpy()
            if column.startswith("kdn:"):
                np.testing.assert_allclose(got, values, atol=1e-12, err_msg=f"{split} {column}")
            else:
                np.testing.assert_array_equal(got, values, err_msg=f"{split} {column}")
    # the comparison is only meaningful when the probes disagree with the prediction somewhere
    assert len(np.unique(table["prediction_depth"])) >= 3
    assert (table["kdn:input"] > 0).any()
    assert measure_summary(trainer, depth)["probes"] == list(PROBES)
    assert (tmp_path / "out" / "cache" / "train" / "layer.hidden.npy").exists()  # keep_cache=True


def test_raw_activations_are_float32_and_unreduced(tmp_path: Path) -> None:
    train_set, val_set = blobs(40, seed=1), blobs(12, seed=2)
    model = TinyMLP()
    depth = PredictionDepth(layers=["hidden", "out"], k=3, reduction=None)
    report = DifficultyReport(dirpath=tmp_path / "out", keep_cache=True, grid_per_class=0)
    fit(tmp_path, model, [depth, report], train_set, val_set, epochs=1)
    _, layers = run_forward(model, val_set.tensors[0], ["hidden", "out"])
    cached = np.load(tmp_path / "out" / "cache" / "val" / "layer.hidden.npy")
    assert cached.dtype == np.float32 and cached.shape == (12, 16)
    np.testing.assert_allclose(cached, layers["hidden"], rtol=1e-6, atol=1e-6)  # pre-ReLU Linear output
    assert (cached < 0).any()
    inputs = np.load(tmp_path / "out" / "cache" / "val" / "inputs.npy")
    np.testing.assert_array_equal(inputs, val_set.tensors[0].numpy())


@pytest.mark.parametrize(
    ("model_class", "expected"),
    [(ReversedMLP, ["hidden", "out"]), (WrappedMLP, ["net.0", "net.1", "net.2"])],
)
def test_auto_layers_follow_forward_order(tmp_path: Path, model_class: type, expected: list[str]) -> None:
    model = model_class()
    if model_class is ReversedMLP:
        assert [name for name, _ in model.named_children()] == ["out", "hidden"]  # definition order differs
    depth = PredictionDepth(k=3)
    trainer = fit(
        tmp_path, model, [depth, DifficultyReport(dirpath=tmp_path / "out", grid_per_class=0)], blobs(24), blobs(8)
    )
    assert measure_summary(trainer, depth)["probes"][1:] == expected
    assert measure_summary(trainer, depth)["probes"] == ["input", *expected]
    table = pd.read_parquet(tmp_path / "out" / "scores.parquet")
    assert {f"knn:{name}" for name in ["input", *expected]} <= set(table.columns)
    assert table["prediction_depth"].between(0, len(expected) + 1).all()


def test_auto_layers_on_tiny_mlp(tmp_path: Path) -> None:
    depth = PredictionDepth(k=3)
    trainer = fit(
        tmp_path, TinyMLP(), [depth, DifficultyReport(dirpath=tmp_path, grid_per_class=0)], blobs(24), blobs(8)
    )
    assert measure_summary(trainer, depth)["probes"][1:] == ["hidden", "out"]


def test_unknown_layers_are_all_listed_with_the_available_names(tmp_path: Path) -> None:
    depth = PredictionDepth(layers=["hidden", "encoder", "head"], k=3)
    with pytest.raises(ValueError, match="layers") as info:
        fit(tmp_path, TinyMLP(), [depth, DifficultyReport(dirpath=tmp_path)], blobs(24), blobs(8))
    message = str(info.value)
    assert "'encoder'" in message and "'head'" in message
    assert "'hidden'" in message and "'out'" in message  # the available names


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"k": 0}, "`k`"),
        ({"layers": []}, "layers"),
        ({"layers": "hidden"}, "layers"),
        ({"index": "kd-tree"}, "index"),
        ({"every_n_epochs": 0}, "every_n_epochs"),
    ],
)
def test_invalid_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PredictionDepth(**kwargs)


def test_depth_during_training_has_one_entry_per_epoch(tmp_path: Path) -> None:
    depth = PredictionDepth(layers=["hidden", "out"], k=3, every_n_epochs=1)
    report = DifficultyReport(dirpath=tmp_path / "out", grid_per_class=0)
    trainer = fit(tmp_path, TinyMLP(), [depth, report], blobs(32, seed=1), blobs(12, seed=2), epochs=3)
    history = measure_summary(trainer, depth)["mean_depth_during_training"]
    assert sorted(history) == [0, 1, 2]
    for epoch in history.values():
        assert set(epoch) == {"train", "val"}
        assert all(0.0 <= value <= 3.0 for value in epoch.values())
    # the last epoch's weights are the final ones, so its mean depth is the table's
    table = pd.read_parquet(tmp_path / "out" / "scores.parquet")
    for split in ("train", "val"):
        final_mean = table.loc[table["split"] == split, "prediction_depth"].mean()
        assert history[2][split] == pytest.approx(final_mean)


def test_auto_layers_skip_modules_used_only_in_the_training_step(tmp_path: Path) -> None:
    depth = PredictionDepth(k=3)
    callbacks = [depth, DifficultyReport(dirpath=tmp_path, grid_per_class=0)]
    trainer = fit(tmp_path, LossModuleMLP(), callbacks, blobs(24), blobs(8))
    assert measure_summary(trainer, depth)["probes"][1:] == ["hidden", "out"]


def test_auto_layers_with_a_single_leaf_child(tmp_path: Path) -> None:
    depth = PredictionDepth(k=3)
    callbacks = [depth, DifficultyReport(dirpath=tmp_path, grid_per_class=0)]
    trainer = fit(tmp_path, SingleLeafModel(), callbacks, blobs(24), blobs(8))
    assert measure_summary(trainer, depth)["probes"][1:] == ["linear"]
    table = pd.read_parquet(tmp_path / "scores.parquet")
    assert table.loc[table["split"] == "val", "prediction_depth"].shape == (8,)


def test_conflicting_input_sizes_are_refused(tmp_path: Path) -> None:
    from lightning_difficulty import DataDifficulty

    callbacks = [
        PredictionDepth(["hidden"], k=3, input_size=2),
        DataDifficulty(k=3),
        DifficultyReport(dirpath=tmp_path),
    ]
    with pytest.raises(ValueError, match="input_size"):
        fit(tmp_path, TinyMLP(), callbacks, blobs(24), blobs(8))
