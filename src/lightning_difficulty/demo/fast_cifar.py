"""A fast CIFAR-10 recipe for a CPU: an airbench-style network trained in a few epochs.

The ingredients are the known ones of fast CIFAR-10 training: a fixed patch-whitening first convolution,
three conv-BatchNorm-GELU blocks with max-pooling, label smoothing, Nesterov SGD with a linear warm-up and
decay, random flips and translations applied to whole batches, and flip-averaged (test-time augmentation)
evaluation. The recipe is written for ``precision="bf16-mixed"`` and channels-last tensors, which let oneDNN
run the convolutions on AMX units where the CPU has them.

Batches are ``(images, labels, index)`` as :class:`~lightning_difficulty.IndexedDataset` yields them; images
are normalised ``(B, 3, H, W)`` floats and augmentation happens in ``training_step``, so the dataset stays
un-augmented. ``forward`` returns class logits, flip-averaged in eval mode (so the package's callbacks score
the predictions whose accuracy is reported); the probes of ``PredictionDepth`` see the un-flipped view.
"""

from __future__ import annotations

from typing import Any, cast

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn


def translate(images: Tensor, dx: Tensor, dy: Tensor, *, max_shift: int) -> Tensor:
    """Shift each image by ``(dx[i], dy[i])`` pixels with reflect padding (positive = right / down).

    Example::

        >>> x = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 1, 4, 4)
        >>> translate(x, torch.tensor([1]), torch.tensor([0]), max_shift=1)[0, 0, 0].tolist()
        [1.0, 0.0, 1.0, 2.0]
    """
    if max_shift == 0:
        return images
    batch, _, height, width = images.shape
    padded = F.pad(images, (max_shift,) * 4, mode="reflect")
    rows = (max_shift - dy)[:, None] + torch.arange(height, device=images.device)
    cols = (max_shift - dx)[:, None] + torch.arange(width, device=images.device)
    picked = padded[torch.arange(batch, device=images.device)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return picked.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)


def random_flip_translate(images: Tensor, *, max_shift: int = 2, generator: torch.Generator | None = None) -> Tensor:
    """Flip half the images left-right at random and shift each by up to ``max_shift`` pixels (batched).

    Example::

        >>> random_flip_translate(torch.zeros(8, 3, 32, 32)).shape
        torch.Size([8, 3, 32, 32])
    """
    batch = images.shape[0]
    flip = torch.rand(batch, generator=generator) < 0.5
    shifts = torch.randint(-max_shift, max_shift + 1, (2, batch), generator=generator)
    flipped = torch.where(flip.to(images.device)[:, None, None, None], images.flip(-1), images)
    return translate(flipped, shifts[0].to(images.device), shifts[1].to(images.device), max_shift=max_shift)


def whitening_filters(images: Tensor, *, eps: float = 5e-4) -> Tensor:
    """2x2 patch-whitening filters ``(2 * 4C, C, 2, 2)``: ``W / sqrt(eig + eps)`` and their negatives.

    ``W`` are the eigenvectors of the covariance of all 2x2 patches of ``images``; convolving with the
    first half gives patches of (nearly) identity covariance.

    Example::

        >>> whitening_filters(torch.randn(16, 3, 8, 8)).shape
        torch.Size([24, 3, 2, 2])
    """
    channels = images.shape[1]
    patches = images.float().unfold(2, 2, 1).unfold(3, 2, 1)  # B, C, H-1, W-1, 2, 2
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, channels * 4)
    centred = patches - patches.mean(dim=0)
    covariance = (centred.T @ centred).double() / (len(centred) - 1)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    filters = (eigenvectors.T / torch.sqrt(eigenvalues.clamp_min(0) + eps)[:, None]).float()
    filters = filters.view(-1, channels, 2, 2).flip(0)
    return torch.cat([filters, -filters])


def _conv_bn(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out, momentum=0.2)]


class ConvBlock(nn.Sequential):
    """conv -> max-pool 2 -> BN -> GELU -> conv -> BN -> GELU."""

    def __init__(self, c_in: int, c_out: int) -> None:
        first, bn1 = _conv_bn(c_in, c_out)
        super().__init__(first, nn.MaxPool2d(2), bn1, nn.GELU(), *_conv_bn(c_out, c_out), nn.GELU())


class FastCifarNet(nn.Module):
    """Whitening conv, three conv blocks of widths ``(width, 4 width, 4 width)``, max-pool and a linear head.

    Top-level blocks (what ``PredictionDepth(layers="auto")`` probes): ``whiten``, ``block1``, ``block2``,
    ``block3``, ``pool``, ``head``. Call :meth:`init_whitening` with training images before training.

    Example::

        >>> net = FastCifarNet(width=8)
        >>> net(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(self, width: int = 32, num_classes: int = 10, *, logit_scale: float = 0.125) -> None:
        super().__init__()
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"Invalid value for width={width!r}. Expected a positive integer (e.g. 32 or 64).")
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"Invalid value for num_classes={num_classes!r}. Expected an integer >= 2.")
        self.whiten = nn.Sequential(nn.Conv2d(3, 24, 2), nn.GELU())
        self.whiten[0].weight.requires_grad_(False)
        self.block1 = ConvBlock(24, width)
        self.block2 = ConvBlock(width, 4 * width)
        self.block3 = ConvBlock(4 * width, 4 * width)
        self.pool = nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.head = nn.Linear(4 * width, num_classes, bias=False)
        self.logit_scale = logit_scale
        self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    @torch.no_grad()
    def init_whitening(self, images: Tensor) -> None:
        """Set the fixed first convolution from the 2x2 patch statistics of ``images`` ``(N, 3, H, W)``."""
        if images.ndim != 4 or images.shape[1] != 3 or len(images) < 2:
            raise ValueError(
                f"Invalid value for images: shape {tuple(images.shape)}. Expected (N >= 2, 3, H, W) training images."
            )
        conv = self.whitening_conv
        conv.weight.copy_(whitening_filters(images).to(conv.weight).contiguous(memory_format=torch.channels_last))
        if conv.bias is not None:
            conv.bias.zero_()

    @property
    def whitening_conv(self) -> nn.Conv2d:
        """The fixed 2x2 convolution of ``whiten``."""
        return cast(nn.Conv2d, self.whiten[0])

    def forward(self, x: Tensor) -> Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        features = self.pool(self.block3(self.block2(self.block1(self.whiten(x)))))
        return self.head(features) * self.logit_scale


class FastCifarModule(L.LightningModule):
    """The recipe: :class:`FastCifarNet`, batch augmentation, Nesterov SGD with warm-up and linear decay.

    ``forward`` returns logits; in eval mode with ``tta=True`` the mean of the logits of the image and its
    mirror. At the start of training the first ``whitening_images`` training images set the whitening
    filters. Train with ``precision="bf16-mixed"`` for speed on CPUs with AMX (or on GPUs).

    Args:
        width: first block's width; later blocks are 4x wider (airbench uses 64).
        lr: peak learning rate (batch-size-512 scale; the loss is the batch mean).
        warmup: fraction of the training steps spent warming the learning rate up linearly from 0.
        max_shift: largest random translation in pixels (reflect padding).

    Example::

        >>> module = FastCifarModule(width=8)
        >>> module.eval()(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    whitened: Tensor

    def __init__(
        self,
        width: int = 32,
        num_classes: int = 10,
        *,
        lr: float = 0.4,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        label_smoothing: float = 0.2,
        warmup: float = 0.2,
        max_shift: int = 2,
        tta: bool = True,
        whitening_images: int = 2048,
    ) -> None:
        super().__init__()
        _check_range("lr", lr, 0.0, None)
        _check_range("momentum", momentum, 0.0, 1.0)
        _check_range("weight_decay", weight_decay, 0.0, None, closed=True)
        _check_range("label_smoothing", label_smoothing, 0.0, 1.0, closed=True)
        _check_range("warmup", warmup, 0.0, 1.0, closed=True)
        if not isinstance(max_shift, int) or not 0 <= max_shift <= 8:
            raise ValueError(f"Invalid value for max_shift={max_shift!r}. Expected an integer in [0, 8] pixels.")
        if not isinstance(whitening_images, int) or whitening_images < 2:
            raise ValueError(
                f"Invalid value for whitening_images={whitening_images!r}. Expected an integer >= 2 (e.g. 2048)."
            )
        self.save_hyperparameters()
        self.net = FastCifarNet(width, num_classes)
        self.register_buffer("whitened", torch.tensor(False))

    def forward(self, x: Tensor) -> Tensor:
        logits = self.net(x)
        if self.training or not self.hparams["tta"]:
            return logits
        return (logits + self.net(x.flip(-1))) / 2

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch[0], batch[1]
        logits = self(random_flip_translate(x, max_shift=self.hparams["max_shift"]))
        loss = F.cross_entropy(logits, y, label_smoothing=self.hparams["label_smoothing"])
        self.log("train/loss", loss, on_step=False, on_epoch=True)
        self.log("train/acc", (logits.argmax(1) == y).float().mean(), on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = batch[0], batch[1]
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.log("val/loss", loss, sync_dist=True)
        self.log("val/acc", (logits.argmax(1) == y).float().mean(), prog_bar=True, sync_dist=True)
        return loss

    def test_step(self, batch: Any, batch_idx: int) -> Tensor:
        logits = self(batch[0])
        self.log("test/acc", (logits.argmax(1) == batch[1]).float().mean(), sync_dist=True)
        return logits

    def on_train_start(self) -> None:
        """Set the whitening filters from the first training batches (once; a resumed run keeps its own)."""
        if bool(self.whitened):
            return
        images, wanted = [], self.hparams["whitening_images"]
        for batch in self.trainer.train_dataloader:  # type: ignore[union-attr]
            images.append(torch.as_tensor(batch[0]).float())
            if sum(len(b) for b in images) >= wanted:
                break
        self.net.init_whitening(torch.cat(images)[:wanted].to(self.device))
        conv = self.net.whitening_conv
        conv.weight.data = self.trainer.strategy.broadcast(conv.weight.data)  # every rank uses rank 0's filters
        self.whitened.fill_(True)

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        decay = [p for p in self.parameters() if p.requires_grad and p.ndim > 1]
        rest = [p for p in self.parameters() if p.requires_grad and p.ndim <= 1]
        groups = [{"params": decay, "weight_decay": hp["weight_decay"]}, {"params": rest, "weight_decay": 0.0}]
        optimizer = torch.optim.SGD(groups, lr=hp["lr"], momentum=hp["momentum"], nesterov=True)
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_decay(step, total, hp["warmup"]))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def warmup_decay(step: int, total: int, warmup: float) -> float:
    """Learning-rate factor: linear from 0 to 1 over ``warmup * total`` steps, then linear to 0 at ``total``.

    Example::

        >>> [round(warmup_decay(s, 10, 0.2), 2) for s in (0, 1, 2, 6, 10)]
        [0.0, 0.5, 1.0, 0.5, 0.0]
    """
    peak = warmup * total
    if step < peak:
        return step / peak
    return max(0.0, (total - step) / max(total - peak, 1e-9))


def _check_range(name: str, value: float, low: float, high: float | None, *, closed: bool = False) -> None:
    above = value >= low if closed else value > low
    below = high is None or (value <= high if closed else value < high)
    if not isinstance(value, (int, float)) or not (above and below):
        bounds = f"{'[' if closed else '('}{low}, {high if high is not None else 'inf'}{']' if closed else ')'}"
        raise ValueError(f"Invalid value for {name}={value!r}. Expected a number in {bounds}.")
