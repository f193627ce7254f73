"""Smoke test of examples/groupdro_retrain.py: a tiny digits run end to end."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from tests.helpers import load_example

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "groupdro_retrain.py"
TRAIN, VAL = 200, 100
TINY = ["--epochs", "2", "--train-subset", str(TRAIN), "--test-subset", str(VAL), "--width", "4"]


@pytest.fixture(scope="module")
def example() -> Iterator[ModuleType]:
    threads, level = torch.get_num_threads(), logging.getLogger("lightning.pytorch").level
    yield load_example(EXAMPLE, "groupdro_retrain")
    torch.set_num_threads(threads)  # main() sets the thread count and quiets Lightning for the process
    logging.getLogger("lightning.pytorch").setLevel(level)


@pytest.fixture(scope="module")
def run(example: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("groupdro")
    return example.main([*TINY, "--out", str(out)]), out


def test_both_methods_with_accuracies_in_range(run: tuple[dict[str, Any], Path]) -> None:
    results, _ = run
    assert set(results["methods"]) == {"ERM", "GroupDRO"}
    for acc in results["methods"].values():
        values = [acc["average"], acc["worst_group"], acc["hard_subset"], *acc["groups"].values()]
        assert all(0.0 <= v <= 1.0 for v in values)
        assert acc["worst_group"] <= acc["average"]
        assert acc["worst_group"] == min(acc["groups"].values())


def test_group_accuracies_recombine_to_the_average(run: tuple[dict[str, Any], Path]) -> None:
    # The average is the size-weighted mean of the per-group accuracies (every val sample has a group).
    results, _ = run
    sizes = results["groups"]["val_sizes"]
    assert sum(sizes) == VAL
    for acc in results["methods"].values():
        weighted = sum(sizes[int(g)] * a for g, a in acc["groups"].items()) / VAL
        assert weighted == pytest.approx(acc["average"])


def test_groups_are_two_train_quantile_bands(run: tuple[dict[str, Any], Path]) -> None:
    results, out = run
    groups = results["groups"]
    assert groups["method"] == "quantile" and len(groups["edges"]) == 1
    assert sum(groups["train_sizes"]) == TRAIN and abs(groups["train_sizes"][0] - groups["train_sizes"][1]) <= 1
    assert groups["val_hard"] == VAL // 10  # the report's hard subset: top 10 % of val
    assert len(results["groupdro_q"]) == 2 and sum(results["groupdro_q"]) == pytest.approx(1.0, abs=1e-3)
    manifest = json.loads((out / "difficulty" / "groups.json").read_text())
    assert manifest["edges"] == pytest.approx(groups["edges"])


def test_outputs_written(run: tuple[dict[str, Any], Path]) -> None:
    results, out = run
    assert json.loads((out / "results.json").read_text())["methods"] == results["methods"]
    table = (out / "results.md").read_text()
    assert "| ERM |" in table and "| GroupDRO |" in table and "hard band" in table


def test_threshold_outside_the_scores_is_refused(example: ModuleType, tmp_path: Path) -> None:
    # Digits confusion never exceeds log(10) = 2.30 nats, so a 5-nat edge leaves the hard band empty.
    with pytest.raises(SystemExit, match="leave a training band empty"):
        example.main([*TINY, "--epochs", "1", "--threshold", "5", "--out", str(tmp_path)])
