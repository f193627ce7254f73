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

import shutil
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from weakref import WeakKeyDictionary

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from lightning_difficulty.callbacks._distributed import barrier, rank_and_world
from lightning_difficulty.callbacks._tap import LogitsTap, no_logits_error, resolve_modules
from lightning_difficulty.data import BatchKeys, unpack_batch

if TYPE_CHECKING:
    import lightning.pytorch as pl

Reduction = Literal["auto"] | None
MAX_DIMS = 256
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

    @property
    def predictions(self) -> np.ndarray:
        return np.asarray(self.logits).argmax(axis=1)


@dataclass
class PassRequest:
    """What the difficulty callbacks of a trainer need from the pass."""

    layers: dict[str, Reduction] = field(default_factory=dict)
    keep_inputs: bool = False
    input_size: int | None = None
    batch_keys: BatchKeys = field(default_factory=BatchKeys)
    logits_from: str | None = None
    reference_dataloader: DataLoader | None = None


_PASSES: WeakKeyDictionary[Any, tuple[int, dict[str, SplitArrays]]] = WeakKeyDictionary()


def cache_dir(trainer: pl.Trainer) -> Path:
    """``<run dir>/cache``: where the pass arrays live until the report has used them."""
    from lightning_difficulty.callbacks.base import run_dir

    return run_dir(trainer) / "cache"


def fit_end_arrays(trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, SplitArrays]:
    """Run the fit-end pass once per fit (collective under DDP) and return ``split -> arrays``."""
    cached = _PASSES.get(trainer)
    if cached is not None and cached[0] == trainer.global_step:
        return cached[1]
    arrays = run_pass(trainer, pl_module, collect_request(trainer, pl_module), cache_dir(trainer))
    _PASSES[trainer] = (trainer.global_step, arrays)
    return arrays


def collect_request(trainer: pl.Trainer, pl_module: pl.LightningModule) -> PassRequest:
    """Merge what every difficulty callback asks of the pass, refusing contradictions."""
    from lightning_difficulty.callbacks.base import DifficultyCallback

    request = PassRequest()
    owners: dict[str, str] = {}
    input_owner = ""
    for cb in trainer.callbacks:  # type: ignore[attr-defined]
        if not isinstance(cb, DifficultyCallback):
            continue
        cb.prepare_pass(trainer, pl_module)
        for name, reduction in cb.pass_layers().items():
            if name in request.layers and request.layers[name] != reduction:
                raise ValueError(
                    f"Layer {name!r} is requested with reduction={request.layers[name]!r} by {owners[name]} and "
                    f"reduction={reduction!r} by {type(cb).__name__}. Use one reduction per layer."
                )
            request.layers[name], owners[name] = reduction, type(cb).__name__
        if cb.needs_pass_inputs():
            size = getattr(cb, "input_size", None)
            if request.keep_inputs and size != request.input_size:
                raise ValueError(
                    f"{type(cb).__name__}(input_size={size!r}) contradicts {input_owner}(input_size="
                    f"{request.input_size!r}): the input probe and kDN share one input array. Use one input_size."
                )
            request.keep_inputs, request.input_size, input_owner = True, size, type(cb).__name__
        for attr, default in (("batch_keys", BatchKeys()), ("logits_from", None), ("reference_dataloader", None)):
            value = getattr(cb, attr, None)
            if value is not None and value != default:
                setattr(request, attr, value)
    return request


def run_pass(
    trainer: pl.Trainer, pl_module: pl.LightningModule, request: PassRequest, cache_dir: Path
) -> dict[str, SplitArrays]:
    """Evaluate the model over the reference split (``"train"``) and every validation split."""
    loaders = _split_loaders(trainer, request)
    out: dict[str, SplitArrays] = {}
    with _eval_mode(pl_module):
        for split, loader in loaders.items():
            out[split] = _run_split(trainer, pl_module, request, loader, Path(cache_dir) / split, split)
    return out


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
    trainer: pl.Trainer, pl_module: pl.LightningModule, candidates: dict[str, nn.Module], request: PassRequest
) -> list[str]:
    """The names of ``candidates`` that run in the model's ``forward``, in the order they run (one batch)."""
    order: list[str] = []

    def make_hook(name: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if name not in order:
                order.append(name)

        return hook

    handles = [module.register_forward_hook(make_hook(name)) for name, module in candidates.items()]
    loader = next(iter(_split_loaders(trainer, request).values()))
    try:
        batch = unpack_batch(next(iter(loader)), request.batch_keys)
        with _eval_mode(pl_module), trainer.precision_plugin.forward_context():
            pl_module(trainer.strategy.batch_to_device(batch.input))
    finally:
        for handle in handles:
            handle.remove()
    return order


def _split_loaders(trainer: pl.Trainer, request: PassRequest) -> dict[str, DataLoader]:
    from lightning_difficulty.callbacks.base import split_name

    loaders: dict[str, DataLoader] = {}
    train = request.reference_dataloader or trainer.train_dataloader
    if train is not None:
        loaders["train"] = train
    val = trainer.val_dataloaders
    if val is not None:
        for i, loader in enumerate(val if isinstance(val, (list, tuple)) else [val]):
            loaders[split_name(i)] = loader
    return loaders


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
    size = len(loader.dataset)  # type: ignore[arg-type]
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size or 256,
        sampler=range(rank, size, world),
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
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

    def __init__(self, directory: Path, rows: int, *, by_index: bool) -> None:
        self.directory, self.rows, self.by_index = directory, rows, by_index
        self.arrays: dict[str, np.ndarray] = {}
        self.cursor = 0

    def write(self, index: np.ndarray, parts: dict[str, np.ndarray]) -> None:
        for name, values in parts.items():
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
    request: PassRequest,
    loader: DataLoader,
    directory: Path,
    split: str,
) -> SplitArrays:
    rank, world = rank_and_world()
    size = len(loader.dataset)  # type: ignore[arg-type]
    shard_dir = directory if world == 1 else directory / f"rank{rank}"
    if rank == 0 and directory.exists():
        shutil.rmtree(directory)
    barrier()
    shard_dir.mkdir(parents=True, exist_ok=True)
    shard = _sharded_loader(loader, rank, world)
    writer = _ShardWriter(shard_dir, size if world == 1 else len(shard.sampler), by_index=world == 1)  # type: ignore[arg-type]
    tap = LogitsTap(request.logits_from)
    tap.attach(pl_module)
    hooks = _LayerHooks(pl_module, request.layers)
    try:
        show = rank == 0 and trainer.progress_bar_callback is not None
        for raw in _progress(shard, f"difficulty pass [{split}]", show):
            batch = unpack_batch(raw, request.batch_keys)
            inputs = trainer.strategy.batch_to_device(batch.input)
            tap.open(int(batch.index.shape[0]))
            hooks.outputs.clear()
            with trainer.precision_plugin.forward_context():
                pl_module(inputs)
            logits = tap.close()
            if logits is None:
                raise no_logits_error(f"fit-end evaluation pass over {split!r}", request.logits_from, len(batch.index))
            parts = {
                "index": batch.index.cpu().numpy().astype(np.int64),
                "labels": batch.target.cpu().numpy().astype(np.int64),
                "logits": logits.float().cpu().numpy(),
            }
            for name, value in hooks.outputs.items():
                parts[f"layer.{name}"] = value.cpu().numpy().astype(hooks.reducers[name].dtype)
            if request.keep_inputs:
                parts["inputs"] = _flatten_input(inputs, request.input_size).cpu().numpy()
            writer.write(parts["index"], parts)
    finally:
        tap.remove()
        hooks.remove()
    writer.flush()
    barrier()
    if world > 1:
        if rank == 0:
            _merge_shards(directory, world, size)
        barrier()
    return _open_split(directory, list(request.layers), request.keep_inputs)


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
            merged[path.stem][index] = part
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


def _progress(loader: DataLoader, label: str, show: bool) -> Iterator[Any]:
    yield from tqdm(loader, desc=label, disable=not show, leave=False, dynamic_ncols=True)
