"""PredictionDepth at scale (issue 13) inside real Lightning runs: sampled training queries, the probe budget,
the approximate index and its reported agreement with exact search, and the refused arguments.

Every number is checked against an independent reference: scikit-learn brute-force k-NN votes on the model's
own activations (leave-one-out over ALL training rows), a full run of the same model, or numpy.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.neighbors import NearestNeighbors

from lightning_difficulty import DataDifficulty, DifficultyReport, PredictionDepth
from lightning_difficulty.runs.summary import measure_summary, read_summary
from tests.helpers import TinyMLP, blobs
from tests.helpers_integration import fit, literal_prediction_depth, majority_vote, run_forward
from tests.test_robustness import column, read_table

N_TRAIN, N_VAL = 240, 60
"""Sizes chosen so that 60 agreement queries split exactly 48 / 12 between the splits."""
K = 10
"""Neighbours per probe (k = 5, below the 8 neighbours kept for the views, has its own test)."""
LAYERS = ["hidden", "out"]
PROBES = ("input", *LAYERS)
PROBE_COLUMNS = ["prediction_depth", *(f"{kind}:{p}" for p in PROBES for kind in ("knn", "kdn"))]


@dataclass
class Run:
    """One finished fit: the trained model, the score table, PredictionDepth's entry in ``summary.json`` and the
    messages of the warnings raised (when recorded)."""

    model: TinyMLP
    table: pd.DataFrame
    measures: dict[str, Any]
    warned: list[str] = field(default_factory=list)


def _train_val() -> tuple[Any, Any]:
    return blobs(N_TRAIN, seed=1), blobs(N_VAL, seed=2)


def _train_labels() -> np.ndarray:
    return _train_val()[0].tensors[1].numpy()


def _run(directory: Path, *extra: Any, **depth_kwargs: Any) -> Run:
    """Fit TinyMLP for one epoch with PredictionDepth(hidden, out; k=K; raw activations) and a report."""
    train, val = _train_val()
    model = TinyMLP()
    depth = PredictionDepth(layers=LAYERS, reduction=None, **{"k": K, **depth_kwargs})
    out = directory / "difficulty"
    fit(directory, model, [depth, *extra, DifficultyReport(dirpath=out, grid_per_class=0)], train, val, epochs=1)
    return Run(model, read_table(out), measure_summary(read_summary(out), "PredictionDepth"))


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """Every training row scored: ``train_queries="auto"`` with the default budget, exact index."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = _run(tmp_path_factory.mktemp("full"), index="flat")
    run.warned = [str(w.message) for w in caught]
    return run


@pytest.fixture(scope="module")
def sampled40(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return _run(tmp_path_factory.mktemp("sampled40"), train_queries=40, seed=0)


def _leave_one_out(ids: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` nearest of each training row without the row itself (``ids`` from a ``k + 1`` search)."""
    return np.array([[j for j in row if j != i][:k] for i, row in enumerate(ids)])


@pytest.fixture(scope="module")
def expected(full: Run) -> dict[str, dict[str, np.ndarray]]:
    """scikit-learn's votes, kDN (w.r.t. the prediction) and depth for every row, on the activations of the
    (deterministic) trained model: brute force, training rows leave themselves out of ALL training rows."""
    y = _train_labels()
    embeddings, finals = {}, {}
    for split, data in zip(("train", "val"), _train_val(), strict=True):
        logits, layers = run_forward(full.model, data.tensors[0], LAYERS)
        embeddings[split] = {"input": data.tensors[0].numpy().astype(np.float64), **layers}
        finals[split] = logits.argmax(axis=1)
    out: dict[str, dict[str, np.ndarray]] = {"train": {}, "val": {}}
    for probe in PROBES:
        search = NearestNeighbors(n_neighbors=K + 1, algorithm="brute").fit(embeddings["train"][probe])
        ids = {
            "train": _leave_one_out(search.kneighbors(embeddings["train"][probe])[1], K),
            "val": search.kneighbors(embeddings["val"][probe], n_neighbors=K)[1],
        }
        for split, neighbours in ids.items():
            out[split][f"knn:{probe}"] = majority_vote(y[neighbours], 4)
            out[split][f"kdn:{probe}"] = (y[neighbours] != finals[split][:, None]).mean(axis=1)
    for split, columns in out.items():
        votes = np.stack([columns[f"knn:{p}"] for p in PROBES])
        columns["prediction_depth"] = literal_prediction_depth(votes, finals[split])
    return out


def _scored(table: pd.DataFrame, split: str) -> np.ndarray:
    return np.flatnonzero(np.isfinite(column(table, split, "prediction_depth")))


def _assert_rows_match(table: pd.DataFrame, expected: dict[str, dict[str, np.ndarray]], split: str, rows: Any) -> None:
    for name in PROBE_COLUMNS:
        got, want = column(table, split, name)[rows], np.asarray(expected[split][name], dtype=np.float64)[rows]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, err_msg=f"{split} {name}")


# ----------------------------------------------------------------------------------------------
# 1. A count or a fraction of the training rows
# ----------------------------------------------------------------------------------------------


def test_the_same_seed_trains_the_same_model(full: Run, sampled40: Run) -> None:
    for name, value in full.model.state_dict().items():
        torch.testing.assert_close(sampled40.model.state_dict()[name], value, rtol=0, atol=0, msg=name)


def test_full_run_matches_sklearn_on_every_row(full: Run, expected: dict[str, dict[str, np.ndarray]]) -> None:
    for split, n in (("train", N_TRAIN), ("val", N_VAL)):
        _assert_rows_match(full.table, expected, split, np.arange(n))
    assert len(np.unique(column(full.table, "train", "prediction_depth"))) >= 2  # the comparison has teeth


@pytest.mark.parametrize(("train_queries", "count"), [(40, 40), (0.25, 60)])
def test_sampled_training_rows_score_as_in_the_full_run(
    tmp_path: Path,
    full: Run,
    sampled40: Run,
    expected: dict[str, dict[str, np.ndarray]],
    train_queries: float,
    count: int,
) -> None:
    run = sampled40 if train_queries == 40 else _run(tmp_path, train_queries=train_queries, seed=0)
    scored = _scored(run.table, "train")
    assert len(scored) == count
    for name in PROBE_COLUMNS:  # the same rows in every probe column, NaN elsewhere
        values = column(run.table, "train", name)
        np.testing.assert_array_equal(np.flatnonzero(np.isfinite(values)), scored, err_msg=name)
        assert np.isnan(np.delete(values, scored)).all(), name
        assert np.isfinite(column(run.table, "val", name)).all(), name
    # the probes' reference set is still every training row (leave-one-out): the full run's values and sklearn's
    for name in PROBE_COLUMNS:
        np.testing.assert_array_equal(
            column(run.table, "train", name)[scored], column(full.table, "train", name)[scored]
        )
        np.testing.assert_array_equal(column(run.table, "val", name), column(full.table, "val", name))
    _assert_rows_match(run.table, expected, "train", scored)
    _assert_rows_match(run.table, expected, "val", np.arange(N_VAL))

    summary = run.measures
    assert summary["train"]["scored_rows"] == count and summary["train"]["rows"] == N_TRAIN
    assert summary["train"]["scored_because"] == "asked"
    assert (summary["val"]["scored_rows"], summary["val"]["rows"], summary["val"]["scored_because"]) == (
        N_VAL,
        N_VAL,
        "all",
    )
    depth = np.asarray(expected["train"]["prediction_depth"])[scored]
    assert summary["train"]["mean_prediction_depth"] == pytest.approx(depth.mean(), abs=1e-12)
    assert sum(summary["train"]["depth_counts"].values()) == count
    truth = _train_labels()[scored]
    for probe in PROBES:
        accuracy = float((np.asarray(expected["train"][f"knn:{probe}"])[scored] == truth).mean())
        assert summary["train"]["probe_accuracy"][probe] == pytest.approx(accuracy, abs=1e-12), probe
    assert summary["index"] == "flat" and "index_agreement" not in summary  # "auto" is exact at this size


def test_sampled_rows_with_fewer_neighbours_than_kept_for_the_views(tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = _run(tmp_path, k=5, train_queries=40)
    assert not [str(w.message) for w in caught if "DifficultyReport skipped" in str(w.message)]
    assert len(_scored(run.table, "train")) == 40


def test_the_seed_picks_the_rows(tmp_path: Path, sampled40: Run) -> None:
    again = _run(tmp_path / "again", train_queries=40, seed=0)
    other = _run(tmp_path / "other", train_queries=40, seed=1)
    rows = _scored(sampled40.table, "train")
    np.testing.assert_array_equal(_scored(again.table, "train"), rows)
    other_rows = _scored(other.table, "train")
    assert len(other_rows) == 40 and not np.array_equal(other_rows, rows)
    pd.testing.assert_frame_equal(again.table, sampled40.table)


# ----------------------------------------------------------------------------------------------
# 2. train_queries="auto" and the probe budget
# ----------------------------------------------------------------------------------------------


def test_auto_under_a_tiny_budget_samples_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, expected: dict[str, dict[str, np.ndarray]]
) -> None:
    from lightning_difficulty.callbacks import prediction_depth

    monkeypatch.setattr(prediction_depth, "MIN_SAMPLED_QUERIES", 50)  # the floor, lowered below N_TRAIN
    with pytest.warns(UserWarning, match=r"probe_budget=1e-06[\s\S]*train_queries='all'"):
        run = _run(tmp_path, probe_budget=1e-6)
    scored = _scored(run.table, "train")
    assert len(scored) == min(N_TRAIN, 50)  # nothing fits 1 us: the floor
    assert run.measures["train"]["scored_rows"] == 50 and run.measures["train"]["rows"] == N_TRAIN
    assert run.measures["train"]["scored_because"] == "budget"
    assert run.measures["val"]["scored_rows"] == N_VAL and run.measures["val"]["scored_because"] == "all"
    _assert_rows_match(run.table, expected, "train", scored)
    assert np.isfinite(column(run.table, "val", "prediction_depth")).all()


def test_auto_under_a_tiny_budget_keeps_every_row_below_the_floor(tmp_path: Path) -> None:
    from lightning_difficulty.callbacks.prediction_depth import MIN_SAMPLED_QUERIES

    assert min(N_TRAIN, MIN_SAMPLED_QUERIES) == N_TRAIN  # the floor covers this small set: nothing is left out
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = _run(tmp_path, probe_budget=1e-6)
    assert not [str(w.message) for w in caught if "probe_budget" in str(w.message)]  # no sample, no warning
    assert len(_scored(run.table, "train")) == N_TRAIN
    assert run.measures["train"]["scored_rows"] == N_TRAIN and run.measures["train"]["scored_because"] == "all"


def test_auto_with_the_default_budget_scores_every_row(full: Run) -> None:
    assert len(_scored(full.table, "train")) == N_TRAIN
    assert full.measures["train"]["scored_rows"] == N_TRAIN == full.measures["train"]["rows"]
    assert full.measures["train"]["scored_because"] == "all"
    assert not [m for m in full.warned if "probe_budget" in m]
    assert 0 < full.measures["estimated_probe_seconds"] < 1800


# ----------------------------------------------------------------------------------------------
# 3. Sampled PredictionDepth next to DataDifficulty: one input-space search over every training row
# ----------------------------------------------------------------------------------------------


def test_sampled_depth_leaves_data_difficulty_complete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning_difficulty.pipeline import capture

    searched: list[tuple[int, Any]] = []
    search = capture.FitEndArrays.search

    def counted(self: Any, name: str, reference: Any, queries: Any, config: Any, rows: Any = None) -> Any:
        if name == "input":
            searched.append((config.k, (rows or {}).get("train")))
        return search(self, name, reference, queries, config, rows)

    monkeypatch.setattr(capture.FitEndArrays, "search", counted)
    kdn_k = K + 2
    run = _run(tmp_path, DataDifficulty(k=kdn_k), train_queries=40)
    assert len(searched) == 1 and searched[0][0] == kdn_k and searched[0][1] is None  # shared, over every row

    train, _ = _train_val()
    x, y = train.tensors[0].numpy().astype(np.float64), train.tensors[1].numpy()
    loo = _leave_one_out(NearestNeighbors(n_neighbors=kdn_k + 1, algorithm="brute").fit(x).kneighbors(x)[1], kdn_k)
    kdn = column(run.table, "train", "kdn")
    assert np.isfinite(kdn).all() and len(kdn) == N_TRAIN
    np.testing.assert_allclose(kdn, (y[loo] != y[:, None]).mean(axis=1), rtol=0, atol=1e-12)
    assert (kdn > 0).any()

    scored = _scored(run.table, "train")
    assert len(scored) == 40
    counts = np.stack([np.bincount(row[:K], minlength=4) for row in y[loo]])
    vote = counts.argmax(axis=1)  # majority of the K nearest, ties to the smallest class
    np.testing.assert_array_equal(column(run.table, "train", "knn:input")[scored], vote[scored])
    assert np.isnan(np.delete(column(run.table, "train", "knn:input"), scored)).all()


# ----------------------------------------------------------------------------------------------
# 4. Approximate index and its agreement with exact search
# ----------------------------------------------------------------------------------------------


def test_auto_index_switches_to_ivf_and_reports_agreement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, expected: dict[str, dict[str, np.ndarray]]
) -> None:
    from lightning_difficulty.pipeline import neighbours

    monkeypatch.setattr(neighbours, "APPROXIMATE_FROM", 100)
    # exact search fits the default budget: "auto" stays exact although the set is above APPROXIMATE_FROM
    exact = _run(tmp_path / "exact", index="auto", train_queries="all", agreement_queries=60)
    assert exact.measures["index"] == "flat" and "index_agreement" not in exact.measures
    # a budget exact search cannot meet: above APPROXIMATE_FROM, "auto" takes IVF
    run = _run(tmp_path, index="auto", train_queries="all", agreement_queries=60, probe_budget=1e-9)
    assert run.measures["index"] == "ivf"
    agreement = run.measures["index_agreement"]
    assert agreement["index"] == "ivf" and agreement["queries"] == 60
    # 240 references: the default IVF has min(4 sqrt(240), 240 / 40) = 6 lists and probes at least 256
    # candidates, i.e. every list; the search is exhaustive, so it agrees with exact search everywhere
    assert agreement["identical_votes"] == dict.fromkeys(PROBES, 1.0)
    assert agreement["identical_prediction_depth"] == 1.0
    for split, n in (("train", N_TRAIN), ("val", N_VAL)):
        _assert_rows_match(run.table, expected, split, np.arange(n))


def test_one_probed_list_disagrees_and_the_reported_share_is_consistent(
    tmp_path: Path, expected: dict[str, dict[str, np.ndarray]]
) -> None:
    queries = 60
    run = _run(
        tmp_path, index="ivf", index_options={"nlist": 4, "nprobe": 1}, train_queries="all", agreement_queries=queries
    )
    agreement = run.measures["index_agreement"]
    assert run.measures["index"] == "ivf" and agreement["queries"] == queries
    assert set(agreement["identical_votes"]) == set(PROBES)
    shares = [*agreement["identical_votes"].values(), agreement["identical_prediction_depth"]]
    assert all(0.0 <= s <= 1.0 and s * queries == pytest.approx(round(s * queries)) for s in shares)

    def same(name: str) -> np.ndarray:
        approx = np.concatenate([column(run.table, s, name) for s in ("train", "val")])
        return approx == np.concatenate([np.asarray(expected[s][name]) for s in ("train", "val")])

    population = {probe: same(f"knn:{probe}").mean() for probe in PROBES}
    population["depth"] = same("prediction_depth").mean()
    assert population["input"] < 1.0  # one list of four misses neighbours: the approximation shows
    reported = {**agreement["identical_votes"], "depth": agreement["identical_prediction_depth"]}
    for name, share in population.items():  # 60 of 300 rows drawn without replacement: a loose binomial band
        band = 4 * math.sqrt(share * (1 - share) / queries) + 2 / queries
        assert abs(reported[name] - share) <= band, (name, reported[name], share)


def test_exact_index_reports_no_agreement(full: Run) -> None:
    assert full.measures["index"] == "flat"
    assert "index_agreement" not in full.measures


# ----------------------------------------------------------------------------------------------
# 5. Refusals at construction
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"train_queries": 0}, "train_queries"),
        ({"train_queries": -3}, "train_queries"),
        ({"train_queries": 1.5}, "train_queries"),
        ({"train_queries": 0.0}, "train_queries"),
        ({"train_queries": "some"}, "train_queries"),
        ({"train_queries": True}, "train_queries"),
        ({"probe_budget": 0}, "probe_budget"),
        ({"probe_budget": -1.0}, "probe_budget"),
        ({"agreement_queries": -1}, "agreement_queries"),
        ({"agreement_queries": 2.5}, "agreement_queries"),
    ],
)
def test_invalid_scale_arguments_are_refused(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        PredictionDepth(**kwargs)
