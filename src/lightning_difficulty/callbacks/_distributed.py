"""Tiny collective helpers that degrade to no-ops in one process."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_(tensor: Tensor, op: str = "sum") -> Tensor:
    """In-place all-reduce (``"sum"`` or ``"max"``) across ranks; identity in one process."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return tensor


def all_gather_int(value: int, device: torch.device) -> list[int]:
    """Gather one integer from every rank."""
    if not is_distributed():
        return [value]
    local = torch.tensor([value], dtype=torch.long, device=device)
    out = [torch.zeros_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(out, local)
    return [int(t.item()) for t in out]


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def rank_and_world() -> tuple[int, int]:
    if is_distributed():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1
