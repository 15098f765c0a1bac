"""``NatMUModule``: unlearning by fine-tuning on remaining data plus natural hybrids."""

from __future__ import annotations

from typing import Any

from torch import nn

from natmu_lightning.methods.base import UnlearningModule
from natmu_lightning.methods.recipe import Recipe

NATMU_RECIPE = Recipe(optimizer="adamw", lr=1e-3, weight_decay=2e-3, lr_schedule="cosine")
"""The paper's CIFAR-10 recipe: AdamW, lr 1e-3, weight decay 2e-3, per-step cosine decay to
zero, no warm-up (run 5 epochs)."""


class NatMUModule(UnlearningModule):
    """NatMU ("Towards Natural Machine Unlearning"): fine-tune the original model on one
    shuffled stream of remaining images (augmented) and hybrids (not augmented).

    The hybrids themselves (top-k classes, pairing plan, gradual masks, mixing) are this
    package's :class:`~natmu_lightning.natmu.HybridBatches`, which
    :class:`~natmu_lightning.data.ForgetRemainDataModule` builds for the ``hybrid`` stream this
    module declares; the module trains with plain cross-entropy. Its ``setup`` hands the module
    over while it still holds the original weights, and the plan is drawn from its predictions.

    Defaults are the paper's CIFAR-10 recipe (AdamW, lr 1e-3, weight decay 2e-3,
    per-step cosine decay to zero, no warm-up; run 5 epochs).

    Args:
        backbone: the architecture of the model to unlearn.
        original_ckpt: the trained model to unlearn (required).
        reinit_classifier: re-initialise the final linear layer first (the authors'
            full-class recipe).
        See :class:`~natmu_lightning.methods.base.BackboneModule` for the rest.
    """

    stream = "hybrid"

    def __init__(self, backbone: nn.Module, original_ckpt: str, recipe: Recipe = NATMU_RECIPE, **kwargs: Any) -> None:
        super().__init__(backbone, original_ckpt, Recipe.read(recipe, NATMU_RECIPE), **kwargs)
