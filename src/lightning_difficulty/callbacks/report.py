"""DifficultyReport: owns the fit-end pipeline, from the capture pass to the table, summary and views."""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from lightning.pytorch.utilities import rank_zero_warn
from typing_extensions import override

from lightning_difficulty.callbacks.base import (
    ColumnInfo,
    Contribution,
    DifficultyCallback,
    ReportComposer,
    check_writable,
    default_run_dir,
)
from lightning_difficulty.data import item_input
from lightning_difficulty.functional.taxonomy import TaxonomyThresholds
from lightning_difficulty.pipeline import analysis
from lightning_difficulty.pipeline.analysis import ErrorTaxonomy, GroupSpec, HardSubsetSpec
from lightning_difficulty.pipeline.capture import (
    CapturePlan,
    CaptureRequest,
    FitEndArrays,
    merge_requests,
    run_capture,
)
from lightning_difficulty.pipeline.compose import BASE_COLUMNS, compose_table, summarise_split
from lightning_difficulty.pipeline.progress import Progress, Stages
from lightning_difficulty.pipeline.splits import dataset_labels, fit_has_validation, split_loader
from lightning_difficulty.storage.atomic import write_json
from lightning_difficulty.storage.outputs import REPORT_FILES, RunOutputs

if TYPE_CHECKING:
    import lightning.pytorch as pl

    from lightning_difficulty.views.report_views import ImageFetcher


@dataclass
class Derived:
    """The table with its derived columns, the shared confusion-band edges and the manifests to write."""

    table: pd.DataFrame
    bands: dict[str, Any]
    manifests: dict[str, Any]


class DifficultyReport(ReportComposer):
    """Owns the fit-end pipeline: one capture pass, every callback's measure, the table, summary and views.

    At the end of ``fit`` it merges what every difficulty callback asks of the fit-end capture pass
    (refusing contradictions), runs the final model once in eval mode over the training data
    (un-shuffled) and every validation dataloader, hands each callback the arrays, and composes their
    columns into one table. It then derives ``confusion_band``, ``hard``, ``group``, ``pattern`` and
    ``error_category``, summarises, writes the run's files as one set (rank 0), and logs the views. A
    measure or view that fails is skipped with a warning: the table is always written.

    Files in ``dirpath`` (default ``<trainer.log_dir>/difficulty``): ``scores.parquet`` (one row per
    (split, index); the column dictionary in its schema metadata), ``columns.json``, ``summary.json``,
    ``hard_subset.json``, ``groups.json``. A second run into the same folder replaces all of them (files of
    this package only; nothing else in the folder is touched).

    Args:
        dirpath: output folder (default ``<trainer.log_dir>/difficulty``).
        num_bands: confusion bands for the "error rate by confusion band" figure and ``confusion_band``; the
            equal-width edges are fitted on the training split and shared by every split.
        grid_per_class: samples per class on each side of the hardest/easiest grids (0: none).
        class_names: names for figures (default ``"0"``, ``"1"``, ...).
        taxonomy: thresholds that binarise the perspectives for the ``pattern`` column.
        error_taxonomy: options for the ``error_category`` column (default: off).
        hard_fraction: share of each split's scored samples that forms the hard subset; ``None`` to skip.
        hard_top_k: a fixed number of hard samples per split instead of ``hard_fraction``.
        hard_split: the split whose hard subset is written to ``hard_subset.json``.
        group_bands: GroupDRO groups as this many quantile bands of confusion (``group`` column,
            ``groups.json``), edges fitted on the training split; ``None`` to skip.
        group_thresholds: fixed band edges in nats instead (Albiero et al. split ImageNet at ``(5.0,)``).
        projector_split: split shown in TensorBoard's Projector (needs PredictionDepth for embeddings).
        reference_dataloader: un-augmented training data for the fit-end pass (``prediction``/``correct`` of
            the train split and the k-NN reference set). Default: the training dataloader, un-shuffled.
        keep_cache: keep the fit-end pass arrays (``cache/``: logits, layer embeddings) on disk.

    Example::

        trainer = L.Trainer(callbacks=[ConfusionScore(), DifficultyReport()])
        trainer.fit(model, train_loader, val_loader)
        table = read_scores(trainer.log_dir + "/difficulty")
    """

    def __init__(
        self,
        dirpath: str | Path | None = None,
        *,
        num_bands: int = 10,
        grid_per_class: int = 4,
        class_names: Sequence[str] | None = None,
        taxonomy: TaxonomyThresholds | None = None,
        error_taxonomy: ErrorTaxonomy | None = None,
        hard_fraction: float | None = 0.1,
        hard_top_k: int | None = None,
        hard_split: str = "val",
        group_bands: int | None = 2,
        group_thresholds: Sequence[float] | None = None,
        projector_split: str = "val",
        reference_dataloader: Any = None,
        keep_cache: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(num_bands, bool) or not isinstance(num_bands, int) or num_bands < 2:
            raise ValueError(f"Expected argument `num_bands` to be an integer >= 2, but got {num_bands!r}.")
        if isinstance(grid_per_class, bool) or not isinstance(grid_per_class, int) or grid_per_class < 0:
            raise ValueError(
                f"Expected argument `grid_per_class` to be a non-negative integer, but got {grid_per_class!r}."
            )
        self.dirpath = Path(dirpath) if dirpath is not None else None
        self.num_bands = num_bands
        self.grid_per_class = grid_per_class
        self.class_names = list(class_names) if class_names is not None else None
        self.taxonomy = taxonomy or TaxonomyThresholds()
        self.error_taxonomy = error_taxonomy
        self.hard_subset = (
            HardSubsetSpec(hard_fraction, hard_top_k, hard_split) if hard_fraction or hard_top_k else None
        )
        self.groups = (
            GroupSpec(group_bands, tuple(group_thresholds) if group_thresholds else None)
            if group_bands or group_thresholds
            else None
        )
        self.projector_split = projector_split
        self.reference_dataloader = reference_dataloader
        self.keep_cache = keep_cache
        self.table: pd.DataFrame | None = None
        self.summary: dict[str, Any] = {}
        self._last_trainer: weakref.ref[pl.Trainer] | None = None

    @override
    def run_dir(self, trainer: pl.Trainer) -> Path:
        return self.dirpath if self.dirpath is not None else default_run_dir(trainer)

    # -- set-up checks -----------------------------------------------------------------------------
    @override
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self.table, self.summary = None, {}
        self._plan = merge_requests(self._requests(trainer))  # contradictions stop here, before training
        run_dir = self.run_dir(trainer)  # on every rank: the default folder asks the logger (a collective)
        if trainer.is_global_zero:
            check_writable(run_dir, owner="DifficultyReport")
        if self.class_names is not None and self.error_taxonomy is not None:
            self.error_taxonomy.superclass_ids(len(self.class_names))  # a map of another class count fails now
        if trainer.world_size > 1:
            self._check_shared_run_dir(trainer)

    def _check_shared_run_dir(self, trainer: pl.Trainer) -> None:
        """Refuse, before training, a run folder that the ranks do not share (multi-node without a shared
        filesystem): rank 0 merges the other ranks' fit-end shards and records through it. Each rank writes a
        token there; every rank must see all of them."""
        run_dir = self.run_dir(trainer)
        token = trainer.strategy.broadcast(uuid.uuid4().hex)
        folder = run_dir / ".rank-tokens"
        folder.mkdir(parents=True, exist_ok=True)
        mine = folder / f"{token}.rank{trainer.global_rank}"
        mine.touch()
        trainer.strategy.barrier()
        seen = len(list(folder.glob(f"{token}.rank*")))
        shared = trainer.strategy.reduce_boolean_decision(seen == trainer.world_size, all=True)
        mine.unlink(missing_ok=True)
        trainer.strategy.barrier()
        if trainer.is_global_zero and shared:
            shutil.rmtree(folder, ignore_errors=True)
        if not shared:
            raise RuntimeError(
                f"DifficultyReport: the run folder {run_dir} is not shared by the {trainer.world_size} ranks (rank "
                f"{trainer.global_rank} sees {seen} of their tokens). Rank 0 merges every rank's fit-end arrays and "
                "records through it. Use a folder on a filesystem every node mounts: "
                "`DifficultyReport(dirpath=<shared path>)` (and a shared `default_root_dir` for the records)."
            )

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check_superclass_count(trainer)
        self._check_reference(trainer)
        run_dir = self.run_dir(trainer)  # on every rank (see setup)
        if trainer.is_global_zero and trainer.ckpt_path is None and not self._extends_previous_fit(trainer):
            _discard_previous_report(run_dir)
        self._last_trainer = weakref.ref(trainer)
        if self._plan.reference_dataloader is None and _augments(trainer.train_dataloader):
            rank_zero_warn(
                "DifficultyReport: the training dataset applies random transforms, and the fit-end pass reuses it, "
                "so the train split's `prediction`/`correct` (and the k-NN reference) come from augmented images. "
                "Pass `reference_dataloader=` an un-augmented loader of the same training data."
            )

    def _check_reference(self, trainer: pl.Trainer) -> None:
        """Refuse, before training, a ``reference_dataloader`` that does not hold the training samples: another
        length always, another label order where both datasets' labels are cheap to read."""
        reference = self._plan.reference_dataloader
        if reference is None:
            return
        train, ref = getattr(trainer.train_dataloader, "dataset", None), getattr(reference, "dataset", None)
        try:
            sizes = len(train), len(ref)  # type: ignore[arg-type]
        except TypeError:
            return
        given = "DifficultyReport(reference_dataloader=...)"
        if sizes[0] != sizes[1]:
            raise ValueError(
                f"{given}: its dataset has {sizes[1]} samples but the training dataset has {sizes[0]}. The reference "
                "loader must hold the training samples in the same order (the same dataset without augmentation)."
            )
        labels = dataset_labels(train), dataset_labels(ref)
        if labels[0] is not None and labels[1] is not None and (labels[0] != labels[1]).any():
            differ = int((labels[0] != labels[1]).sum())
            raise ValueError(
                f"{given}: at {differ} of {sizes[0]} indices its label differs from the training dataset's, so it "
                "holds the samples in another order. Build it from the same dataset, un-shuffled (`shuffle=False`), "
                "with only the transform changed."
            )

    def _extends_previous_fit(self, trainer: pl.Trainer) -> bool:
        previous = self._last_trainer() if self._last_trainer is not None else None
        return previous is trainer and trainer.fit_loop.epoch_progress.current.completed > 0

    def __getstate__(self) -> dict[str, Any]:
        """Picklable for ``ddp_spawn`` (the weak reference to the last Trainer stays behind)."""
        return {**self.__dict__, "_last_trainer": None}

    def _check_superclass_count(self, trainer: pl.Trainer) -> None:
        """Refuse a superclass map made for another class count than the training labels' ``max + 1``.

        Only when the labels are cheap to read (``targets`` of the training dataset or of the dataset an
        ``IndexedDataset`` wraps, or a ``TensorDataset``'s second tensor); otherwise the fit-end pass
        checks it (a failure there skips ``error_category`` with a warning).
        """
        if self.error_taxonomy is None or self.error_taxonomy.superclasses is None:
            return
        labels = dataset_labels(getattr(trainer.train_dataloader, "dataset", None))
        if labels is None or labels.size == 0:
            return
        num_classes = int(labels.max()) + 1
        superclasses = self.error_taxonomy.superclasses
        shown = f"<map of {len(superclasses)} classes>" if isinstance(superclasses, dict) else repr(superclasses)
        given = f"DifficultyReport(error_taxonomy=ErrorTaxonomy(superclasses={shown}))"
        fix = "Pass a superclass map of the model's classes (class -> superclass), or no error_taxonomy."
        try:  # superclass_ids refuses a map of another class count
            self.error_taxonomy.superclass_ids(num_classes)
        except ValueError as err:
            raise ValueError(
                f"{given}: the map does not fit the {num_classes} classes of the training labels (max label + 1): "
                f"{err} {fix}"
            ) from err

    def _requests(self, trainer: pl.Trainer) -> list[tuple[str, CaptureRequest]]:
        requests = [
            (
                "DifficultyReport(reference_dataloader=...)",
                CaptureRequest(reference_dataloader=self.reference_dataloader),
            )
        ]
        for cb in _difficulty_callbacks(trainer):
            request = cb.capture_request()
            if request is not None:
                requests.append((cb.state_key, request))
        return requests

    # -- the pipeline ------------------------------------------------------------------------------
    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        run_dir = self.run_dir(trainer)
        callbacks = _difficulty_callbacks(trainer)
        skipped: list[str] = []
        seconds: dict[str, float] = {}
        stages = Progress.of(trainer).stages("difficulty report", total=len(callbacks) + 4)  # closed below, or by gc
        with _timed(seconds, "capture pass"), stages.step("capture pass"):
            arrays = self._capture(trainer, pl_module, run_dir / "cache", skipped)
        contributions = _compute_all(trainer, callbacks, arrays, skipped, seconds, stages)
        if trainer.is_global_zero:
            with _timed(seconds, "table and summary"), stages.step("table and summary"):
                composed, info, shared = compose_table(arrays, contributions, skipped)
                derived = self._derive(composed, shared, skipped)
                info = {**BASE_COLUMNS, **info}
                perspectives = tuple(name for name, meta in info.items() if meta.perspective)
                summary = self._summarise(trainer, derived, contributions, perspectives, skipped)
                self._outputs(trainer, run_dir, derived, info, summary).commit()
            self.table, self.summary = derived.table, summary
            images = _image_fetcher(trainer, self._plan.batch_keys)
            class_names = self._class_names(derived.table, skipped)
            with _timed(seconds, "dashboard"), stages.step("dashboard"):
                self._write_dashboard(run_dir, derived.table, shared, class_names, images, skipped)
            with _timed(seconds, "views"), stages.step("views"):
                view_inputs = (class_names, perspectives, images)
                self._log_views(trainer, derived.table, shared, contributions, view_inputs, skipped)
            summary["skipped"] = list(skipped)  # views skipped after the set was written are recorded too
            summary["fit_end_seconds"] = seconds
            write_json(run_dir / "summary.json", summary)
        stages.close()
        trainer.strategy.barrier()
        if trainer.is_global_zero and not self.keep_cache:
            shutil.rmtree(run_dir / "cache", ignore_errors=True)

    def _capture(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, cache: Path, skipped: list[str]
    ) -> FitEndArrays:
        plan = self._plan
        if trainer.val_dataloaders is None and fit_has_validation(trainer):
            # a fit that trained nothing (max_steps already reached) never loaded its validation loaders
            trainer.fit_loop.epoch_loop.val_loop.setup_data()
        try:
            return run_capture(trainer, pl_module, plan, cache)
        except Exception as err:  # layers or inputs the pass cannot store: keep what every table needs
            if not (plan.layers or plan.inputs or plan.auto_reduction != "none"):
                raise
            skipped.append(f"layer and input capture: {err}")
            rank_zero_warn(
                f"DifficultyReport: the fit-end pass failed while storing layers or inputs ({err}). It runs again "
                "with the logits only; the measures that need layers or inputs are skipped."
            )
            minimal = CapturePlan(
                reference_dataloader=plan.reference_dataloader, batch_keys=plan.batch_keys, logits_from=plan.logits_from
            )
            return run_capture(trainer, pl_module, minimal, cache)

    def _derive(self, table: pd.DataFrame, shared: Contribution, skipped: list[str]) -> Derived:
        """Derived columns: confusion bands (edges shared by all splits), hard, group, pattern, error category.
        Each is optional: one that fails is skipped with a warning, and the table is written without it."""
        table = table.copy()
        bands: dict[str, Any] = {}
        with _optional(skipped, "confusion_band"):
            if "confusion" in table and np.isfinite(table["confusion"].to_numpy(float)).sum() > 1:
                edges, fitted_on = analysis.confusion_band_edges(table, self.num_bands)
                table["confusion_band"] = analysis.band_column(table["confusion"].to_numpy(float), edges)
                bands = {"edges": edges.tolist(), "fitted_on": fitted_on}
        parts = dict(tuple(table.groupby("split", sort=False)))
        manifests: dict[str, Any] = {}
        for split, rows in parts.items():
            rows = rows.copy()
            self._warn_unscored(str(split), rows)
            if self.hard_subset is not None:
                with _optional(skipped, f"hard of split {split!r}"):
                    rows["hard"], manifest = analysis.hard_column(rows, self.hard_subset)
                    if manifest is not None and split == self.hard_subset.split:
                        manifests["hard_subset"] = manifest
            with _optional(skipped, f"pattern of split {split!r}"):
                self._patterns(str(split), rows, skipped)
            if self.error_taxonomy is not None:
                with _optional(skipped, f"error_category of split {split!r}"):
                    counts = shared.annotation_counts.get(str(split))
                    rows["error_category"] = analysis.error_categories(rows, self.error_taxonomy, counts)
            parts[split] = rows
        if self.groups is not None and self.groups.split in parts:
            with _optional(skipped, "group"):
                groups = analysis.group_manifest(parts[self.groups.split], self.groups)
                if groups is not None:
                    columns = {split: analysis.group_column(rows, groups) for split, rows in parts.items()}
                    manifests["groups"] = groups
                    for split, rows in parts.items():
                        rows["group"] = columns[split]
        return Derived(pd.concat(parts.values(), ignore_index=True), bands, manifests)

    def _patterns(self, split: str, rows: pd.DataFrame, skipped: list[str]) -> None:
        patterns = analysis.difficulty_patterns(rows, self.taxonomy)
        if patterns is not None:
            rows["pattern"] = patterns.ids
            for reason in patterns.degenerate:
                _skip(skipped, f"part of the pattern taxonomy of split {split!r}: {reason}; set TaxonomyThresholds")
        elif "human_difficulty" in rows:  # without annotations the taxonomy does not apply: no warning
            _skip(skipped, f"pattern of split {split!r}: {analysis.pattern_blocker(rows)}")

    def _warn_unscored(self, split: str, rows: pd.DataFrame) -> None:
        if "confusion" in rows:
            missing = int(rows["confusion"].isna().sum())
            if missing:
                rank_zero_warn(
                    f"DifficultyReport: {missing} of {len(rows)} samples of split {split!r} were never seen during "
                    "training (limit_*_batches, drop_last, fast_dev_run, ...): their `confusion` is NaN, they are "
                    "never `hard` and their `group` is -1."
                )

    def _summarise(
        self,
        trainer: pl.Trainer,
        derived: Derived,
        contributions: dict[str, tuple[DifficultyCallback, Contribution]],
        perspectives: Sequence[str],
        skipped: list[str],
    ) -> dict[str, Any]:
        from lightning_difficulty import __version__

        splits = {
            str(split): summarise_split(rows, perspectives, self.num_bands, derived.bands.get("edges"))
            for split, rows in derived.table.groupby("split", sort=False)
        }
        summary: dict[str, Any] = {
            "format": "lightning-difficulty/summary",
            "version": 2,
            "package_version": __version__,
            "run_id": uuid.uuid4().hex,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "run": {
                "epochs": trainer.current_epoch,
                "global_step": trainer.global_step,
                "world_size": trainer.world_size,
                "callbacks": {key: type(cb).__name__ for key, (cb, _) in contributions.items()},
                "report": {
                    "num_bands": self.num_bands,
                    "taxonomy": dataclasses.asdict(self.taxonomy),
                    "hard_subset": dataclasses.asdict(self.hard_subset) if self.hard_subset else None,
                    "groups": dataclasses.asdict(self.groups) if self.groups else None,
                },
            },
            "splits": splits,
            "measures": {
                key: {"callback": type(cb).__name__, **part.summary} for key, (cb, part) in contributions.items()
            },
        }
        if derived.bands:
            summary["confusion_bands"] = derived.bands
        hard = derived.manifests.get("hard_subset")
        if hard is not None:
            summary["hard_subset"] = {"split": hard.split, "size": len(hard.indices), "threshold": hard.threshold}
        groups = derived.manifests.get("groups")
        if groups is not None:
            summary["groups"] = {"split": groups.split, "edges": list(groups.edges), "sizes": list(groups.sizes)}
        history = [entry for _, part in contributions.values() for entry in part.summary.get("history", [])]
        summary["history"] = sorted(
            (dict(t) for t in {tuple(sorted(entry.items())) for entry in history}),
            key=lambda entry: (entry["split"], entry["epoch"], entry["event"]),
        )
        summary["skipped"] = list(skipped)
        return summary

    def _outputs(
        self,
        trainer: pl.Trainer,
        run_dir: Path,
        derived: Derived,
        info: dict[str, ColumnInfo],
        summary: dict[str, Any],
    ) -> RunOutputs:
        metadata = {"epochs": trainer.current_epoch, "global_step": trainer.global_step, "run_id": summary["run_id"]}
        outputs = RunOutputs(run_dir, run_id=summary["run_id"])
        columns = {name: _info_json(meta) for name, meta in info.items() if name in derived.table}
        outputs.table(derived.table, columns)
        outputs.json("columns.json", {"format": "lightning-difficulty/columns", "version": 1, "columns": columns})
        for name, manifest in derived.manifests.items():
            outputs.manifest(f"{name}.json", dataclasses.replace(manifest, metadata=metadata))
        outputs.json("summary.json", summary)
        return outputs

    # -- views -------------------------------------------------------------------------------------
    def _class_names(self, table: pd.DataFrame, skipped: list[str]) -> list[str]:
        num_classes = int(max(table["label"].max(), table["prediction"].max())) + 1
        names = self.class_names or [str(c) for c in range(num_classes)]
        if len(names) < num_classes:
            _skip(skipped, f"class_names: {len(names)} names for {num_classes} classes; numbers used for the rest")
            names = [*names, *(str(c) for c in range(len(names), num_classes))]
        return names

    def _write_dashboard(
        self,
        run_dir: Path,
        table: pd.DataFrame,
        shared: Contribution,
        class_names: list[str],
        images: ImageFetcher | None,
        skipped: list[str],
    ) -> None:
        """The TensorBoard dashboard's assets (projection, thumbnails, neighbours) beside the table."""
        from lightning_difficulty.dashboard import write_dashboard_assets

        try:
            write_dashboard_assets(
                run_dir,
                table,
                class_names=class_names,
                embeddings=shared.embeddings or None,
                images=images,
                neighbours=shared.neighbours,
                probe_names=shared.probe_names or None,
            )
        except Exception as err:
            _skip(skipped, f"the dashboard assets: {type(err).__name__}: {err}")

    def _log_views(
        self,
        trainer: pl.Trainer,
        table: pd.DataFrame,
        shared: Contribution,
        contributions: dict[str, tuple[DifficultyCallback, Contribution]],
        view_inputs: tuple[list[str], tuple[str, ...], ImageFetcher | None],
        skipped: list[str],
    ) -> None:
        from lightning_difficulty.views import report_views
        from lightning_difficulty.views.tensorboard import tensorboard_logger, warn_no_tensorboard

        logger = tensorboard_logger(trainer)
        if logger is None:
            warn_no_tensorboard(trainer, "figures, image grids and the projector")
            return
        class_names, perspectives, images = view_inputs
        context = report_views.ViewContext(
            writer=logger.experiment,
            log_dir=logger.log_dir,
            table=table,
            summary=self.summary,
            step=trainer.current_epoch,
            options=report_views.ViewOptions(
                class_names=class_names, grid_per_class=self.grid_per_class, projector_split=self.projector_split
            ),
            images=images,
            neighbours=shared.neighbours,
            embeddings=shared.embeddings,
            perspectives=perspectives,
        )
        views: list[tuple[str, Callable[[Any], None]]] = [("report views", report_views.log_report_views)]
        views += [(key, view) for key, (_, part) in contributions.items() for view in part.views]
        for owner, view in views:
            try:
                view(context)
            except Exception as err:
                _skip(skipped, f"a view of {owner}: {err!r}")
        logger.experiment.flush()


def _discard_previous_report(run_dir: Path) -> None:
    """A new fit into a folder that holds an earlier run's report: its records are being replaced, so its table
    and summary go too (only this package's report files; a mixed folder would be read as one run)."""
    present = [name for name in REPORT_FILES if (run_dir / name).exists()]
    if not present:
        return
    for name in present:
        (run_dir / name).unlink(missing_ok=True)
    rank_zero_warn(
        f"DifficultyReport: {run_dir} held an earlier run's report ({', '.join(present)}); a new fit writes there, so "
        "those files were removed with that run's records. Give each run its own `dirpath` to keep both."
    )


def _difficulty_callbacks(trainer: pl.Trainer) -> list[DifficultyCallback]:
    return [cb for cb in trainer.callbacks if isinstance(cb, DifficultyCallback)]  # type: ignore[attr-defined]


def _compute_all(
    trainer: pl.Trainer,
    callbacks: list[DifficultyCallback],
    arrays: FitEndArrays,
    skipped: list[str],
    seconds: dict[str, float],
    stages: Stages,
) -> dict[str, tuple[DifficultyCallback, Contribution]]:
    """Every callback's measure; one that fails is skipped with a warning (the table is still written)."""
    out: dict[str, tuple[DifficultyCallback, Contribution]] = {}
    for cb in callbacks:
        key = cb.state_key
        while key in out:  # identical callbacks (same arguments) still get one entry each
            key += "#"
        try:
            with _timed(seconds, key), stages.step(type(cb).__name__):
                out[key] = (cb, cb.compute(trainer, arrays))
        except Exception as err:
            _skip(skipped, f"{cb.state_key}: {type(err).__name__}: {err}")
    return out


@contextlib.contextmanager
def _timed(seconds: dict[str, float], stage: str) -> Iterator[None]:
    """Add the wall seconds of the block to ``seconds[stage]`` (``summary.json["fit_end_seconds"]``)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - start


@contextlib.contextmanager
def _optional(skipped: list[str], what: str) -> Iterator[None]:
    """Run an optional derivation: a failure is skipped with a warning (the table is still written)."""
    try:
        yield
    except Exception as err:
        _skip(skipped, f"{what}: {type(err).__name__}: {err}")


def _skip(skipped: list[str], reason: str) -> None:
    skipped.append(reason)
    rank_zero_warn(f"DifficultyReport skipped {reason}")


def _info_json(info: ColumnInfo) -> dict[str, Any]:
    out = dataclasses.asdict(info)
    if info.range is not None:
        out["range"] = [None if not np.isfinite(v) else v for v in info.range]
    return out


def _augments(loader: Any) -> bool:
    """Whether the loader's dataset (or one it wraps) has a ``transform`` whose name says it is random."""
    dataset = getattr(loader, "dataset", None)
    for _ in range(4):
        transform = getattr(dataset, "transform", None)
        if transform is not None and "random" in repr(transform).lower():
            return True
        dataset = getattr(dataset, "dataset", None)
    return False


def _image_fetcher(trainer: pl.Trainer, keys: Any) -> ImageFetcher | None:
    """``(split, indices) -> stacked inputs`` for image datasets; ``None`` for anything else."""

    def fetch(split: str, indices: Sequence[int]) -> torch.Tensor:
        dataset = split_loader(trainer, split).dataset
        return torch.stack([torch.as_tensor(np.asarray(item_input(dataset[int(i)], keys))) for i in indices])

    try:
        sample = fetch("train", [0])[0]
    except Exception:
        return None
    is_image = sample.ndim == 2 or (sample.ndim == 3 and (sample.shape[0] in (1, 3) or sample.shape[-1] in (1, 3)))
    return fetch if is_image else None
