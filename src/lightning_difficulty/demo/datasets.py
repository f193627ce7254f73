"""Loaders for real data that ship with a package or sit on a local path (nothing is downloaded)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
DIGITS_CLASSES = [str(d) for d in range(10)]


class ArrayDataset(Dataset):
    """Images (N, C, H, W) float32 and integer targets; exposes ``targets`` for label fingerprints.

    Optional ``augment`` flips images horizontally at random and shifts them by up to 4 pixels
    (for CIFAR-10 training).
    """

    def __init__(self, images: np.ndarray | Tensor, targets: np.ndarray, *, augment: bool = False) -> None:
        if len(images) != len(targets):
            raise ValueError(f"`images` has {len(images)} rows but `targets` has {len(targets)}.")
        self.images = torch.as_tensor(images, dtype=torch.float32)
        self.targets = np.asarray(targets, dtype=np.int64)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image = self.images[index]
        if self.augment:
            if torch.rand(()) < 0.5:
                image = image.flip(-1)
            dx, dy = torch.randint(-4, 5, (2,)).tolist()
            image = torch.roll(image, shifts=(dy, dx), dims=(-2, -1))
        return image, int(self.targets[index])


@dataclass
class Splits:
    """A train/validation pair of datasets with class names."""

    train: ArrayDataset
    val: ArrayDataset
    class_names: list[str]


def load_digits_splits(*, val_fraction: float = 0.2, seed: int = 0) -> Splits:
    """scikit-learn's bundled handwritten digits (1,797 8x8 grey images), split by a seeded shuffle.

    ``seed`` chooses the split only; the demo keeps the default, so every demo run (whatever its
    training seed) has the same 1,438 training and 359 validation images at the same indices.

    Example::

        >>> s = load_digits_splits()
        >>> len(s.train), len(s.val), tuple(s.train[0][0].shape)
        (1438, 359, (1, 8, 8))
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images.astype(np.float32) / 16.0 - 0.5) / 0.5
    order = np.random.default_rng(seed).permutation(len(images))
    n_val = round(len(images) * val_fraction)
    val_idx, train_idx = order[:n_val], order[n_val:]
    return Splits(
        ArrayDataset(images[train_idx, None], digits.target[train_idx]),
        ArrayDataset(images[val_idx, None], digits.target[val_idx]),
        DIGITS_CLASSES,
    )


CIFAR10_MEAN = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32)
CIFAR10_STD = np.array([0.2470, 0.2435, 0.2616], dtype=np.float32)


def default_data_dir() -> Path | None:
    """``../shared/data`` relative to the working directory, when it exists."""
    candidate = Path("../shared/data")
    return candidate if candidate.exists() else None


def load_cifar10_splits(
    data_dir: str | Path,
    *,
    train_subset: int | None = None,
    test_subset: int | None = None,
    augment: bool = True,
    seed: int = 0,
) -> Splits:
    """CIFAR-10 from ``cifar10_train.npz`` / ``cifar10_test.npz`` (keys ``x`` (N,32,32,3) uint8, ``y``).

    The test split keeps the official order so CIFAR-10H rows line up; ``test_subset`` takes the
    first ``n`` test images. ``train_subset`` takes a seeded class-stratified random subset.
    """
    root = Path(data_dir)
    train_file, test_file = root / "cifar10_train.npz", root / "cifar10_test.npz"
    for path in (train_file, test_file):
        if not path.exists():
            raise FileNotFoundError(
                f"CIFAR-10 file {path} not found. Pass --data-dir pointing at the folder with cifar10_train.npz, "
                "cifar10_test.npz and cifar10h.npz (see ../shared/data/README.md)."
            )
    train, test = np.load(train_file), np.load(test_file)
    x_train, y_train, x_test, y_test = train["x"], train["y"], test["x"], test["y"]
    if train_subset is not None and train_subset < len(y_train):
        rng = np.random.default_rng(seed)
        keep = np.sort(rng.permutation(len(y_train))[:train_subset])
        x_train, y_train = x_train[keep], y_train[keep]
    if test_subset is not None:
        x_test, y_test = x_test[:test_subset], y_test[:test_subset]
    return Splits(
        ArrayDataset(_normalise_cifar(x_train), y_train, augment=augment),
        ArrayDataset(_normalise_cifar(x_test), y_test),
        CIFAR10_CLASSES,
    )


def _normalise_cifar(x: np.ndarray) -> np.ndarray:
    scaled = x.astype(np.float32) / 255.0
    return ((scaled - CIFAR10_MEAN) / CIFAR10_STD).transpose(0, 3, 1, 2).copy()
