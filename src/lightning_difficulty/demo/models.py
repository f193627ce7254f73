"""A small CNN classifier used by the demo, the examples and the tests."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _block(c_in: int, c_out: int, *, pool: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class SmallCNN(L.LightningModule):
    """Three conv blocks, global average pooling and a linear head; an ordinary Lightning classifier.

    Its top-level blocks (``block1``, ``block2``, ``block3``, ``pool``, ``head``) are what
    ``PredictionDepth(layers="auto")`` probes.

    Example::

        >>> model = SmallCNN(in_channels=1, num_classes=10, width=8)
        >>> model(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        width: int = 32,
        lr: float = 2e-3,
        weight_decay: float = 5e-4,
        max_epochs: int | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.block1 = _block(in_channels, width, pool=False)
        self.block2 = _block(width, 2 * width, pool=True)
        self.block3 = _block(2 * width, 4 * width, pool=True)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.pool(self.block3(self.block2(self.block1(x)))))

    def _step(self, batch: Any, stage: str) -> Tensor:
        x, y = batch[0], batch[1]
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        acc = (logits.argmax(dim=1) == y).float().mean()
        self.log(f"{stage}/loss", loss, prog_bar=stage == "val", sync_dist=stage == "val")
        self.log(f"{stage}/acc", acc, prog_bar=True, sync_dist=stage == "val")
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._step(batch, "val")

    def configure_optimizers(self) -> Any:
        hp: Any = self.hparams
        optimizer = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        if not hp.max_epochs:
            return optimizer
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=hp.max_epochs)
        return {"optimizer": optimizer, "lr_scheduler": schedule}
