"""Bands, hard subsets and per-band accuracy, checked against pandas/scipy and brute force."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lightning_difficulty.functional.bands import (
    accuracy_by_band,
    band_edges,
    band_error_correlation,
    quantile_bands,
    select_hard,
    threshold_bands,
)


def test_threshold_bands_edge_belongs_to_upper_band() -> None:
    # Albiero et al.'s two bands: < 5 nats and >= 5 nats.
    scores = [0.0, 4.999, 5.0, 5.001, 6.9]
    assert threshold_bands(scores, thresholds=[5.0]).tolist() == [0, 0, 1, 1, 1]
    assert threshold_bands(scores, thresholds=[]).tolist() == [0, 0, 0, 0, 0]


def test_threshold_bands_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    scores = np.round(rng.uniform(0, 3, size=200), 1)  # many values exactly on the edges
    thresholds = [0.5, 1.0, 2.2]
    expected = [sum(t <= s for t in thresholds) for s in scores]
    assert threshold_bands(scores, thresholds=thresholds).tolist() == expected


def test_band_edges_hand_values() -> None:
    scores = [4.0, 0.0, 3.0, 1.0, 2.0]
    assert band_edges(scores, num_bands=2).tolist() == [2.0]
    assert band_edges(scores, num_bands=4).tolist() == [1.0, 2.0, 3.0]
    assert band_edges(scores, num_bands=1).tolist() == []


def test_quantile_bands_match_pandas_qcut_on_distinct_scores() -> None:
    rng = np.random.default_rng(1)
    scores = rng.gamma(2.0, size=102)  # quantile positions fall between samples
    ours = quantile_bands(scores, num_bands=4)
    reference = pd.qcut(scores, q=4, labels=False)
    np.testing.assert_array_equal(ours, reference)
    assert np.bincount(ours).tolist() == [26, 25, 25, 26]


def test_quantile_bands_keep_ties_together() -> None:
    scores = np.array([1.0] * 6 + [2.0, 3.0])
    bands = quantile_bands(scores, num_bands=2)
    assert len(set(bands[:6].tolist())) == 1


def test_select_hard_matches_sorted_brute_force_with_ties() -> None:
    rng = np.random.default_rng(2)
    scores = rng.integers(0, 5, size=40).astype(float)  # heavy ties
    for k in (1, 7, 13, 40):
        expected = sorted(sorted(range(40), key=lambda i: (-scores[i], i))[:k])
        sel = select_hard(scores, top_k=k)
        assert sel.indices.tolist() == expected
        assert sel.threshold == scores[expected].min()
        assert (scores > sel.threshold).sum() <= k


def test_select_hard_fraction_rounding() -> None:
    scores = np.arange(30, dtype=float)
    assert select_hard(scores, fraction=0.1).indices.tolist() == [27, 28, 29]  # 0.1 * 30 = 3, not 4
    assert select_hard(scores, fraction=0.11).indices.size == 4  # ceil(3.3)
    assert select_hard(scores, fraction=1e-9).indices.tolist() == [29]  # at least one
    assert select_hard(scores, fraction=1.0).indices.size == 30


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of `fraction` and `top_k`"),
        ({"fraction": 0.5, "top_k": 2}, "exactly one of `fraction` and `top_k`"),
        ({"fraction": 0.0}, "`fraction` to be in \\(0, 1\\]"),
        ({"top_k": 6}, "`top_k` to be an integer in \\[1, 5\\]"),
    ],
)
def test_select_hard_rejects_bad_options(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        select_hard(np.arange(5.0), **kwargs)


def test_validation_messages() -> None:
    with pytest.raises(ValueError, match="`scores` to be finite, but got nan at position 1"):
        threshold_bands([0.0, np.nan], thresholds=[1.0])
    with pytest.raises(ValueError, match="strictly increasing"):
        threshold_bands([0.0], thresholds=[2.0, 1.0])
    with pytest.raises(ValueError, match="`num_bands` to be a positive integer, but got 0"):
        quantile_bands([0.0, 1.0], num_bands=0)


def test_accuracy_by_band_matches_pandas_groupby() -> None:
    rng = np.random.default_rng(3)
    bands = rng.integers(0, 4, size=300)
    correct = rng.random(300) < 0.3 + 0.15 * bands
    table = accuracy_by_band(correct, bands, num_bands=5)
    ref = pd.DataFrame({"b": bands, "c": correct}).groupby("b")["c"].agg(["size", "mean"])
    assert table.count.tolist() == [*ref["size"].tolist(), 0]
    np.testing.assert_allclose(table.accuracy[:4], ref["mean"].to_numpy())
    np.testing.assert_allclose(table.error[:4], 1 - ref["mean"].to_numpy())
    assert np.isnan(table.accuracy[4]) and np.isnan(table.error[4])


def test_band_error_correlation_matches_scipy_pearson() -> None:
    rng = np.random.default_rng(4)
    scores = rng.uniform(0, np.log(10), size=500)
    correct = rng.random(500) > scores / np.log(10)  # error rises with the score
    res = band_error_correlation(scores, correct, num_bands=8)

    # Independent reference: equal-width bins assigned by a loop, Pearson from scipy.
    lo, hi = scores.min(), scores.max()
    width = (hi - lo) / 8
    band_of = [min(int((s - lo) // width), 7) for s in scores]
    frame = pd.DataFrame({"band": band_of, "score": scores, "err": ~correct})
    ref = frame.groupby("band").agg(mean_score=("score", "mean"), err=("err", "mean"), n=("err", "size"))
    np.testing.assert_array_equal(res.table.count, ref["n"].to_numpy())
    np.testing.assert_allclose(res.mean_score, ref["mean_score"].to_numpy())
    np.testing.assert_allclose(res.table.error, ref["err"].to_numpy())
    expected_rho = stats.pearsonr(ref["mean_score"], ref["err"]).statistic
    assert res.rho == pytest.approx(expected_rho, abs=1e-12)
    assert res.rho > 0.9


def test_band_error_correlation_quantile_and_degenerate() -> None:
    scores = np.array([0.1, 0.2, 0.3, 0.4])
    res = band_error_correlation(scores, [1, 1, 0, 0], num_bands=2, binning="quantile")
    assert res.table.error.tolist() == [0.0, 1.0]
    assert res.mean_score.tolist() == pytest.approx([0.15, 0.35])
    single = band_error_correlation(np.ones(4), [1, 0, 1, 0], num_bands=3)
    assert np.isnan(single.rho)  # one non-empty band: no correlation
    with pytest.raises(ValueError, match="`binning` to be 'width' or 'quantile'"):
        band_error_correlation(scores, [1, 1, 0, 0], num_bands=2, binning="log")
