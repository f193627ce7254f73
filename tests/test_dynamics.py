"""Training-dynamics maths (data maps, forgetting, AUM, EL2N, label-noise scores) against numpy/scipy/sklearn
references and hand-computed traces; plus the noise injection and metrics of examples/label_noise.py."""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.special import expit, softmax
from sklearn.metrics import roc_auc_score

from lightning_difficulty.functional.dynamics import (
    AumState,
    DataMapState,
    ForgettingState,
    aum,
    aum_flags,
    aum_threshold,
    data_map_regions,
    dm_confidence,
    dm_correctness,
    dm_variability,
    el2n,
    fold_aum,
    fold_data_map,
    fold_forgetting,
    forgetting,
    forgetting_sort_key,
    is_correct,
    label_probability,
    logit_margin,
    make_threshold_samples,
    merge_data_maps,
    never_learned,
    precision_at_k,
    self_confidence_score,
)
from tests.helpers import load_example

NEG_INF = float("-inf")


def _batch(seed: int, batch: int = 40, classes: int = 7, scale: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(scale=scale, size=(batch, classes)), rng.integers(0, classes, size=batch)


# -- per presentation ---------------------------------------------------------------------------------


def test_label_probability_and_el2n_match_scipy_softmax() -> None:
    z, y = _batch(0)
    p = softmax(z, axis=1)
    onehot = np.eye(z.shape[1])[y]
    logits, target = torch.tensor(z), torch.tensor(y)
    np.testing.assert_allclose(label_probability(logits, target).numpy(), p[np.arange(len(y)), y], rtol=1e-12)
    np.testing.assert_allclose(el2n(logits, target).numpy(), np.linalg.norm(p - onehot, axis=1), rtol=1e-12)


def test_is_correct_and_margin_match_numpy_brute_force() -> None:
    z, y = _batch(1)
    z[0] = z[0, y[0]]  # an all-tied row: argmax picks class 0
    margins = [z[i, y[i]] - max(z[i, j] for j in range(z.shape[1]) if j != y[i]) for i in range(len(y))]
    logits, target = torch.tensor(z), torch.tensor(y)
    np.testing.assert_array_equal(is_correct(logits, target).numpy(), (z.argmax(axis=1) == y).astype(float))
    np.testing.assert_allclose(logit_margin(logits, target).numpy(), margins, rtol=1e-12)
    assert is_correct(logits, target).dtype == torch.float64


def test_binary_margin_is_the_logit_difference_and_antisymmetric() -> None:
    z = torch.tensor([[2.5, -1.0], [0.0, 4.0]])
    np.testing.assert_allclose(logit_margin(z, torch.tensor([0, 0])).numpy(), [3.5, -4.0])
    np.testing.assert_allclose(logit_margin(z, torch.tensor([1, 1])).numpy(), [-3.5, 4.0])
    # C = 2: p(label) is the sigmoid of the margin
    np.testing.assert_allclose(label_probability(z, torch.tensor([0, 0])).numpy(), expit([3.5, -4.0]), rtol=1e-6)


def test_masked_logits_drop_out() -> None:
    z = torch.tensor([[2.0, NEG_INF, 1.0], [NEG_INF, 0.5, NEG_INF], [1.0, NEG_INF, 3.0]])
    y = torch.tensor([0, 1, 1])
    margin = logit_margin(z, y)
    assert margin[0] == pytest.approx(1.0)  # the masked class is ignored in the max
    assert margin[1] == float("inf")  # every other class masked
    assert margin[2] == NEG_INF  # the label itself masked
    p = softmax(np.array([2.0, 1.0]))
    np.testing.assert_allclose(label_probability(z, y).numpy(), [p[0], 1.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(el2n(z[:2], y[:2]).numpy(), [np.sqrt(2) * p[1], 0.0], rtol=1e-6)
    assert is_correct(z, y).tolist() == [1.0, 1.0, 0.0]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_extreme_finite_logits_give_no_nan(dtype: torch.dtype) -> None:
    big = torch.finfo(dtype).max
    z = torch.tensor([[big, -big, 0.0], [-big, -big, big], [1e4, -1e4, 0.0], [0.0, 0.0, 0.0]], dtype=dtype)
    y = torch.tensor([0, 0, 1, 2])
    for fn in (label_probability, is_correct, logit_margin, el2n):
        out = fn(z, y)
        assert out.dtype == (torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype)
        assert not torch.isnan(out).any(), fn.__name__
    np.testing.assert_allclose(label_probability(z, y).double().numpy(), [1.0, 0.0, 0.0, 1 / 3], atol=1e-3)


def test_el2n_keeps_the_error_of_a_saturated_softmax() -> None:
    # p(other) = sigmoid(-40) ~ 4e-18: 1 - p(label) rounds to 0 in float64, the sum of the others does not
    out = el2n(torch.tensor([[40.0, 0.0]], dtype=torch.float64), torch.tensor([0]))
    assert out[0].item() == pytest.approx(np.sqrt(2) * expit(-40.0), rel=1e-9, abs=0)


def test_per_presentation_inputs_are_validated() -> None:
    with pytest.raises(ValueError, match="shape"):
        label_probability(torch.zeros(3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="`target` of shape"):
        el2n(torch.zeros(3, 2), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="integer class indices"):
        is_correct(torch.zeros(3, 2), torch.zeros(3))
    with pytest.raises(ValueError, match="at least 2 classes"):
        logit_margin(torch.zeros(3, 1), torch.zeros(3, dtype=torch.long))
    assert label_probability(torch.zeros(2, 4), torch.tensor([1, 3], dtype=torch.int32)).tolist() == [0.25, 0.25]


# -- epoch folds --------------------------------------------------------------------------------------


def _random_trace(seed: int, epochs: int = 6, n: int = 50) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-epoch values with NaN where a sample was not seen, the seen mask and 0/1 correctness."""
    rng = np.random.default_rng(seed)
    seen = rng.random((epochs, n)) < 0.8
    seen[:, 0] = False  # a sample never seen
    p = np.where(seen, rng.random((epochs, n)), np.nan)
    correct = np.where(seen, (rng.random((epochs, n)) < 0.6).astype(float), np.nan)
    return p, correct, seen


def test_data_map_matches_numpy_nan_statistics() -> None:
    p, correct, seen = _random_trace(0)
    state = DataMapState.zeros(p.shape[1])
    for t in range(p.shape[0]):
        state = fold_data_map(state, p[t], correct[t], seen[t])
    with warnings.catch_warnings():  # all-NaN columns: "Mean of empty slice"
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = np.nanmean(p, axis=0), np.nanstd(p, axis=0, ddof=0), np.nanmean(correct, axis=0)
    np.testing.assert_allclose(dm_confidence(state), expected[0], rtol=1e-12)
    np.testing.assert_allclose(dm_variability(state), expected[1], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(dm_correctness(state), expected[2], rtol=1e-12)
    np.testing.assert_array_equal(state.dm_epochs, seen.sum(axis=0))
    assert np.isnan(dm_confidence(state)[0]) and np.isnan(dm_variability(state)[0])


def test_data_map_states_of_disjoint_shards_add_up() -> None:
    # what a DDP rank folds on its own samples, summed over ranks, equals the fold over all samples
    p, correct, seen = _random_trace(1)
    shard = np.random.default_rng(2).random(p.shape) < 0.5
    states = [DataMapState.zeros(p.shape[1]) for _ in range(3)]
    for t in range(p.shape[0]):
        states[0] = fold_data_map(states[0], p[t], correct[t], seen[t])
        states[1] = fold_data_map(states[1], p[t], correct[t], seen[t] & shard[t])
        states[2] = fold_data_map(states[2], p[t], correct[t], seen[t] & ~shard[t])
    merged = merge_data_maps(states[1], states[2])
    for field in ("dm_epochs", "dm_confidence_sum", "dm_correct_sum"):
        np.testing.assert_allclose(getattr(states[1], field) + getattr(states[2], field), getattr(states[0], field))
    np.testing.assert_allclose(merged.dm_confidence_m2, states[0].dm_confidence_m2, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(dm_variability(merged), dm_variability(states[0]), rtol=1e-9, atol=1e-12)


def test_constant_confidence_has_zero_variability_not_nan() -> None:
    state = DataMapState.zeros(1)
    for _ in range(7):
        state = fold_data_map(state, [0.1], [0.0], [True])
    assert dm_variability(state)[0] == pytest.approx(0.0, abs=1e-12)


def test_variability_does_not_cancel_for_a_saturated_confidence() -> None:
    # E[p^2] - E[p]^2 loses every digit when p is close to 1 and barely moves; Welford keeps them
    values = 1.0 - np.array([1e-9, 2e-9, 3e-9, 2e-9, 1e-9])
    state = DataMapState.zeros(1)
    for v in values:
        state = fold_data_map(state, [v], [1.0], [True])
    assert dm_variability(state)[0] == pytest.approx(np.std(values), rel=1e-6)


def test_fold_does_not_mutate_and_validates() -> None:
    state = DataMapState.zeros(2)
    fold_data_map(state, [0.5, 0.5], [1.0, 0.0], np.array([True, True]))
    assert state.dm_epochs.tolist() == [0, 0]
    with pytest.raises(ValueError, match="`seen`"):
        fold_data_map(state, [0.5, 0.5], [1, 0], [1, 1])
    with pytest.raises(ValueError, match="`confidence` of shape"):
        fold_data_map(state, [0.5], [1, 0], [True, True])
    with pytest.raises(ValueError, match="num_samples"):
        DataMapState.zeros(-1)


def test_states_live_side_by_side_in_one_dict_of_arrays() -> None:
    # how a callback keeps all three states in one dict of named arrays and folds them in place
    states: dict[str, np.ndarray] = {"other": np.zeros(3)}
    for cls in (DataMapState, ForgettingState, AumState):
        fresh = cls.zeros(3).as_states()
        assert not set(fresh) & set(states)  # field names are unique across the states
        states.update(fresh)
    for correct in ([1.0, 0.0, 1.0], [0.0, 0.0, 1.0]):
        states.update(fold_forgetting(ForgettingState.from_states(states), correct, np.ones(3, bool)).as_states())
        states.update(fold_aum(AumState.from_states(states), correct, np.ones(3, bool)).as_states())
    assert forgetting(ForgettingState.from_states(states)).tolist() == [1, 0, 0]
    assert aum(AumState.from_states(states)).tolist() == [0.5, 0.0, 1.0]
    with pytest.raises(KeyError, match="dm_epochs"):
        DataMapState.from_states({"other": np.zeros(3)})


def test_data_map_regions_follow_the_documented_thresholds() -> None:
    conf = np.array([0.95, 0.5, 0.49, 0.9, 0.1, 0.2, np.nan])
    var = np.array([0.02, 0.1, 0.1, 0.2, 0.35, 0.199, 0.1])
    assert data_map_regions(conf, var).tolist() == ["easy", "easy", "hard", "ambiguous", "ambiguous", "hard", "unseen"]
    moved = data_map_regions(conf, var, confidence_threshold=0.96, variability_threshold=0.1)
    assert moved.tolist() == ["hard", "ambiguous", "ambiguous", "ambiguous", "ambiguous", "ambiguous", "unseen"]
    with pytest.raises(ValueError, match="variability_threshold"):
        data_map_regions(conf, var, variability_threshold=0.7)
    with pytest.raises(ValueError, match="same shape"):
        data_map_regions(conf, var[:3])


def test_forgetting_hand_computed_trace() -> None:
    # 3 samples, 4 epochs (1 = correct, . = not seen):
    #   sample 0: 1 0 1 0  -> 2 forgetting events
    #   sample 1: 0 1 . 0  -> 1 (the unseen epoch is skipped, so 1 -> 0 are consecutive presentations)
    #   sample 2: 0 0 0 0  -> 0, never learned
    correct = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=bool)
    seen = np.array([[1, 1, 1], [1, 1, 1], [1, 0, 1], [1, 1, 1]], dtype=bool)
    state = ForgettingState.zeros(3)
    for t in range(4):
        state = fold_forgetting(state, correct[t], seen[t])
    assert forgetting(state).tolist() == [2, 1, 0]
    assert never_learned(state).tolist() == [False, False, True]


def test_forgetting_matches_a_python_loop_over_presentations() -> None:
    _, correct, seen = _random_trace(3, epochs=9)
    state = ForgettingState.zeros(correct.shape[1])
    for t in range(correct.shape[0]):
        state = fold_forgetting(state, correct[t], seen[t])
    for n in range(correct.shape[1]):
        presented = [bool(c) for c, s in zip(correct[:, n], seen[:, n], strict=True) if s]
        events = sum(1 for a, b in itertools.pairwise(presented) if a and not b)
        assert state.forgetting_count[n] == events
        assert never_learned(state)[n] == (not any(presented))


def test_forgetting_reads_shares_as_majority_correct() -> None:
    state = fold_forgetting(ForgettingState.zeros(2), [1.0, 0.75], [True, True])
    state = fold_forgetting(state, [0.5, 0.25], [True, True])
    assert forgetting(state).tolist() == [1, 1]


def test_forgetting_sort_key_puts_never_learned_first() -> None:
    key = forgetting_sort_key([3, 0, 0], np.array([False, True, False]))
    assert np.argsort(-key).tolist()[0] == 1
    with pytest.raises(ValueError, match="never_learned_mask"):
        forgetting_sort_key([3, 0], [0, 1])


def test_aum_matches_numpy_mean_of_margins() -> None:
    rng = np.random.default_rng(4)
    epochs, n, classes = 5, 30, 4
    logits = rng.normal(scale=2.0, size=(epochs, n, classes))
    labels = rng.integers(0, classes, size=n)
    seen = rng.random((epochs, n)) < 0.7
    state = AumState.zeros(n)
    margins = np.full((epochs, n), np.nan)
    for t in range(epochs):
        margin = logit_margin(torch.tensor(logits[t]), torch.tensor(labels)).numpy()
        state = fold_aum(state, np.where(seen[t], margin, np.nan), seen[t])
        for i in np.flatnonzero(seen[t]):
            others = np.delete(logits[t, i], labels[i])
            margins[t, i] = logits[t, i, labels[i]] - others.max()
    with warnings.catch_warnings():  # all-NaN columns: "Mean of empty slice"
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = np.nanmean(margins, axis=0)
    np.testing.assert_allclose(aum(state), expected, rtol=1e-12)


# -- label noise ----------------------------------------------------------------------------------------


def test_threshold_samples_relabel_n_over_c_plus_one_into_the_fake_class() -> None:
    labels = np.random.default_rng(5).integers(0, 10, size=1000)
    new, idx = make_threshold_samples(labels, 10, seed=7)
    assert len(idx) == 1000 // 11 == len(set(idx.tolist()))
    assert (new[idx] == 10).all() and (new == 10).sum() == len(idx)
    keep = np.setdiff1d(np.arange(1000), idx)
    np.testing.assert_array_equal(new[keep], labels[keep])
    assert labels.max() < 10  # input untouched
    np.testing.assert_array_equal(make_threshold_samples(labels, 10, seed=7)[1], idx)
    assert not np.array_equal(make_threshold_samples(labels, 10, seed=8)[1], idx)
    with pytest.raises(ValueError, match="num_classes"):
        make_threshold_samples(labels, 5, seed=0)


def test_aum_threshold_and_flags() -> None:
    values = np.random.default_rng(6).normal(size=500)
    assert aum_threshold(values) == pytest.approx(np.percentile(values, 99))
    assert aum_threshold(np.r_[values, np.nan], percentile=50) == pytest.approx(np.median(values))
    flags = aum_flags([-2.0, 0.0, 1.0, np.nan], 0.5)
    assert flags.tolist() == [True, True, False, False]
    with pytest.raises(ValueError, match="percentile"):
        aum_threshold(values, percentile=101)
    with pytest.raises(ValueError, match="finite"):
        aum_threshold(np.array([np.nan]))


def test_self_confidence_score() -> None:
    probs = softmax(np.random.default_rng(7).normal(size=(20, 5)), axis=1)
    labels = np.arange(20) % 5
    np.testing.assert_allclose(self_confidence_score(probs, labels), [1 - probs[i, i % 5] for i in range(20)])
    with pytest.raises(ValueError, match="labels"):
        self_confidence_score(probs, labels + 1)


def test_precision_at_k_without_ties_is_the_top_k_share() -> None:
    rng = np.random.default_rng(9)
    scores, positive = rng.normal(size=100), rng.random(100) < 0.3
    for k in (1, 10, 30, 100):
        top = np.argsort(-scores)[:k]
        assert precision_at_k(scores, positive, k) == pytest.approx(positive[top].mean())


def test_precision_at_k_shares_ties_like_the_average_over_tie_orders() -> None:
    scores = np.array([3.0, 1.0, 1.0, 1.0, 1.0, 0.0])
    positive = np.array([False, True, False, True, True, False])
    k = 3
    precisions = []
    for order in itertools.permutations(range(len(scores))):  # every way to break the ties
        ranked = sorted(order, key=lambda i: -scores[i])  # stable: ties in the permuted order
        precisions.append(positive[ranked[:k]].mean())
    assert precision_at_k(scores, positive, k) == pytest.approx(np.mean(precisions))
    with pytest.raises(ValueError, match="`k`"):
        precision_at_k(scores, positive, 0)


# -- examples/label_noise.py: noise injection and metrics ------------------------------------------------

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "label_noise.py"


@pytest.fixture(scope="module")
def example() -> ModuleType:
    return load_example(EXAMPLE, "label_noise_example")


@pytest.mark.parametrize("pair", [False, True])
def test_flip_labels_flips_the_seeded_share_to_another_class(example: ModuleType, pair: bool) -> None:
    labels = np.random.default_rng(10).integers(0, 10, size=2000)
    partner = np.array([8, 9, 6, 5, 7, 3, 3, 4, 0, 1]) if pair else None
    noisy, flipped = example.flip_labels(labels, rate=0.2, num_classes=10, seed=3, partner=partner)
    assert flipped.sum() == 400
    np.testing.assert_array_equal(noisy != labels, flipped)
    np.testing.assert_array_equal(noisy[~flipped], labels[~flipped])
    if partner is not None:
        np.testing.assert_array_equal(noisy[flipped], partner[labels[flipped]])
    else:  # uniform over the 9 other classes: every (true, new) pair occurs, about 400 / 90 times each
        pairs = np.zeros((10, 10), int)
        np.add.at(pairs, (labels[flipped], noisy[flipped]), 1)
        assert (np.diag(pairs) == 0).all() and (pairs + np.eye(10, dtype=int) > 0).all()
    again = example.flip_labels(labels, rate=0.2, num_classes=10, seed=3, partner=partner)
    np.testing.assert_array_equal(again[0], noisy)
    with pytest.raises(ValueError, match="partner"):
        example.flip_labels(labels, rate=0.2, num_classes=10, seed=3, partner=np.arange(10))


def test_most_confused_partner_from_vote_counts(example: ModuleType) -> None:
    counts = np.array([[5, 0, 2], [6, 1, 0], [0, 3, 4], [1, 8, 0], [2, 0, 9]])
    labels = np.array([0, 0, 1, 1, 2])
    # class 0: votes [11, 1, 2] -> partner 2; class 1: [1, 11, 4] -> 2; class 2: [2, 0, 9] -> 0
    assert example.most_confused_partner(counts, labels).tolist() == [2, 2, 0]


def test_noise_scores_orient_and_metrics_from_a_table(example: ModuleType) -> None:
    flipped = np.array([True, False, False, True, False])
    train = pd.DataFrame(
        {
            "split": "train",
            "index": [4, 3, 2, 1, 0],  # out of order: rows are matched by index
            "aum": [2.0, -3.0, 1.0, 0.5, -1.0],
            "forgetting": [0, 0, 1, 0, 2],
            "never_learned": [False, True, False, False, False],
            "label_issue_score": [0.1, 0.9, 0.2, 0.3, 0.8],
        }
    )
    val = pd.DataFrame({"split": "val", "index": [0], "aum": [9.0]})
    scores = example.noise_scores(pd.concat([train, val], ignore_index=True))
    np.testing.assert_allclose(scores["aum (negated)"], [1.0, -0.5, -1.0, 3.0, -2.0])
    np.testing.assert_allclose(scores["forgetting (never learned = inf)"], [2.0, 0.0, 1.0, np.inf, 0.0])
    assert "confusion" not in scores  # missing columns are skipped
    rows = {row["score"]: row for row in example.detection_metrics(scores, flipped)}
    assert rows["aum (negated)"]["auroc"] == pytest.approx(roc_auc_score(flipped, scores["aum (negated)"]))
    assert rows["label_issue_score"]["precision_at_noise_rate"] == pytest.approx(1.0)
    assert rows["forgetting"]["precision_at_noise_rate"] == pytest.approx(0.5)  # scores [2, 0, 1, 0, 0]
