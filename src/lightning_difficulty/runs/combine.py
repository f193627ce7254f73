"""Multi-seed ensemble confusion score (Albiero et al., Eq. 1-3) from per-epoch probability records.

Each training run (one seed) writes, per split, one probability record per epoch (format, writer
and reader: :mod:`lightning_difficulty.storage.records`; a row of NaN marks a sample the run did not
see that epoch). :func:`combine_runs` streams these records epoch by epoch and turns them into one
score per sample; higher = harder (more confused):

- ``p_t(x) = (1/M) sum_i f_t^(i)(x)`` (Eq. 1), ``s_t(x) = -sum_c p_t^c log p_t^c`` in nats with
  ``0 log 0 = 0`` (Eq. 2), ``s(x) = mean_t s_t(x)`` (Eq. 3);
- **(convention)** ``s_t(x)`` exists only for epochs in which *all* ``M`` runs saw ``x``; ``s(x)`` is
  the mean over those epochs, NaN when there is none. A run's own score (``M = 1``) averages over
  the epochs that run saw ``x``.

Top-k records keep only the ``k`` largest probabilities. Each model's vector is then completed with
the maximum-entropy choice: the remaining mass ``r = 1 - sum(top-k)`` spread evenly over the other
``C - k`` classes (see :mod:`lightning_difficulty.functional.topk`). Error of the result:

- one model (``M = 1``, and the ``confusion_run<i>`` columns): the reconstructed entropy is the upper
  bound of ``topk_entropy_bounds``, so each epoch's error is at most ``upper - lower`` of that
  vector, and never more than ``max_entropy_error``;
- an ensemble: the per-model bound does **not** carry over (the even spreads of different models
  land on different classes). In 20,000 random Dirichlet ensembles (C <= 30, M = 2-4, tested
  while writing this module) about 4% had an ensemble error above the largest per-model gap. A
  provable bound follows from the continuity of entropy (Fannes-Audenaert): the reconstruction
  moves at most ``T = (1/M) sum_i r_i`` of probability mass (total variation), so per epoch
  ``|H(p_hat) - H(p)| <= T log(C - 1) + h(T)`` for ``T <= 1 - 1/C``, ``h`` the binary entropy.
  Keep ``k`` large enough that the tail mass ``r`` is small.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from lightning_difficulty.functional.confusion import entropy
from lightning_difficulty.functional.topk import seen_rows
from lightning_difficulty.storage.atomic import atomic_path, write_json
from lightning_difficulty.storage.manifest import label_fingerprint as _label_fingerprint
from lightning_difficulty.storage.outputs import OutputFolder
from lightning_difficulty.storage.records import RunRecords, available_splits, read_records

__all__ = ["combine_runs", "ensemble_confusion"]

SUMMARY_FORMAT = "lightning-difficulty/ensemble"
_CHUNK_ELEMENTS = 1 << 21  # float64 values held per chunk of rows (16 MiB)
_OUTPUTS = ("scores.parquet", "summary.json")


# ----------------------------------------------------------------------------------------------
# Pure maths
# ----------------------------------------------------------------------------------------------


def _epoch_entropies(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Entropies of one epoch for a block ``(M, n, C)`` of probabilities (NaN rows = unseen).

    Returns ``(ensemble_entropy (n,), seen_by_all (n,), run_entropy (M, n), run_seen (M, n))``.
    """
    run_seen = ~np.isnan(stack).all(axis=-1)
    run_h = np.where(run_seen, entropy(np.nan_to_num(stack, nan=0.0)), 0.0)
    all_seen = run_seen.all(axis=0)
    ens_h = np.where(all_seen, entropy(np.nan_to_num(stack, nan=0.0).mean(axis=0)), 0.0)
    return ens_h, all_seen, run_h, run_seen


def ensemble_confusion(epoch_probs: Iterable[ArrayLike]) -> np.ndarray:
    """Ensemble confusion score from per-epoch probabilities (Eq. 1-3); higher = harder.

    The streaming counterpart of :func:`lightning_difficulty.functional.confusion.confusion_score`
    (which takes all epochs at once).

    Args:
        epoch_probs: for each epoch ``t`` an array ``(M, N, C)`` of the ``M`` models' softmax
            outputs; a row of NaN marks a sample a model did not see that epoch. Any iterable, so
            epochs can be produced lazily (only one is held at a time).

    Returns:
        float64 ``(N,)``: ``s(x) = mean_t H(mean_i f_t^(i)(x))`` in nats, averaged over the epochs
        in which all ``M`` models saw ``x`` **(convention)**; NaN if there is no such epoch.

    Example::

        >>> e0 = np.array([[[1.0, 0.0]], [[0.0, 1.0]]])  # 2 models, 1 sample, 2 classes
        >>> e1 = np.array([[[1.0, 0.0]], [[1.0, 0.0]]])
        >>> round(float(ensemble_confusion([e0, e1])[0]), 4)  # (log 2 + 0) / 2
        0.3466
    """
    total: np.ndarray | None = None
    count: np.ndarray | None = None
    shape: tuple[int, ...] | None = None
    for t, probs in enumerate(epoch_probs):
        stack = np.asarray(probs, dtype=np.float64)
        if stack.ndim != 3 or (shape is not None and stack.shape[:2] != shape):
            raise ValueError(
                f"Expected each epoch of `epoch_probs` to be (M, N, C) with the same M and N, but got"
                f" shape {stack.shape} at epoch position {t}."
            )
        seen_rows(stack, f"`epoch_probs` at epoch position {t}")
        ens_h, seen, _, _ = _epoch_entropies(stack)
        if total is None or count is None:
            shape, total, count = stack.shape[:2], np.zeros(stack.shape[1]), np.zeros(stack.shape[1])
        total += ens_h
        count += seen
    if total is None or count is None:
        raise ValueError("Expected argument `epoch_probs` to hold at least one epoch, but got none.")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


# ----------------------------------------------------------------------------------------------
# Combining runs
# ----------------------------------------------------------------------------------------------


def _check_same(runs: Sequence[RunRecords], field: str, *, skip_none: bool = False) -> None:
    values = {str(r.run_dir): getattr(r.manifest, field) for r in runs}
    distinct = {v for v in values.values() if not (skip_none and v is None)}
    if len(distinct) > 1:
        listing = ", ".join(f"{run}: {value!r}" for run, value in values.items())
        raise ValueError(f"Expected all runs to have the same {field}, but got {listing}.")


def _read_labels(runs: Sequence[RunRecords], split: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Labels from the runs' ``scores.parquet`` (split, index, label), refusing disagreements."""
    n = runs[0].manifest.num_samples
    labels = np.zeros(n, dtype=np.int64)
    known = np.zeros(n, dtype=bool)
    source: dict[int, str] = {}
    for run in runs:
        path = run.run_dir / "scores.parquet"
        if not path.exists():
            continue
        table = pd.read_parquet(path)
        if "label" not in table.columns:
            continue
        table = table[table["split"] == split]
        index = table["index"].to_numpy(dtype=np.int64)
        value = table["label"].to_numpy(dtype=np.int64)
        if index.size and (index.min() < 0 or index.max() >= n):
            raise ValueError(f"{path}: indices of split {split!r} fall outside [0, {n}).")
        clash = known[index] & (labels[index] != value)
        if np.any(clash):
            i = int(index[np.argmax(clash)])
            raise ValueError(
                f"The runs disagree on the label of {split!r} sample {i}: {source[i]} says {labels[i]},"
                f" {path} says {int(value[np.argmax(clash)])}. They were not trained on the same data."
            )
        labels[index], known[index] = value, True
        source.update({int(i): str(path) for i in index})
    return (labels, known) if known.any() else None


def el2n_of_probs(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``|| p - onehot(label) ||_2`` per row of probabilities ``(..., n, C)`` (Paul et al. 2021); NaN rows stay
    NaN, and so do rows whose label is unknown (-1).

    Example::

        >>> el2n_of_probs(np.array([[0.5, 0.5], [1.0, 0.0]]), np.array([0, 0])).round(4).tolist()
        [0.7071, 0.0]
    """
    known = np.broadcast_to(labels >= 0, probs.shape[:-1])
    index = np.broadcast_to(np.where(labels >= 0, labels, 0), probs.shape[:-1])
    p_label = np.take_along_axis(probs, index[..., None], axis=-1)[..., 0]
    squared = np.maximum((probs**2).sum(axis=-1) - 2 * p_label + 1, 0.0)
    return np.where(known, np.sqrt(squared), np.nan)


def _accumulate(
    runs: Sequence[RunRecords], chunk_rows: int, labels: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Epoch-by-epoch sums. Returns the ensemble score ``(N,)``, the per-run scores ``(M, N)`` and, with
    labels, each run's EL2N at the last epoch it saw each sample ``(M, N)``."""
    n, m = runs[0].manifest.num_samples, len(runs)
    ens_sum, ens_cnt = np.zeros(n), np.zeros(n)
    run_sum, run_cnt = np.zeros((m, n)), np.zeros((m, n))
    last_el2n = np.full((m, n), np.nan) if labels is not None else None
    for epoch in runs[0].manifest.epochs:
        records = [run.open_epoch(epoch) for run in runs]
        for start in range(0, n, chunk_rows):
            stop = min(n, start + chunk_rows)
            blocks = []
            for run, record in zip(runs, records, strict=True):
                block = record.dense(start, stop)
                seen_rows(block, f"run {run.run_dir} epoch {epoch}")
                blocks.append(block)
            stack = np.stack(blocks)
            ens_h, seen, run_h, run_seen = _epoch_entropies(stack)
            if last_el2n is not None and labels is not None:  # epochs ascend: the last one seen wins
                value = el2n_of_probs(np.nan_to_num(stack, nan=0.0), labels[start:stop])
                last_el2n[:, start:stop] = np.where(run_seen, value, last_el2n[:, start:stop])
            ens_sum[start:stop] += ens_h
            ens_cnt[start:stop] += seen
            run_sum[:, start:stop] += run_h
            run_cnt[:, start:stop] += run_seen
    with np.errstate(invalid="ignore", divide="ignore"):
        ensemble = np.where(ens_cnt > 0, ens_sum / np.maximum(ens_cnt, 1), np.nan)
        per_run = np.where(run_cnt > 0, run_sum / np.maximum(run_cnt, 1), np.nan)
    return ensemble, per_run, last_el2n


def combine_runs(
    run_dirs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    split: str | None = None,
    chunk_rows: int | None = None,
) -> pd.DataFrame:
    """Combine several runs' (seeds') records into the ensemble confusion score (Eq. 1-3).

    Records are streamed epoch by epoch and in chunks of rows from memory-mapped files, so memory
    stays ``O(chunk_rows * M * C + M * N)`` whatever the number of epochs. Per split, runs must agree
    on ``num_samples``, ``num_classes``, the label fingerprint (where recorded) and the list of
    epochs; probability and top-k records may be mixed. See the module docstring for the
    convention on samples not seen by every run.

    Writes (atomically) ``out_dir/scores.parquet`` with columns ``split``, ``index``, ``label``
    (when a run's ``scores.parquet`` has labels; nullable ``Int64`` if some samples have none),
    ``confusion`` (ensemble) and ``confusion_run<i>`` (run ``i``'s own epoch-averaged entropy), with labels
    ``el2n`` (Paul et al.: the mean over runs of each run's EL2N at the last epoch it saw the sample, from its
    recorded train-mode probabilities; approximate for top-k records) and ``el2n_run<i>``, and
    ``out_dir/summary.json`` (version 2: runs, M and, per split, epochs, sizes, ...). One score per
    sample; higher = harder.

    Args:
        run_dirs: the runs' directories (distinct).
        out_dir: output directory: new, empty, or an earlier ``combine`` output (replaced); a folder holding a
            run or other files is refused (``FileExistsError``) before any work.
        split: split to combine; default: every split that all runs recorded, one after the other
            in the table.
        chunk_rows: rows per chunk; default about 2M float64 values per chunk.

    Returns:
        The table written to ``scores.parquet``.

    Example::

        >>> import tempfile, os
        >>> from lightning_difficulty.storage.records import write_epoch_record
        >>> root = tempfile.mkdtemp()
        >>> for seed, p in enumerate([[[0.9, 0.1]], [[0.1, 0.9]]]):
        ...     _ = write_epoch_record(os.path.join(root, f"s{seed}"), np.array(p), split="val", epoch=0)
        >>> runs = [os.path.join(root, "s0"), os.path.join(root, "s1")]
        >>> table = combine_runs(runs, os.path.join(root, "ens"))
        >>> round(float(table["confusion"][0]), 4)  # entropy of (0.5, 0.5)
        0.6931
    """
    if not run_dirs:
        raise ValueError("Expected argument `run_dirs` to name at least one run, but got none.")
    resolved = [Path(d).resolve() for d in run_dirs]
    if len(set(resolved)) != len(resolved):
        raise ValueError(f"Expected distinct runs in `run_dirs`, but got duplicates: {[str(d) for d in run_dirs]}.")
    if chunk_rows is not None and (isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1):
        raise ValueError(f"Expected argument `chunk_rows` to be a positive integer, but got {chunk_rows!r}.")
    per_run = _recorded_splits(resolved)
    output = OutputFolder.claim(out_dir, command="combine")  # refused before any work: never a run's folder
    if split is None:
        splits = sorted(set.intersection(*(set(found) for found in per_run.values())))
        if not splits:
            raise ValueError(
                f"Expected the runs to share at least one split of records (records/<split>/manifest.json), but"
                f" they share none: {per_run}. Combine runs made on the same splits, or pass --split."
            )
    else:
        splits = [split]
    tables, entries = zip(*(_combine_split(resolved, name, chunk_rows) for name in splits), strict=True)
    table = pd.concat(tables, ignore_index=True) if len(tables) > 1 else tables[0]

    out = output.path
    output.prepare(_OUTPUTS)
    with atomic_path(out / "scores.parquet") as tmp:
        table.to_parquet(tmp, index=False)
    summary = {
        "format": SUMMARY_FORMAT,
        "version": 2,
        "runs": [str(d) for d in resolved],
        "M": len(resolved),
        "splits": dict(zip(splits, entries, strict=True)),
        "convention": "s_t(x) only for epochs in which all M runs saw x; s(x) = mean over those epochs",
    }
    write_json(out / "summary.json", summary)
    output.commit(_OUTPUTS)
    return table


def _recorded_splits(resolved: Sequence[Path]) -> dict[str, list[str]]:
    """Each run's recorded splits; a missing folder or one without records is refused, naming it."""
    per_run = {}
    for run in resolved:
        if not run.is_dir():
            raise FileNotFoundError(
                f"Run folder {run} does not exist. Pass each run's difficulty folder (the one holding records/ and"
                " scores.parquet), e.g. runs/demo/difficulty."
            )
        per_run[str(run)] = available_splits(run)
        if not per_run[str(run)]:
            raise FileNotFoundError(
                f"Run folder {run} holds no per-epoch records (records/<split>/manifest.json). Pass the run's"
                " difficulty folder (the one holding records/); a run made with ConfusionScore(record='none') has"
                " none and cannot be combined."
            )
    return per_run


def _combine_split(resolved: Sequence[Path], split: str, chunk_rows: int | None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One split's ensemble table and its summary entry."""
    runs = [read_records(d, split=split) for d in resolved]
    for field in ("num_samples", "num_classes", "epochs"):
        _check_same(runs, field)
    _check_same(runs, "label_fingerprint", skip_none=True)
    if not runs[0].manifest.epochs:
        raise ValueError(f"Expected the runs to have recorded at least one epoch of split {split!r}, but got none.")
    n, c, m = runs[0].manifest.num_samples, runs[0].manifest.num_classes, len(runs)
    labels = _read_labels(runs, split)
    known_labels = np.where(labels[1], labels[0], -1) if labels is not None else None
    ensemble, per_run, el2n = _accumulate(runs, chunk_rows or max(1, _CHUNK_ELEMENTS // (m * c)), known_labels)
    fingerprints = {r.manifest.label_fingerprint for r in runs} - {None}
    columns: dict[str, Any] = {
        "split": np.full(n, split, dtype=object),
        "index": np.arange(n, dtype=np.int64),
    }
    if labels is not None:
        values, known = labels
        if known.all() and fingerprints and _label_fingerprint(values) not in fingerprints:
            raise ValueError(
                f"The labels in the runs' scores.parquet (fingerprint {_label_fingerprint(values)}) do not"
                f" match the records' label fingerprint {next(iter(fingerprints))}."
            )
        if known.all():
            columns["label"] = values
        else:
            partial = pd.array(values, dtype="Int64")
            partial[~known] = pd.NA
            columns["label"] = partial
    columns["confusion"] = ensemble
    for i in range(m):
        columns[f"confusion_run{i}"] = per_run[i]
    if el2n is not None:  # Paul et al.: EL2N averaged over seeds, each at its last epoch seeing the sample
        counted = np.isfinite(el2n).sum(axis=0)
        total = np.where(np.isfinite(el2n), el2n, 0.0).sum(axis=0)
        columns["el2n"] = np.where(counted > 0, total / np.maximum(counted, 1), np.nan)
        for i in range(m):
            columns[f"el2n_run{i}"] = el2n[i]
    entry = {
        "epochs": list(runs[0].manifest.epochs),
        "num_samples": n,
        "num_classes": c,
        "kinds": [r.manifest.kind for r in runs],
        "topk": [r.manifest.topk for r in runs],
        "label_fingerprint": next(iter(fingerprints), None),
        "num_scored": int(np.isfinite(ensemble).sum()),
    }
    return pd.DataFrame(columns), entry
