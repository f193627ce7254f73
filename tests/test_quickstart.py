"""examples/quickstart.py (the README's Usage) runs as printed and says where its results went."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"


@pytest.mark.slow
def test_quickstart_runs_and_prints_where_the_results_are(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT)], cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = re.search(
        r"Per-sample table: (\S+/scores\.parquet) \((\d+) rows\); summary: (\S+/summary\.json)", done.stdout
    )
    assert found is not None, done.stdout
    table_path, summary_path = tmp_path / found.group(1), tmp_path / found.group(3)
    assert table_path.parent == tmp_path / "runs" / "quickstart" / "lightning_logs" / "version_0" / "difficulty"
    assert summary_path.is_file()
    # the TensorBoard command of the environment the script ran in, whatever it is
    assert f"TensorBoard: {sys.executable} -m tensorboard.main --logdir runs/quickstart" in done.stdout

    table = pd.read_parquet(table_path)
    digits = load_digits()
    is_val = np.arange(len(digits.target)) % 5 == 0
    assert int(found.group(2)) == len(table) == len(digits.target)
    val = table[table["split"] == "val"].sort_values("index")
    np.testing.assert_array_equal(val["label"].to_numpy(), digits.target[is_val])  # row = dataset index
    assert {"confusion", "prediction_depth", "kdn"} <= set(table.columns)
    assert table["confusion"].between(0.0, math.log(10)).all()  # entropy in nats, 10 classes
    for index in val.nlargest(5, "confusion")["index"]:  # the 5 hardest, as printed
        assert re.search(rf"^\s*\d+\s+{index}\s", done.stdout, re.MULTILINE), f"index {index} not printed"
