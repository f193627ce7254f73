"""A synthetic run (table, columns.json and dashboard assets) for demos, tests and benchmarks.

The numbers are random but shaped like a real run: harder samples are wrong more often, settle at
deeper probes and have more disagreeing neighbours. Nothing here is a measurement.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lightning_difficulty.dashboard.assets import write_dashboard_assets
from lightning_difficulty.storage.atomic import atomic_path, write_json

__all__ = ["synthetic_images", "synthetic_run", "synthetic_table"]

PATTERNS = ("1a", "1b", "2a", "2b", "3a", "3b", "4a", "4b", "5a", "5b", "6")
ERRORS = ("fine-grained", "multi-label", "spurious", "major")


def _probe_names(num_probes: int) -> list[str]:
    return ["input"] + [f"layer{p}" for p in range(1, num_probes)]


def synthetic_table(
    sizes: Mapping[str, int], *, num_classes: int = 10, num_probes: int = 6, seed: int = 0
) -> pd.DataFrame:
    """A per-sample table with the columns the report writes, one row per (split, index).

    Example::

        >>> t = synthetic_table({"val": 20}, num_classes=3, num_probes=2)
        >>> len(t), sorted(set(t["label"])) == [0, 1, 2], "knn:layer1" in t
        (20, True, True)
    """
    rng = np.random.default_rng(seed)
    probes = _probe_names(num_probes)
    frames = []
    for split, n in sizes.items():
        label = rng.integers(0, num_classes, n)
        hardness = rng.beta(1.2, 3.0, n)
        wrong = rng.random(n) < hardness * 0.8
        prediction = np.where(wrong, (label + rng.integers(1, num_classes, n)) % num_classes, label)
        votes = np.empty((num_probes, n), dtype=np.int64)
        for p in range(num_probes):
            agree = rng.random(n) < (p + 1) / num_probes * (1.0 - 0.5 * hardness) + 0.2
            votes[p] = np.where(agree, prediction, rng.integers(0, num_classes, n))
        disagree = votes[::-1] != prediction[None, :]
        depth = np.where(disagree.any(0), num_probes - disagree.argmax(0), 0)
        confusion = hardness * 2.3 + rng.normal(0, 0.1, n).clip(-0.05, None)
        if split == "train":
            confusion[rng.random(n) < 0.01] = np.nan
        band = np.minimum((np.nan_to_num(confusion) / 0.25).astype(np.int64), 9)
        frame = {
            "split": split,
            "index": np.arange(n, dtype=np.int64),
            "label": label,
            "prediction": prediction,
            "correct": prediction == label,
            "confusion": confusion,
            "confusion_band": np.where(np.isnan(confusion), -1, band),
            "group": (np.nan_to_num(confusion) > 1.0).astype(np.int64),
            "hard": np.nan_to_num(confusion) > np.nanquantile(confusion, 0.9),
            "prediction_depth": depth.astype(np.int64),
        }
        for p, probe in enumerate(probes):
            frame[f"knn:{probe}"] = votes[p]
            frame[f"kdn:{probe}"] = np.clip(hardness * (1 - p / (2 * num_probes)) + rng.normal(0, 0.1, n), 0, 1)
        frame["kdn"] = frame["kdn:input"]
        human = np.clip(hardness + rng.normal(0, 0.15, n), 0, 1) if split != "train" else np.full(n, np.nan)
        frame["human_difficulty"] = human
        frame["pattern"] = np.asarray(PATTERNS, dtype=object)[rng.integers(0, len(PATTERNS), n)]
        frame["error_category"] = np.where(
            frame["correct"], "correct", np.asarray(ERRORS, dtype=object)[rng.integers(0, len(ERRORS), n)]
        )
        frames.append(pd.DataFrame(frame))
    return pd.concat(frames, ignore_index=True)


def synthetic_images(sizes: Mapping[str, int], labels: Mapping[str, np.ndarray], side: int = 8):  # type: ignore[no-untyped-def]
    """An ``images(split, indices)`` callable: a tinted square per class, with the index in its pixels."""

    def images(split: str, indices: Sequence[int]) -> torch.Tensor:
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= sizes[split]):
            raise IndexError(f"index out of range for split {split!r}")
        out = np.zeros((idx.size, 3, side, side), dtype=np.float32)
        lab = labels[split][idx]
        out[:, 0] = ((lab * 37) % 255 / 255.0)[:, None, None]
        out[:, 1] = ((lab * 91) % 255 / 255.0)[:, None, None]
        out[:, 2, : side // 2] = ((idx % 251) / 250.0)[:, None, None]
        return torch.from_numpy(out)

    return images


def synthetic_run(
    run_dir: str | Path,
    sizes: Mapping[str, int],
    *,
    num_classes: int = 10,
    num_probes: int = 6,
    k: int = 5,
    seed: int = 0,
    images: bool = True,
    with_columns_json: bool = True,
) -> pd.DataFrame:
    """Write ``scores.parquet``, ``columns.json`` and the dashboard assets of a synthetic run to ``run_dir``.

    Example::

        table = synthetic_run("runs/synthetic/difficulty", {"train": 500, "val": 200})
    """
    run_dir = Path(run_dir)
    table = synthetic_table(sizes, num_classes=num_classes, num_probes=num_probes, seed=seed)
    with atomic_path(run_dir / "scores.parquet") as tmp:
        table.to_parquet(tmp, index=False)
    probes = _probe_names(num_probes)
    if with_columns_json:
        write_json(run_dir / "columns.json", _columns_json(table, probes))
    rng = np.random.default_rng(seed + 1)
    parts = {str(s): rows for s, rows in table.groupby("split", sort=False)}
    embeddings = {}
    centres = rng.normal(0, 3, (num_classes, 16))
    for split, rows in parts.items():
        lab = rows["prediction"].to_numpy()
        spread = 0.6 + 2 * rows["kdn"].to_numpy()[:, None]
        embeddings[split] = centres[lab] + rng.normal(0, 1, (len(rows), 16)) * spread
    reference = sizes.get("train", next(iter(sizes.values())))
    neighbours = {}
    for split, rows in parts.items():
        n = len(rows)
        neighbours[split] = {
            probe: (np.sort(rng.random((n, k)), axis=1) * (p + 1), rng.integers(0, reference, (n, k)))
            for p, probe in enumerate(probes)
        }
    labels = {split: rows["label"].to_numpy() for split, rows in parts.items()}
    write_dashboard_assets(
        run_dir,
        table,
        class_names=[f"class{c}" for c in range(num_classes)],
        embeddings=embeddings,
        images=synthetic_images(dict(sizes), labels) if images else None,
        neighbours=neighbours if "train" in sizes else None,
        probe_names=probes,
    )
    return table


def _columns_json(table: pd.DataFrame, probes: list[str]) -> dict[str, object]:
    described = {
        "confusion": ("mean confusion over training (higher = harder)", "nats", True, True),
        "prediction_depth": ("first probe from which the k-NN votes agree with the model", None, True, False),
        "kdn": ("share of input-space neighbours with another label", None, True, True),
        "human_difficulty": ("share of annotators who disagree with the label", None, True, True),
    }
    for probe in probes:
        described[f"kdn:{probe}"] = (f"kDN at probe {probe}", None, True, False)
    columns = {}
    for name in table.columns:
        description, unit, harder, perspective = described.get(str(name), (str(name), None, None, False))
        columns[str(name)] = {
            "description": description,
            "unit": unit,
            "range": None,
            "higher_is_harder": harder,
            "perspective": perspective,
        }
    return {"format": "lightning-difficulty/columns", "version": 1, "columns": columns}
