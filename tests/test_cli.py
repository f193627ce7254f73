"""The command line: demo, compare, combine and evaluate, checked against numpy / scipy on the written files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import kendalltau, spearmanr

from lightning_difficulty.cli import main
from tests.helpers_integration import tiny_report_run

N_VAL = 24


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two 2-epoch runs with different shuffling seeds and one 3-epoch run."""
    root = tmp_path_factory.mktemp("runs")
    return {
        "a": tiny_report_run(root / "a", epochs=2, seed=0, n_val=N_VAL),
        "b": tiny_report_run(root / "b", epochs=2, seed=1, n_val=N_VAL),
        "c": tiny_report_run(root / "c", epochs=3, seed=0, n_val=N_VAL),
    }


def _val(run: Path) -> pd.DataFrame:
    table = pd.read_parquet(run / "scores.parquet")
    return table[table["split"] == "val"].sort_values("index").reset_index(drop=True)


@pytest.mark.slow
def test_demo_prints_the_summary_and_writes_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--epochs", "2", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    table = pd.read_parquet(out / "difficulty" / "scores.parquet")
    for split, rows in table.groupby("split"):
        assert f"[{split}] {len(rows)} samples, accuracy {rows['correct'].mean():.3f}" in printed
        q1, q2, q3 = np.quantile(rows["confusion"], [0.25, 0.5, 0.75])
        assert f"25% {q1:.3f} | median {q2:.3f} | 75% {q3:.3f}" in printed
    assert "10 hardest validation samples:" in printed
    hardest = table[table["split"] == "val"].nlargest(1, "confusion").iloc[0]
    assert f"{hardest['confusion']:.6f}" in printed
    assert f"TensorBoard: tensorboard --logdir {out}" in printed
    assert {"prediction_depth", "kdn"} <= set(table.columns)

    # a run compared with itself agrees perfectly
    run = str(out / "difficulty")
    assert main(["compare", run, run]) == 0
    assert "Spearman rho 1.0000   Kendall tau 1.0000" in capsys.readouterr().out


def test_compare_matches_scipy(runs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    a, b = _val(runs["a"]), _val(runs["b"])
    rho = spearmanr(a["confusion"], b["confusion"]).statistic
    tau = kendalltau(a["confusion"], b["confusion"]).statistic
    assert rho < 0.9999  # different seeds: a real comparison

    assert main(["compare", str(runs["a"]), str(runs["b"]), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == N_VAL
    assert result["spearman"] == pytest.approx(rho)
    assert result["kendall"] == pytest.approx(tau)
    hard_a, hard_b = set(a.loc[a["hard"], "index"]), set(b.loc[b["hard"], "index"])
    assert result["hard_overlap"] == pytest.approx(len(hard_a & hard_b) / len(hard_a))
    assert result["hard_jaccard"] == pytest.approx(len(hard_a & hard_b) / len(hard_a | hard_b))
    assert result["runs"][0]["accuracy"] == pytest.approx(a["correct"].mean())

    assert main(["compare", str(runs["a"]), str(runs["b"])]) == 0
    printed = capsys.readouterr().out
    assert f"Spearman rho {rho:.4f}   Kendall tau {tau:.4f}" in printed


def _entropy_nats(p: np.ndarray) -> np.ndarray:
    return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=1)


def test_combine_equals_the_ensemble_score_from_the_records(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ensemble"
    assert main(["combine", str(runs["a"]), str(runs["b"]), "-o", str(out), "--split", "val"]) == 0
    assert "ensemble of 2 runs" in capsys.readouterr().out
    table = pd.read_parquet(out / "scores.parquet")

    per_epoch, own = [], []
    for epoch in (0, 1):
        name = Path("records") / "val" / f"epoch_{epoch:04d}.probs.npy"
        pa, pb = (np.load(runs[r] / name).astype(np.float64) for r in ("a", "b"))
        per_epoch.append(_entropy_nats((pa + pb) / 2))
        own.append(_entropy_nats(pa))
    np.testing.assert_allclose(table["confusion"].to_numpy(), np.mean(per_epoch, axis=0), rtol=1e-10)
    np.testing.assert_allclose(table["confusion_run0"].to_numpy(), np.mean(own, axis=0), rtol=1e-10)
    a = _val(runs["a"])
    np.testing.assert_allclose(table["confusion_run0"].to_numpy(), a["confusion"].to_numpy(), rtol=1e-5)
    np.testing.assert_array_equal(table["label"].to_numpy(), a["label"].to_numpy())
    # the ensemble is not just one of its members
    assert not np.allclose(table["confusion"], table["confusion_run0"], rtol=1e-6)


def test_combine_refuses_runs_with_different_epochs(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["combine", str(runs["a"]), str(runs["c"]), "-o", str(tmp_path / "x"), "--split", "val"])
    assert code == 2
    err = capsys.readouterr().err
    assert "combine: error:" in err and "epochs" in err
    assert not (tmp_path / "x" / "scores.parquet").exists()
    # both runs recorded train and val: without --split the choice is refused, not guessed
    assert main(["combine", str(runs["a"]), str(runs["b"]), "-o", str(tmp_path / "y")]) == 2
    assert "split" in capsys.readouterr().err


def _evaluate(run: Path, predictions: np.ndarray, path: Path, capsys: pytest.CaptureFixture[str]) -> list[dict]:
    np.save(path, predictions)
    assert main(["evaluate", str(run), str(path), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_evaluate_error_rates(runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labels = _val(runs["a"])["label"].to_numpy()
    right = _evaluate(runs["a"], labels, tmp_path / "right.npy", capsys)
    bands = [row for row in right if row["band"].isdigit()]
    assert len(bands) == 10 and sum(row["count"] for row in bands) == N_VAL
    assert {row["band"] for row in right} >= {"hard subset", "all"}
    assert all(row["error_rate"] == 0.0 for row in right if row["count"] > 0)

    wrong = _evaluate(runs["a"], (labels + 1) % 4, tmp_path / "wrong.npy", capsys)
    assert all(row["error_rate"] == 1.0 for row in wrong if row["count"] > 0)

    logits = np.eye(4)[labels] * 3.0  # (N, C) logits are reduced with argmax
    from_logits = _evaluate(runs["a"], logits, tmp_path / "logits.npy", capsys)
    assert all(row["error_rate"] == 0.0 for row in from_logits if row["count"] > 0)


def test_evaluate_refuses_a_wrong_shape(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "short.npy", np.zeros(N_VAL - 1, dtype=np.int64))
    assert main(["evaluate", str(runs["a"]), str(tmp_path / "short.npy")]) == 2
    err = capsys.readouterr().err
    assert f"{N_VAL} samples" in err and f"({N_VAL - 1},)" in err


def test_compare_refuses_runs_on_different_samples(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name, labels in (("a", [0, 1, 2]), ("b", [0, 2, 2])):
        run = tmp_path / name
        run.mkdir()
        table = pd.DataFrame({"split": "val", "index": [0, 1, 2], "label": labels, "confusion": [0.1, 0.5, 0.9]})
        table.to_parquet(run / "scores.parquet")
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    assert "different samples" in capsys.readouterr().err
