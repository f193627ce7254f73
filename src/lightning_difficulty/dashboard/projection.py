"""2-D projections of penultimate-layer embeddings for the dashboard's scatter view."""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["TSNE_MAX_SAMPLES", "project_2d"]

TSNE_MAX_SAMPLES = 20_000
_BLOCK = 65_536  # rows read at a time: embeddings may be (N, d) memmaps larger than memory
Method = Literal["pca", "tsne"]


def project_2d(embeddings: ArrayLike, *, method: Method = "pca", seed: int = 0) -> NDArray[np.float32]:
    """Project ``(N, d)`` embeddings to ``(N, 2)`` float32 coordinates.

    ``"pca"``: the two leading principal components (eigenvectors of the covariance), each signed so
    that its largest-magnitude loading is positive (deterministic). ``"tsne"``: scikit-learn's t-SNE
    initialised from PCA, for at most :data:`TSNE_MAX_SAMPLES` samples.

    Example::

        >>> x = np.array([[0.0, 0.0], [2.0, 0.0], [4.0, 0.0]])
        >>> np.round(np.abs(project_2d(x)[:, 0]), 3).tolist()
        [2.0, 0.0, 2.0]
    """
    x = embeddings if isinstance(embeddings, np.ndarray) else np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"Expected argument `embeddings` to have shape (N, d) with N >= 1, but got {x.shape}.")
    if not all(np.isfinite(_rows(x, s)).all() for s in range(0, x.shape[0], _BLOCK)):
        raise ValueError("Expected argument `embeddings` to be finite, but it holds NaN or infinite values.")
    if method == "pca":
        return _pca(x)
    if method == "tsne":
        if x.shape[0] > TSNE_MAX_SAMPLES:
            raise ValueError(
                f"Expected at most {TSNE_MAX_SAMPLES} samples for method='tsne', but got {x.shape[0]}."
                " Use method='pca' for large splits."
            )
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(2.0, (x.shape[0] - 1) / 3)))
        tsne = TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed)
        return np.asarray(tsne.fit_transform(np.asarray(x, dtype=np.float64)), dtype=np.float32)
    raise ValueError(f"Expected argument `method` to be 'pca' or 'tsne', but got {method!r}.")


def _pca(x: np.ndarray) -> NDArray[np.float32]:
    """Two leading principal components, ``_BLOCK`` rows at a time: O(d^2) memory besides the (N, 2) output."""
    n = x.shape[0]
    out = np.zeros((n, 2), dtype=np.float32)
    if n < 2:
        return out
    mean = sum((_rows(x, s).sum(axis=0) for s in range(0, n, _BLOCK)), np.zeros(x.shape[1])) / n
    scatter = np.zeros((x.shape[1], x.shape[1]))
    for start in range(0, n, _BLOCK):
        centred = _rows(x, start) - mean
        scatter += centred.T @ centred
    values, vectors = np.linalg.eigh(scatter / (n - 1))
    axes = vectors[:, np.argsort(values)[::-1][:2]]
    axes *= np.where(axes[np.abs(axes).argmax(axis=0), [0, 1]] >= 0, 1.0, -1.0)  # largest loading positive
    for start in range(0, n, _BLOCK):
        out[start : start + _BLOCK] = (_rows(x, start) - mean) @ axes
    return out


def _rows(x: np.ndarray, start: int) -> NDArray[np.float64]:
    return np.asarray(x[start : start + _BLOCK], dtype=np.float64)
