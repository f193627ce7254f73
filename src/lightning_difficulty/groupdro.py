"""GroupDRO for Lightning: a loss module with its q weights as state, a training wrapper, a sampler.

Typical use with confusion bands as groups (Albiero et al.: two bands split at 5 nats)::

    groups = threshold_bands(train_confusion, thresholds=[5.0])      # 0 = easy, 1 = hard
    module = GroupDROModule(classifier, groups, val_groups=val_bands)
    trainer.fit(module, DataLoader(IndexedDataset(train_set), ...))  # batches: (input, target, index)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from numpy.typing import ArrayLike
from torch import Tensor, nn
from torch.utils.data import IterableDataset, WeightedRandomSampler
from typing_extensions import override

from lightning_difficulty.functional.groupdro import (
    check_group_range,
    group_sums,
    groupdro_adjustment,
    groupdro_update,
)
from lightning_difficulty.pipeline.splits import validation_loaders

__all__ = ["GroupDROLoss", "GroupDROModule", "group_balanced_sampler"]


def _as_group_ids(groups: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(groups)
    if arr.ndim != 1 or arr.size == 0 or arr.dtype.kind not in "iu":
        raise ValueError(
            f"Expected argument `{name}` to be a non-empty 1-D integer array, but got shape {arr.shape}"
            f" and dtype {arr.dtype}."
        )
    if arr.min() < 0:
        raise ValueError(f"Expected argument `{name}` to be non-negative, but got {int(arr.min())}.")
    return arr.astype(np.int64)


def _dataset_length(loader: Any) -> int | None:
    """Length of a dataloader's dataset, or ``None`` when it has none (an iterable dataset)."""
    dataset = getattr(loader, "dataset", None)
    if dataset is None or isinstance(dataset, IterableDataset) or not hasattr(dataset, "__len__"):
        return None
    return len(dataset)


def _check_covers(groups: Tensor, name: str, size: int | None, split: str) -> None:
    """Refuse a group array whose length is not the dataset's (one group id per dataset index)."""
    if size is not None and size != len(groups):
        raise ValueError(
            f"Expected argument `{name}` to hold one group id per {split} sample ({size}, the length of its"
            f" dataset), but got {len(groups)}. Pass the groups of this very dataset, indexed by dataset index"
            " (e.g. `groups_from_run(run_dir, dataset)`)."
        )


def _check_index(index: Tensor, groups: Tensor, name: str) -> None:
    """Refuse a batch whose dataset indices fall outside the group array."""
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= len(groups)):
        raise ValueError(
            f"Got dataset indices in [{int(index.min())}, {int(index.max())}], but argument `{name}` holds"
            f" {len(groups)} group ids (indices 0..{len(groups) - 1}). Pass one group id per sample of the dataset."
        )


def _distributed_world() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


class GroupDROLoss(nn.Module):
    """Online GroupDRO loss (Sagawa et al. 2020) keeping the group weights ``q`` as a buffer.

    Each call in training mode performs one :func:`~lightning_difficulty.functional.groupdro.groupdro_step`:
    group means ``L_g``, ``A_g = L_g + C_g / sqrt(N_g)``, ``q <- normalise(q * exp(eta * A))`` and
    returns ``sum_g q_g * A_g`` with the updated ``q``. In eval mode ``q`` is left unchanged and the
    loss uses the current ``q``. ``q`` is a registered buffer, so it is saved in ``state_dict`` and a
    resumed run continues exactly.

    Distributed: when ``torch.distributed`` is initialised with more than one process and
    ``sync_dist=True``, the per-group loss **sums** and **counts** are all-reduced before the group
    means are taken, so ``L_g`` is the group mean over the global batch (all ranks) and every rank
    applies the same q update. The loss value is then the same on all ranks, and its gradient is
    scaled so that, after DDP averages gradients over the ``W`` ranks, it equals the gradient of the
    single-process loss on the concatenated batch. Every rank must call ``forward`` the same number
    of times (it is a collective). With ``sync_dist=False`` each rank uses its local batch and the
    ``q`` of different ranks drift apart.

    Args:
        num_groups: number of groups ``G``.
        group_sizes: training-set size ``N_g`` of each group; needed when ``adjustment`` is nonzero.
        adjustment: generalisation adjustment ``C`` (non-negative; scalar or one per group).
        eta: step size of the q update.
        sync_dist: all-reduce group statistics across processes (see above).

    Attributes:
        q: ``(G,)`` current group weights (buffer, float32).
        last_group_losses: ``(G,)`` unadjusted group means of the latest call (0 for absent groups).
        last_group_counts: ``(G,)`` group counts of the latest call (global when synchronised).

    Example::

        >>> crit = GroupDROLoss(2)
        >>> loss = crit(torch.tensor([1.0, 3.0]), torch.tensor([0, 1]))
        >>> [round(v, 4) for v in crit.q.tolist()]
        [0.495, 0.505]
    """

    q: Tensor
    adjustment_term: Tensor
    last_group_losses: Tensor
    last_group_counts: Tensor

    def __init__(
        self,
        num_groups: int,
        *,
        group_sizes: Sequence[int] | Tensor | None = None,
        adjustment: float | Sequence[float] | Tensor = 0.0,
        eta: float = 0.01,
        sync_dist: bool = True,
    ) -> None:
        super().__init__()
        term = groupdro_adjustment(adjustment, num_groups=num_groups, group_sizes=group_sizes)
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0 <= eta < float("inf"):
            raise ValueError(f"Expected argument `eta` to be a non-negative finite number, but got {eta!r}.")
        self.num_groups = num_groups
        self.eta = float(eta)
        self.sync_dist = sync_dist
        self.register_buffer("q", torch.full((num_groups,), 1.0 / num_groups))
        self.register_buffer("adjustment_term", term.float(), persistent=False)
        self.register_buffer("last_group_losses", torch.zeros(num_groups), persistent=False)
        self.register_buffer("last_group_counts", torch.zeros(num_groups), persistent=False)
        self._range_checked = False

    def _global_group_losses(self, losses: Tensor, groups: Tensor) -> tuple[Tensor, Tensor]:
        dtype = torch.promote_types(losses.dtype, self.q.dtype)
        sums, counts = group_sums(losses.to(dtype), groups, num_groups=self.num_groups)
        world = _distributed_world() if self.sync_dist else 1
        if world > 1:
            total = torch.stack([sums.detach(), counts])
            dist.all_reduce(total)
            # Value: the global sum. Gradient: world * local part, so DDP's mean over ranks gives
            # the gradient of the global loss.
            sums = total[0] + world * (sums - sums.detach())
            counts = total[1]
        return sums / counts.clamp(min=1), counts

    @override
    def forward(self, losses: Tensor, groups: Tensor) -> Tensor:
        """Robust loss of one batch.

        Args:
            losses: ``(B,)`` per-sample losses (e.g. ``F.cross_entropy(..., reduction="none")``).
            groups: ``(B,)`` integer group ids in ``[0, num_groups)``.

        Returns:
            The scalar loss ``sum_g q_g * (L_g + C_g / sqrt(N_g))``.

        Raises:
            ValueError: a group id outside ``[0, num_groups)``; checked on the first call and on every
                call with CPU tensors (elsewhere it would synchronise the device every step).
        """
        if not self._range_checked or groups.device.type == "cpu":
            check_group_range(groups, self.num_groups)
            self._range_checked = True
        group_losses, counts = self._global_group_losses(losses, groups)
        self.last_group_losses.copy_(group_losses.detach())
        self.last_group_counts.copy_(counts)
        q = self.q.to(group_losses.dtype)
        term = self.adjustment_term.to(group_losses.dtype)
        if not self.training:
            return (q * (group_losses + term)).sum()
        loss, new_q = groupdro_update(group_losses, q, adjustment_term=term, eta=self.eta)
        self.q.copy_(new_q)
        return loss

    @override
    def extra_repr(self) -> str:
        return f"num_groups={self.num_groups}, eta={self.eta}, sync_dist={self.sync_dist}"


class GroupDROModule(L.LightningModule):
    """Train a classifier with GroupDRO over per-sample group labels (e.g. confusion bands).

    Batches must be ``(input, target, index)`` tuples, ``index`` being the position in the dataset
    (wrap the dataset in ``IndexedDataset``); the group of a sample is ``train_groups[index]``.
    ``training_step`` computes per-sample cross-entropy on ``model(input)`` logits and the GroupDRO
    loss, logging ``train/loss``, ``train/q_<g>`` and ``train/group_loss_<g>`` (for groups present
    in the global batch). ``validation_step`` logs ``val/loss`` and ``val/acc``, and with
    ``val_groups`` also ``val/acc_group_<g>`` and ``val/worst_group_acc`` (lowest accuracy over the
    groups that have validation samples); counts are summed over ranks at epoch end (a
    ``DistributedSampler``'s padding duplicates are counted as seen).

    Args:
        model: the classifier; a ``LightningModule`` (its ``configure_optimizers`` is used) or any
            ``nn.Module`` mapping inputs to logits.
        train_groups: group id of every training sample, indexed by dataset index.
        num_groups: number of groups; defaults to ``max(train_groups) + 1``.
        val_groups: group id of every validation sample, indexed by dataset index (optional).
        adjustment: generalisation adjustment ``C`` (scalar or one per group); ``N_g`` is taken
            from ``train_groups``.
        eta: step size of the q update.
        optimizer: ``"sgd"`` or ``"adam"``, used only when ``model`` is not a ``LightningModule``.
        lr: learning rate of that optimizer.
        momentum: SGD momentum.
        weight_decay: weight decay of that optimizer.

    Example::

        >>> net = nn.Linear(4, 3)
        >>> module = GroupDROModule(net, [0, 1, 1, 0], val_groups=[0, 1])
        >>> module.dro.q.tolist()
        [0.5, 0.5]
    """

    train_groups: Tensor
    val_groups: Tensor | None

    def __init__(
        self,
        model: nn.Module,
        train_groups: ArrayLike,
        *,
        num_groups: int | None = None,
        val_groups: ArrayLike | None = None,
        adjustment: float | Sequence[float] = 0.0,
        eta: float = 0.01,
        optimizer: str = "sgd",
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__()
        train = _as_group_ids(train_groups, "train_groups")
        val = None if val_groups is None else _as_group_ids(val_groups, "val_groups")
        needed = max(int(train.max()), -1 if val is None else int(val.max())) + 1
        num_groups = needed if num_groups is None else num_groups
        if isinstance(num_groups, bool) or not isinstance(num_groups, int) or num_groups < needed:
            raise ValueError(
                f"Expected argument `num_groups` to be an integer >= {needed} (the largest group id + 1),"
                f" but got {num_groups!r}."
            )
        if optimizer not in ("sgd", "adam"):
            raise ValueError(f"Expected argument `optimizer` to be 'sgd' or 'adam', but got {optimizer!r}.")
        self.save_hyperparameters(ignore=["model", "train_groups", "val_groups"])
        self.model = model
        self.num_groups = num_groups
        sizes = np.bincount(train, minlength=num_groups)
        self.dro = GroupDROLoss(num_groups, group_sizes=sizes.tolist(), adjustment=adjustment, eta=eta)
        self.register_buffer("train_groups", torch.from_numpy(train), persistent=False)
        self.register_buffer("val_groups", None if val is None else torch.from_numpy(val), persistent=False)
        self._val_hits = torch.zeros(0)
        self._val_seen = torch.zeros(0)
        self._indices_checked = {"train": False, "val": False}

    @override
    def forward(self, x: Any) -> Tensor:
        return self.model(x)

    @staticmethod
    def _unpack(batch: Any) -> tuple[Any, Tensor, Tensor]:
        if not isinstance(batch, (tuple, list)) or len(batch) != 3:
            size = len(batch) if isinstance(batch, (tuple, list)) else "?"
            raise ValueError(
                "Expected each batch to be an (input, target, index) tuple, but got"
                f" {type(batch).__name__} of length {size}."
                " Wrap the dataset in IndexedDataset so that batches carry the dataset index."
            )
        x, y, index = batch
        return x, y, index.long()

    @override
    def on_train_start(self) -> None:
        # Before the first step: a group array longer or shorter than the training set is refused here.
        _check_covers(self.train_groups, "train_groups", _dataset_length(self.trainer.train_dataloader), "training")
        self._indices_checked["train"] = False

    def _checked_index(self, index: Tensor, split: str) -> Tensor:
        """``index``, checked against the group array once per fit (train) or validation run."""
        groups = self.train_groups if split == "train" else self.val_groups
        if groups is not None and not self._indices_checked[split]:
            _check_index(index, groups, f"{split}_groups")
            self._indices_checked[split] = True
        return index

    @override
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y, index = self._unpack(batch)
        index = self._checked_index(index, "train")
        losses = F.cross_entropy(self.model(x), y, reduction="none")
        loss = self.dro(losses, self.train_groups[index])
        size = len(y)
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        present = self.dro.last_group_counts.tolist()
        for g in range(self.num_groups):
            self.log(f"train/q_{g}", self.dro.q[g], batch_size=size)
            if present[g] > 0:
                self.log(f"train/group_loss_{g}", self.dro.last_group_losses[g], batch_size=size)
        return loss

    @override
    def on_validation_epoch_start(self) -> None:
        slots = self.num_groups + 1  # last slot: all samples
        self._val_hits = torch.zeros(slots, device=self.device)
        self._val_seen = torch.zeros(slots, device=self.device)
        if self.val_groups is not None:
            for loader in validation_loaders(self.trainer):
                _check_covers(self.val_groups, "val_groups", _dataset_length(loader), "validation")
        self._indices_checked["val"] = False

    @override
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y, index = self._unpack(batch)
        index = self._checked_index(index, "val")
        logits = self.model(x)
        self.log("val/loss", F.cross_entropy(logits, y), sync_dist=True, batch_size=len(y))
        hits = (logits.argmax(dim=-1) == y).float()
        self._val_hits[-1:] += hits.sum()
        self._val_seen[-1:] += hits.numel()
        if self.val_groups is not None:
            slot = self.val_groups[index]
            self._val_hits.index_add_(0, slot, hits)
            self._val_seen.index_add_(0, slot, torch.ones_like(hits))

    @override
    def on_validation_epoch_end(self) -> None:
        hits = self.trainer.strategy.reduce(self._val_hits, reduce_op="sum")
        seen = self.trainer.strategy.reduce(self._val_seen, reduce_op="sum")
        assert isinstance(hits, Tensor) and isinstance(seen, Tensor)
        if seen[-1] == 0:
            return
        # The values are already summed over ranks, so sync_dist's mean leaves them unchanged.
        self.log("val/acc", hits[-1] / seen[-1], sync_dist=True)
        if self.val_groups is None:
            return
        acc = hits[:-1] / seen[:-1].clamp(min=1)
        for g in range(self.num_groups):
            if seen[g] > 0:
                self.log(f"val/acc_group_{g}", acc[g], sync_dist=True)
        self.log("val/worst_group_acc", acc[seen[:-1] > 0].min(), sync_dist=True)

    @override
    def configure_optimizers(self) -> Any:
        if isinstance(self.model, L.LightningModule):
            return self.model.configure_optimizers()
        if self.hparams["optimizer"] == "adam":
            return torch.optim.Adam(self.parameters(), lr=self.hparams["lr"], weight_decay=self.hparams["weight_decay"])
        return torch.optim.SGD(
            self.parameters(),
            lr=self.hparams["lr"],
            momentum=self.hparams["momentum"],
            weight_decay=self.hparams["weight_decay"],
        )


def group_balanced_sampler(
    groups: ArrayLike, *, num_samples: int | None = None, generator: torch.Generator | None = None
) -> WeightedRandomSampler:
    """Sampler drawing every group equally often (with replacement).

    Sample ``i`` gets weight ``N / N_{g_i}``, so each non-empty group has the same total weight ``N``.

    Args:
        groups: group id of every sample, indexed by dataset index.
        num_samples: draws per epoch; defaults to ``N = len(groups)``.
        generator: random generator for reproducible draws.

    Returns:
        A ``torch.utils.data.WeightedRandomSampler`` with ``replacement=True``.

    Example::

        >>> sampler = group_balanced_sampler([0, 0, 0, 1])
        >>> sampler.weights.tolist()
        [1.3333333333333333, 1.3333333333333333, 1.3333333333333333, 4.0]
    """
    ids = _as_group_ids(groups, "groups")
    if num_samples is None:
        num_samples = ids.size
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"Expected argument `num_samples` to be a positive integer, but got {num_samples!r}.")
    sizes = np.bincount(ids)
    weights = ids.size / sizes[ids]
    return WeightedRandomSampler(
        weights.astype(np.float64).tolist(), num_samples, replacement=True, generator=generator
    )
