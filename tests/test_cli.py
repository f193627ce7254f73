"""The command line: demo, compare, combine and evaluate, checked against numpy / scipy on the written files."""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import kendalltau, spearmanr

from lightning_difficulty.cli import build_parser, main
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


def _printed_commands(printed: str) -> list[list[str]]:
    """The commands the demo prints under "Next:" (comments dropped), split into words."""
    lines = printed.split("\nNext:\n", 1)[1].splitlines()
    return [line.split("#")[0].split() for line in lines if line.startswith("  ")]


def _executable(word: str) -> bool:
    return Path(word).is_file() or shutil.which(word) is not None


@pytest.mark.slow
def test_demo_two_seeds_then_the_printed_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "runs" / "demo"
    assert main(["demo", "--epochs", "2", "--seed", "1", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "it/s" not in captured.out + captured.err  # stdout is not a terminal: no progress bars
    table = pd.read_parquet(out / "difficulty" / "scores.parquet")
    for split, rows in table.groupby("split"):
        assert f"[{split}] {len(rows)} samples, accuracy {rows['correct'].mean():.3f}" in printed
        q1, q2, q3 = np.quantile(rows["confusion"], [0.25, 0.5, 0.75])
        assert f"25% {q1:.3f} | median {q2:.3f} | 75% {q3:.3f}" in printed
    assert "10 hardest validation samples:" in printed
    hardest = table[table["split"] == "val"].nlargest(1, "confusion").iloc[0]
    assert f"{hardest['confusion']:.6f}" in printed
    assert {"prediction_depth", "kdn", "aum", "forgetting", "dm_region", "label_issue_score"} <= set(table.columns)
    # the label-issue candidates: the training samples of lowest AUM, as the written table ranks them
    train = table[table["split"] == "train"]
    assert f"[train] training dynamics: mean AUM {train['aum'].mean():.3f} logit" in printed
    assert f"{int(train['forgetting'].sum())} forgetting events" in printed
    candidates = printed.split("10 label-issue candidates", 1)[1].split("\n\n", 1)[0].splitlines()[2:]
    lowest = train.nsmallest(10, "aum")
    assert [int(line.split()[0]) for line in candidates] == lowest["index"].tolist()
    assert [float(line.split()[4]) for line in candidates] == pytest.approx(lowest["aum"].tolist(), abs=1e-6)

    tensorboard, demo, compare, combine = _printed_commands(printed)
    for command in (tensorboard, demo, compare, combine):
        assert _executable(command[0]), f"{command[0]} (printed by the demo) does not exist"
    # TensorBoard's log folder holds the run in a named sub-folder (not ".")
    assert tensorboard[1:] == ["--logdir", str(tmp_path / "runs")]
    assert [p.parent for p in (tmp_path / "runs").rglob("events.out.tfevents.*")] == [out]

    # the second seed, as printed (shorter): the same fixed split, other training
    assert demo[1:] == ["demo", "--seed", "2", "--out", str(tmp_path / "runs" / "demo_seed2")]
    assert main([*demo[1:], "--epochs", "2"]) == 0
    capsys.readouterr()
    other = pd.read_parquet(tmp_path / "runs" / "demo_seed2" / "difficulty" / "scores.parquet")
    for split in ("train", "val"):
        a, b = (t[t["split"] == split].sort_values("index") for t in (table, other))
        np.testing.assert_array_equal(a["label"].to_numpy(), b["label"].to_numpy())
        assert not np.allclose(a["confusion"], b["confusion"])  # another seed trains another model

    assert main(compare[1:]) == 0
    a, b = (t[t["split"] == "val"].sort_values("index") for t in (table, other))
    rho = spearmanr(a["confusion"], b["confusion"]).statistic
    assert f"val', score 'confusion', {len(a)} samples" in (shown := capsys.readouterr().out)
    assert f"Spearman rho {rho:.4f}" in shown

    assert main(combine[1:]) == 0
    ensemble = pd.read_parquet(Path(combine[combine.index("-o") + 1]) / "scores.parquet")
    assert ensemble.groupby("split").size().to_dict() == table.groupby("split").size().to_dict()
    for split in ("train", "val"):
        mine = table[table["split"] == split].sort_values("index")["confusion"].to_numpy()
        run0 = ensemble[ensemble["split"] == split]["confusion_run0"].to_numpy()
        np.testing.assert_allclose(run0, mine, rtol=1e-5)


def test_demo_refuses_a_folder_it_did_not_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mine"
    (out / "lightning_logs").mkdir(parents=True)
    (out / "lightning_logs" / "model.ckpt").write_text("precious")
    assert main(["demo", "--epochs", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"--out {out} holds files: 1 file(s) `demo` did not write (lightning_logs/model.ckpt)" in err
    assert f"--out {out}_2" in err  # the fix
    assert [p.name for p in out.rglob("*")] == ["lightning_logs", "model.ckpt"]
    assert (out / "lightning_logs" / "model.ckpt").read_text() == "precious"


@pytest.mark.slow
def test_demo_rerun_removes_only_its_own_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--epochs", "1", "--out", str(out)]) == 0
    first = sorted(p for p in out.rglob("*") if p.is_file())
    assert main(["demo", "--epochs", "1", "--out", str(out)]) == 0  # a previous demo run: replaced
    assert len(list(out.glob("events.out.tfevents.*"))) == 1
    assert len(sorted(p for p in out.rglob("*") if p.is_file())) == len(first)
    (out / "difficulty" / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert main(["demo", "--epochs", "1", "--out", str(out)]) == 2
    assert "difficulty/notes.txt" in capsys.readouterr().err
    assert (out / "difficulty" / "notes.txt").read_text() == "mine"
    assert (out / "difficulty" / "scores.parquet").exists()  # nothing was deleted before refusing


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--epochs", "0"], "argument --epochs: expected a whole number >= 1, got 0"),
        (["demo", "--epochs", "-1"], "argument --epochs: expected a whole number >= 1, got -1"),
        (["demo", "--epochs", "ten"], "argument --epochs: expected a whole number >= 1, got 'ten'"),
        (["demo", "--seed", "x"], "argument --seed: invalid int value: 'x'"),
        (["evaluate", "run", "p.npy", "--bands", "1"], "argument --bands: expected at least 2 bands, got 1"),
        (["combine", "run_a"], "the following arguments are required: -o/--out"),
        (["compare", "a", "b", "--hard-fraction", "0"], "argument --hard-fraction: expected a number in (0, 1], got 0"),
        (["compare", "a", "b", "--hard-fraction", "1.5"], "argument --hard-fraction: expected a number in (0, 1]"),
    ],
)
def test_bad_values_are_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "usage: lightning-difficulty" in err


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(found[0].choices)


def test_every_option_has_help_and_there_is_a_version(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    commands = _subparsers(parser)
    assert sorted(commands) == ["combine", "compare", "demo", "evaluate"]
    for name, command in [("lightning-difficulty", parser), *commands.items()]:
        assert command.description and len(command.description) > 80, f"{name} has no real description"
        assert "usage: lightning-difficulty" in command.format_help()  # every help text renders
        for action in command._actions:
            if not isinstance(action, argparse._SubParsersAction):
                assert action.help, f"{name}: {action.option_strings or action.dest} has no help"
    assert "Owns nothing" not in parser.format_help()  # the user sees a description, not a docstring
    assert "row i = dataset index i" in commands["evaluate"].format_help()
    with pytest.raises(SystemExit) as stopped:
        main(["--version"])
    assert stopped.value.code == 0
    assert capsys.readouterr().out.strip() == f"lightning-difficulty {version('lightning-difficulty')}"


def test_help_imports_no_heavy_module() -> None:
    # --help must answer at once (well under 1 s): torch, lightning, pandas load only when a command runs
    code = (
        "import sys\nfrom lightning_difficulty.cli import main\n"
        "try:\n    main(['compare', '--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'lightning', 'pandas', 'numpy', 'matplotlib', 'scipy') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"


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


def test_combine_without_split_takes_every_split(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # as `combine --help` says: by default every split both runs recorded (here train and val)
    assert main(["combine", str(runs["a"]), str(runs["b"]), "-o", str(tmp_path / "all")]) == 0
    assert "(train, val), ensemble of 2 runs" in capsys.readouterr().out
    table = pd.read_parquet(tmp_path / "all" / "scores.parquet")
    for split in ("train", "val"):
        rows = table[table["split"] == split]
        name = Path("records") / split / "epoch_0001.probs.npy"
        pa, pb = (np.load(runs[r] / name).astype(np.float64) for r in ("a", "b"))
        first = Path("records") / split / "epoch_0000.probs.npy"
        qa, qb = (np.load(runs[r] / first).astype(np.float64) for r in ("a", "b"))
        expected = (_entropy_nats((pa + pb) / 2) + _entropy_nats((qa + qb) / 2)) / 2
        np.testing.assert_allclose(rows["confusion"].to_numpy(), expected, rtol=1e-10)
        assert rows["index"].tolist() == list(range(len(pa)))


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


def _synthetic_run(path: Path, seed: int, n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    table = pd.DataFrame(
        {
            "split": "val",
            "index": np.arange(n),
            "label": np.arange(n) % 4,
            "correct": rng.random(n) > 0.3,
            "confusion": rng.random(n),
            "kdn": rng.integers(0, 11, n) / 10,  # many ties
            "prediction_depth": rng.integers(0, 5, n),
        }
    )
    table["hard"] = table["confusion"] >= np.sort(table["confusion"])[-4]
    path.mkdir()
    table.to_parquet(path / "scores.parquet")
    return table


def _top(table: pd.DataFrame, score: str, k: int) -> set[int]:
    """Reference: the k highest scores, ties broken by the smaller index (plain Python sort)."""
    ranked = sorted(zip(table[score], table["index"], strict=True), key=lambda pair: (-pair[0], pair[1]))
    return {int(index) for _, index in ranked[:k]}


def test_compare_score_drives_the_hard_overlap(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = _synthetic_run(tmp_path / "a", 0), _synthetic_run(tmp_path / "b", 1)
    run_a, run_b = str(tmp_path / "a"), str(tmp_path / "b")
    assert main(["compare", run_a, run_b, "--score", "kdn", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    hard_a, hard_b = _top(a, "kdn", 4), _top(b, "kdn", 4)  # 10 % of 40
    assert result["spearman"] == pytest.approx(spearmanr(a["kdn"], b["kdn"]).statistic)
    assert result["hard_overlap"] == pytest.approx(len(hard_a & hard_b) / 4)
    assert result["hard_jaccard"] == pytest.approx(len(hard_a & hard_b) / len(hard_a | hard_b))
    assert "top 10% by kdn" in result["hard_rule"]
    # with confusion, the runs' own `hard` column is used
    assert main(["compare", run_a, run_b]) == 0
    shown = capsys.readouterr().out
    both = set(a.loc[a["hard"], "index"]) & set(b.loc[b["hard"], "index"])
    assert f"hard subsets (each run's hard column, top confusion): {len(both) / 4:.1%} of A's" in shown

    # --hard-fraction: each run's top share by the score, here confusion, instead of the `hard` column
    assert main(["compare", run_a, run_b, "--hard-fraction", "0.25", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    hard_a, hard_b = _top(a, "confusion", 10), _top(b, "confusion", 10)  # 25 % of 40
    assert result["hard_overlap"] == pytest.approx(len(hard_a & hard_b) / 10)
    assert result["hard_jaccard"] == pytest.approx(len(hard_a & hard_b) / len(hard_a | hard_b))
    assert result["hard_rule"] == "top 25% by confusion in each run, ties by index"

    assert main(["compare", run_a, run_b, "--score", "label"]) == 2
    err = capsys.readouterr().err
    assert "--score 'label' is not a difficulty score" in err
    assert "['confusion', 'kdn', 'prediction_depth']" in err


def test_evaluate_prints_the_band_edges(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    val = _val(runs["a"])
    np.save(tmp_path / "p.npy", val["label"].to_numpy())
    assert main(["evaluate", str(runs["a"]), str(tmp_path / "p.npy"), "--bands", "4"]) == 0
    shown = capsys.readouterr().out
    assert "= dataset index i" in shown
    edges = np.linspace(val["confusion"].min(), val["confusion"].max(), 5)
    for low, high in itertools.pairwise(edges):
        assert f"{low:.4f}" in shown and f"{high:.4f}" in shown
    assert main(["evaluate", str(runs["a"]), str(tmp_path / "p.npy"), "--bands", "4", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["confusion_low"] for r in rows[:4]] == pytest.approx(edges[:-1].tolist())
    assert [r["confusion_high"] for r in rows[:4]] == pytest.approx(edges[1:].tolist())
    assert sum(r["count"] for r in rows[:4]) == N_VAL


def test_no_traceback_when_the_reader_stops(runs: dict[str, Path], tmp_path: Path) -> None:
    np.save(tmp_path / "p.npy", _val(runs["a"])["label"].to_numpy())
    # --json with many bands prints far more than a pipe holds, so the writer meets the closed pipe
    command = [sys.executable, "-m", "lightning_difficulty.cli", "evaluate", str(runs["a"]), str(tmp_path / "p.npy")]
    with subprocess.Popen(
        [*command, "--bands", "5000", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        assert process.stdout.readline().strip() == b"["
        process.stdout.close()
        err = process.stderr.read().decode()
        assert process.wait(timeout=120) == 141
    assert "Traceback" not in err and "BrokenPipe" not in err


# ----------------------------------------------------------------------------------------------
# Output folders, damaged inputs and messages (issue 19), help and run folders (issue 22)
# ----------------------------------------------------------------------------------------------


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run a command that must be refused: exit status 2, one `error:` line, no traceback."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"lightning-difficulty {argv[0]}: error: " in err and "Traceback" not in err
    return err


def test_combine_into_one_of_its_runs_is_refused(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _files(runs["a"])
    err = _error(["combine", str(runs["a"]), str(runs["b"]), "-o", str(runs["a"])], capsys)
    assert f"-o {runs['a']} holds a run" in err and f"-o {runs['a']}_2" in err
    assert _files(runs["a"]) == before  # the run's table, summary and records untouched


def test_combine_onto_a_users_own_table_is_refused(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = tmp_path / "analysis"
    mine.mkdir()
    (mine / "scores.parquet").write_bytes(b"the user's own table")
    err = _error(["combine", str(runs["a"]), str(runs["b"]), "-o", str(mine)], capsys)
    assert f"-o {mine} holds a run: 1 file(s) `combine` did not write (scores.parquet)" in err
    assert "new or empty folder" in err  # the fix
    assert _files(mine) == {"scores.parquet": b"the user's own table"}
    # its own earlier output is replaced
    out = tmp_path / "ensemble"
    assert main(["combine", str(runs["a"]), str(runs["b"]), "-o", str(out), "--split", "val"]) == 0
    assert main(["combine", str(runs["a"]), str(runs["b"]), "-o", str(out), "--split", "val"]) == 0
    assert sorted(_files(out)) == [".lightning-difficulty-output.json", "scores.parquet", "summary.json"]


def test_evaluate_logdir_follows_the_same_rule(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "p.npy", _val(runs["a"])["label"].to_numpy())
    before = _files(runs["a"])
    err = _error(["evaluate", str(runs["a"]), str(tmp_path / "p.npy"), "--logdir", str(runs["a"])], capsys)
    assert f"--logdir {runs['a']} holds a run" in err
    assert _files(runs["a"]) == before
    logdir = tmp_path / "logs" / "big_model"
    for _ in range(2):  # a rerun replaces its own figure instead of adding a second event file
        assert main(["evaluate", str(runs["a"]), str(tmp_path / "p.npy"), "--logdir", str(logdir)]) == 0
        events = [name for name in _files(logdir) if name.startswith("events.out.tfevents.")]
        assert len(events) == 1
    capsys.readouterr()


def test_evaluate_refuses_non_finite_logits(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    diverged = tmp_path / "diverged.npy"
    np.save(diverged, np.full((N_VAL, 4), np.nan))
    err = _error(["evaluate", str(runs["a"]), str(diverged)], capsys)
    assert f"{N_VAL} of {N_VAL} rows hold NaN or infinite values" in err and str(diverged) in err
    logits = np.eye(4)[_val(runs["a"])["label"].to_numpy()]
    logits[5, 2] = np.inf
    np.save(diverged, logits)
    err = _error(["evaluate", str(runs["a"]), str(diverged)], capsys)
    assert f"1 of {N_VAL} rows" in err and "the first is row 5" in err


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "does not exist"), (b"not an array", "as a .npy array of numbers"), ("npz", "an .npz archive")],
)
def test_evaluate_names_an_unreadable_predictions_file(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], content: object, message: str
) -> None:
    path = tmp_path / "p.npy"
    if content == "npz":
        with path.open("wb") as handle:
            np.savez(handle, a=np.zeros(3))
    elif isinstance(content, bytes):
        path.write_bytes(content)
    err = _error(["evaluate", str(runs["a"]), str(path)], capsys)
    assert f"PREDICTIONS {path}" in err and message in err and "numpy.save" in err


def _copy_run(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


def test_combine_with_a_missing_folder_names_it(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "seed_7"
    err = _error(["combine", str(runs["a"]), str(missing), "-o", str(tmp_path / "x")], capsys)
    assert f"RUN {missing} does not exist" in err and "record='none'" not in err
    assert not (tmp_path / "x").exists()


def test_combine_names_a_truncated_record(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = _copy_run(runs["b"], tmp_path / "b")
    record = broken / "records" / "val" / "epoch_0001.probs.npy"
    record.write_bytes(record.read_bytes()[:200])
    err = _error(["combine", str(runs["a"]), str(broken), "-o", str(tmp_path / "x"), "--split", "val"], capsys)
    assert f"Could not read {record}" in err and "truncated or damaged" in err and "Rerun" in err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("garbage", "not a readable records manifest"),
        ('{"format": "lightning-difficulty/records", "version": 1}', "missing field 'split'"),
    ],
)
def test_combine_names_a_garbage_manifest(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    broken = _copy_run(runs["b"], tmp_path / "b")
    manifest = broken / "records" / "val" / "manifest.json"
    manifest.write_text(text)
    err = _error(["combine", str(runs["a"]), str(broken), "-o", str(tmp_path / "x"), "--split", "val"], capsys)
    assert str(manifest) in err and message in err and "rerun the run that wrote it" in err


def test_compare_names_a_truncated_table(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = _copy_run(runs["b"], tmp_path / "b")
    table = broken / "scores.parquet"
    table.write_bytes(table.read_bytes()[:100])
    err = _error(["compare", str(runs["a"]), str(broken)], capsys)
    assert f"Could not read {table} as a scores table" in err and "truncated or damaged" in err


def test_an_unexpected_failure_is_one_line_not_a_traceback(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import lightning_difficulty.runs.compare as compare

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("something nobody foresaw")

    monkeypatch.setattr(compare, "compare_runs", broken)
    monkeypatch.delenv("LIGHTNING_DIFFICULTY_TRACEBACK", raising=False)
    assert main(["compare", str(runs["a"]), str(runs["b"])]) == 1
    err = capsys.readouterr().err
    assert "compare: internal error: RuntimeError: something nobody foresaw" in err and "Traceback" not in err
    assert "LIGHTNING_DIFFICULTY_TRACEBACK=1" in err  # how to see more
    monkeypatch.setenv("LIGHTNING_DIFFICULTY_TRACEBACK", "1")
    with pytest.raises(RuntimeError, match="nobody foresaw"):
        main(["compare", str(runs["a"]), str(runs["b"])])


def test_help_lists_each_command_once_and_no_empty_defaults() -> None:
    parser = build_parser()
    top = parser.format_help()
    for name in ("demo", "compare", "combine", "evaluate"):
        assert len([line for line in top.splitlines() if line.strip().startswith(f"{name} ")]) == 1, name
    helps = {name: " ".join(command.format_help().split()) for name, command in _subparsers(parser).items()}
    for name, text in helps.items():
        assert "(default: None)" not in text and "(default: False)" not in text, name
    # -o is required: no default; --split describes its own default: said once
    assert "-o OUT, --out OUT output folder: new, empty, or an earlier combine output (replaced)" in helps["combine"]
    assert "never a run's folder --split SPLIT" in helps["combine"]
    assert helps["combine"].count("(default") == 1 and "(default: every split all runs recorded)" in helps["combine"]
    assert helps["compare"].count("(default") == 3  # --split, --score, and --hard-fraction's own description
    assert "(default: each run's own hard column" in helps["compare"] and "(default: val)" in helps["compare"]
    for default in ("(default: val)", "(default: 10)", "(default: model)"):
        assert default in helps["evaluate"]
    assert "(default: runs/demo)" in helps["demo"] and "(default: 30)" in helps["demo"]


def test_a_run_folder_is_resolved_to_its_difficulty_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("demo", "demo_seed1", "all"):
        (tmp_path / name).mkdir()
    a = _synthetic_run(tmp_path / "demo" / "difficulty", 0)
    b = _synthetic_run(tmp_path / "demo_seed1" / "difficulty", 1)
    assert main(["compare", str(tmp_path / "demo"), str(tmp_path / "demo_seed1"), "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)  # stdout stays pure JSON; the note goes to stderr
    assert result["spearman"] == pytest.approx(spearmanr(a["confusion"], b["confusion"]).statistic)
    assert f"note: RUN_A {tmp_path / 'demo'} holds no per-sample table" in captured.err
    assert f"using {tmp_path / 'demo' / 'difficulty'}, the run inside it" in captured.err
    # two runs inside: refused with both listed, none picked
    _synthetic_run(tmp_path / "all" / "x", 2)
    _synthetic_run(tmp_path / "all" / "y", 3)
    err = _error(["compare", str(tmp_path / "all"), str(tmp_path / "demo")], capsys)
    assert f"RUN_A {tmp_path / 'all'} holds 2 runs ({tmp_path / 'all' / 'x'}, {tmp_path / 'all' / 'y'})" in err
    # no run at all
    (tmp_path / "empty").mkdir()
    err = _error(["compare", str(tmp_path / "empty"), str(tmp_path / "demo")], capsys)
    assert "holds no per-sample table (scores.parquet), nor does any folder" in err
