"""The fit-end evaluation pass: the final model, in eval mode, once over every split.

Captures per sample (keyed by dataset index): the label, the final logits, the reduced output of
every probed layer and, when asked, the flattened input. Arrays stream into ``.npy`` memmaps
under ``<run_dir>/cache/<split>/`` so nothing O(N*d) has to fit in memory. Under DDP each rank
runs a strided shard and rank 0 merges the shards by index.

Layer reduction (``"auto"``, the default): conv maps ``(N, C, H, W)`` are average-pooled to a
2x2 grid, token maps ``(N, T, D)`` averaged over tokens, and anything wider than 256 features
is multiplied by a fixed Gaussian random projection to 256 dims (Johnson-Lindenstrauss: pairwise
distances kept up to a small relative error), then stored as float16. ``reduction=None`` keeps the
raw flattened activation in float32.
"""

from __future__ import annotations

import functools
import shutil
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from lightning_difficulty.data import BatchKeys, class_targets, unpack_batch
from lightning_difficulty.logits import LogitsTap, as_class_logits, no_logits_error, resolve_modules
from lightning_difficulty.pipeline.neighbours import Found, ProbeConfig, Ranks, neighbours_by_split
from lightning_difficulty.pipeline.progress import Progress
from lightning_difficulty.pipeline.splits import split_loaders

if TYPE_CHECKING:
    import lightning.pytorch as pl

Reduction = Literal["auto"] | None
MAX_DIMS = 256
ROW_BLOCK = 65_536
"""Rows read or copied per step when an (N, width) array is too big to hold at once (merges, argmax, scores)."""
POOL_GRID = 2


class ActivationReducer:
    """Reduce a layer's output ``(N, ...)`` to ``(N, d)`` (see the module docstring).

    Example::

        >>> r = ActivationReducer("conv", "auto")
        >>> r(torch.randn(5, 128, 8, 8)).shape   # 128 channels x 2x2 grid = 512 -> projected
        torch.Size([5, 256])
    """

    def __init__(self, name: str, reduction: Reduction = "auto", *, max_dims: int = MAX_DIMS) -> None:
        if reduction not in ("auto", None):
            raise ValueError(f"Invalid value for reduction={reduction!r}. Must be 'auto' or None (raw activations).")
        self.name, self.reduction, self.max_dims = name, reduction, max_dims
        self._projection: Tensor | None = None

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.float32 if self.reduction is None else np.float16)

    def __call__(self, output: Tensor) -> Tensor:
        x = output.detach()
        if self.reduction is None:
            return x.flatten(1).float()
        if x.ndim == 4:
            x = F.adaptive_avg_pool2d(x.float(), POOL_GRID)
        elif x.ndim == 3:
            x = x.float().mean(dim=1)
        x = x.flatten(1).float()
        if x.shape[1] > self.max_dims:
            # in float32 also under a bf16-mixed run's autocast (a bf16 result would round, and numpy lacks bf16)
            with torch.autocast(x.device.type, enabled=False):
                x = x @ self._project(x.shape[1], x.device)
        return x

    def _project(self, dims: int, device: torch.device) -> Tensor:
        if self._projection is None or self._projection.shape[0] != dims:
            gen = torch.Generator().manual_seed(zlib.crc32(self.name.encode()))
            matrix = torch.randn(dims, self.max_dims, generator=gen) / self.max_dims**0.5
            self._projection = matrix
        return self._projection.to(device)


@dataclass
class SplitArrays:
    """Read-only memmaps of one split, rows keyed by dataset index."""

    labels: np.ndarray
    logits: np.ndarray
    layers: dict[str, np.ndarray] = field(default_factory=dict)
    inputs: np.ndarray | None = None

    @functools.cached_property
    def predictions(self) -> np.ndarray:
        """The final model's class per row (argmax of the logits, read ``ROW_BLOCK`` rows at a time)."""
        out = np.empty(len(self.logits), dtype=np.int64)
        for start in range(0, len(out), ROW_BLOCK):
            out[start : start + ROW_BLOCK] = np.asarray(self.logits[start : start + ROW_BLOCK]).argmax(axis=1)
        return out


@dataclass(frozen=True)
class CaptureRequest:
    """What one callback needs from the fit-end capture pass (frozen: callbacks declare, the report merges).

    ``None`` fields mean "no preference"; two callbacks that set the same field to different values are
    refused by :func:`merge_requests`.

    Example::

        >>> CaptureRequest(layers=("body.0", "head"), inputs=True).inputs
        True
    """

    layers: tuple[str, ...] | Literal["auto"] = ()
    reduction: Reduction = "auto"
    inputs: bool = False
    input_size: int | None = None
    reference_dataloader: DataLoader | None = None
    batch_keys: BatchKeys | None = None
    logits_from: str | None = None
    input_search: ProbeConfig | None = None
    """A k-NN search in input space: callbacks asking for the same index share one search with the largest k."""


@dataclass
class CapturePlan:
    """The merged requests of every callback: one pass serves them all."""

    layers: dict[str, Reduction] = field(default_factory=dict)
    auto_reduction: Reduction | Literal["none"] = "none"
    inputs: bool = False
    input_size: int | None = None
    reference_dataloader: DataLoader | None = None
    batch_keys: BatchKeys = field(default_factory=BatchKeys)
    logits_from: str | None = None
    input_searches: dict[tuple[Any, ...], ProbeConfig] = field(default_factory=dict)


@dataclass
class FitEndArrays:
    """Everything the capture pass produced: ``split -> arrays``, the layers ``"auto"`` resolved to, and the
    neighbour searches over them (split across ranks under DDP, answers streamed to ``search_dir``)."""

    splits: dict[str, SplitArrays]
    auto_layers: tuple[str, ...] = ()
    input_searches: dict[tuple[Any, ...], ProbeConfig] = field(default_factory=dict)
    ranks: Ranks = field(default_factory=Ranks)
    search_dir: Path | None = None
    progress: Progress = field(default_factory=lambda: Progress(False))
    _found: dict[tuple[Any, ...], dict[str, Found]] = field(default_factory=dict, repr=False)
    _searches: int = field(default=0, repr=False)
    _scratches: int = field(default=0, repr=False)

    def layers_for(self, request: CaptureRequest) -> tuple[str, ...]:
        """The layer names behind ``request.layers`` (``"auto"`` resolved)."""
        return self.auto_layers if request.layers == "auto" else tuple(request.layers)

    def scratch(self, name: str) -> Path | None:
        """A fresh folder for O(N) arrays a measure keeps off RAM (``None`` when the arrays live in memory). Not
        collective: unlike :meth:`search`, one rank may ask for it alone."""
        if self.search_dir is None:
            return None
        self._scratches += 1  # its own count: scratch folders may be asked for on one rank only
        return self.search_dir / "scratch" / f"{self._scratches:03d}-{name}"

    def search(
        self,
        name: str,
        reference: np.ndarray,
        queries: dict[str, np.ndarray],
        config: ProbeConfig,
        rows: dict[str, np.ndarray | None] | None = None,
    ) -> dict[str, Found]:
        """``split -> Found``: the ``config.k`` nearest training rows of each split's queries (leave-one-out for
        ``"train"``). Collective under DDP: every rank calls it, in the same order, with the same arguments."""
        self._searches += 1
        directory = None if self.search_dir is None else self.search_dir / f"{self._searches:03d}-{name}"
        return neighbours_by_split(
            reference,
            queries,
            config,
            rows=rows,
            ranks=self.ranks,
            directory=directory,
            progress=self.progress,
            name=name,
        )

    def input_neighbours(self, config: ProbeConfig, train_rows: np.ndarray | None = None) -> dict[str, Found]:
        """``split -> Found`` of the ``config.k`` nearest training inputs (leave-one-out for ``"train"``), for the
        training rows ``train_rows`` (``None``: all) and every row of the other splits.

        Every callback that requested this search (the same index once ``"auto"`` is resolved for the training
        set's size) shares one search with the largest ``k``, over every training row unless all of them allow a
        sample; each gets its first ``config.k`` columns. Example: PredictionDepth's input probe (k=30) and
        DataDifficulty (k=10) search input space once. Collective.
        """
        n_train = len(self.splits["train"].labels)
        config = config.resolved(n_train)
        shared = config
        for requested in (r.resolved(n_train) for r in self.input_searches.values()):
            if requested.index_key == config.index_key:
                shared = shared.widest(requested)
        searched = train_rows if shared.sampled_train else None
        found = self._found.get(config.index_key)
        if found is None or found["train"].k < shared.k or not found["train"].covers(train_rows):
            reference = self.splits["train"].inputs
            assert reference is not None, "inputs were not captured: request them with CaptureRequest(inputs=True)"
            queries = {split: data.inputs for split, data in self.splits.items() if data.inputs is not None}
            found = self.search("input", reference, queries, shared, {"train": searched})
            self._found[config.index_key] = found
        return {split: f.first(config.k).at(train_rows if split == "train" else None) for split, f in found.items()}


RAW = "None (raw activations)"
"""How ``reduction=None`` is named when two requests disagree about it."""


def merge_requests(requests: Sequence[tuple[str, CaptureRequest]]) -> CapturePlan:
    """Merge ``(owner, request)`` pairs into one plan, refusing contradictions with both owners named.

    Example::

        >>> plan = merge_requests([("A", CaptureRequest(inputs=True)), ("B", CaptureRequest(layers=("fc",)))])
        >>> plan.inputs, list(plan.layers)
        (True, ['fc'])
    """
    plan = CapturePlan()
    setters: dict[str, tuple[str, Any]] = {}

    def agree(name: str, owner: str, value: Any) -> None:
        if value is None:
            return
        if name in setters and not _same(setters[name][1], value):
            first, earlier = setters[name]
            raise ValueError(
                f"Conflicting fit-end capture requests: {first} asks for {name}={_show(earlier)} but {owner} asks for "
                f"{name}={_show(value)}. One pass serves every callback: give both the same {name}."
            )
        setters.setdefault(name, (owner, value))

    for owner, request in requests:
        # reduction=None (raw activations) is a choice, not "no preference": it must agree like any other value
        reduction = RAW if request.reduction is None else request.reduction
        if request.layers == "auto":
            agree("reduction of layers='auto'", owner, reduction)
            plan.auto_reduction = request.reduction
        else:
            for layer in request.layers:
                agree(f"reduction of layer {layer!r}", owner, reduction)
                plan.layers[layer] = request.reduction
        if request.inputs:
            agree("input_size", owner, request.input_size if request.input_size is not None else "native")
            plan.inputs, plan.input_size = True, request.input_size
        agree("reference_dataloader", owner, request.reference_dataloader)
        agree("batch_keys", owner, request.batch_keys)
        agree("logits_from", owner, request.logits_from)
        if request.input_search is not None:
            key = request.input_search.index_key
            widest = plan.input_searches.get(key, request.input_search).widest(request.input_search)
            plan.input_searches[key] = widest
    plan.reference_dataloader = setters.get("reference_dataloader", ("", None))[1]
    plan.batch_keys = setters.get("batch_keys", ("", BatchKeys()))[1]
    plan.logits_from = setters.get("logits_from", ("", None))[1]
    return plan


def _same(a: Any, b: Any) -> bool:
    return a is b if isinstance(a, DataLoader) or isinstance(b, DataLoader) else bool(a == b)


def _show(value: Any) -> str:
    return f"<{type(value).__name__} at {id(value):#x}>" if isinstance(value, DataLoader) else repr(value)


def run_capture(trainer: pl.Trainer, pl_module: pl.LightningModule, plan: CapturePlan, cache_dir: Path) -> FitEndArrays:
    """Evaluate the model once over the reference split (``"train"``) and every validation split.

    Collective under DDP (every rank runs a shard; rank 0 merges). ``layers="auto"`` requests are resolved
    here to the model's top-level blocks in forward order.
    """
    auto: tuple[str, ...] = ()
    layers = dict(plan.layers)
    if plan.auto_reduction != "none":
        auto = tuple(forward_order(trainer, pl_module, top_level_blocks(pl_module), plan))
        for name in auto:
            layers.setdefault(name, plan.auto_reduction)
    resolved = replace(plan, layers=layers)
    out: dict[str, SplitArrays] = {}
    with _eval_mode(pl_module):
        for split, loader in split_loaders(trainer, plan.reference_dataloader).items():
            out[split] = _run_split(trainer, pl_module, resolved, loader, Path(cache_dir) / split, split)
    searches = dict(plan.input_searches)
    return FitEndArrays(out, auto, searches, Ranks.of(trainer), Path(cache_dir) / "neighbours", Progress.of(trainer))


def top_level_blocks(model: nn.Module) -> dict[str, nn.Module]:
    """The model's children, descending through single-child wrappers (``self.net = resnet18()``).

    Example::

        >>> net = nn.Module(); net.body = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
        >>> list(top_level_blocks(net))
        ['body.0', 'body.1']
    """
    root, prefix = model, ""
    children = list(root.named_children())
    while len(children) == 1 and list(children[0][1].children()):
        name, root = children[0]
        prefix += name + "."
        children = list(root.named_children())
    return {prefix + name: child for name, child in children}


def forward_order(
    trainer: pl.Trainer, pl_module: pl.LightningModule, candidates: dict[str, nn.Module], plan: CapturePlan
) -> list[str]:
    """The names of ``candidates`` that run in the model's ``forward``, in the order they run (one batch)."""
    order: list[str] = []

    def make_hook(name: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if name not in order:
                order.append(name)

        return hook

    handles = [module.register_forward_hook(make_hook(name)) for name, module in candidates.items()]
    loader = next(iter(split_loaders(trainer, plan.reference_dataloader).values()))
    try:
        batch = unpack_batch(next(iter(loader)), plan.batch_keys)
        with _eval_mode(pl_module), trainer.precision_plugin.forward_context():
            pl_module(_model_input(trainer, batch.input))
    finally:
        for handle in handles:
            handle.remove()
    return order


def _model_input(trainer: pl.Trainer, inputs: Any) -> Any:
    """Move a batch's input to the device and cast it as the trainer's precision does for its steps."""
    return trainer.precision_plugin.convert_input(trainer.strategy.batch_to_device(inputs))


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        module.train(was_training)


def _sharded_loader(loader: DataLoader, rank: int, world: int) -> DataLoader:
    """The same data, un-shuffled, every ``world``-th sample from ``rank`` (workers set up as the user's)."""
    size = len(loader.dataset)  # type: ignore[arg-type]
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size or 256,
        sampler=range(rank, size, world),
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context if loader.num_workers else None,
        generator=loader.generator,
    )


class _LayerHooks:
    """Forward hooks that keep each probed layer's reduced output of the current batch."""

    def __init__(self, model: nn.Module, layers: dict[str, Reduction]) -> None:
        modules = resolve_modules(model, list(layers), argument="layers")
        self.reducers = {name: ActivationReducer(name, red) for name, red in layers.items()}
        self.outputs: dict[str, Tensor] = {}
        self._handles = [m.register_forward_hook(self._make_hook(n)) for n, m in modules.items()]

    def _make_hook(self, name: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if isinstance(output, (tuple, list)):
                output = output[0]
            if name not in self.outputs:
                self.outputs[name] = self.reducers[name](output)

        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


class _ShardWriter:
    """Rows of one rank, allocated as memmaps when the first batch shows their widths."""

    def __init__(self, directory: Path, rows: int, *, by_index: bool, size: int) -> None:
        self.directory, self.rows, self.by_index, self.size = directory, rows, by_index, size
        self.arrays: dict[str, np.ndarray] = {}
        self.cursor = 0

    def write(self, index: np.ndarray, parts: dict[str, np.ndarray]) -> None:
        if index.size and (index.min() < 0 or index.max() >= self.size):
            raise IndexError(
                f"Dataset index out of range in the fit-end pass: got indices in [{index.min()}, {index.max()}] but "
                f"the dataset has {self.size} samples. The index must be the position in the dataset (IndexedDataset)."
            )
        for name, values in parts.items():
            if name in self.arrays and self.arrays[name].shape[1:] != values.shape[1:]:
                raise ValueError(
                    f"The fit-end pass got {name!r} of shape {values.shape[1:]} per sample after "
                    f"{self.arrays[name].shape[1:]} in earlier batches: inputs of varying size cannot share one "
                    "k-NN space. Pass input_size=<side> (images are pooled to it) and keep reduction='auto' for layers."
                )
            if name not in self.arrays:
                shape = (self.rows, *values.shape[1:])
                path = self.directory / f"{name}.npy"
                self.arrays[name] = np.lib.format.open_memmap(path, mode="w+", dtype=values.dtype, shape=shape)
            target = index if self.by_index else slice(self.cursor, self.cursor + len(index))
            self.arrays[name][target] = values
        self.cursor += len(index)

    def flush(self) -> None:
        for array in self.arrays.values():
            array.flush()  # type: ignore[attr-defined]


def _run_split(
    trainer: pl.Trainer,
    pl_module: pl.LightningModule,
    plan: CapturePlan,
    loader: DataLoader,
    directory: Path,
    split: str,
) -> SplitArrays:
    rank, world = trainer.global_rank, trainer.world_size
    size = len(loader.dataset)  # type: ignore[arg-type]
    shard_dir = directory if world == 1 else directory / f"rank{rank}"
    if rank == 0 and directory.exists():
        shutil.rmtree(directory)
    trainer.strategy.barrier()
    shard_dir.mkdir(parents=True, exist_ok=True)
    shard = _sharded_loader(loader, rank, world)
    rows = size if world == 1 else len(shard.sampler)  # type: ignore[arg-type]
    writer = _ShardWriter(shard_dir, rows, by_index=world == 1, size=size)
    tap = LogitsTap(plan.logits_from)
    tap.attach(pl_module)
    hooks = _LayerHooks(pl_module, plan.layers)
    try:
        for raw in Progress.of(trainer).iterate(shard, f"difficulty pass [{split}]"):
            batch = unpack_batch(raw, plan.batch_keys)
            inputs = _model_input(trainer, batch.input)
            tap.open(int(batch.index.shape[0]))
            hooks.outputs.clear()
            with trainer.precision_plugin.forward_context():
                pl_module(inputs)
            logits = tap.close()
            if logits is None:
                raise no_logits_error(f"fit-end evaluation pass over {split!r}", plan.logits_from, len(batch.index))
            parts = {
                "index": batch.index.cpu().numpy().astype(np.int64),
                "labels": class_targets(batch.target, where=f"fit-end pass over {split!r}").cpu().numpy(),
                "logits": as_class_logits(logits).float().cpu().numpy(),
            }
            for name, value in hooks.outputs.items():
                parts[f"layer.{name}"] = value.cpu().numpy().astype(hooks.reducers[name].dtype)
            if plan.inputs:
                parts["inputs"] = _flatten_input(inputs, plan.input_size).cpu().numpy()
            writer.write(parts["index"], parts)
    finally:
        tap.remove()
        hooks.remove()
    writer.flush()
    trainer.strategy.barrier()
    if world > 1:
        if rank == 0:
            _merge_shards(directory, world, size)
        trainer.strategy.barrier()
    return _open_split(directory, list(plan.layers), plan.inputs)


def _flatten_input(inputs: Tensor, size: int | None) -> Tensor:
    x = inputs.float()
    if size is not None and x.ndim == 4:
        x = F.adaptive_avg_pool2d(x, size)
    return x.flatten(1)


def _merge_shards(directory: Path, world: int, size: int) -> None:
    merged: dict[str, np.ndarray] = {}
    for rank in range(world):
        shard_dir = directory / f"rank{rank}"
        index = np.load(shard_dir / "index.npy")
        for path in sorted(shard_dir.glob("*.npy")):
            part = np.load(path, mmap_mode="r")
            if path.stem not in merged:
                merged[path.stem] = np.lib.format.open_memmap(
                    directory / path.name, mode="w+", dtype=part.dtype, shape=(size, *part.shape[1:])
                )
            for start in range(0, len(index), ROW_BLOCK):  # bounded memory: one block of rows at a time
                merged[path.stem][index[start : start + ROW_BLOCK]] = part[start : start + ROW_BLOCK]
    for array in merged.values():
        array.flush()  # type: ignore[attr-defined]
    for rank in range(world):
        shutil.rmtree(directory / f"rank{rank}")


def _open_split(directory: Path, layers: list[str], keep_inputs: bool) -> SplitArrays:
    def load(name: str) -> np.ndarray:
        return np.load(directory / f"{name}.npy", mmap_mode="r")

    return SplitArrays(
        labels=load("labels"),
        logits=load("logits"),
        layers={name: load(f"layer.{name}") for name in layers},
        inputs=load("inputs") if keep_inputs else None,
    )
