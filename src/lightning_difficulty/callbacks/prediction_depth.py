"""PredictionDepth: layer-wise k-NN probes on hooked activations (Baldock et al. 2021)."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader
from typing_extensions import override

from lightning_difficulty.callbacks._probe import InputShapeGuard, check_k_fits_reference
from lightning_difficulty.callbacks.base import (
    ColumnInfo,
    Columns,
    Contribution,
    DifficultyCallback,
    Neighbours,
    output_dir,
)
from lightning_difficulty.data import BatchKeys
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
from lightning_difficulty.pipeline.cost import affordable_queries, probe_stage_seconds, search_rate
from lightning_difficulty.pipeline.neighbours import ProbeConfig, agreement_rows, sample_rows
from lightning_difficulty.views.report_views import log_depth_views

if TYPE_CHECKING:
    import lightning.pytorch as pl

INPUT_PROBE = "input"
KEPT_NEIGHBOURS = 8
"""Nearest training neighbours per probe kept for the instance views and the dashboard."""
MIN_SAMPLED_QUERIES = 1000
"""Training rows scored at least when ``train_queries="auto"`` samples them."""
TrainQueries = int | float | Literal["all", "auto"]


@dataclass(frozen=True)
class QueryPlan:
    """Which training rows the probes score (``None``: all), and why: decided on rank 0, the same on every rank."""

    train_rows: np.ndarray | None
    index: str
    search_ranks: int
    estimated_seconds: float
    reason: str


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
        index: ``"auto"`` (exact whenever the cost model says it fits ``probe_budget``, else IVF from 1,000,000
            training rows; see :data:`~lightning_difficulty.pipeline.neighbours.APPROXIMATE_FROM`), ``"flat"``
            (exact), ``"ivf"`` or ``"hnsw"``. With an approximate index, ``summary.json`` reports its agreement
            with exact search on ``agreement_queries`` sampled queries (identical votes per probe and identical
            depth).
        train_queries: which training rows get a depth (the probes' reference set is always every training row;
            every validation row is always scored): ``"all"``, a count, a fraction in ``(0, 1]``, or ``"auto"``:
            all, unless the cost model (:mod:`~lightning_difficulty.pipeline.cost`) predicts the probe stage
            would exceed ``probe_budget`` seconds; then a seeded sample that fits, with a warning. Rows not
            scored get NaN in the probe columns, and ``summary.json`` says how many were scored.
        probe_budget: seconds the probe stage may take under ``train_queries="auto"`` (default 30 minutes).
        seed: seed of the training-row sample and of the agreement sample.
        agreement_queries: queries checked against exact search when the index is approximate (0: none).
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
        index: Literal["auto", "flat", "ivf", "hnsw"] = "auto",
        train_queries: TrainQueries = "auto",
        probe_budget: float = 1800.0,
        seed: int = 0,
        agreement_queries: int = 2000,
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
        if index not in ("auto", "flat", "ivf", "hnsw"):
            raise ValueError(f"Invalid value for index={index!r}. Must be 'auto', 'flat', 'ivf' or 'hnsw'.")
        _check_train_queries(train_queries)
        if isinstance(probe_budget, bool) or not isinstance(probe_budget, int | float) or not probe_budget > 0:
            raise ValueError(f"Expected argument `probe_budget` to be positive seconds, but got {probe_budget!r}.")
        if isinstance(agreement_queries, bool) or not isinstance(agreement_queries, int) or agreement_queries < 0:
            raise ValueError(
                f"Expected argument `agreement_queries` to be a non-negative integer, but got {agreement_queries!r}."
            )
        if every_n_epochs is not None and (not isinstance(every_n_epochs, int) or every_n_epochs < 1):
            raise ValueError(
                f"Expected argument `every_n_epochs` to be a positive integer, but got {every_n_epochs!r}."
            )
        self.layers: tuple[str, ...] | Literal["auto"] = "auto" if layers == "auto" else tuple(layers)
        self.reduction = reduction
        self.probe = ProbeConfig(k, index, tuple(sorted((index_options or {}).items())), use_gpu, sampled_train=True)
        self.train_queries = train_queries
        self.probe_budget = float(probe_budget)
        self.seed = seed
        self.agreement_queries = agreement_queries
        self.input_size = input_size
        self._input_shape = InputShapeGuard("PredictionDepth", input_size=input_size)
        self.reference_dataloader = reference_dataloader
        self.every_n_epochs = every_n_epochs
        self.batch_keys = batch_keys
        self.logits_from = logits_from
        self._state_key = self._generate_state_key(
            layers=self.layers, k=k, reduction=reduction, index=index, train_queries=train_queries, seed=seed
        )
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
            self._input_shape.reset()
            if self.layers != "auto":
                resolve_modules(pl_module, list(self.layers), argument="layers")

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        check_k_fits_reference(trainer, self.probe.k, self.reference_dataloader, "PredictionDepth")

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._input_shape.check(batch, self.batch_keys or BatchKeys())

    @override
    def on_validation_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if trainer.state.fn == "fit":
            self._input_shape.check(batch, self.batch_keys or BatchKeys())

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
        probes = self._probe_names(arrays)
        columns = self._probe_all(arrays, probes, self._plan_queries(arrays, probes)).columns  # collective
        if trainer.is_global_zero:
            depths = {s: c["prediction_depth"] for s, c in columns.items()}
            self.depth_history[trainer.current_epoch] = {s: float(np.nanmean(d)) for s, d in depths.items()}
            _log_depths(trainer, depths, trainer.current_epoch)

    def _probe_names(self, arrays: FitEndArrays) -> list[str]:
        """``["input", *layers]``: the probes in order (probe 0 is the input)."""
        return [INPUT_PROBE, *arrays.layers_for(self.capture_request())]

    @override
    def compute(self, trainer: pl.Trainer, arrays: FitEndArrays) -> Contribution:
        started = time.perf_counter()
        probes = self._probe_names(arrays)
        plan = self._plan_queries(arrays, probes)
        probed = self._probe_all(arrays, probes, plan)  # collective: every rank searches its reference shard
        agreement = self._agreement(arrays, probes, probed, plan)
        if not trainer.is_global_zero:
            return Contribution()
        summary = self._summary(arrays.splits, probed, probes, plan, agreement)
        summary["probe_seconds"] = time.perf_counter() - started
        penultimate = probes[-2] if len(probes) > 2 else None
        return Contribution(
            columns=probed.columns,
            info=_column_info(probes),
            summary=summary,
            views=[functools.partial(log_depth_views, probes=probes)],
            neighbours=probed.neighbours,
            probe_names=tuple(probes),
            embeddings={s: d.layers[penultimate] for s, d in arrays.splits.items()} if penultimate else {},
        )

    def _plan_queries(self, arrays: FitEndArrays, probes: list[str]) -> QueryPlan:
        """The index and the training rows to score, from the cost model: every row, the asked number, or what
        fits ``probe_budget``. ``index="auto"`` searches exactly whenever that fits the budget, else (from
        ``APPROXIMATE_FROM`` training rows) with IVF. Decided on rank 0, the same on every rank."""
        n_train = len(arrays.splits["train"].labels)
        other = sum(len(d.labels) for s, d in arrays.splits.items() if s != "train")
        dims = [_probe_embedding(arrays.splits["train"], p).shape[1] for p in probes]
        world = len(arrays.ranks.shards(n_train, k=self.probe.k))
        plan = None
        if arrays.ranks.rank == 0:
            rate = search_rate()

            def seconds(index: str, train_rows: int) -> float:
                kind = _cost_kind(index)
                return probe_stage_seconds(n_train, other + train_rows, dims, kind=kind, world=world, rate=rate)

            asked = _train_count(self.train_queries, n_train)
            index = self.probe.resolved(n_train).index
            if self.probe.index == "auto" and seconds("flat", asked) <= self.probe_budget:
                index = "flat"  # exact whenever it fits the budget
            count, reason = asked, "asked"
            if self.train_queries == "auto" and seconds(index, asked) > self.probe_budget:
                fits = affordable_queries(
                    n_train, other, dims, kind=_cost_kind(index), world=world, rate=rate, budget=self.probe_budget
                )
                count, reason = max(fits, min(n_train, MIN_SAMPLED_QUERIES)), "budget"
            if reason == "budget" and count < n_train:
                rank_zero_warn(
                    f"PredictionDepth: scoring all {n_train:,} training rows would take about "
                    f"{seconds(index, n_train) / 60:.0f} min here (cost model, index {index!r}, {world} rank(s)), over "
                    f"probe_budget={self.probe_budget:g} s. Scoring a seeded sample of {count:,} training rows instead "
                    "(every validation row is scored; the rest get NaN). Pass train_queries='all' to score every row, "
                    "or a larger probe_budget."
                )
            rows = sample_rows(n_train, count, self.seed)
            scored = n_train if rows is None else len(rows)
            plan = QueryPlan(rows, index, world, seconds(index, scored), reason if rows is not None else "all")
        return arrays.ranks.broadcast(plan)

    def _probe_all(self, fit_end: FitEndArrays, probes: list[str], plan: QueryPlan) -> Probed:
        """The probes' columns, their votes on the scored rows, and each sample's nearest training neighbours
        per probe (the first ``KEPT_NEIGHBOURS`` of the same search) for the instance views and the dashboard.
        Collective under DDP; the columns are complete on rank 0."""
        arrays = fit_end.splits
        reference = arrays["train"]
        ref_labels = np.asarray(reference.labels)
        num_classes = reference.logits.shape[1]
        rows = {"train": plan.train_rows}
        config = replace(self.probe, index=plan.index)
        probed = Probed({s: {} for s in arrays}, {s: {} for s in arrays}, {s: {} for s in arrays}, rows)
        for probe in probes:
            embeddings = {split: _probe_embedding(data, probe) for split, data in arrays.items()}
            if probe == INPUT_PROBE:  # shared with DataDifficulty's search when both resolve to the same index
                found = fit_end.input_neighbours(config, plan.train_rows)
            else:
                found = fit_end.search(probe, _probe_embedding(reference, probe), embeddings, config, rows)
            if fit_end.ranks.rank != 0:
                continue
            for split, answer in found.items():
                size = len(arrays[split].labels)
                final = _at(arrays[split].predictions, answer.rows)
                vote, disagreement = answer.vote_and_disagreement(ref_labels, final, num_classes)
                probed.votes[split][probe] = vote
                probed.columns[split][f"knn:{probe}"] = _scatter(vote, answer.rows, size)
                probed.columns[split][f"kdn:{probe}"] = _scatter(disagreement, answer.rows, size)
                probed.neighbours[split][probe] = answer.padded(
                    size, KEPT_NEIGHBOURS, fit_end.scratch(f"kept-{probe}-{split}")
                )
        if fit_end.ranks.rank == 0:
            for split, data in arrays.items():
                scored = probed.rows.get(split)
                depth = prediction_depth(np.stack(list(probed.votes[split].values())), _at(data.predictions, scored))
                probed.columns[split]["prediction_depth"] = _scatter(depth, scored, len(data.labels))
        return probed

    def _agreement(
        self, fit_end: FitEndArrays, probes: list[str], probed: Probed, plan: QueryPlan
    ) -> dict[str, Any] | None:
        """Identical votes and depths of the approximate index against exact search on sampled queries."""
        if plan.index == "flat" or self.agreement_queries == 0:
            return None
        started = time.perf_counter()
        arrays = fit_end.splits
        searched = {s: _at(np.arange(len(d.labels)), probed.rows.get(s)) for s, d in arrays.items()}
        check = agreement_rows(searched, self.agreement_queries, self.seed)
        exact_config = ProbeConfig(self.probe.k, "flat", (), self.probe.use_gpu)
        ref_labels = np.asarray(arrays["train"].labels)
        num_classes = arrays["train"].logits.shape[1]
        same_votes: dict[str, list[np.ndarray]] = {p: [] for p in probes}
        exact_votes: dict[str, list[np.ndarray]] = {s: [] for s in arrays}
        for probe in probes:
            embeddings = {split: _probe_embedding(data, probe) for split, data in arrays.items()}
            reference = _probe_embedding(arrays["train"], probe)
            found = fit_end.search(f"exact-{probe}", reference, embeddings, exact_config, dict(check))
            if fit_end.ranks.rank != 0:
                continue
            for split, answer in found.items():
                final = np.asarray(arrays[split].predictions)[check[split]]
                vote, _ = answer.vote_and_disagreement(ref_labels, final, num_classes)
                approx = probed.votes[split][probe][_positions(probed.rows.get(split), check[split])]
                same_votes[probe].append(vote == approx)
                exact_votes[split].append(vote)
        if fit_end.ranks.rank != 0:
            return None
        same_depth = []
        for split, votes in exact_votes.items():
            final = np.asarray(arrays[split].predictions)[check[split]]
            positions = _positions(probed.rows.get(split), check[split])
            approx = np.stack([probed.votes[split][p][positions] for p in probes])
            same_depth.append(prediction_depth(np.stack(votes), final) == prediction_depth(approx, final))
        return {
            "index": plan.index,
            "queries": int(sum(len(r) for r in check.values())),
            "identical_votes": {p: float(np.concatenate(v).mean()) for p, v in same_votes.items()},
            "identical_prediction_depth": float(np.concatenate(same_depth).mean()),
            "seconds": time.perf_counter() - started,
        }

    def _summary(
        self,
        arrays: dict[str, SplitArrays],
        probed: Probed,
        probes: list[str],
        plan: QueryPlan,
        agreement: dict[str, Any] | None,
    ) -> dict[str, Any]:
        out: dict[str, Any] = {
            "probes": probes,
            "k": self.probe.k,
            "index": plan.index,
            "search_ranks": plan.search_ranks,
            "estimated_probe_seconds": plan.estimated_seconds,
        }
        if agreement is not None:
            out["index_agreement"] = agreement
        for split, cols in probed.columns.items():
            scored = probed.rows.get(split)
            depth = _at(cols["prediction_depth"], scored).astype(np.int64)
            labels = _at(np.asarray(arrays[split].labels), scored)
            final = _at(arrays[split].predictions, scored)
            votes = probed.votes[split]
            out[split] = {
                "scored_rows": len(depth),
                "rows": len(arrays[split].labels),
                "scored_because": plan.reason if split == "train" else "all",
                "mean_prediction_depth": float(depth.mean()),
                "depth_counts": dict(enumerate(np.bincount(depth, minlength=len(probes) + 1).tolist())),
                "probe_accuracy": {p: float((votes[p] == labels).mean()) for p in probes},
                "probe_agreement": {p: float((votes[p] == final).mean()) for p in probes},
            }
        if self.depth_history:
            out["mean_depth_during_training"] = self.depth_history
        return out


@dataclass
class Probed:
    """What the probes found, on rank 0: ``split -> column -> values`` (every row, NaN where not scored),
    ``split -> probe -> votes`` (scored rows only), ``split -> probe -> kept neighbours`` and the scored rows."""

    columns: Columns
    votes: dict[str, dict[str, np.ndarray]]
    neighbours: Neighbours
    rows: dict[str, np.ndarray | None]


def _check_train_queries(value: object) -> None:
    ok = value in ("all", "auto") if isinstance(value, str) else None
    if isinstance(value, bool):
        ok = False
    elif isinstance(value, int):
        ok = value >= 1
    elif isinstance(value, float):
        ok = 0.0 < value <= 1.0
    if not ok:
        raise ValueError(
            f"Invalid value for train_queries={value!r}. Give 'auto', 'all', a positive count of training rows or "
            "a fraction in (0, 1]."
        )


def _train_count(train_queries: TrainQueries, n_train: int) -> int:
    if isinstance(train_queries, str):
        return n_train
    if isinstance(train_queries, float):
        return max(1, round(train_queries * n_train))
    return min(train_queries, n_train)


def _at(values: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
    return np.asarray(values) if rows is None else np.asarray(values)[rows]


def _positions(scored: np.ndarray | None, rows: np.ndarray) -> np.ndarray:
    """Where the split rows ``rows`` sit among the scored rows."""
    return rows if scored is None else np.searchsorted(scored, rows)


def _cost_kind(index: str) -> str:
    """The cost model's kind for an index: ``"flat"``, or ``"ivf"`` for the approximate ones (HNSW priced as IVF)."""
    return "flat" if index == "flat" else "ivf"


def _scatter(values: np.ndarray, rows: np.ndarray | None, size: int) -> np.ndarray:
    """Values of the scored rows as a column over every row of the split (float with NaN where not scored)."""
    if rows is None:
        return values
    column = np.full(size, np.nan)
    column[rows] = values
    return column


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
        scored = depth[np.isfinite(depth)]  # sampled training rows leave the others NaN
        if scored.size:
            writer.add_scalar(f"difficulty/prediction_depth_mean/{split}", float(scored.mean()), epoch)
            writer.add_histogram(f"difficulty/prediction_depth_during_training/{split}", scored, epoch)
