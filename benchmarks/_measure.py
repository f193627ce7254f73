"""Helpers shared by the scale benchmarks (no heavy imports: spawned children import them)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under ``folder`` (0 when it does not exist)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def quiet_lightning() -> None:
    """No "GPU available" lines and no library deprecation notes at every one of the many fits."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*isinstance\\(treespec, LeafSpec\\).*")
