"""The base every module shares: an injected backbone, weights loading, optimisation."""

from __future__ import annotations

import math
from typing import Any, Literal, Optional, Sequence

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from natmu_lightning.checkpoints import final_linear, load_weights

OptimizerName = Literal["adamw", "sgd"]
ScheduleName = Literal["cosine", "step", "constant"]


class BackboneModule(pl.LightningModule):
    """A classifier around an injected backbone, with configurable optimisation.

    Subclasses set ``train_stream`` (which samples the datamodule trains on) and may
    override :meth:`training_step`.

    Args:
        backbone: any ``nn.Module`` mapping float images in [0, 1] to logits.
        original_ckpt: weights to start from (Lightning checkpoint or plain state dict),
            loaded strictly with ``weights_only=True``; known prefixes are stripped.
        optimizer: ``"adamw"`` or ``"sgd"`` (momentum, Nesterov off).
        lr: peak learning rate.
        weight_decay: decoupled (AdamW) or L2 (SGD) weight decay.
        momentum: SGD momentum.
        betas: AdamW betas.
        lr_schedule: ``"cosine"`` (per step to zero), ``"step"`` (x0.1 at
            ``milestones[0]`` and x0.01 at ``milestones[1]`` of the steps) or ``"constant"``.
        warmup_epochs: linear warm-up length in epochs (may be fractional).
        milestones: fractions of the run for the ``"step"`` schedule.
        reinit_classifier: re-initialise the final linear layer (Xavier normal, gain
            sqrt 2, zero bias) after loading weights (NatMU's full-class recipe).
    """

    train_stream: str = "remain"
    requires_original_ckpt: bool = False
    """True for unlearning methods (see :class:`UnlearningModule`): they start from the trained model."""

    def __init__(
        self,
        backbone: nn.Module,
        original_ckpt: Optional[str] = None,
        optimizer: OptimizerName = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        betas: Sequence[float] = (0.9, 0.999),
        lr_schedule: ScheduleName = "cosine",
        warmup_epochs: float = 0.0,
        milestones: Sequence[float] = (0.6, 0.8),
        reinit_classifier: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(backbone, nn.Module):
            raise TypeError(f"backbone must be an nn.Module, got {type(backbone).__name__}")
        if self.requires_original_ckpt and not original_ckpt:
            raise ValueError(f"{type(self).__name__} needs original_ckpt: the trained model to unlearn")
        if optimizer not in ("adamw", "sgd"):
            raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {optimizer!r}")
        if lr_schedule not in ("cosine", "step", "constant"):
            raise ValueError(f"lr_schedule must be 'cosine', 'step' or 'constant', got {lr_schedule!r}")
        if not (lr > 0 and math.isfinite(lr)):
            raise ValueError(f"lr must be a positive number, got {lr}")
        if weight_decay < 0 or warmup_epochs < 0 or momentum < 0:
            raise ValueError("weight_decay, warmup_epochs and momentum must be >= 0")
        self.save_hyperparameters(ignore=["backbone"])
        self.backbone = backbone
        if original_ckpt is not None:
            load_weights(self.backbone, original_ckpt, "original_ckpt")
        if reinit_classifier:
            reinit_linear(final_linear(self.backbone))

    def forward(self, images: Tensor) -> Tensor:
        return self.backbone(images)

    # ------------------------------------------------------------------ checks
    def setup(self, stage: str) -> None:
        """Check the backbone fits the data before any expensive work."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        shape = getattr(datamodule, "image_shape", None)
        num_classes = getattr(datamodule, "num_classes", None)
        if shape is None or num_classes is None:
            return
        probe = torch.zeros(2, *shape, device=self.device)
        was_training = self.backbone.training
        self.backbone.eval()
        try:
            with torch.no_grad():
                out = self.backbone(probe)
        except RuntimeError as error:
            raise ValueError(
                f"the backbone {type(self.backbone).__name__} cannot take images of shape {tuple(shape)} "
                f"(channels, height, width): {error}"
            ) from error
        finally:
            self.backbone.train(was_training)
        if out.ndim != 2 or out.shape[1] != num_classes:
            raise ValueError(
                f"the backbone outputs {tuple(out.shape[1:])} per image but the dataset has {num_classes} classes; "
                "set the backbone's num_classes to match"
            )

    # ------------------------------------------------------------------ steps
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        images, targets = unpack(batch)
        loss = nn.functional.cross_entropy(self(images), targets)
        check_finite(loss, self.global_step)
        self.log("train/loss", loss, prog_bar=True, batch_size=targets.numel())
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def _eval_step(self, batch: Any, stage: str) -> None:
        images, targets = unpack(batch)
        logits = self(images)
        n = targets.numel()
        self.log(f"{stage}/loss", nn.functional.cross_entropy(logits, targets), batch_size=n, sync_dist=True)
        self.log(f"{stage}/acc", (logits.argmax(1) == targets).float().mean() * 100, batch_size=n, sync_dist=True, prog_bar=True)

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> dict:
        hp = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        if hp.optimizer == "adamw":
            optimizer = torch.optim.AdamW(params, lr=hp.lr, betas=tuple(hp.betas), weight_decay=hp.weight_decay)
        else:
            optimizer = torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        per_epoch = max(total // max(self.trainer.max_epochs or 1, 1), 1)
        factor = lr_factor_fn(hp.lr_schedule, total, round(hp.warmup_epochs * per_epoch), hp.milestones)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class UnlearningModule(BackboneModule):
    """The base of every unlearning method: it starts from the trained model in ``original_ckpt``
    (required) and is trained on the datamodule stream named by ``train_stream``."""

    requires_original_ckpt = True


class _LrFactor:
    """Picklable per-step learning-rate factor (``LambdaLR`` keeps it in its state)."""

    def __init__(self, schedule: str, total_steps: int, warmup_steps: int, milestones: Sequence[float]) -> None:
        self.schedule, self.total, self.warmup = schedule, total_steps, warmup_steps
        self.milestones = tuple(milestones)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.schedule == "cosine":
            span = max(self.total - self.warmup, 1)
            return 0.5 * (1.0 + math.cos(math.pi * min(step - self.warmup, span) / span))
        if self.schedule == "step":
            return 0.1 ** sum(step >= m * self.total for m in self.milestones)
        return 1.0


def lr_factor_fn(schedule: str, total_steps: int, warmup_steps: int, milestones: Sequence[float] = (0.6, 0.8)) -> _LrFactor:
    """The learning-rate multiplier as a function of the optimizer step.

    Example:
        >>> f = lr_factor_fn("cosine", total_steps=10, warmup_steps=0)
        >>> f(0), round(f(5), 3), f(10)
        (1.0, 0.5, 0.0)
    """
    return _LrFactor(schedule, total_steps, warmup_steps, milestones)


def reinit_linear(layer: nn.Linear) -> None:
    """Xavier-normal (gain sqrt 2) weights and zero bias, as the NatMU authors' full-class recipe."""
    nn.init.xavier_normal_(layer.weight, gain=math.sqrt(2.0))
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def unpack(batch: Any) -> tuple[Tensor, Tensor]:
    """(images, targets) from a datamodule batch dict or an ``(x, y)`` pair."""
    if isinstance(batch, dict):
        return batch["image"], batch["target"]
    images, targets = batch[0], batch[1]
    return images, targets


def check_finite(loss: Tensor, step: int) -> None:
    """Stop with a clear message when the loss is NaN or infinite."""
    if not torch.isfinite(loss).all():
        raise FloatingPointError(
            f"the training loss became {loss.item()} at step {step}; try a smaller learning rate "
            "(the last good checkpoint is kept)"
        )
