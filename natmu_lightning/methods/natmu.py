"""``NatMUModule``: unlearning by fine-tuning on remaining data plus natural hybrids."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from natmu_lightning.methods.base import OptimizerName, ScheduleName, UnlearningModule


class NatMUModule(UnlearningModule):
    """NatMU ("Towards Natural Machine Unlearning"): fine-tune the original model on one
    shuffled stream of remaining images (augmented) and hybrids (not augmented).

    The hybrids themselves (top-k classes, pairing plan, gradual masks, mixing) are
    built by :class:`~natmu_lightning.data.ForgetRemainDataModule` because this module
    declares ``train_stream = "hybrid"``; the module trains with plain cross-entropy.
    The datamodule plans the hybrids from this module's predictions at setup, while it
    still holds the original weights.

    Defaults are the paper's CIFAR-10 recipe (AdamW, lr 1e-3, weight decay 2e-3,
    per-step cosine decay to zero, no warm-up; run 5 epochs).

    Args:
        backbone: the architecture of the model to unlearn.
        original_ckpt: the trained model to unlearn (required).
        reinit_classifier: re-initialise the final linear layer first (the authors'
            full-class recipe).
        See :class:`~natmu_lightning.methods.base.BackboneModule` for the rest.
    """

    train_stream = "hybrid"

    def __init__(
        self,
        backbone: nn.Module,
        original_ckpt: str,
        optimizer: OptimizerName = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 2e-3,
        momentum: float = 0.9,
        betas: Sequence[float] = (0.9, 0.999),
        lr_schedule: ScheduleName = "cosine",
        warmup_epochs: float = 0.0,
        milestones: Sequence[float] = (0.6, 0.8),
        reinit_classifier: bool = False,
    ) -> None:
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
