"""PredictionDepth: layer-wise k-NN probes on hooked activations (Baldock et al. 2021)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from torch.utils.data import DataLoader
from typing_extensions import override

from lightning_difficulty.callbacks._probe import check_k_fits_reference
from lightning_difficulty.callbacks.base import (
    ColumnInfo,
    Columns,
    Contribution,
    DifficultyCallback,
    Neighbours,
    output_dir,
)
from lightning_difficulty.data import BatchKeys
from lightning_difficulty.functional.knn import knn_vote, neighbour_disagreement
from lightning_difficulty.functional.prediction_depth import prediction_depth
from lightning_difficulty.logits import resolve_modules
from lightning_difficulty.pipeline.capture import (
    CaptureRequest,
    FitEndArrays,
    Reduction,
    SplitArrays,
    merge_requests,
    run_capture,
)
from lightning_difficulty.pipeline.neighbours import ProbeConfig, neighbours_by_split
from lightning_difficulty.views.report_views import log_depth_views

if TYPE_CHECKING:
    import lightning.pytorch as pl

INPUT_PROBE = "input"
KEPT_NEIGHBOURS = 8
"""Nearest training neighbours per probe kept for the instance views and the dashboard."""


class PredictionDepth(DifficultyCallback):
    """Prediction depth per sample from k-NN probes on the input and on each probed layer.

    At fit end the final model runs once in eval mode over the training data (the probes' reference
    set, with true labels) and the validation data; every probed layer's output is reduced (see
    :class:`~lightning_difficulty.pipeline.capture.ActivationReducer`) and stored on disk. Probe ``l``
    votes with the ``k`` nearest training embeddings (Euclidean, majority, ties to the smallest
    class; training samples leave themselves out). ``PD(x)`` is the first probe from which every
    later probe agrees with the network's final prediction; ``L + 1`` if even the last disagrees.

    Columns: ``prediction_depth``, ``knn:input`` and ``knn:<layer>`` (each probe's vote) and
    ``kdn:<layer>`` (share of the probe's neighbours whose label differs from the prediction).

    Args:
        layers: module names (as in ``named_modules()``) in forward order, or ``"auto"``: the model's
            top-level blocks that run in ``forward``, in the order they run (observed at fit end on one
            batch; single-child wrappers such as ``self.net = resnet18()`` are looked through).
        k: neighbours per probe (Baldock et al.: 30).
        reduction: ``"auto"`` (pool conv maps, project wide outputs to 256 dims, float16) or ``None``
            (raw flattened activations, float32).
        index: ``"flat"`` (exact), ``"ivf"`` or ``"hnsw"`` (approximate, for large reference sets).
        index_options: passed to :func:`~lightning_difficulty.functional.knn.build_index` (``nlist``,
            ``nprobe``, ``hnsw_m``, ``ef_search``).
        input_size: average-pool image inputs to this side length before the input probe.
        reference_dataloader: un-augmented training data for the reference set (default: the
            training dataloader without shuffling).
        every_n_epochs: also compute depth every N epochs during training (logged to TensorBoard).

    Example::

        PredictionDepth(layers=["features.2", "features.5", "features.8", "classifier"], k=30)
    """

    def __init__(
        self,
        layers: list[str] | Literal["auto"] = "auto",
        *,
        k: int = 30,
        reduction: Reduction = "auto",
        index: Literal["flat", "ivf", "hnsw"] = "flat",
        index_options: dict[str, Any] | None = None,
        input_size: int | None = None,
        reference_dataloader: DataLoader | None = None,
        every_n_epochs: int | None = None,
        batch_keys: BatchKeys | None = None,
        logits_from: str | None = None,
        use_gpu: bool | Literal["auto"] = "auto",
    ) -> None:
        super().__init__()
        if layers != "auto" and (not isinstance(layers, (list, tuple)) or not layers):
            raise ValueError(f"Invalid value for layers={layers!r}. Give a non-empty list of module names or 'auto'.")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"Expected argument `k` to be a positive integer, but got {k!r}.")
        if index not in ("flat", "ivf", "hnsw"):
            raise ValueError(f"Invalid value for index={index!r}. Must be 'flat', 'ivf' or 'hnsw'.")
        if every_n_epochs is not None and (not isinstance(every_n_epochs, int) or every_n_epochs < 1):
            raise ValueError(
                f"Expected argument `every_n_epochs` to be a positive integer, but got {every_n_epochs!r}."
            )
        self.layers: tuple[str, ...] | Literal["auto"] = "auto" if layers == "auto" else tuple(layers)
        self.reduction = reduction
        self.probe = ProbeConfig(k, index, tuple(sorted((index_options or {}).items())), use_gpu)
        self.input_size = input_size
        self.reference_dataloader = reference_dataloader
        self.every_n_epochs = every_n_epochs
        self.batch_keys = batch_keys
        self.logits_from = logits_from
        self._state_key = self._generate_state_key(layers=self.layers, k=k, reduction=reduction, index=index)
        self.depth_history: dict[int, dict[str, float]] = {}

    @property
    @override
    def state_key(self) -> str:
        return self._state_key

    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage == "fit":
            self.depth_history = {}
            if self.layers != "auto":
                resolve_modules(pl_module, list(self.layers), argument="layers")

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        check_k_fits_reference(trainer, self.probe.k, self.reference_dataloader, "PredictionDepth")

    @override
    def capture_request(self) -> CaptureRequest:
        return CaptureRequest(
            layers=self.layers,
            reduction=self.reduction,
            inputs=True,
            input_size=self.input_size,
            reference_dataloader=self.reference_dataloader,
            batch_keys=self.batch_keys,
            logits_from=self.logits_from,
            input_search=self.probe,
        )

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.every_n_epochs is None or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        plan = merge_requests([(self.state_key, self.capture_request())])
        arrays = run_capture(trainer, pl_module, plan, output_dir(trainer) / "cache" / "during_fit")
        if trainer.is_global_zero:
            probes = self._probe_names(arrays)
            depths = {s: c["prediction_depth"] for s, c in self._probe_all(arrays, probes)[0].items()}
            self.depth_history[trainer.current_epoch] = {s: float(d.mean()) for s, d in depths.items()}
            _log_depths(trainer, depths, trainer.current_epoch)

    def _probe_names(self, arrays: FitEndArrays) -> list[str]:
        """``["input", *layers]``: the probes in order (probe 0 is the input)."""
        return [INPUT_PROBE, *arrays.layers_for(self.capture_request())]

    @override
    def compute(self, trainer: pl.Trainer, arrays: FitEndArrays) -> Contribution:
        if not trainer.is_global_zero:
            return Contribution()
        probes = self._probe_names(arrays)
        columns, neighbours = self._probe_all(arrays, probes)
        penultimate = probes[-2] if len(probes) > 2 else None
        return Contribution(
            columns=columns,
            info=_column_info(probes),
            summary=self._summary(arrays.splits, columns, probes),
            views=[functools.partial(log_depth_views, probes=probes)],
            neighbours=neighbours,
            probe_names=tuple(probes),
            embeddings={s: d.layers[penultimate] for s, d in arrays.splits.items()} if penultimate else {},
        )

    def _probe_all(self, fit_end: FitEndArrays, probes: list[str]) -> tuple[Columns, Neighbours]:
        """The probes' columns, and each sample's nearest training neighbours per probe (the first
        ``KEPT_NEIGHBOURS`` of the same search) for the instance views and the dashboard."""
        arrays = fit_end.splits
        reference = arrays["train"]
        ref_labels = np.asarray(reference.labels)
        final = {split: data.predictions for split, data in arrays.items()}
        votes: dict[str, list[np.ndarray]] = {split: [] for split in arrays}
        out: Columns = {split: {} for split in arrays}
        kept: Neighbours = {split: {} for split in arrays}
        for probe in probes:
            embeddings = {split: _probe_embedding(data, probe) for split, data in arrays.items()}
            if probe == INPUT_PROBE:  # shared with DataDifficulty's search when both are present
                found = fit_end.input_neighbours(self.probe)
            else:
                found = neighbours_by_split(_probe_embedding(reference, probe), embeddings, self.probe)
            for split, (distances, ids) in found.items():
                kept[split][probe] = (distances[:, :KEPT_NEIGHBOURS], ids[:, :KEPT_NEIGHBOURS])
                labels = ref_labels[ids]
                vote = knn_vote(labels, num_classes=reference.logits.shape[1])
                votes[split].append(vote)
                out[split][f"knn:{probe}"] = vote
                out[split][f"kdn:{probe}"] = neighbour_disagreement(labels, final[split])
        for split in arrays:
            out[split]["prediction_depth"] = prediction_depth(np.stack(votes[split]), final[split])
        return out, kept

    def _summary(self, arrays: dict[str, SplitArrays], columns: Columns, probes: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {"probes": probes, "k": self.probe.k}
        for split, cols in columns.items():
            depth = cols["prediction_depth"]
            labels = np.asarray(arrays[split].labels)
            final = arrays[split].predictions
            out[split] = {
                "mean_prediction_depth": float(depth.mean()),
                "depth_counts": dict(enumerate(np.bincount(depth, minlength=len(probes) + 1).tolist())),
                "probe_accuracy": {p: float((cols[f"knn:{p}"] == labels).mean()) for p in probes},
                "probe_agreement": {p: float((cols[f"knn:{p}"] == final).mean()) for p in probes},
            }
        if self.depth_history:
            out["mean_depth_during_training"] = self.depth_history
        return out


def _column_info(probes: list[str]) -> dict[str, ColumnInfo]:
    last = len(probes)
    info = {
        "prediction_depth": ColumnInfo(
            f"first k-NN probe from which every later probe votes the final prediction (0 = input, {last} = never "
            "settles; Baldock et al. 2021)",
            unit="probe",
            range=(0, last),
            higher_is_harder=True,
            perspective=True,
        )
    }
    for probe in probes:
        info[f"knn:{probe}"] = ColumnInfo(f"k-NN vote of the probe on {probe!r} (majority of training neighbours)")
        info[f"kdn:{probe}"] = ColumnInfo(
            f"share of the {probe!r} probe's neighbours whose label differs from the final prediction",
            range=(0.0, 1.0),
            higher_is_harder=True,
        )
    return info


def _probe_embedding(data: SplitArrays, probe: str) -> np.ndarray:
    if probe == INPUT_PROBE:
        assert data.inputs is not None
        return data.inputs
    return data.layers[probe]


def _log_depths(trainer: pl.Trainer, depths: dict[str, np.ndarray], epoch: int) -> None:
    from lightning_difficulty.views.tensorboard import tensorboard_writer

    writer = tensorboard_writer(trainer)
    if writer is None:
        return
    for split, depth in depths.items():
        writer.add_scalar(f"difficulty/prediction_depth_mean/{split}", float(depth.mean()), epoch)
        writer.add_histogram(f"difficulty/prediction_depth_during_training/{split}", depth, epoch)
