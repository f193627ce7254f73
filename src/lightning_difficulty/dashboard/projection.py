"""2-D projections of penultimate-layer embeddings for the dashboard's scatter view."""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["TSNE_MAX_SAMPLES", "project_2d"]

TSNE_MAX_SAMPLES = 20_000
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
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"Expected argument `embeddings` to have shape (N, d) with N >= 1, but got {x.shape}.")
    if not np.all(np.isfinite(x)):
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
        return np.asarray(tsne.fit_transform(x), dtype=np.float32)
    raise ValueError(f"Expected argument `method` to be 'pca' or 'tsne', but got {method!r}.")


def _pca(x: NDArray[np.float64]) -> NDArray[np.float32]:
    centred = x - x.mean(axis=0, keepdims=True)
    out = np.zeros((x.shape[0], 2), dtype=np.float64)
    if x.shape[0] < 2:
        return out.astype(np.float32)
    cov = centred.T @ centred / (x.shape[0] - 1)
    values, vectors = np.linalg.eigh(cov)
    order = np.argsort(values)[::-1][:2]
    for j, col in enumerate(order):
        v = vectors[:, col]
        v = v if v[np.argmax(np.abs(v))] >= 0 else -v
        out[:, j] = centred @ v
    return out.astype(np.float32)
