"""Capture a module's logits during a step without changing the model."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle


def resolve_modules(root: nn.Module, names: list[str], *, argument: str) -> dict[str, nn.Module]:
    """Look up submodules by their ``named_modules()`` names, reporting all missing names at once."""
    available = dict(root.named_modules())
    missing = [n for n in names if n not in available]
    if missing:
        shown = [n for n in available if n] or ["<the model has no submodules>"]
        raise ValueError(
            f"Invalid value for {argument}: no module named {missing} in {type(root).__name__}. "
            f"Available names (from `named_modules()`): {shown}"
        )
    return {n: available[n] for n in names}


class LogitsTap:
    """Forward hook that keeps the first ``(batch, classes)`` float output seen in a capture window.

    The module's ``forward`` output is used by default (a typical step calls ``self(x)``); under DDP
    the LightningModule's hook also fires with the step's own output, which is skipped because only
    the first matching 2-D tensor of the window is kept.

    Example::

        >>> net = nn.Linear(3, 4)
        >>> tap = LogitsTap(); tap.attach(net)
        >>> tap.open(batch_size=2); _ = net(torch.zeros(2, 3)); tap.close().shape
        torch.Size([2, 4])
    """

    def __init__(self, logits_from: str | None = None) -> None:
        self.logits_from = logits_from
        self._handle: RemovableHandle | None = None
        self._expected: int | None = None
        self._captured: Tensor | None = None

    def attach(self, model: nn.Module) -> None:
        self.remove()
        module = model
        if self.logits_from:
            module = resolve_modules(model, [self.logits_from], argument="logits_from")[self.logits_from]
        self._handle = module.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, args: Any, output: Any) -> None:
        if self._expected is None or self._captured is not None:
            return
        if isinstance(output, (tuple, list)):
            tensors = [o for o in output if isinstance(o, Tensor)]
            if len(tensors) > 1 and self.logits_from is None:
                shapes = [tuple(t.shape) for t in tensors]
                raise ValueError(
                    f"The LightningModule's `forward` returned {len(tensors)} tensors with shapes {shapes}: which of "
                    "them are the logits is ambiguous. Return only the logits from `forward`, or pass "
                    'logits_from="<name of the submodule that outputs the logits>".'
                )
            output = tensors[0] if tensors else None
        if isinstance(output, Tensor) and output.is_floating_point() and output.shape[:1] == (self._expected,):
            if output.ndim == 1:  # a single-logit binary model that squeezes its output
                output = output[:, None]
            if output.ndim == 2:
                self._captured = output.detach()

    def open(self, batch_size: int) -> None:
        self._expected = batch_size
        self._captured = None

    def close(self) -> Tensor | None:
        captured, self._captured, self._expected = self._captured, None, None
        return captured

    def remove(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


def no_logits_error(where: str, logits_from: str | None, batch_size: int) -> RuntimeError:
    source = f"submodule `{logits_from}`" if logits_from else "the LightningModule's `forward`"
    return RuntimeError(
        f"No logits were seen during the {where}: expected {source} to return a float tensor of shape "
        f"({batch_size}, num_classes) for the batch. Call `self(x)` in the step, or pass "
        '`logits_from="<name of the module that outputs the logits>"`.'
    )


def as_class_logits(logits: Tensor) -> Tensor:
    """Class logits ``(B, C)``; a single-logit binary output ``(B, 1)`` becomes ``[0, z]``.

    ``softmax([0, z]) = [1 - sigmoid(z), sigmoid(z)]``: every softmax-based measure of a ``BCEWithLogits``
    model is then exactly its two-class measure.

    Example::

        >>> as_class_logits(torch.tensor([[2.0]])).softmax(1)[0, 1].item() == torch.sigmoid(torch.tensor(2.0)).item()
        True
    """
    if logits.ndim == 2 and logits.shape[1] == 1:
        return torch.cat([torch.zeros_like(logits), logits], dim=1)
    return logits


def check_logits(logits: Tensor, targets: Tensor, *, where: str, logits_from: str | None) -> None:
    """Refuse, at the first batch, outputs that cannot be class logits of these targets.

    ``targets`` are class ids ``(B,)`` with ``-1`` for ignored samples (see
    :func:`~lightning_difficulty.data.class_targets`).
    """
    fix = (
        f'pass logits_from="<submodule whose output are the logits>" (now: {logits_from!r})'
        if logits_from is None
        else f"check logits_from={logits_from!r}"
    )
    width = int(logits.shape[1])
    labelled = targets[targets >= 0]
    if labelled.numel() and int(labelled.max()) >= width:
        raise ValueError(
            f"The {where} saw a label {int(labelled.max())} but the captured logits have only {width} columns "
            f"(shape {tuple(logits.shape)}). The captured output is not the class logits: {fix}."
        )
    finite = logits[torch.isfinite(logits).all(dim=1)]
    if width > 1 and finite.shape[0] > 1:
        sums = finite.double().sum(dim=1)
        if bool((finite >= 0).all()) and bool(torch.allclose(sums, torch.ones_like(sums), atol=1e-4)):
            raise ValueError(
                f"The {where} captured rows that are non-negative and sum to 1: the output looks like probabilities, "
                "not logits, and its softmax would be wrong. Return logits (or log-probabilities) from `forward`, "
                f"or {fix}."
            )
