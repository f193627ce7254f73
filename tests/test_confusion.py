"""Entropy and confusion maths against scipy/numpy references."""

import numpy as np
import pytest
import torch
from scipy.special import softmax
from scipy.stats import entropy as scipy_entropy

from lightning_difficulty.functional.confusion import confusion_score, entropy, mean_over_epochs, softmax_entropy


def test_softmax_entropy_matches_scipy() -> None:
    logits = np.random.default_rng(0).normal(scale=3.0, size=(50, 7))
    ours = softmax_entropy(torch.tensor(logits)).numpy()
    np.testing.assert_allclose(ours, scipy_entropy(softmax(logits, axis=1), axis=1), rtol=1e-10)


def test_softmax_entropy_upcasts_half_precision_and_handles_saturation() -> None:
    logits = torch.tensor([[30.0, -30.0, 0.0], [1.0, 2.0, 3.0]])
    half = softmax_entropy(logits.half())
    assert half.dtype == torch.float32
    expected = scipy_entropy(softmax(logits.half().double().numpy(), axis=1), axis=1)
    np.testing.assert_allclose(half.numpy(), expected, atol=1e-6)
    assert torch.isfinite(softmax_entropy(torch.tensor([[1e4, -1e4]]))).all()


def test_softmax_entropy_rejects_wrong_shape() -> None:
    with pytest.raises(ValueError, match="shape"):
        softmax_entropy(torch.zeros(3))


def test_entropy_of_uniform_and_one_hot() -> None:
    assert entropy(np.full(5, 0.2)) == pytest.approx(np.log(5))
    assert entropy(np.array([0.0, 1.0, 0.0])) == 0.0


def test_confusion_score_hand_computed() -> None:
    # two epochs, two samples; sample 1 unseen in epoch 0 (NaN row)
    p = np.array(
        [
            [[0.5, 0.5], [np.nan, np.nan]],
            [[1.0, 0.0], [0.25, 0.75]],
        ]
    )
    h_quarter = -(0.25 * np.log(0.25) + 0.75 * np.log(0.75))
    np.testing.assert_allclose(confusion_score(p), [np.log(2) / 2, h_quarter])


def test_confusion_score_ensemble_averages_probabilities_before_entropy() -> None:
    # Eq. 1-3: two confident but disagreeing models give a confused ensemble
    p = np.array([[[[1.0, 0.0]], [[0.0, 1.0]]]])  # (T=1, M=2, N=1, C=2)
    assert confusion_score(p)[0] == pytest.approx(np.log(2))


def test_mean_over_epochs_marks_unseen_as_nan() -> None:
    out = mean_over_epochs(np.array([3.0, 0.0]), np.array([2, 0]))
    assert out[0] == 1.5 and np.isnan(out[1])


def test_softmax_entropy_matches_scipy_on_wide_saturated_and_masked_rows() -> None:
    rng = np.random.default_rng(5)
    logits = rng.normal(scale=[[0.1], [3.0], [40.0], [3.0], [3.0]], size=(5, 1000))
    logits[3, :400] = -np.inf  # masked classes
    logits[4, 7] = np.nan
    got = softmax_entropy(torch.tensor(logits, dtype=torch.float32)).double().numpy()
    expected = [scipy_entropy(softmax(row[np.isfinite(row)])) for row in logits[:4]]
    np.testing.assert_allclose(got[:4], expected, rtol=2e-5, atol=1e-6)
    assert np.isnan(got[4])
