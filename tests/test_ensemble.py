"""Ensemble confusion from per-epoch records, checked against a direct numpy/scipy computation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import entropy as scipy_entropy

from lightning_difficulty.functional.topk import max_entropy_error, topk_entropy_bounds, topk_reconstruct
from lightning_difficulty.runs.combine import combine_runs, ensemble_confusion
from lightning_difficulty.storage.manifest import label_fingerprint
from lightning_difficulty.storage.records import EpochRecorder, read_records, write_epoch_record

N, C, EPOCHS, M = 9, 4, [0, 1, 3], 3


def _raw_probs(seed: int) -> np.ndarray:
    """(M, T, N, C) softmax vectors with some unseen (NaN) rows."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(C, 0.4), size=(M, len(EPOCHS), N)).astype(np.float32)
    probs[0, 0, 2] = np.nan  # run 0 missed sample 2 in epoch 0
    probs[1, 2, 2] = np.nan  # run 1 missed it in the last epoch
    probs[:, :, 5] = np.nan  # nobody ever saw sample 5
    probs[2, 1, 7] = np.nan
    return probs


def _direct(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 1-3 by loops: ensemble over epochs seen by all runs; per run over epochs it saw.

    scipy's entropy renormalises each vector; float32 rows sum to 1 only within ~1e-7, hence the
    1e-6 relative tolerance of the comparisons.
    """
    runs, epochs, n, _ = probs.shape
    ensemble, per_run = np.full(n, np.nan), np.full((runs, n), np.nan)
    for x in range(n):
        values = []
        for t in range(epochs):
            vectors = probs[:, t, x].astype(np.float64)
            if not np.isnan(vectors).any():
                values.append(scipy_entropy(vectors.mean(axis=0)))
        if values:
            ensemble[x] = sum(values) / len(values)
        for i in range(runs):
            own = [scipy_entropy(probs[i, t, x].astype(np.float64)) for t in range(epochs)]
            own = [h for h in own if not math.isnan(h)]
            if own:
                per_run[i, x] = sum(own) / len(own)
    return ensemble, per_run


def _write_runs(root: Path, probs: np.ndarray, labels: np.ndarray | None, **kwargs: object) -> list[Path]:
    runs = []
    for i in range(probs.shape[0]):
        run = root / f"seed{i}"
        for t, epoch in enumerate(EPOCHS):
            write_epoch_record(run, probs[i, t], split="train", epoch=epoch, **kwargs)  # type: ignore[arg-type]
        if labels is not None:
            pd.DataFrame({"split": "train", "index": np.arange(N), "label": labels, "confusion": 0.0}).to_parquet(
                run / "scores.parquet"
            )
        runs.append(run)
    return runs


def test_combine_runs_equals_direct_computation(tmp_path: Path) -> None:
    probs = _raw_probs(0)
    labels = np.arange(N) % C
    runs = _write_runs(tmp_path, probs, labels, label_fingerprint=label_fingerprint(labels))
    table = combine_runs(runs, tmp_path / "ensemble", chunk_rows=2)  # chunks that split the rows

    ensemble, per_run = _direct(probs)
    runs_confusion = [f"confusion_run{i}" for i in range(M)]
    runs_el2n = [f"el2n_run{i}" for i in range(M)]  # with labels: EL2N per run and its mean
    assert list(table.columns) == ["split", "index", "label", "confusion", *runs_confusion, "el2n", *runs_el2n]
    np.testing.assert_allclose(table["confusion"], ensemble, rtol=1e-6, equal_nan=True)
    for i in range(M):
        np.testing.assert_allclose(table[f"confusion_run{i}"], per_run[i], rtol=1e-6, equal_nan=True)
    assert np.isnan(table["confusion"][5]) and np.isfinite(table["confusion"][2])  # seen by all once
    assert table["label"].tolist() == labels.tolist()

    on_disk = pd.read_parquet(tmp_path / "ensemble" / "scores.parquet")
    pd.testing.assert_frame_equal(on_disk, table)
    summary = json.loads((tmp_path / "ensemble" / "summary.json").read_text())
    assert summary["version"] == 2 and summary["M"] == M and list(summary["splits"]) == ["train"]
    assert summary["runs"] == [str(r.resolve()) for r in runs]
    assert summary["splits"]["train"]["epochs"] == EPOCHS and summary["splits"]["train"]["num_scored"] == N - 1
    written = sorted(p.name for p in (tmp_path / "ensemble").iterdir())
    assert written == [".lightning-difficulty-output.json", "scores.parquet", "summary.json"]  # with its marker


def test_combine_default_takes_every_shared_split(tmp_path: Path) -> None:
    # Each run recorded train and val (as every ordinary run does); val only in the first two epochs.
    probs, val_probs = _raw_probs(6), _raw_probs(7)[:, :2, :5]
    runs = _write_runs(tmp_path, probs, None)
    for i, run in enumerate(runs):
        for t, epoch in enumerate(EPOCHS[:2]):
            write_epoch_record(run, val_probs[i, t], split="val", epoch=epoch)
    write_epoch_record(runs[0], np.eye(C), split="val_1", epoch=0)  # only one run has it: not shared
    table = combine_runs(runs, tmp_path / "all")
    assert table["split"].tolist() == ["train"] * N + ["val"] * 5
    train, val = table[table["split"] == "train"], table[table["split"] == "val"]
    np.testing.assert_allclose(train["confusion"], _direct(probs)[0], rtol=1e-6, equal_nan=True)
    np.testing.assert_allclose(val["confusion"], _direct(val_probs)[0], rtol=1e-6, equal_nan=True)
    assert val["index"].tolist() == list(range(5))
    summary = json.loads((tmp_path / "all" / "summary.json").read_text())
    assert list(summary["splits"]) == ["train", "val"] and summary["splits"]["val"]["epochs"] == EPOCHS[:2]
    # naming one split gives that split only, equal to its rows of the full table
    only_val = combine_runs(runs, tmp_path / "val", split="val")
    pd.testing.assert_frame_equal(only_val, val.reset_index(drop=True))
    with pytest.raises(FileNotFoundError, match="no records of split 'val_1'"):
        combine_runs(runs, tmp_path / "x", split="val_1")
    with pytest.raises(FileNotFoundError, match="no_records does not exist"):
        combine_runs([runs[0], tmp_path / "no_records"], tmp_path / "y")
    (tmp_path / "no_records").mkdir()
    with pytest.raises(FileNotFoundError, match="no_records holds no per-epoch records"):
        combine_runs([runs[0], tmp_path / "no_records"], tmp_path / "y")
    write_epoch_record(tmp_path / "no_records", np.eye(C), split="val_2", epoch=0)
    with pytest.raises(ValueError, match="share at least one split"):
        combine_runs([runs[0], tmp_path / "no_records"], tmp_path / "y")


def test_ensemble_confusion_pure_function() -> None:
    probs = _raw_probs(1)
    ensemble, _ = _direct(probs)
    lazy = (probs[:, t] for t in range(len(EPOCHS)))  # (M, N, C) per epoch, produced lazily
    np.testing.assert_allclose(ensemble_confusion(lazy), ensemble, rtol=1e-6, equal_nan=True)
    # 0 log 0 = 0: a one-hot ensemble has zero confusion
    assert ensemble_confusion([np.eye(3)[None]]).tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="partly NaN"):
        ensemble_confusion([np.array([[[0.5, np.nan]]])])


def test_combine_reads_records_of_the_confusion_callback(tmp_path: Path) -> None:
    # Records written by the project's EpochRecorder (the callback's writer) are read as-is.
    rng = np.random.default_rng(5)
    probs = rng.dirichlet(np.ones(3), size=(2, 2, 6)).astype(np.float32)  # (runs, epochs, N, C)
    runs = []
    for i in range(2):
        recorder = EpochRecorder(tmp_path / f"run{i}" / "records", "val", num_samples=6, num_classes=3)
        for epoch in range(2):
            seen = torch.arange(6) if epoch == 0 or i == 0 else torch.tensor([0, 1, 2, 4, 5])
            recorder.add(seen, torch.from_numpy(probs[i, epoch][seen.numpy()]))
            recorder.flush()  # the callback flushes every rank's buffer before rank 0 merges
            recorder.finish_epoch(epoch, world_size=1)
        runs.append(tmp_path / f"run{i}")
    table = combine_runs(runs, tmp_path / "out")
    expected_probs = probs.copy()
    expected_probs[1, 1, 3] = np.nan  # run 1 skipped sample 3 in epoch 1
    ensemble, per_run = _direct(expected_probs)
    np.testing.assert_allclose(table["confusion"], ensemble, rtol=1e-6)
    np.testing.assert_allclose(table["confusion_run1"], per_run[1], rtol=1e-6)
    assert "label" not in table.columns


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ("num_samples", r"same num_samples, but got .*seed0.*: 9, .*other.*: 8"),
        ("num_classes", r"same num_classes, but got .*seed0.*: 4, .*other.*: 5"),
        ("epochs", r"same epochs, but got .*seed0.*: \(0, 1, 3\), .*other.*: \(0, 1\)"),
        ("label_fingerprint", r"same label_fingerprint, but got .*seed0.*'sha256:.*other.*'sha256:"),
    ],
)
def test_combine_refuses_mismatched_runs(tmp_path: Path, field: str, message: str) -> None:
    probs = _raw_probs(2)
    labels = np.arange(N) % C
    runs = _write_runs(tmp_path, probs[:1], None, label_fingerprint=label_fingerprint(labels))
    other = tmp_path / "other"
    rng = np.random.default_rng(3)
    n = 8 if field == "num_samples" else N
    c = 5 if field == "num_classes" else C
    epochs = [0, 1] if field == "epochs" else EPOCHS
    fingerprint = label_fingerprint(labels[::-1] if field == "label_fingerprint" else labels)
    for epoch in epochs:
        write_epoch_record(
            other, rng.dirichlet(np.ones(c), size=n), split="train", epoch=epoch, label_fingerprint=fingerprint
        )
    with pytest.raises(ValueError, match=message):
        combine_runs([*runs, other], tmp_path / "out")
    assert not (tmp_path / "out" / "scores.parquet").exists()


def test_combine_refuses_duplicates_and_label_clash(tmp_path: Path) -> None:
    probs = _raw_probs(3)
    runs = _write_runs(tmp_path, probs[:2], np.arange(N) % C)
    with pytest.raises(ValueError, match="distinct runs"):
        combine_runs([runs[0], runs[0]], tmp_path / "out")
    pd.DataFrame({"split": "train", "index": [4], "label": [3]}).to_parquet(runs[1] / "scores.parquet")
    with pytest.raises(ValueError, match="disagree on the label of 'train' sample 4"):
        combine_runs(runs, tmp_path / "out")


def _reference_reconstruction(values: np.ndarray, indices: np.ndarray, c: int) -> np.ndarray:
    out = np.empty((values.shape[0], c))
    for row in range(values.shape[0]):
        rest = max(0.0, 1.0 - float(values[row].sum()))
        others = [j for j in range(c) if j not in set(indices[row].tolist())]
        for j in others:
            out[row, j] = rest / len(others) if others else 0.0
        for v, j in zip(values[row], indices[row], strict=True):
            out[row, j] = v
    return out


def test_combine_topk_records_equals_reconstruction(tmp_path: Path) -> None:
    probs = _raw_probs(4)
    runs = _write_runs(tmp_path, probs, None, kind="topk", topk=2)
    table = combine_runs(runs, tmp_path / "out")
    rebuilt = np.full(probs.shape, np.nan)
    for i in range(M):
        for t in range(len(EPOCHS)):
            seen = ~np.isnan(probs[i, t, :, 0])
            order = np.argsort(-probs[i, t][seen], axis=1, kind="stable")[:, :2]
            values = np.take_along_axis(probs[i, t][seen], order, axis=1).astype(np.float64)
            rebuilt[i, t][seen] = _reference_reconstruction(values, order, C)
    ensemble, per_run = _direct(rebuilt)
    np.testing.assert_allclose(table["confusion"], ensemble, rtol=1e-6, equal_nan=True)
    np.testing.assert_allclose(table["confusion_run0"], per_run[0], rtol=1e-6, equal_nan=True)
    # mixing a top-k run with a full-probability run is allowed
    full = _write_runs(tmp_path / "full", probs[:1], None)
    mixed = combine_runs([runs[1], full[0]], tmp_path / "mixed")
    assert np.isfinite(mixed["confusion"]).sum() == N - 1


def test_topk_reconstruct_hand_case() -> None:
    out = topk_reconstruct([[0.5, 0.3], [np.nan, np.nan]], [[1, 3], [-1, -1]], num_classes=4)
    assert out[0].tolist() == pytest.approx([0.1, 0.5, 0.1, 0.3])
    assert np.isnan(out[1]).all()
    with pytest.raises(ValueError, match=r"`indices` to lie in \[0, 4\)"):
        topk_reconstruct([[0.5]], [[4]], num_classes=4)


def test_topk_bounds_contain_true_entropy_on_random_vectors() -> None:
    rng = np.random.default_rng(6)
    for _ in range(300):
        c = int(rng.integers(2, 60))
        k = int(rng.integers(1, c + 1))
        p = rng.dirichlet(np.full(c, rng.choice([0.02, 0.2, 1.0, 10.0])))
        top = np.sort(p)[::-1][:k]
        bounds = topk_entropy_bounds(top, c)
        truth = scipy_entropy(p)
        assert bounds.lower - 1e-9 <= truth <= bounds.upper + 1e-9
        assert bounds.estimate == bounds.upper
        assert bounds.upper - bounds.lower <= max_entropy_error(c, k) + 1e-9


def test_topk_bounds_are_attained() -> None:
    # C = 6, top-2 = (0.4, 0.25): r = 0.35 over 4 classes capped at 0.25.
    upper_vec = [0.4, 0.25, 0.0875, 0.0875, 0.0875, 0.0875]  # even spread
    lower_vec = [0.4, 0.25, 0.25, 0.1, 0.0, 0.0]  # greedy at the cap
    bounds = topk_entropy_bounds([0.4, 0.25], 6)
    assert float(bounds.upper) == pytest.approx(scipy_entropy(upper_vec))
    assert float(bounds.lower) == pytest.approx(scipy_entropy(lower_vec))
    # by hand: H(top) = 0.4 ln 2.5 + 0.25 ln 4 = 0.713090; lower adds 0.25 ln 4 + 0.1 ln 10,
    # upper adds 0.35 ln(4 / 0.35)
    assert float(bounds.lower) == pytest.approx(1.289922, abs=1e-6)
    assert float(bounds.upper) == pytest.approx(1.565731, abs=1e-6)


def test_max_entropy_error_formula_is_tight() -> None:
    # Family where rounding costs nothing: k top values all equal to a = 1 / (k + j), so the tail
    # r = j a fills exactly j classes at the cap. Then lower = log(k + j) and, by hand,
    # upper - lower = r log(m a / r) = j / (k + j) * log(m / j).
    for c, k in [(10, 1), (100, 5), (1000, 10)]:
        m = c - k
        gaps = []
        for j in range(1, m + 1):
            bounds = topk_entropy_bounds(np.full(k, 1.0 / (k + j)), c)
            assert float(bounds.lower) == pytest.approx(math.log(k + j))
            gap = float(bounds.upper - bounds.lower)
            assert gap == pytest.approx(j / (k + j) * math.log(m / j), abs=1e-9)
            gaps.append(gap)
        bound = max_entropy_error(c, k)
        assert max(gaps) <= bound + 1e-12
        assert max(gaps) >= 0.97 * bound  # the closed form is nearly reached
    assert max_entropy_error(10, 10) == 0.0
    assert max_entropy_error(10, 1) == pytest.approx(1.101003, abs=1e-6)
    assert max_entropy_error(1000, 10) == pytest.approx(2.628650, abs=1e-6)


def test_topk_ensemble_error_within_fannes_bound() -> None:
    # The per-model [lower, upper] does not carry over to an ensemble; the documented provable
    # bound is |H(p_hat) - H(p)| <= T log(C - 1) + h(T), T = mean top-k tail mass.
    rng = np.random.default_rng(7)
    for _ in range(300):
        c, m = int(rng.integers(3, 30)), int(rng.integers(1, 5))
        k = int(rng.integers(1, c))
        f = rng.dirichlet(np.full(c, rng.choice([0.05, 0.5, 5.0])), size=m)
        order = np.argsort(-f, axis=1, kind="stable")[:, :k]
        values = np.take_along_axis(f, order, axis=1)
        p_hat = topk_reconstruct(values, order, num_classes=c).mean(axis=0)
        error = abs(scipy_entropy(p_hat) - scipy_entropy(f.mean(axis=0)))
        tail = float(np.clip(np.mean(1 - values.sum(axis=1)), 0.0, 1.0))
        binary = 0.0 if tail in (0.0, 1.0) else -(tail * math.log(tail) + (1 - tail) * math.log(1 - tail))
        bound = math.log(c) if tail > 1 - 1 / c else tail * math.log(c - 1) + binary
        assert error <= bound + 1e-9


def test_read_records_and_writer_checks(tmp_path: Path) -> None:
    write_epoch_record(tmp_path, np.eye(3), split="val", epoch=2)
    write_epoch_record(tmp_path, np.eye(3), split="val", epoch=0)
    records = read_records(tmp_path)
    assert records.manifest.epochs == (0, 2) and records.manifest.kind == "probs"
    np.testing.assert_array_equal(records.open_epoch(2).dense(0, 3), np.eye(3))
    with pytest.raises(ValueError, match="num_classes: 3 vs 4"):
        write_epoch_record(tmp_path, np.full((3, 4), 0.25), split="val", epoch=1)
    write_epoch_record(tmp_path, np.eye(2), split="train", epoch=0)
    with pytest.raises(ValueError, match=r"exactly one split .* \['train', 'val'\]"):
        read_records(tmp_path)


def test_combine_el2n_is_the_mean_over_runs_of_each_runs_last_epoch(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    labels = np.array([0, 2, 1, 2])
    runs = []
    expected = []
    for seed in range(2):
        run = tmp_path / f"seed{seed}"
        probs = rng.dirichlet(np.ones(3), size=(2, 4))  # 2 epochs, 4 samples
        if seed == 1:
            probs[1, 3] = np.nan  # run 1 does not see sample 3 in its last epoch
        for epoch in range(2):
            write_epoch_record(run, probs[epoch], split="val", epoch=epoch)
        pd.DataFrame({"split": "val", "index": np.arange(4), "label": labels}).to_parquet(run / "scores.parquet")
        last = np.where(np.isnan(probs[1]).all(axis=1)[:, None], probs[0], probs[1])
        expected.append(np.linalg.norm(last - np.eye(3)[labels], axis=1))
        runs.append(run)
    table = combine_runs(runs, tmp_path / "ens", split="val")
    np.testing.assert_allclose(table["el2n_run0"], expected[0], rtol=1e-6)
    np.testing.assert_allclose(table["el2n_run1"], expected[1], rtol=1e-6)
    np.testing.assert_allclose(table["el2n"], (expected[0] + expected[1]) / 2, rtol=1e-6)
