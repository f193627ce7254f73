"""Write what the dashboard needs beside the per-sample table: projection, thumbnails, neighbours.

Everything goes to ``<run_dir>/dashboard/`` and every file is written atomically; the descriptor
``dashboard.json`` is written last, so a reader never sees it point at a missing file.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from lightning_difficulty.dashboard.projection import Method, project_2d
from lightning_difficulty.storage.atomic import write_json, write_npy

__all__ = ["ASSETS_FORMAT", "DEFAULT_THUMBNAIL_BUDGET", "write_dashboard_assets"]

ASSETS_FORMAT = "lightning-difficulty/dashboard"
DEFAULT_THUMBNAIL_BUDGET = 64 * 2**20  # bytes for all thumbnails of all splits together
MAX_THUMBNAIL_SIDE = 32
MIN_THUMBNAIL_SIDE = 8
_CHUNK = 512

ImageFetcher = Callable[[str, Sequence[int]], torch.Tensor]
Neighbours = Mapping[str, Mapping[str, tuple[np.ndarray, np.ndarray]]]


def write_dashboard_assets(
    run_dir: Path,
    table: pd.DataFrame,
    *,
    class_names: Sequence[str],
    embeddings: Mapping[str, np.ndarray] | None = None,
    images: ImageFetcher | None = None,
    neighbours: Neighbours | None = None,
    probe_names: Sequence[str] | None = None,
    projection: Method = "pca",
    thumbnail_budget: int = DEFAULT_THUMBNAIL_BUDGET,
) -> Path:
    """Write the dashboard's assets for one run and return the folder ``<run_dir>/dashboard/``.

    Any subset of the optional inputs may be given: without ``embeddings`` there is no projection
    view, without ``images`` no thumbnails, without ``neighbours`` no neighbour strips.

    Args:
        run_dir: the run's difficulty folder (holding ``scores.parquet``).
        table: the per-sample table, one row per (split, index).
        class_names: one name per class.
        embeddings: split -> ``(N, d)`` penultimate-layer embedding, row ``i`` = dataset index ``i``.
        images: ``(split, dataset indices) -> stacked inputs``; ``None`` when inputs are not images.
        neighbours: split -> probe -> ``(distances (N, k), training-set ids (N, k))``.
        probe_names: the probes in forward order, ``"input"`` first.
        projection: ``"pca"`` (any size) or ``"tsne"`` (scikit-learn, at most 20,000 samples per split).
        thumbnail_budget: bytes allowed for all thumbnails; their side shrinks to fit (8 to 32 pixels).

    Example::

        write_dashboard_assets(run_dir, table, class_names=["cat", "dog"],
                               embeddings={"val": emb}, probe_names=["input", "layer1"])
    """
    run_dir = Path(run_dir)
    sizes = _split_sizes(table)
    if len(class_names) == 0:
        raise ValueError("Expected argument `class_names` to hold one name per class, but got an empty sequence.")
    out = run_dir / "dashboard"
    out.mkdir(parents=True, exist_ok=True)
    keys = {split: f"s{i}" for i, split in enumerate(sizes)}
    splits: dict[str, dict[str, Any]] = {s: {"key": keys[s], "num_samples": n} for s, n in sizes.items()}
    for split, emb in (embeddings or {}).items():
        _check_split(split, sizes, "embeddings")
        arr = np.asarray(emb)
        if arr.ndim != 2 or arr.shape[0] != sizes[split]:
            raise ValueError(
                f"Expected embeddings[{split!r}] to have shape ({sizes[split]}, d), one row per sample of the"
                f" split, but got {arr.shape}."
            )
        coords = project_2d(arr, method=projection)
        name = f"projection_{keys[split]}.npy"
        write_npy(out / name, coords)
        splits[split]["projection"] = {"file": name, "method": projection, "dim": int(arr.shape[1])}
    probes = list(probe_names) if probe_names is not None else None
    for split, per_probe in (neighbours or {}).items():
        _check_split(split, sizes, "neighbours")
        splits[split]["neighbours"] = _write_neighbours(out, keys[split], split, sizes[split], per_probe, probes)
    thumbnails = _write_thumbnails(out, table, sizes, images, thumbnail_budget) if images is not None else None
    if thumbnails is not None:
        for split, entry in thumbnails.pop("splits").items():
            splits[split]["thumbnails"] = entry
    descriptor = {
        "format": ASSETS_FORMAT,
        "version": 1,
        "class_names": [str(c) for c in class_names],
        "probes": probes,
        "splits": splits,
        "thumbnails": thumbnails,
    }
    write_json(out / "dashboard.json", descriptor)
    return out


def _split_sizes(table: pd.DataFrame) -> dict[str, int]:
    missing = [c for c in ("split", "index") if c not in table.columns]
    if missing:
        raise ValueError(f"Expected argument `table` to have columns 'split' and 'index', but {missing} are missing.")
    sizes: dict[str, int] = {}
    for split, rows in table.groupby("split", sort=False):
        index = np.sort(rows["index"].to_numpy(dtype=np.int64))
        if not np.array_equal(index, np.arange(index.size)):
            raise ValueError(
                f"Expected the rows of split {split!r} in argument `table` to hold every dataset index 0..N-1 once,"
                f" but got {index.size} rows with indices in [{index.min()}, {index.max()}]."
            )
        sizes[str(split)] = int(index.size)
    return sizes


def _check_split(split: str, sizes: Mapping[str, int], argument: str) -> None:
    if split not in sizes:
        raise ValueError(
            f"Expected the splits of argument `{argument}` to be among the table's splits {list(sizes)}, got {split!r}."
        )


def _write_neighbours(
    out: Path,
    key: str,
    split: str,
    size: int,
    per_probe: Mapping[str, tuple[np.ndarray, np.ndarray]],
    probes: list[str] | None,
) -> dict[str, Any]:
    names = list(per_probe)
    if probes is not None:
        unknown = [p for p in names if p not in probes]
        if unknown:
            raise ValueError(
                f"Expected the probes of neighbours[{split!r}] to be among probe_names {probes}, got {unknown}."
            )
        names = [p for p in probes if p in per_probe]
    k = 0
    for probe in names:
        dist, ids = (np.asarray(a) for a in per_probe[probe])
        if dist.shape != ids.shape or dist.ndim != 2 or dist.shape[0] != size:
            raise ValueError(
                f"Expected neighbours[{split!r}][{probe!r}] to be (distances, ids) of equal shape ({size}, k),"
                f" but got {dist.shape} and {ids.shape}."
            )
        k = max(k, dist.shape[1])
    all_ids = np.full((size, len(names), k), -1, dtype=np.int32)
    all_dist = np.full((size, len(names), k), np.nan, dtype=np.float32)
    for p, probe in enumerate(names):
        dist, ids = (np.asarray(a) for a in per_probe[probe])
        all_ids[:, p, : ids.shape[1]] = ids
        all_dist[:, p, : dist.shape[1]] = dist
    ids_name, dist_name = f"neighbours_ids_{key}.npy", f"neighbours_distances_{key}.npy"
    write_npy(out / ids_name, all_ids)
    write_npy(out / dist_name, all_dist)
    return {"ids": ids_name, "distances": dist_name, "probes": names, "k": int(k), "reference_split": "train"}


def thumbnail_side(total: int, height: int, budget: int) -> int:
    """Side of square RGB thumbnails so that ``total`` of them fit in ``budget`` bytes.

    Example::

        >>> thumbnail_side(50_000, 32, 64 * 2**20), thumbnail_side(100, 28, 64 * 2**20)
        (21, 28)
    """
    fit = math.isqrt(max(budget, 0) // max(3 * total, 1))
    return max(MIN_THUMBNAIL_SIDE, min(MAX_THUMBNAIL_SIDE, height, fit))


def _thumbnailed_splits(sizes: Mapping[str, int], budget: int) -> dict[str, int]:
    """The splits that get thumbnails: all when they fit ``budget`` at the smallest side, else the validation
    splits that fit (a training set of ImageNet size would mean reading every image once more), with a warning.

    Example::

        >>> _thumbnailed_splits({"train": 1_281_167, "val": 50_000}, 64 * 2**20)
        {'val': 50000}
    """
    per_row = 3 * MIN_THUMBNAIL_SIDE**2
    if sum(sizes.values()) * per_row <= budget:
        return dict(sizes)
    chosen: dict[str, int] = {}
    for split, size in sizes.items():
        if split != "train" and (sum(chosen.values()) + size) * per_row <= budget:
            chosen[split] = size
    left_out = [split for split in sizes if split not in chosen]
    warnings.warn(
        f"Dashboard: thumbnails of {sum(sizes.values()):,} samples do not fit thumbnail_budget={budget:,} bytes at "
        f"{MIN_THUMBNAIL_SIDE}x{MIN_THUMBNAIL_SIDE} pixels; splits {left_out} get none (a larger budget keeps them).",
        stacklevel=3,
    )
    return chosen


def _write_thumbnails(
    out: Path, table: pd.DataFrame, sizes: Mapping[str, int], images: ImageFetcher, budget: int
) -> dict[str, Any] | None:
    from lightning_difficulty.views.images import to_display_images

    sizes = _thumbnailed_splits(sizes, budget)
    if not sizes:
        return None
    first_split = next(iter(sizes))
    probe = to_display_images(images(first_split, [0]))
    side = thumbnail_side(sum(sizes.values()), int(probe.shape[-2]), budget)
    total = sum(sizes.values())
    sheet = np.zeros((total, side, side, 3), dtype=np.uint8)
    entries: dict[str, dict[str, int]] = {}
    offset = 0
    for split, size in sizes.items():
        for start in range(0, size, _CHUNK):
            idx = list(range(start, min(size, start + _CHUNK)))
            batch = torch.as_tensor(to_display_images(images(split, idx)))
            if batch.shape[0] != len(idx):
                raise ValueError(
                    f"Expected argument `images` to return {len(idx)} inputs for split {split!r}, got {batch.shape[0]}."
                )
            small = torch.nn.functional.interpolate(batch, size=(side, side), mode="area")
            pixels = (small.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
            sheet[offset + start : offset + start + len(idx)] = pixels
        entries[split] = {"offset": offset, "count": size}
        offset += size
    write_npy(out / "thumbnails.npy", sheet)
    return {"file": "thumbnails.npy", "side": side, "channels": 3, "splits": entries}
