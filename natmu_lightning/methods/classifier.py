"""``ClassifierModule``: trains the original model (all data) and Retrain (remaining data)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from torch import nn

from natmu_lightning.methods.base import BackboneModule, OptimizerName, ScheduleName


class ClassifierModule(BackboneModule):
    """Plain supervised training of a backbone: the original model and the Retrain reference.

    Defaults are the NatMU authors' recipe for original and Retrain models (SGD,
    momentum 0.9, lr 0.1, weight decay 5e-4, 2 warm-up epochs, x0.1 at 60% and x0.01
    at 80% of the steps). Retrain must start from the same initial weights as the
    original: run both with the same ``seed_everything``.

    Args:
        backbone: the network to train (freshly initialised).
        train_on: ``"full"`` trains on every training sample (the original model),
            ``"remain"`` on the remaining samples only (Retrain).
        original_ckpt: optional weights to start from.
        See :class:`~natmu_lightning.methods.base.BackboneModule` for the rest.

    Example:
        >>> from natmu_lightning.backbones import SmallCNN
        >>> ClassifierModule(SmallCNN(), train_on="remain").train_stream
        'remain'
    """

    def __init__(
        self,
        backbone: nn.Module,
        train_on: Literal["full", "remain"] = "full",
        original_ckpt: str | None = None,
        optimizer: OptimizerName = "sgd",
        lr: float = 0.1,
        weight_decay: float = 5e-4,
        momentum: float = 0.9,
        betas: Sequence[float] = (0.9, 0.999),
        lr_schedule: ScheduleName = "step",
        warmup_epochs: float = 2.0,
        milestones: Sequence[float] = (0.6, 0.8),
        reinit_classifier: bool = False,
    ) -> None:
        if train_on not in ("full", "remain"):
            raise ValueError(f"train_on must be 'full' or 'remain', got {train_on!r}")
        super().__init__(
            backbone,
            original_ckpt,
            optimizer,
            lr,
            weight_decay,
            momentum,
            betas,
            lr_schedule,
            warmup_epochs,
            milestones,
            reinit_classifier,
        )
        self.train_stream = train_on
