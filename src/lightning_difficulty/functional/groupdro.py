"""One step of online GroupDRO (Sagawa et al. 2020), as in the reference code's ``loss.py``.

Groups are any integer labelling of the training samples; with difficulty scores they are usually
confusion bands (:mod:`lightning_difficulty.functional.bands`), band 0 = easiest. Higher loss =
harder group = more weight.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["check_group_range", "group_sums", "groupdro_adjustment", "groupdro_step", "groupdro_update"]


def _check_num_groups(num_groups: int) -> int:
    if isinstance(num_groups, bool) or not isinstance(num_groups, int) or num_groups < 1:
        raise ValueError(f"Expected argument `num_groups` to be a positive integer, but got {num_groups!r}.")
    return num_groups


def _check_batch(losses: Tensor, groups: Tensor) -> None:
    if losses.ndim != 1:
        raise ValueError(f"Expected argument `losses` to be 1-D (one loss per sample), but got {losses.ndim}-D.")
    if groups.shape != losses.shape:
        raise ValueError(
            f"Expected argument `groups` to have the shape of `losses` {tuple(losses.shape)},"
            f" but got {tuple(groups.shape)}."
        )
    if groups.dtype.is_floating_point or groups.dtype.is_complex or groups.dtype == torch.bool:
        raise ValueError(f"Expected argument `groups` to hold integer group ids, but got dtype {groups.dtype}.")


def check_group_range(groups: Tensor, num_groups: int) -> None:
    """Refuse group ids outside ``[0, num_groups)``, naming ``num_groups`` and the largest id seen.

    Example::

        >>> try:
        ...     check_group_range(torch.tensor([0, 2]), 2)
        ... except ValueError as error:
        ...     print(str(error).split("(")[-1])
        largest id seen: 2). Pass num_groups >= 3, or group ids below 2.
    """
    if groups.numel() == 0:
        return
    low, high = int(groups.min()), int(groups.max())
    if low < 0 or high >= num_groups:
        fix = f"Pass num_groups >= {high + 1}, or group ids below {num_groups}." if low >= 0 else "Group ids are >= 0."
        raise ValueError(
            f"Expected argument `groups` to lie in [0, num_groups={num_groups}), but got ids in [{low}, {high}]"
            f" (largest id seen: {high}). {fix}"
        )


def groupdro_adjustment(
    adjustment: float | Sequence[float] | Tensor,
    *,
    num_groups: int,
    group_sizes: Sequence[int] | Tensor | None = None,
) -> Tensor:
    """The generalisation adjustment ``C_g / sqrt(N_g)`` of each group (float64).

    Args:
        adjustment: ``C``, one non-negative number or one per group.
        num_groups: number of groups ``G``.
        group_sizes: training-set group sizes ``N_g``; needed only when some ``C_g > 0``, and then
            positive wherever ``C_g > 0``.

    Returns:
        ``(G,)`` tensor, zero where ``C_g = 0``.

    Example::

        >>> groupdro_adjustment([0.0, 2.0], num_groups=2, group_sizes=[9, 4]).tolist()
        [0.0, 1.0]
    """
    num_groups = _check_num_groups(num_groups)
    adj = torch.as_tensor(adjustment, dtype=torch.float64).cpu()
    if adj.ndim == 0:
        adj = adj.expand(num_groups)
    if adj.shape != (num_groups,) or not bool(torch.all(torch.isfinite(adj) & (adj >= 0))):
        raise ValueError(
            "Expected argument `adjustment` to be a non-negative number or one per group"
            f" ({num_groups}), but got {adjustment!r}."
        )
    if not bool(torch.any(adj > 0)):
        return torch.zeros(num_groups, dtype=torch.float64)
    if group_sizes is None:
        raise ValueError(
            "Expected argument `group_sizes` (training-set size of each group) when `adjustment` is"
            " nonzero, but got None."
        )
    sizes = torch.as_tensor(group_sizes, dtype=torch.float64).cpu()
    if sizes.shape != (num_groups,) or bool(torch.any(sizes < 0)):
        raise ValueError(
            f"Expected argument `group_sizes` to be {num_groups} non-negative counts, but got {group_sizes!r}."
        )
    if bool(torch.any((sizes == 0) & (adj > 0))):
        raise ValueError(
            "Expected a positive `group_sizes` entry for every group with a nonzero `adjustment`,"
            f" but got group_sizes={sizes.tolist()}."
        )
    return torch.where(adj > 0, adj / sizes.clamp(min=1).sqrt(), torch.zeros_like(adj))


def group_sums(losses: Tensor, groups: Tensor, *, num_groups: int) -> tuple[Tensor, Tensor]:
    """Per-group loss sums (differentiable) and sample counts of one batch.

    Shapes and dtypes are checked; the range of ``groups`` is not (that would synchronise a GPU
    every step): check it with :func:`check_group_range` (``GroupDROLoss`` does on its first call and on CPU).

    Args:
        losses: ``(B,)`` per-sample losses.
        groups: ``(B,)`` integer group ids in ``[0, num_groups)``.
        num_groups: number of groups ``G``.

    Returns:
        ``(sums, counts)``, both ``(G,)`` in the dtype of ``losses``.

    Example::

        >>> s, n = group_sums(torch.tensor([1.0, 2.0, 4.0]), torch.tensor([0, 2, 0]), num_groups=3)
        >>> s.tolist(), n.tolist()
        ([5.0, 0.0, 2.0], [2.0, 0.0, 1.0])
    """
    num_groups = _check_num_groups(num_groups)
    _check_batch(losses, groups)
    index = groups.long()
    zeros = torch.zeros(num_groups, dtype=losses.dtype, device=losses.device)
    sums = zeros.index_add(0, index, losses)
    counts = zeros.index_add(0, index, torch.ones_like(losses)).detach()
    return sums, counts


def groupdro_update(
    group_losses: Tensor,
    q: Tensor,
    *,
    adjustment_term: Tensor | None = None,
    eta: float = 0.01,
) -> tuple[Tensor, Tensor]:
    """Steps 2-4 of :func:`groupdro_step` from already-computed group mean losses ``L_g``.

    Shared by :func:`groupdro_step` and :class:`~lightning_difficulty.groupdro.GroupDROLoss` (which
    first sums the group losses over ranks); inputs are not validated.

    Args:
        group_losses: ``(G,)`` group mean losses ``L_g`` (differentiable).
        q: ``(G,)`` current weights.
        adjustment_term: ``(G,)`` values ``C_g / sqrt(N_g)``, or ``None`` for no adjustment.
        eta: step size.

    Returns:
        ``(loss, new_q)`` with ``new_q ∝ q * exp(eta * A)`` and ``loss = sum_g new_q_g * A_g``,
        ``A = L + adjustment_term``; ``new_q`` is detached.

    Example::

        >>> loss, q = groupdro_update(torch.tensor([1.0, 3.0]), torch.full((2,), 0.5))
        >>> round(loss.item(), 4)
        2.01
    """
    adjusted = group_losses if adjustment_term is None else group_losses + adjustment_term
    new_q = q.detach() * torch.exp(eta * adjusted.detach())
    new_q = new_q / new_q.sum()
    return (new_q * adjusted).sum(), new_q


def groupdro_step(
    losses: Tensor,
    groups: Tensor,
    q: Tensor,
    *,
    num_groups: int,
    group_sizes: Sequence[int] | Tensor | None = None,
    adjustment: float | Sequence[float] | Tensor = 0.0,
    eta: float = 0.01,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One online GroupDRO step (Sagawa et al. 2020; reference code ``loss.py``).

    With per-sample losses ``l_i``, group ids ``g_i`` and the current weights ``q``:

    1. ``L_g = sum_{i in g} l_i / max(n_g, 1)`` (a group absent from the batch has ``L_g = 0``);
    2. ``A_g = L_g + C_g / sqrt(N_g)``, ``N_g`` = the group's size in the whole training set;
    3. ``q <- q * exp(eta * A.detach())``, then ``q <- q / sum(q)``;
    4. ``loss = sum_g q_g * A_g`` with the **updated** ``q``.

    The reference code adds the adjustment in place to the tensor it also uses as the group loss,
    so the adjusted values are what is back-propagated; that is reproduced here. The adjustment is a
    constant, so it shifts the loss value by ``sum_g q_g C_g / sqrt(N_g)`` and leaves the gradient
    unchanged. One difference from the reference code: it applies the adjustment only when every
    ``C_g > 0``; here ``C_g / sqrt(N_g)`` is added for each group (zero where ``C_g = 0``), as in the
    paper. A group absent from the batch still receives its adjustment in the q update.

    Args:
        losses: ``(B,)`` per-sample losses (differentiable).
        groups: ``(B,)`` integer group ids in ``[0, num_groups)``.
        q: ``(G,)`` current group weights (uniform ``1/G`` at the start); not modified.
        num_groups: number of groups ``G``.
        group_sizes: ``(G,)`` training-set group sizes ``N_g``; needed only when ``adjustment`` is nonzero.
        adjustment: generalisation adjustment ``C``, one non-negative number or one per group.
        eta: step size of the exponentiated-gradient update of ``q``.

    Returns:
        ``(loss, new_q, group_losses, group_counts)``: the scalar robust loss, the updated ``(G,)``
        weights (detached), the unadjusted group means ``L_g`` and the batch counts ``n_g``, all in
        the promoted dtype of ``losses`` and ``q``.

    Example::

        >>> q = torch.full((2,), 0.5)
        >>> loss, q, L, n = groupdro_step(torch.tensor([1.0, 3.0]), torch.tensor([0, 1]), q, num_groups=2)
        >>> [round(v, 4) for v in q.tolist()], round(loss.item(), 4)
        ([0.495, 0.505], 2.01)
    """
    num_groups = _check_num_groups(num_groups)
    _check_batch(losses, groups)
    check_group_range(groups, num_groups)
    if q.shape != (num_groups,):
        raise ValueError(f"Expected argument `q` to have shape ({num_groups},), but got {tuple(q.shape)}.")
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0 <= eta < float("inf"):
        raise ValueError(f"Expected argument `eta` to be a non-negative finite number, but got {eta!r}.")
    dtype = torch.promote_types(losses.dtype, q.dtype)
    sums, counts = group_sums(losses.to(dtype), groups, num_groups=num_groups)
    group_losses = sums / counts.clamp(min=1)
    term = groupdro_adjustment(adjustment, num_groups=num_groups, group_sizes=group_sizes)
    loss, new_q = groupdro_update(
        group_losses, q.to(dtype), adjustment_term=term.to(dtype=dtype, device=group_losses.device), eta=eta
    )
    return loss, new_q, group_losses, counts
