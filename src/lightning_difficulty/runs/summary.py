"""Read a finished run's ``summary.json`` and find one callback's entry in it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    """The run's ``summary.json`` (``run_dir`` is the difficulty folder that holds it).

    Example::

        summary = read_summary("runs/demo/difficulty")
        summary["splits"]["val"]["accuracy"]
    """
    path = Path(run_dir) / "summary.json"
    if not path.exists():
        raise FileNotFoundError(f"No summary at {path}. Pass the run's difficulty folder (with summary.json).")
    return json.loads(path.read_text())


def measure_summary(summary: dict[str, Any], callback: str) -> dict[str, Any]:
    """The entry of the first callback of class ``callback`` (``summary["measures"]`` is keyed by state key);
    ``{}`` when the run had none.

    Example::

        >>> measure_summary({"measures": {"PredictionDepth{'k': 30}": {"callback": "PredictionDepth", "k": 30}}},
        ...                 "PredictionDepth")["k"]
        30
    """
    return next((m for m in summary.get("measures", {}).values() if m.get("callback") == callback), {})
