"""Capture a module's logits during a step without changing the model."""

from __future__ import annotations

from typing import Any

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
        if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
            output = output[0]
        if (
            isinstance(output, Tensor)
            and output.is_floating_point()
            and output.ndim == 2
            and output.shape[0] == self._expected
        ):
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
