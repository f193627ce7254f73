"""Progress of the fit-end stages: shown on a terminal, silent with enable_progress_bar=False or off a terminal."""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from lightning_difficulty import ConfusionScore, DataDifficulty, DifficultyReport, PredictionDepth, TrainingDynamics
from lightning_difficulty.pipeline import progress as progress_module
from lightning_difficulty.pipeline.neighbours import ProbeConfig, neighbours_by_split
from lightning_difficulty.pipeline.progress import Progress
from tests.helpers_integration import ImageMLP, fit, image_blobs


class FakeTerminal(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True


class NotATerminal(io.StringIO):
    def isatty(self) -> bool:
        return False


def _fit_with(
    tmp_path: Path, stderr: io.StringIO, monkeypatch: pytest.MonkeyPatch, *, enable_progress_bar: bool
) -> str:
    """Every fit-end callback on tiny images, stderr replaced; returns what was written to it."""
    monkeypatch.setattr(sys, "stderr", stderr)
    callbacks = [
        ConfusionScore(),
        TrainingDynamics(),
        PredictionDepth(k=3),
        DataDifficulty(k=3),
        DifficultyReport(dirpath=tmp_path / "run", grid_per_class=0),
    ]
    train, val = image_blobs(40), image_blobs(20, seed=1)
    fit(tmp_path, ImageMLP(), callbacks, train, val, enable_progress_bar=enable_progress_bar)
    return stderr.getvalue()


# the stage names every fit-end bar shows: the report's stages, the capture pass and each search
EXPECTED = [
    "difficulty report: capture pass",
    "difficulty pass [train]",
    "difficulty pass [val]",
    "difficulty report: ConfusionScore",
    "difficulty report: TrainingDynamics",
    "difficulty report: PredictionDepth",
    "k-NN search [input]",  # the input probe, shared with DataDifficulty's kDN search
    "k-NN search [hidden]",
    "k-NN search [out]",
    "difficulty report: DataDifficulty",
    "difficulty report: table and summary",
    "difficulty report: dashboard",
    "difficulty report: views",
]


@pytest.mark.slow
def test_every_fit_end_stage_shows_on_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shown = _fit_with(tmp_path, FakeTerminal(), monkeypatch, enable_progress_bar=True)
    positions = [shown.find(name) for name in EXPECTED]
    assert all(p >= 0 for p in positions), [n for n, p in zip(EXPECTED, positions, strict=True) if p < 0]
    assert positions == sorted(positions)  # in the order they run
    # each search names the cost model's estimate; 40 train + 20 val queries per search
    for probe in ("input", "hidden", "out"):
        assert re.search(rf"k-NN search \[{probe}\] \((under 1 s|about \d+ s) by the cost model\).*0/60", shown)
    # the report's bar: 4 difficulty callbacks + capture, table, dashboard and views = 8 stages
    assert "difficulty report: 100%" in shown and "8/8 stages" in shown


@pytest.mark.slow
def test_nothing_shown_with_enable_progress_bar_false(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shown = _fit_with(tmp_path, FakeTerminal(), monkeypatch, enable_progress_bar=False)
    assert "difficulty" not in shown and "k-NN" not in shown and "%|" not in shown, shown[:500]
    assert (tmp_path / "run" / "scores.parquet").is_file()  # the fit end ran


@pytest.mark.slow
def test_nothing_shown_when_stderr_is_not_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shown = _fit_with(tmp_path, NotATerminal(), monkeypatch, enable_progress_bar=True)
    assert "difficulty" not in shown and "k-NN" not in shown and "%|" not in shown, shown[:500]
    assert (tmp_path / "run" / "scores.parquet").is_file()


@pytest.mark.parametrize(
    ("rank", "bar", "tty", "expected"),
    [(0, object(), True, True), (1, object(), True, False), (0, None, True, False), (0, object(), False, False)],
)
def test_progress_of_rank_bar_and_terminal(
    monkeypatch: pytest.MonkeyPatch, rank: int, bar: object, tty: bool, expected: bool
) -> None:
    monkeypatch.setattr(sys, "stderr", FakeTerminal() if tty else NotATerminal())
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    trainer = SimpleNamespace(global_rank=rank, progress_bar_callback=bar)
    assert Progress.of(trainer).enabled is expected  # type: ignore[arg-type]


def test_search_bar_counts_queries_with_the_estimate(monkeypatch: pytest.MonkeyPatch) -> None:
    stderr = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", stderr)
    monkeypatch.setattr(progress_module, "_on_gpu", lambda use_gpu, index: False)
    rng = np.random.default_rng(0)
    reference = rng.standard_normal((50, 4)).astype(np.float32)
    queries = {"train": reference, "val": rng.standard_normal((7, 4)).astype(np.float32)}
    rows = {"train": np.arange(0, 50, 5)}  # 10 training rows searched
    neighbours_by_split(reference, queries, ProbeConfig(3), rows=rows, progress=Progress(True), name="probe-x")
    shown = stderr.getvalue()
    assert "k-NN search [probe-x] (under 1 s by the cost model)" in shown
    assert "0/17" in shown  # 10 training rows + 7 validation rows


def test_estimate_matches_the_cost_formula(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress_module, "_on_gpu", lambda use_gpu, index: False)
    import lightning_difficulty.pipeline.cost as cost

    monkeypatch.setattr(cost, "search_rate", lambda: 1e9)
    seconds = progress_module.search_estimate(Progress(True), 10_000, 2_000, 64, index="flat", world=2, use_gpu=False)
    # exact search: EXACT_SCALE (1.18) x 2 N Q d / world / rate, by hand
    assert seconds == pytest.approx(1.18 * 2 * 5_000 * 2_000 * 64 / 1e9, rel=1e-12)
    assert progress_module.search_estimate(Progress(False), 10, 2, 4, index="flat", world=1, use_gpu=False) is None


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, ""),
        (0.2, " (under 1 s by the cost model)"),
        (42.4, " (about 42 s by the cost model)"),
        (600.0, " (about 10 min by the cost model)"),
        (7200.0, " (about 2.0 h by the cost model)"),
        (float("nan"), ""),
    ],
)
def test_estimate_text(seconds: float | None, text: str) -> None:
    assert progress_module._estimate_text(seconds) == text


def test_silent_progress_passes_items_through() -> None:
    stages = Progress(False).stages("report", total=1)
    with stages.step("only"):
        items = list(Progress(False).iterate(iter([3, 1, 2]), "pass"))
    stages.close()
    assert items == [3, 1, 2]
