"""examples/spurious.py at tiny scale, its data generator and metrics, and groups_from_run's checks."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from lightning_difficulty import IndexedDataset, groups_from_run, read_scores
from lightning_difficulty.demo.datasets import ArrayDataset
from tests.helpers import load_example

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "spurious.py"
TRAIN = 160
TINY = [
    "--quick",
    "--json",
    "--epochs",
    "1",
    "--first-epochs",
    "2",
    "--train-size",
    str(TRAIN),
    "--test-size",
    "100",
    "--width",
    "4",
    "--batch-size",
    "32",
]


@pytest.fixture(scope="module")
def example() -> Iterator[ModuleType]:
    threads, level = torch.get_num_threads(), logging.getLogger("lightning.pytorch").level
    yield load_example(EXAMPLE, "spurious_example")
    torch.set_num_threads(threads)  # main() sets the thread count and quiets Lightning for the process
    logging.getLogger("lightning.pytorch").setLevel(level)


@pytest.fixture(scope="module")
def tiny(example: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str, Path]:
    out = tmp_path_factory.mktemp("spurious")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        results = example.main([*TINY, "--out", str(out)])
    return results, printed.getvalue(), out


@pytest.fixture(scope="module")
def run_dir(tiny: tuple[dict[str, Any], str, Path]) -> Path:
    return tiny[2] / "seed0" / "first_run"


@pytest.fixture(scope="module")
def train_set(example: ModuleType) -> ArrayDataset:
    return example.make_benchmark(example.parse_args(TINY), 0).train.data


@pytest.fixture(scope="module")
def train_rows(run_dir: Path) -> pd.DataFrame:
    table = read_scores(run_dir)
    return table[table["split"] == "train"].sort_values("index").reset_index(drop=True)


def test_quick_json_contract(example: ModuleType, tiny: tuple[dict[str, Any], str, Path]) -> None:
    results, printed, _ = tiny
    last = json.loads(printed.strip().splitlines()[-1])
    assert set(last) == {"erm", "oracle"} | set(example.METHODS)
    assert {"groupdro_confusion_bands", "groupdro_errors_by_class", "groupdro_aum_by_class", "jtt_errors"} <= set(last)
    for name, acc in last.items():
        assert set(acc) == {"average", "worst_group"}
        assert 0.0 <= acc["worst_group"] <= acc["average"] <= 1.0
        assert acc["average"] == results["accuracy"][name]["average"]["mean"]
    assert results["setup"]["seeds"] == 1 and results["setup"]["epochs"] == 1


def test_groupings_report_precision_and_recall(tiny: tuple[dict[str, Any], str, Path]) -> None:
    results = tiny[0]
    assert set(results["groupings"]) == {
        "confusion_bands",
        "confusion_by_class",
        "errors_by_class",
        "label_issue_score_by_class",
        "aum_by_class",
    }
    for found in results["groupings"].values():
        assert 0.0 <= found["precision"]["mean"] <= 1.0 and 0.0 <= found["recall"]["mean"] <= 1.0
    # The AUM hard group is the 10 % lowest AUM: at most 0.1 * N of the 5 % minority in it, so recall <= 1 and
    # precision <= 0.05 * N / ceil(0.1 * N).
    minority = round(0.05 * TRAIN / 2) * 2
    assert results["groupings"]["aum_by_class"]["precision"]["mean"] <= minority / math.ceil(0.1 * TRAIN) + 1e-12


@pytest.mark.parametrize("seed", [0, 1])
def test_shortcut_agreement_is_as_specified(example: ModuleType, seed: int) -> None:
    bench = example.make_benchmark(example.parse_args([]), seed)
    for split, agreement in (("train", 0.95), ("val", 0.5), ("test", 0.5)):
        part = getattr(bench, split)
        agrees = part.shortcut == part.labels
        for label in (0, 1):
            members = part.labels == label
            # exact per class up to rounding: |measured - specified| <= 1 / (2 n_c)
            assert abs(agrees[members].mean() - agreement) <= 0.5 / members.sum() + 1e-12
        assert abs(agrees.mean() - agreement) <= 0.01
        patch = part.data.images[:, 0, :2, :2].reshape(len(part.labels), -1).numpy()
        assert (patch[part.shortcut == 1] == 1.0).all()
        assert not (patch[part.shortcut == 0] == 1.0).all(axis=1).any()  # no unpatched image looks patched
    assert len(bench.train.labels) == 1797 - 400 - 300 and len(bench.test.labels) == 400


def test_worst_group_accuracy_hand_computed(example: ModuleType) -> None:
    # group 0: 2 of 3 right, group 1: 1 of 2, group 3: 2 of 2 (group 2 has no sample); 5 of 7 overall
    correct = [True, True, False, True, False, True, True]
    groups = [0, 0, 0, 1, 1, 3, 3]
    acc = example.group_accuracies(correct, groups)
    assert acc["average"] == pytest.approx(5 / 7, abs=1e-12)
    assert acc["worst_group"] == pytest.approx(1 / 2, abs=1e-12)
    assert example.group_accuracies([True, False], [4, 7])["worst_group"] == 0.0
    with pytest.raises(ValueError, match="one equal, non-zero length"):
        example.group_accuracies([True], [0, 1])


def test_aggregate_over_seeds_hand_computed(example: ModuleType) -> None:
    # method "a" in three seeds: average mean 0.6, sample std sqrt(((0.5-0.6)^2 + 0 + (0.7-0.6)^2) / 2) = 0.1;
    # method "b" left out in two seeds (its grouping refused): one value, std 0.
    per_seed = [
        {"accuracy": {"a": {"average": 0.5, "worst_group": 0.4}, "b": {"average": 0.9, "worst_group": 0.8}}},
        {"accuracy": {"a": {"average": 0.6, "worst_group": 0.4}}},
        {"accuracy": {"a": {"average": 0.7, "worst_group": 0.4}}},
    ]
    out = example.aggregate(per_seed, "accuracy")
    assert out["a"]["average"]["mean"] == pytest.approx(0.6, abs=1e-12)
    assert out["a"]["average"]["std"] == pytest.approx(0.1, abs=1e-12)
    assert out["a"]["worst_group"]["std"] == pytest.approx(0.0, abs=1e-12) and out["a"]["seeds"] == 3
    assert out["b"] == {"average": {"mean": 0.9, "std": 0.0}, "worst_group": {"mean": 0.8, "std": 0.0}, "seeds": 1}
    table = example.format_table({"setup": {"seeds": 3}, "accuracy": out, "groupings": {}})
    assert "| a | 60.0 ± 10.0 | 40.0 ± 0.0 |" in table
    assert "| b (1 of 3 seeds) | 90.0 ± 0.0 | 80.0 ± 0.0 |" in table


def test_precision_recall_hand_computed(example: ModuleType) -> None:
    hard = np.array([True, True, True, False, False])
    minority = np.array([True, False, False, True, False])
    assert example.precision_recall(hard, minority) == {"precision": pytest.approx(1 / 3), "recall": 0.5}


def test_groups_from_run_aum_is_the_lowest_tenth_split_by_class(
    run_dir: Path, train_set: ArrayDataset, train_rows: pd.DataFrame
) -> None:
    aum = train_rows["aum"].to_numpy()
    k = math.ceil(0.1 * TRAIN)
    hard = np.zeros(TRAIN, dtype=bool)
    hard[np.lexsort((np.arange(TRAIN), aum))[:k]] = True  # lower AUM = harder; ties by index
    expected = 2 * train_set.targets + hard
    found = groups_from_run(run_dir, IndexedDataset(train_set), score="aum", by_class=True)
    assert np.array_equal(found, expected)
    threshold = float(np.median(aum))
    flags = groups_from_run(run_dir, train_set, score="aum", threshold=threshold, by_class=False)
    assert np.array_equal(flags, (aum <= threshold).astype(np.int64))


def test_groups_from_run_higher_is_harder_and_errors(
    run_dir: Path, train_set: ArrayDataset, train_rows: pd.DataFrame
) -> None:
    confusion = train_rows["confusion"].to_numpy()
    top = np.lexsort((np.arange(TRAIN), -confusion))[: math.ceil(0.25 * TRAIN)]
    found = groups_from_run(run_dir, train_set, score="confusion", hard_fraction=0.25, by_class=False)
    assert np.array_equal(np.flatnonzero(found), np.sort(top))
    errors = groups_from_run(run_dir, train_set, score="errors", by_class=False)
    assert np.array_equal(errors, (train_rows["prediction"] != train_rows["label"]).to_numpy().astype(np.int64))


def test_groups_from_run_default_is_the_top_tenth_confusion_of_each_class(
    run_dir: Path, train_set: ArrayDataset, train_rows: pd.DataFrame
) -> None:
    confusion = train_rows["confusion"].to_numpy()
    hard = np.zeros(TRAIN, dtype=np.int64)
    hard[np.lexsort((np.arange(TRAIN), -confusion))[: math.ceil(0.1 * TRAIN)]] = 1  # higher confusion = harder
    assert np.array_equal(groups_from_run(run_dir, train_set), 2 * train_set.targets + hard)


def test_groups_from_run_bands_are_the_group_column(
    run_dir: Path, train_set: ArrayDataset, train_rows: pd.DataFrame
) -> None:
    bands = groups_from_run(run_dir, train_set, score="group", by_class=False)
    assert np.array_equal(bands, train_rows["group"].to_numpy())
    sizes = json.loads((run_dir / "groups.json").read_text())["sizes"]
    assert np.bincount(bands, minlength=len(sizes)).tolist() == sizes
    by_class = groups_from_run(run_dir, train_set, score="group")
    assert np.array_equal(by_class, train_set.targets * len(sizes) + bands)


def test_groups_from_run_refuses_another_length(run_dir: Path, train_set: ArrayDataset) -> None:
    shorter = ArrayDataset(train_set.images[:-1], train_set.targets[:-1])
    with pytest.raises(ValueError, match=rf"`dataset` to hold the {TRAIN} samples of split 'train'.* got {TRAIN - 1}"):
        groups_from_run(run_dir, shorter, score="aum")


def test_groups_from_run_refuses_other_labels(run_dir: Path, train_set: ArrayDataset) -> None:
    order = np.random.default_rng(0).permutation(TRAIN)
    shuffled = ArrayDataset(train_set.images[order], train_set.targets[order])
    wrong = int((shuffled.targets != train_set.targets).sum())
    with pytest.raises(ValueError, match=rf"labels of argument `dataset` differ .* at {wrong} of {TRAIN} indices"):
        groups_from_run(run_dir, shuffled, score="aum")
    with pytest.raises(ValueError, match="differ"):
        groups_from_run(run_dir, train_set, score="group", labels=1 - train_set.targets)


def test_groups_from_run_refuses_unknown_names_and_bad_options(run_dir: Path, train_set: ArrayDataset) -> None:
    with pytest.raises(
        ValueError, match=r"`score` to be one of \['group', 'errors', .*'aum'.*\] \(the scores of .*\), but got 'nope'"
    ):
        groups_from_run(run_dir, train_set, score="nope")
    with pytest.raises(ValueError, match=r"`split` to be one of \['train', 'val'\].*but got 'test'"):
        groups_from_run(run_dir, train_set, split="test")
    with pytest.raises(ValueError, match="Pass `higher_is_harder=True` or `False`"):
        groups_from_run(run_dir, train_set, score="dm_variability")
    assert (
        groups_from_run(run_dir, train_set, score="dm_variability", higher_is_harder=True, by_class=False).sum() == 16
    )
    with pytest.raises(ValueError, match=r"`hard_fraction` to lie in \(0, 1\), but got 1.5"):
        groups_from_run(run_dir, train_set, score="aum", hard_fraction=1.5)
    with pytest.raises(ValueError, match="puts no sample of split 'train' in the hard group"):
        groups_from_run(run_dir, train_set, score="aum", threshold=-1e9)
    with pytest.raises(ValueError, match=r"boolean: its True .* Pass neither"):
        groups_from_run(run_dir, train_set, score="hard", higher_is_harder=True, hard_fraction=0.2)
    with pytest.raises(ValueError, match=r"one of \[.*\] \(the scores.*but got 'correct'"):
        groups_from_run(run_dir, train_set, score="correct")  # its True is easy: score="errors" is the way
    with pytest.raises(ValueError, match="Pass `labels=`"):
        groups_from_run(run_dir, [torch.zeros(1)] * TRAIN, score="aum")


def test_groups_from_run_checks_the_fingerprint_of_groups_json(
    run_dir: Path, train_set: ArrayDataset, tmp_path: Path
) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    manifest = json.loads((copy / "groups.json").read_text())
    assert manifest["label_fingerprint"].startswith("sha256:")  # the report recorded one
    manifest["label_fingerprint"] = "sha256:" + "0" * 64  # groups.json of another dataset
    (copy / "groups.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"fingerprint sha256:\w+\) differ from those .*groups.json was made from"):
        groups_from_run(copy, train_set, score="group")
    assert groups_from_run(copy, train_set, score="aum", by_class=False).sum() == math.ceil(0.1 * TRAIN)  # bands only


def test_groups_from_run_boolean_columns(run_dir: Path, train_set: ArrayDataset, tmp_path: Path) -> None:
    # A nullable boolean column (True / False / missing): True is hard when higher is harder, missing is refused.
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    table = read_scores(copy)
    flag = pd.array(np.arange(len(table)) % 3 == 0, dtype="boolean")
    table["flag"] = flag
    table.to_parquet(copy / "scores.parquet")
    rows = table[table["split"] == "train"].sort_values("index")
    expected = rows["flag"].to_numpy(bool).astype(np.int64)
    assert np.array_equal(
        groups_from_run(copy, train_set, score="flag", higher_is_harder=True, by_class=False), expected
    )
    assert np.array_equal(
        groups_from_run(copy, train_set, score="flag", higher_is_harder=False, by_class=False), 1 - expected
    )
    table.loc[(table["split"] == "train") & (table["index"] == 0), "flag"] = pd.NA
    table.to_parquet(copy / "scores.parquet")
    with pytest.raises(ValueError, match=r"1 samples have no 'flag' value"):
        groups_from_run(copy, train_set, score="flag", higher_is_harder=True)
