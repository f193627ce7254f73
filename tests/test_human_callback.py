"""HumanAlignment inside Lightning runs: human difficulty from hand-made annotations, correlations and patterns."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import kendalltau, spearmanr

from lightning_difficulty import (
    ConfusionScore,
    DataDifficulty,
    DifficultyReport,
    HumanAlignment,
    PredictionDepth,
    TaxonomyThresholds,
)
from lightning_difficulty.functional.taxonomy import PATTERN_IDS, assign_patterns
from tests.helpers import TinyMLP, blobs
from tests.helpers_integration import fit, measure_summary

N_VAL = 40
VAL_LABELS = np.arange(N_VAL) % 4  # blobs() labels


def _counts() -> np.ndarray:
    """40 x 4 annotator counts: a cycle of 8 hand-written rows, from unanimous to split votes.

    Row ``i`` belongs to a sample of label ``i % 4``; the label's count varies so that the human
    difficulty takes several values.
    """
    pattern = [
        [10, 0, 0, 0],  # label 0: unanimous
        [1, 8, 1, 0],  # label 1: 8/10 agree
        [0, 3, 3, 4],  # label 2: 3/10
        [0, 0, 1, 9],  # label 3: 9/10
        [2, 2, 2, 4],  # label 0: 2/10
        [0, 5, 5, 0],  # label 1: 5/10
        [0, 0, 7, 0],  # label 2: unanimous, 7 annotators
        [6, 0, 0, 1],  # label 3: 1/7
    ]
    return np.array([pattern[i % 8] for i in range(N_VAL)], dtype=np.int64)


def _expected_difficulty(counts: np.ndarray) -> np.ndarray:
    out = []
    for i in range(len(counts)):
        total = sum(int(c) for c in counts[i])
        out.append(1.0 - int(counts[i][VAL_LABELS[i]]) / total)
    return np.array(out)


def _labels_matrix(counts: np.ndarray) -> np.ndarray:
    """The same annotations as per-annotator labels ``(N, A)``, shuffled within rows, -1 padded."""
    rng = np.random.default_rng(3)
    width = int(counts.sum(axis=1).max()) + 2
    rows = []
    for row in counts:
        chosen = [c for c, count in enumerate(row) for _ in range(int(count))]
        padded = np.array(chosen + [-1] * (width - len(chosen)))
        rows.append(rng.permutation(padded))
    return np.array(rows)


def test_human_difficulty_from_counts_labels_and_npz(tmp_path: Path) -> None:
    counts = _counts()
    np.savez(tmp_path / "annotations.npz", counts=counts)
    from_counts = HumanAlignment(counts, split="val")
    from_labels = HumanAlignment(_labels_matrix(counts), split="val")
    from_npz = HumanAlignment(str(tmp_path / "annotations.npz"), split="val")
    report = DifficultyReport(dirpath=tmp_path / "out", grid_per_class=0)
    trainer = fit(
        tmp_path, TinyMLP(), [from_counts, from_labels, from_npz, report], blobs(24, seed=1), blobs(N_VAL, seed=2)
    )

    expected = _expected_difficulty(counts)
    assert sorted(set(np.round(expected, 6))) == sorted(set(np.round([0, 0.2, 0.7, 0.1, 0.8, 0.5, 6 / 7], 6)))
    table = pd.read_parquet(tmp_path / "out" / "scores.parquet")
    val = table[table["split"] == "val"].sort_values("index")
    # three instances on one split: the first keeps the names, the others are prefixed (a warning says so)
    for prefix in ("", "HumanAlignment#2:", "HumanAlignment#3:"):
        np.testing.assert_allclose(val[f"{prefix}human_difficulty"].to_numpy(), expected, atol=1e-12)
    for callback in (from_counts, from_labels, from_npz):
        per_image = counts.sum(axis=1)
        assert measure_summary(trainer, callback)["splits"]["val"]["annotators_per_sample"] == {
            "min": int(per_image.min()),
            "median": float(np.median(per_image)),
        }
    np.testing.assert_allclose(val["human_difficulty"].to_numpy(), expected, atol=1e-12)
    assert table.loc[table["split"] == "train", "human_difficulty"].isna().all()
    summary = measure_summary(trainer, from_counts)
    assert summary["splits"]["val"]["annotators_per_sample"] == {"min": 7, "median": 10.0}


def test_row_count_mismatch_names_the_split_and_both_sizes(tmp_path: Path) -> None:
    human = HumanAlignment(_counts()[:39], split="val")
    with pytest.raises(ValueError, match=r"split 'val'.*39 rows.*40 samples"):
        fit(tmp_path, TinyMLP(), [human, DifficultyReport(dirpath=tmp_path)], blobs(24), blobs(N_VAL), epochs=1)


def test_row_count_mismatch_of_the_training_split_is_caught_before_the_first_step(tmp_path: Path) -> None:
    human = HumanAlignment(_counts(), split="train")
    with pytest.raises(ValueError, match=r"split 'train'.*40 rows.*24 samples"):
        fit(tmp_path, TinyMLP(), [human, DifficultyReport(dirpath=tmp_path)], blobs(24), blobs(8), epochs=1)


def test_missing_file_names_the_argument(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"annotations=.*missing\.npy"):
        HumanAlignment(str(tmp_path / "missing.npy"))


def _table_one_patterns(human: np.ndarray, data: np.ndarray, model: np.ndarray, correct: np.ndarray) -> list[str]:
    """DifficultyEyes Table 1 written out row by row (high = strictly above the threshold)."""
    out = []
    for h, d, m, ok in zip(human, data, model, correct, strict=True):
        if h and not d:
            out.append("6")
        elif h and d:
            out.append("5a" if ok else "5b")
        else:
            number = {(False, False): 1, (True, False): 2, (False, True): 3, (True, True): 4}[(bool(d), bool(m))]
            out.append(f"{number}{'a' if ok else 'b'}")
    return out


def test_correlations_and_patterns_in_the_report(tmp_path: Path) -> None:
    thresholds = TaxonomyThresholds(human=0.3, data=0.4, prediction_depth=1.0)
    callbacks = [
        ConfusionScore(),
        DataDifficulty(k=5),
        PredictionDepth(layers=["hidden", "out"], k=5),
        HumanAlignment(_counts(), split="val"),
        DifficultyReport(dirpath=tmp_path / "out", grid_per_class=0, taxonomy=thresholds),
    ]
    fit(tmp_path, TinyMLP(), callbacks, blobs(60, seed=1), blobs(N_VAL, seed=2), epochs=2)
    table = pd.read_parquet(tmp_path / "out" / "scores.parquet")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    val = table[table["split"] == "val"]

    correlations = summary["splits"]["val"]["human_correlations"]
    assert set(correlations) == {"confusion", "prediction_depth", "kdn", "label_issue_score"}
    for column, stats in correlations.items():
        assert stats["spearman"] == pytest.approx(spearmanr(val["human_difficulty"], val[column]).statistic)
        assert stats["kendall"] == pytest.approx(kendalltau(val["human_difficulty"], val[column]).statistic)
        assert stats["n"] == N_VAL

    human, kdn, depth = (val[c].to_numpy(float) for c in ("human_difficulty", "kdn", "prediction_depth"))
    correct = val["correct"].to_numpy(bool)
    expected = assign_patterns(human, kdn, depth, correct, thresholds=thresholds, model_perspective="prediction_depth")
    np.testing.assert_array_equal(val["pattern"].to_numpy(str), expected)
    by_hand = _table_one_patterns(human > 0.3, kdn > 0.4, depth > 1.0, correct)
    assert val["pattern"].tolist() == by_hand
    assert val["pattern"].nunique() >= 3  # several rows of Table 1 are exercised

    counts = val["pattern"].value_counts()
    patterns = summary["splits"]["val"]["patterns"]
    assert list(patterns) == list(PATTERN_IDS)
    for pattern, entry in patterns.items():
        assert entry["count"] == counts.get(pattern, 0)
        assert entry["errors"] == int((~correct & (val["pattern"] == pattern).to_numpy()).sum())
    assert table.loc[table["split"] == "train", "pattern"].isna().all()


class _CountingMLP(TinyMLP):
    """TinyMLP that counts its training steps (to show a refusal came before the first one)."""

    steps = 0

    def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
        self.steps += 1
        return super().training_step(batch, batch_idx)


def test_one_callback_annotates_several_splits_into_the_same_columns(tmp_path: Path) -> None:
    train_labels = np.arange(24) % 4
    # the training split with per-annotator labels (CIFAR-10N style, 3 annotators, -1 = none)
    rng = np.random.default_rng(4)
    per_annotator = np.where(rng.random((24, 3)) < 0.7, train_labels[:, None], rng.integers(0, 4, (24, 3)))
    per_annotator[0, 2] = -1
    human = HumanAlignment({"val": _counts(), "train": per_annotator})
    report = DifficultyReport(dirpath=tmp_path / "out", grid_per_class=0)
    fit(tmp_path, TinyMLP(), [human, report], blobs(24, seed=1), blobs(N_VAL, seed=2), epochs=1)
    table = pd.read_parquet(tmp_path / "out" / "scores.parquet")
    assert not [c for c in table.columns if ":" in c]
    val = table[table["split"] == "val"].sort_values("index")
    np.testing.assert_allclose(val["human_difficulty"], _expected_difficulty(_counts()), atol=1e-12)
    train = table[table["split"] == "train"].sort_values("index")
    agree = [
        (row[row >= 0] == label).sum() / (row >= 0).sum()
        for row, label in zip(per_annotator, train_labels, strict=True)
    ]
    np.testing.assert_allclose(train["human_difficulty"], 1 - np.array(agree), atol=1e-12)


def test_soft_label_annotations_are_probabilities(tmp_path: Path) -> None:
    counts = _counts()
    probs = counts / counts.sum(axis=1, keepdims=True)  # CIFAR-10H's probability file
    human = HumanAlignment(probs, split="val")
    report = DifficultyReport(dirpath=tmp_path / "out", grid_per_class=0)
    trainer = fit(tmp_path, TinyMLP(), [human, report], blobs(24, seed=1), blobs(N_VAL, seed=2), epochs=1)
    val = pd.read_parquet(tmp_path / "out" / "scores.parquet").query("split == 'val'").sort_values("index")
    np.testing.assert_allclose(val["human_difficulty"], _expected_difficulty(counts), atol=1e-12)
    expected_entropy = [-(p[p > 0] * np.log(p[p > 0])).sum() for p in probs]
    np.testing.assert_allclose(val["human_entropy"], expected_entropy, atol=1e-12)
    assert measure_summary(trainer, human)["splits"]["val"]["annotators_per_sample"] is None


@pytest.mark.parametrize(
    ("annotations", "kwargs", "match"),
    [
        (np.full((40, 4), 0.3), {}, r"soft labels: rows \[0, 1, 2, 3, 4\].*do not sum to 1"),
        (np.tile([[1, 2, 0, 1]], (40, 1)), {}, r"Cannot tell.*kind='counts' or kind='labels'"),
        (_counts(), {"split": "test"}, r"split='test'.*validation dataloader"),
        (_counts() + 0.5, {"kind": "counts"}, r"non-integer values.*kind='probs'"),
        ({"val": _counts(), "val_x": _counts()}, {}, r"annotations key='val_x'"),
    ],
)
def test_annotations_that_cannot_be_read_are_refused_at_construction(annotations, kwargs, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=match):
        HumanAlignment(annotations, **kwargs)


def test_validation_annotations_without_a_validation_loader_stop_at_setup(tmp_path: Path) -> None:
    import lightning as L
    from torch.utils.data import DataLoader

    from lightning_difficulty import IndexedDataset
    from tests.helpers import trainer_kwargs

    model = _CountingMLP()
    trainer = L.Trainer(
        max_epochs=1, callbacks=[HumanAlignment(_counts()), DifficultyReport(tmp_path)], **trainer_kwargs(tmp_path)
    )
    with pytest.raises(ValueError, match=r"split\(s\) \['val'\].*no validation dataloader"):
        trainer.fit(model, DataLoader(IndexedDataset(blobs(24)), batch_size=8))
    assert model.steps == 0
