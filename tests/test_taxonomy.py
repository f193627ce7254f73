"""DifficultyEyes taxonomy: Table 1 patterns, binarisation thresholds and the pattern summary."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from lightning_difficulty.functional.taxonomy import (
    PATTERN_IDS,
    TaxonomyThresholds,
    assign_patterns,
    binarise_perspectives,
    difficulty_pattern,
    pattern_summary,
    resolve_threshold,
)

# Table 1 of DifficultyEyes written out for every (human, data, model, correct) combination.
TABLE_1 = {
    (False, False, False, True): "1a",
    (False, False, False, False): "1b",
    (False, True, False, True): "2a",
    (False, True, False, False): "2b",
    (False, False, True, True): "3a",
    (False, False, True, False): "3b",
    (False, True, True, True): "4a",
    (False, True, True, False): "4b",
    (True, True, False, True): "5a",
    (True, True, True, True): "5a",
    (True, True, False, False): "5b",
    (True, True, True, False): "5b",
    (True, False, False, True): "6",
    (True, False, True, True): "6",
    (True, False, False, False): "6",
    (True, False, True, False): "6",
}


def test_difficulty_pattern_matches_table_1_for_every_combination() -> None:
    combos = [(h, d, m, c) for h, d, m, c in itertools.product([False, True], repeat=4)]
    assert set(combos) == set(TABLE_1)
    human, data, model, correct = (np.array(column) for column in zip(*combos, strict=True))
    got = difficulty_pattern(human, data, model, correct)
    assert got.tolist() == [TABLE_1[combo] for combo in combos]
    assert set(got.tolist()) == set(PATTERN_IDS)


def test_difficulty_pattern_accepts_zero_one_integers_and_keeps_shape() -> None:
    got = difficulty_pattern([[0, 1]], [[1, 0]], [[1, 1]], [[0, 1]])
    assert got.shape == (1, 2)
    assert got.tolist() == [["4b", "6"]]


def test_assign_patterns_hand_built_case_covers_all_eleven() -> None:
    # thresholds: human > 0.2, kdn > 0.5, prediction depth > 3
    rows = [
        # human, kdn, depth, correct, expected
        (0.00, 0.1, 0, True, "1a"),
        (0.10, 0.5, 3, False, "1b"),  # kdn 0.5 and depth 3 sit on the thresholds: low
        (0.20, 0.6, 1, True, "2a"),  # human 0.2 on the threshold: low
        (0.05, 0.9, 2, False, "2b"),
        (0.00, 0.0, 4, True, "3a"),
        (0.15, 0.3, 7, False, "3b"),
        (0.00, 0.8, 5, True, "4a"),
        (0.10, 1.0, 6, False, "4b"),
        (0.60, 0.7, 0, True, "5a"),
        (0.90, 0.6, 8, False, "5b"),
        (0.45, 0.2, 9, True, "6"),
        (0.30, 0.0, 0, False, "6"),
    ]
    human, kdn, depth, correct, expected = (list(column) for column in zip(*rows, strict=True))
    thresholds = TaxonomyThresholds(prediction_depth=3.0)
    got = assign_patterns(human, kdn, depth, correct, thresholds=thresholds)
    assert got.tolist() == expected


def test_binarise_uses_the_field_of_the_chosen_model_perspective() -> None:
    thresholds = TaxonomyThresholds(human=0.1, data=0.25, prediction_depth=10.0, confusion=0.5)
    human, kdn, model = [0.0, 0.2], [0.3, 0.2], [0.4, 1.2]
    by_confusion = binarise_perspectives(human, kdn, model, thresholds=thresholds, model_perspective="confusion")
    assert by_confusion.human_high.tolist() == [False, True]
    assert by_confusion.data_high.tolist() == [True, False]
    assert by_confusion.model_high.tolist() == [False, True]
    assert (by_confusion.human_threshold, by_confusion.data_threshold, by_confusion.model_threshold) == (
        0.1,
        0.25,
        0.5,
    )
    by_depth = binarise_perspectives(human, kdn, model, thresholds=thresholds)
    assert by_depth.model_high.tolist() == [False, False]
    assert by_depth.model_threshold == 10.0


def test_default_thresholds() -> None:
    defaults = TaxonomyThresholds()
    assert (defaults.human, defaults.data) == (0.2, 0.5)
    assert (defaults.prediction_depth, defaults.confusion) == ("q0.8", "q0.8")
    # 10 depths 0..9: the cut whose high share is closest to 0.2 is 7, so depths 8 and 9 are high.
    flags = binarise_perspectives(np.zeros(10), np.zeros(10), np.arange(10.0))
    assert flags.model_threshold == 7.0
    assert np.flatnonzero(flags.model_high).tolist() == [8, 9]


def test_a_share_threshold_always_splits_tied_depths() -> None:
    # 3 of 10 samples never settle (the largest depth): a plain 0.8-quantile is that depth and marks none high
    depth = np.array([0, 0, 1, 1, 2, 2, 3, 5, 5, 5], dtype=float)
    assert np.quantile(depth, 0.8) == 5.0
    flags = binarise_perspectives(np.zeros(10), np.zeros(10), depth)
    assert flags.model_threshold == 3.0  # above 3: 30 %, the share closest to 20 % (above 2: 40 %)
    assert flags.model_high.tolist() == [False] * 7 + [True] * 3
    # a constant score cannot be split
    assert not binarise_perspectives(np.zeros(4), np.zeros(4), np.full(4, 2.0)).model_high.any()


def test_quantile_thresholds_hand_values() -> None:
    assert resolve_threshold("q0.5", [4.0, 0.0, 3.0, 1.0, 2.0]) == 2.0
    assert resolve_threshold("q0.75", [0.0, 1.0, 2.0, 3.0, 4.0]) == 3.0
    assert resolve_threshold("q1", [0.0, 5.0]) == 5.0
    assert resolve_threshold("q0.25", [np.nan, 0.0, 4.0]) == 0.0  # NaN ignored; the one cut between the values
    assert resolve_threshold(0.3, [0.0, 5.0]) == 0.3
    flags = binarise_perspectives(
        [0.0, 0.1, 0.2, 0.3, 0.4], [0.0] * 5, [0.0] * 5, thresholds=TaxonomyThresholds(human="q0.75")
    )
    assert flags.human_threshold == pytest.approx(0.3)
    assert flags.human_high.tolist() == [False, False, False, False, True]


@pytest.mark.parametrize("bad", ["0.8", "q1.5", "qx", "q-0.1", "quantile", float("nan"), float("inf"), True, None])
def test_threshold_validation(bad: object) -> None:
    with pytest.raises(ValueError, match="threshold `human`"):
        TaxonomyThresholds(human=bad)  # type: ignore[arg-type]


def test_binarise_validation() -> None:
    ok = [0.1, 0.2]
    with pytest.raises(ValueError, match="`human_difficulty` to have no NaN, but found 1"):
        binarise_perspectives([0.1, np.nan], ok, ok)
    with pytest.raises(ValueError, match=r"`kdn` to lie in \[0, 1.0\]"):
        binarise_perspectives(ok, [0.1, 1.5], ok)
    with pytest.raises(ValueError, match="`model_difficulty` to lie in"):
        binarise_perspectives(ok, ok, [-1.0, 0.0])
    with pytest.raises(ValueError, match="share one length"):
        binarise_perspectives(ok, ok, [0.0])
    with pytest.raises(ValueError, match="`model_perspective`"):
        binarise_perspectives(ok, ok, ok, model_perspective="loss")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="1-D"):
        binarise_perspectives([ok], [ok], [ok])


def test_difficulty_pattern_validation() -> None:
    with pytest.raises(ValueError, match="`human_high` to hold booleans"):
        difficulty_pattern([0.5], [True], [True], [True])
    with pytest.raises(ValueError, match="`correct` to hold booleans"):
        difficulty_pattern([True], [True], [True], [2])
    with pytest.raises(ValueError, match="share one shape"):
        difficulty_pattern([True, False], [True], [True], [True])


def test_pattern_summary_hand_counts() -> None:
    patterns = ["1a", "1a", "1b", "3b", "5b", "5b", "6", "6"]
    correct = [True, True, False, False, False, True, False, True]
    summary = pattern_summary(patterns, correct)
    assert list(summary) == list(PATTERN_IDS)
    assert summary["1a"] == {"count": 2, "share": 0.25, "errors": 0, "error_share": 0.0}
    assert summary["1b"] == {"count": 1, "share": 0.125, "errors": 1, "error_share": 0.25}
    assert summary["5b"] == {"count": 2, "share": 0.25, "errors": 1, "error_share": 0.25}
    assert summary["6"] == {"count": 2, "share": 0.25, "errors": 1, "error_share": 0.25}
    for empty in ("2a", "2b", "3a", "4a", "4b", "5a"):
        assert summary[empty] == {"count": 0, "share": 0.0, "errors": 0, "error_share": 0.0}
    assert sum(entry["count"] for entry in summary.values()) == 8
    assert sum(entry["error_share"] for entry in summary.values()) == pytest.approx(1.0)


def test_pattern_summary_without_errors_and_validation() -> None:
    summary = pattern_summary(["2a", "4a"], [True, True])
    assert summary["2a"] == {"count": 1, "share": 0.5, "errors": 0, "error_share": 0.0}
    with pytest.raises(ValueError, match=r"found \['7'\]"):
        pattern_summary(["1a", "7"], [True, True])
    with pytest.raises(ValueError, match="one length"):
        pattern_summary(["1a", "6"], [True])


def test_report_patterns_name_a_threshold_that_splits_nothing() -> None:
    import pandas as pd

    from lightning_difficulty.pipeline.analysis import difficulty_patterns

    # 3 of 10 samples never settle (depth 6): an absolute threshold at 6 marks no depth strictly above it
    rows = pd.DataFrame(
        {
            "human_difficulty": [0.0, 0.5, 0.0, 0.1, 0.9, 0.0, 0.0, 0.3, 0.0, 0.0],
            "kdn": [0.0, 0.2, 0.8, 0.6, 0.0, 0.1, 0.9, 0.0, 0.4, 0.0],
            "prediction_depth": [0, 1, 2, 3, 6, 6, 6, 1, 0, 2],
            "correct": [True] * 5 + [False] * 5,
        }
    )
    patterns = difficulty_patterns(rows, TaxonomyThresholds(prediction_depth=6.0))
    assert patterns is not None
    assert patterns.degenerate == ["prediction_depth > 6 marks no sample high"]
    assert not any(p.startswith(("3", "4")) for p in patterns.ids)  # the model-hard half of Table 1 is empty
    # the default share rule splits the same depths: above 3, the three that never settle
    fine = difficulty_patterns(rows, TaxonomyThresholds())
    assert fine is not None and fine.degenerate == []
    # by Table 1: 5 is model-hard only (3b, wrong), 6 also data-hard (4b), 4 human-hard and data-easy (6)
    assert (fine.ids[4], fine.ids[5], fine.ids[6]) == ("6", "3b", "4b")
