"""Never silently wrong, the last cases (issue 10, item 10): each refusal against a hand-built case.

HardSubset with labels read through the dataset, evaluate with classes outside the reference run's range,
compare with a hard fraction by the chosen score, ErrorTaxonomy of another class count, and the demo's rho
caveat. References are hand-computed values, ``hashlib`` over packed int64 and plain Python sorts.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lightning_difficulty import ConfusionScore, DifficultyReport, IndexedDataset
from lightning_difficulty.cli import main
from lightning_difficulty.demo.run import DemoResult, format_summary
from lightning_difficulty.pipeline.analysis import ErrorTaxonomy
from lightning_difficulty.pipeline.compose import band_summary
from lightning_difficulty.runs.compare import compare_runs, evaluate_predictions, is_score_column
from lightning_difficulty.storage.manifest import HardSubset, HardSubsetManifest
from tests.helpers import TinyMLP, blobs, trainer_kwargs


def _fingerprint(labels: list[int]) -> str:
    """Reference: sha256 of the count and the labels as packed little-endian int64."""
    packed = struct.pack("<q", len(labels)) + struct.pack(f"<{len(labels)}q", *labels)
    return "sha256:" + hashlib.sha256(packed).hexdigest()


# ----------------------------------------------------------------------------------------------
# HardSubset: labels read through the dataset when it has no label attribute


class _Items(Dataset):
    """A dataset with no `targets`/`labels`/`y` attribute; counts its item reads."""

    def __init__(self, items: list[Any]) -> None:
        self.items, self.reads = items, 0

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Any:
        self.reads += 1
        return self.items[i]


class _WithTargets(_Items):
    def __init__(self, items: list[Any], targets: list[int]) -> None:
        super().__init__(items)
        self.targets = targets


LABELS = [2, 0, 1, 1, 0]
SCORES = [0.1, 2.0, 0.3, 1.5, 0.2]  # top 2: indices 1 and 3


def _manifest() -> HardSubsetManifest:
    manifest = HardSubsetManifest.from_scores(SCORES, split="val", top_k=2, labels=LABELS)
    assert manifest.label_fingerprint == _fingerprint(LABELS)
    return manifest


@pytest.mark.parametrize(
    "make_item",
    [
        lambda i, y: (f"x{i}", y),  # (x, y)
        lambda i, y: (f"x{i}", torch.tensor(y), i),  # (x, y, extra) with a tensor label
        lambda i, y: {"input": f"x{i}", "target": y},
        lambda i, y: {"image": f"x{i}", "label": np.int32(y)},
    ],
    ids=["tuple", "triple-tensor", "mapping-target", "mapping-label"],
)
def test_hard_subset_reads_labels_through_items(make_item: Any) -> None:
    manifest = _manifest()
    same = _Items([make_item(i, y) for i, y in enumerate(LABELS)])
    subset = HardSubset(same, manifest)
    assert same.reads == len(LABELS)  # every item read once for the fingerprint
    assert [subset[j] for j in range(2)] == [same.items[1], same.items[3]]

    relabelled = [0, 0, 1, 1, 0]  # same size, one label changed: the fix this test is about
    other = _Items([make_item(i, y) for i, y in enumerate(relabelled)])
    with pytest.raises(ValueError) as err:
        HardSubset(other, manifest)
    message = str(err.value)
    assert _fingerprint(relabelled) in message and _fingerprint(LABELS) in message
    assert "shuffled or re-ordered copy" in message


def test_hard_subset_looks_through_indexed_dataset() -> None:
    manifest = _manifest()
    inner = _Items([(f"x{i}", y) for i, y in enumerate([1, 0, 1, 1, 0])])  # other labels, no attribute
    with pytest.raises(ValueError, match="differ from those"):
        HardSubset(IndexedDataset(inner), manifest)
    good = _Items([(f"x{i}", y) for i, y in enumerate(LABELS)])
    assert HardSubset(IndexedDataset(good), manifest)[1] == ("x3", 1, 3)


def test_hard_subset_reads_no_item_when_an_attribute_exists() -> None:
    manifest = _manifest()
    # the attribute is trusted as it is (no O(N) reads), even though the items disagree with it
    data = _WithTargets([("x", 9)] * 5, targets=LABELS)
    HardSubset(data, manifest)
    assert data.reads == 0
    wrapped = _WithTargets([("x", 9)] * 5, targets=[0, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="differ from those"):
        HardSubset(IndexedDataset(wrapped), manifest)  # the wrapped dataset's attribute
    assert wrapped.reads == 0
    # explicit labels win over everything
    HardSubset(_Items(["a", "b", "c", "d", "e"]), manifest, labels=LABELS)


def test_hard_subset_warns_when_labels_cannot_be_read() -> None:
    manifest = _manifest()
    for items in (list("abcde"), [(f"x{i}", np.eye(3)[y]) for i, y in enumerate(LABELS)]):  # no label / one-hot
        with pytest.warns(UserWarning, match="could not be read.*Pass `labels=`"):
            subset = HardSubset(_Items(items), manifest)
        assert len(subset) == 2
    # a manifest without fingerprint needs no labels: no read, no warning
    plain = HardSubsetManifest.from_scores(SCORES, split="val", top_k=2)
    data = _Items(list("abcde"))
    HardSubset(data, plain)
    assert data.reads == 0


# ----------------------------------------------------------------------------------------------
# evaluate: classes outside the reference run's range


CONFUSION = [0.0, 0.5, 1.0, 1.5, 2.0, 0.25, np.nan, 1.75]
RUN_LABELS = [0, 1, 2, 3, 0, 1, 2, 3]


def _reference_run(path: Path, *, num_classes: int | None) -> Path:
    """A hand-built run: 8 val samples (one never scored), labels 0..3; columns.json says C when given."""
    path.mkdir()
    table = pd.DataFrame(
        {
            "split": "val",
            "index": np.arange(8),
            "label": RUN_LABELS,
            "prediction": RUN_LABELS,
            "correct": True,
            "confusion": CONFUSION,
            "hard": [False, False, False, True, True, False, False, True],
        }
    )
    table.to_parquet(path / "scores.parquet")
    if num_classes is not None:
        columns = {"confusion": {"unit": "nats", "range": [0.0, math.log(num_classes)]}}
        (path / "columns.json").write_text(json.dumps({"format": "lightning-difficulty/columns", "columns": columns}))
    return path


def test_evaluate_bands_and_edges_by_hand(tmp_path: Path) -> None:
    run = _reference_run(tmp_path / "run", num_classes=4)
    predictions = np.array([0, 1, 0, 0, 0, 1, 0, 3])  # wrong at indices 2, 3 and 6
    table = evaluate_predictions(run, predictions, num_bands=4)
    # scored confusion spans [0, 2]: edges 0, 0.5, 1, 1.5, 2; band b = edges[b] <= s < edges[b+1] (last closed)
    assert table["confusion_low"].tolist()[:4] == [0.0, 0.5, 1.0, 1.5]
    assert table["confusion_high"].tolist()[:4] == [0.5, 1.0, 1.5, 2.0]
    # band 0: idx 0, 5; band 1: idx 1; band 2: idx 2; band 3: idx 3, 4, 7 (idx 6 unscored)
    assert table["count"].tolist()[:4] == [2, 1, 1, 3]
    assert table["error_rate"].tolist()[:4] == [0.0, 0.0, 1.0, pytest.approx(1 / 3)]
    assert table["mean_score"].tolist()[:4] == pytest.approx([0.125, 0.5, 1.0, (1.5 + 2.0 + 1.75) / 3])
    hard, every = table.iloc[4], table.iloc[5]
    assert (hard["band"], hard["count"], hard["error_rate"]) == ("hard subset", 3, pytest.approx(1 / 3))
    assert (every["band"], every["count"], every["error_rate"]) == ("all", 8, 3 / 8)
    assert np.isnan(every["confusion_low"]) and np.isnan(hard["confusion_high"])


@pytest.mark.parametrize("bad", [4, -1])
def test_evaluate_refuses_classes_outside_the_run(tmp_path: Path, bad: int) -> None:
    run = _reference_run(tmp_path / "run", num_classes=4)
    predictions = np.array([0, 1, 2, 3, 0, 1, 2, bad])
    with pytest.raises(ValueError) as err:
        evaluate_predictions(run, predictions)
    message = str(err.value)
    assert "argument `predictions`" in message and "[0, 3]" in message and "columns.json" in message
    assert "1 of 8 outside it" in message and "Pass the model's predicted classes" in message


def test_evaluate_takes_the_class_count_from_columns_json(tmp_path: Path) -> None:
    # the run's model had 6 classes although its labels and predictions stop at 3: class 5 is a valid prediction
    run = _reference_run(tmp_path / "six", num_classes=6)
    table = evaluate_predictions(run, np.array([5, 1, 2, 3, 0, 1, 2, 3]), num_bands=4)
    assert table.iloc[-1]["error_rate"] == 1 / 8
    with pytest.raises(ValueError, match=r"\[0, 5\]"):
        evaluate_predictions(run, np.array([6, 1, 2, 3, 0, 1, 2, 3]))
    # without columns.json: C = largest label or prediction + 1 = 4, and the message says so
    bare = _reference_run(tmp_path / "bare", num_classes=None)
    with pytest.raises(ValueError, match=r"\[0, 3\].*no columns.json"):
        evaluate_predictions(bare, np.array([5, 1, 2, 3, 0, 1, 2, 3]))


def test_evaluate_refuses_logits_of_another_width_and_fractions(tmp_path: Path) -> None:
    run = _reference_run(tmp_path / "run", num_classes=4)
    with pytest.raises(ValueError, match=r"one column per class of the reference run \(4;.*got 5 columns"):
        evaluate_predictions(run, np.eye(5)[[0, 1, 2, 3, 4, 1, 2, 3]])
    logits = np.eye(4)[[0, 1, 2, 3, 0, 1, 2, 0]] * 2.0  # argmax wrong only at index 7
    assert evaluate_predictions(run, logits).iloc[-1]["error_rate"] == 1 / 8
    with pytest.raises(ValueError, match=r"non-integer value 0\.3"):
        evaluate_predictions(run, np.array([0, 1, 2, 3, 0, 1, 2, 0.3]))
    assert evaluate_predictions(run, np.array(RUN_LABELS, dtype=float)).iloc[-1]["error_rate"] == 0.0


def test_evaluate_cli_reports_the_refusal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _reference_run(tmp_path / "run", num_classes=4)
    np.save(tmp_path / "p.npy", np.array([0, 1, 2, 3, 0, 1, 2, 7]))
    assert main(["evaluate", str(run), str(tmp_path / "p.npy")]) == 2
    err = capsys.readouterr().err
    assert f"evaluate: error: Expected `predictions` ({tmp_path / 'p.npy'}) to hold classes in [0, 3]" in err


# ----------------------------------------------------------------------------------------------
# compare: score validation and the hard fraction by the chosen score


def _compare_run(path: Path, scores: list[float], hard: list[bool]) -> Path:
    path.mkdir()
    n = len(scores)
    pd.DataFrame(
        {
            "split": "val",
            "index": np.arange(n),
            "label": np.arange(n) % 2,
            "correct": True,
            "confusion": scores,
            "kdn": scores[::-1],
            "hard": hard,
        }
    ).to_parquet(path / "scores.parquet")
    return path


def test_compare_hard_fraction_by_the_chosen_score(tmp_path: Path) -> None:
    a = _compare_run(tmp_path / "a", [0.1, 0.9, 0.5, 0.7, 0.3, 0.8], [False, True, False, False, False, False])
    b = _compare_run(tmp_path / "b", [0.2, 0.8, 0.9, 0.1, 0.4, 0.3], [False, False, True, False, False, False])
    # default: each run's own hard column ({1} vs {2}: no overlap)
    default = compare_runs(a, b)
    assert (default.hard_overlap, default.hard_jaccard) == (0.0, 0.0)
    assert default.hard_rule == "each run's hard column, top confusion"
    # hard_fraction=0.5 by confusion: ceil(3) top -> A {1, 5, 3}, B {2, 1, 4}: 1 shared, union 5
    half = compare_runs(a, b, hard_fraction=0.5)
    assert (half.hard_overlap, half.hard_jaccard) == (pytest.approx(1 / 3), pytest.approx(1 / 5))
    assert half.hard_rule == "top 50% by confusion in each run, ties by index"
    # by kdn (the scores reversed): A kdn = [0.8, 0.3, 0.7, 0.5, 0.9, 0.1] -> top 2 {4, 0};
    # B kdn = [0.3, 0.4, 0.1, 0.9, 0.8, 0.2] -> top 2 {3, 4}
    kdn = compare_runs(a, b, score="kdn", hard_fraction=1 / 3)
    assert (kdn.hard_overlap, kdn.hard_jaccard) == (0.5, pytest.approx(1 / 3))
    # without hard_fraction, a score other than confusion still ranks by itself (top 10%: one sample each)
    assert compare_runs(a, b, score="kdn").hard_rule == "top 10% by kdn in each run, ties by index"


@pytest.mark.parametrize("fraction", [0.0, 1.5, -0.1, True])
def test_compare_refuses_a_bad_hard_fraction(tmp_path: Path, fraction: Any) -> None:
    a = _compare_run(tmp_path / "a", [0.1, 0.9, 0.5], [False, True, False])
    with pytest.raises(ValueError, match=r"argument `hard_fraction` to be in \(0, 1\]"):
        compare_runs(a, a, hard_fraction=fraction)


def test_compare_refuses_columns_that_are_not_scores(tmp_path: Path) -> None:
    a = _compare_run(tmp_path / "a", [0.1, 0.9, 0.5], [False, True, False])
    for column in ("label", "correct", "index", "hard", "prediction_depth"):
        with pytest.raises(ValueError, match=rf"`score` / --score '{column}' is not a difficulty score"):
            compare_runs(a, a, score=column)  # prediction_depth is a score, but these runs do not hold it
    assert [is_score_column(c) for c in ("kdn:block2", "confusion_run3", "label", "kdn:")] == [True, True, False, False]


# ----------------------------------------------------------------------------------------------
# ErrorTaxonomy of another class count, refused before the first training step


class _TargetsDataset(Dataset):
    """(x, y) items with a `targets` attribute, like torchvision's datasets."""

    def __init__(self, n: int, seed: int) -> None:
        base = blobs(n, seed=seed)
        self.x, self.targets = base.tensors[0], base.tensors[1].tolist()

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.x[i], self.targets[i]


class _CountingMLP(TinyMLP):
    def __init__(self) -> None:
        super().__init__()
        self.steps = 0

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        self.steps += 1
        return super().training_step(batch, batch_idx)


def _fit(tmp_path: Path, model: _CountingMLP, superclasses: Mapping[int, str] | str) -> None:
    torch.set_num_threads(1)
    train = DataLoader(IndexedDataset(_TargetsDataset(16, seed=1)), batch_size=8)
    val = DataLoader(IndexedDataset(_TargetsDataset(8, seed=2)), batch_size=8)
    report = DifficultyReport(tmp_path / "out", error_taxonomy=ErrorTaxonomy(superclasses=superclasses))
    trainer = L.Trainer(max_epochs=1, callbacks=[ConfusionScore(), report], **trainer_kwargs(tmp_path))
    trainer.fit(model, train, val)


@pytest.mark.parametrize(
    ("superclasses", "message"),
    [
        ("cifar10", r"superclasses='cifar10'.*does not fit the 4 classes.*covers 10 classes but the model has 4"),
        ({c: "all" for c in range(6)}, r"<map of 6 classes>.*does not fit the 4 classes"),
    ],
)
def test_superclass_map_of_another_class_count_refused_at_train_start(
    tmp_path: Path, superclasses: Any, message: str
) -> None:
    model = _CountingMLP()
    with pytest.raises(ValueError, match=message):
        _fit(tmp_path, model, superclasses)
    assert model.steps == 0  # refused before any training step
    assert not (tmp_path / "out" / "scores.parquet").exists()


def test_superclass_map_of_the_right_class_count_is_accepted(tmp_path: Path) -> None:
    model = _CountingMLP()
    _fit(tmp_path, model, {0: "a", 1: "a", 2: "b", 3: "b"})
    assert model.steps == 2  # 16 samples, batches of 8, one epoch
    table = pd.read_parquet(tmp_path / "out" / "scores.parquet")
    assert "error_category" in table


# ----------------------------------------------------------------------------------------------
# The demo's rho line: a caveat when rho rests on few errors, nothing otherwise


def _demo_result(tmp_path: Path, errors: int) -> DemoResult:
    confusion = np.linspace(0.0, 2.0, 20)
    correct = np.ones(20, dtype=bool)
    correct[20 - errors :] = False  # the hardest samples are the wrong ones
    band = band_summary(confusion, correct, 4, None)
    summary = {"splits": {"val": {"num_samples": 20, "accuracy": correct.mean(), "error_by_confusion_band": band}}}
    table = pd.DataFrame({"split": "val", "index": np.arange(20), "confusion": confusion, "correct": correct})
    return DemoResult(run_dir=tmp_path / "demo" / "difficulty", table=table, summary=summary)


def test_format_summary_rho_caveat_only_with_few_errors(tmp_path: Path) -> None:
    few = format_summary(_demo_result(tmp_path, errors=2))
    rho_line = next(line for line in few.splitlines() if "Pearson rho" in line)
    assert "only 2 errors" in rho_line
    many = format_summary(_demo_result(tmp_path, errors=10))
    rho_line = next(line for line in many.splitlines() if "Pearson rho" in line)
    assert rho_line.endswith("):") and "errors" not in rho_line  # "...(Pearson rho = 0.xxx):", no caveat
