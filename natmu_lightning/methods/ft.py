"""``FTModule``: unlearning by fine-tuning the original model on the remaining data only."""

from __future__ import annotations

from typing import Any

from torch import nn

from natmu_lightning.methods.base import UnlearningModule
from natmu_lightning.methods.recipe import Recipe

FT_RECIPE = Recipe(optimizer="sgd", lr=0.01, weight_decay=5e-4, lr_schedule="constant")
"""Jia et al.'s FT command: SGD, momentum 0.9, weight decay 5e-4, lr 0.01, constant over 10 epochs (FTModule)."""


class FTModule(UnlearningModule):
    """Fine-tuning (FT): continue training the original model on the remaining data D_r
    with plain cross-entropy, so that the forgetting samples fade by catastrophic
    forgetting. Warnecke et al., "Machine Unlearning of Features and Labels" (NDSS
    2023) and Golatkar et al., "Eternal Sunshine of the Spotless Net" (CVPR 2020) use
    it as a baseline; the recipe here is that of Jia et al., "Model Sparsity Can
    Simplify Machine Unlearning" (NeurIPS 2023), public code
    https://github.com/OPTML-Group/Unlearn-Sparse (``FT`` in ``unlearn/FT.py``).

    The module trains on the datamodule's ``"remain"`` stream (``stream``): no
    forgetting sample is ever in a training batch. The training step is the base
    class's cross-entropy step; remaining images get the datamodule's usual
    augmentation.

    Default recipe: Jia et al.'s README command for FT (SGD, momentum 0.9, weight decay
    5e-4 from their argument defaults, lr 0.01, 10 epochs; their ``decreasing_lr``
    milestones 91 and 136 never fire in 10 epochs, so the rate is constant). Run it with
    ``trainer.max_epochs: 10``. The NatMU paper publishes no FT recipe of its own.
    That README command forgets ``--num_indexes_to_replace 4500`` samples of
    ``--class_to_replace``, whose default is class 0 (``arg_parser.py``): a class-wise
    request (90% of one CIFAR-10 class), not a random one; their batch size is the
    ``--batch_size`` default, 256.

    Args:
        backbone: the architecture of the model to unlearn.
        original_ckpt: the trained model to unlearn (required).
        reinit_classifier: re-initialise the final linear layer first.
        See :class:`~natmu_lightning.methods.base.BackboneModule` for the rest.

    Raises:
        ValueError: ``original_ckpt`` missing (and the base class's checks).
    """

    stream = "remain"

    def __init__(self, backbone: nn.Module, original_ckpt: str, recipe: Recipe = FT_RECIPE, **kwargs: Any) -> None:
        super().__init__(backbone, original_ckpt, Recipe.read(recipe, FT_RECIPE), **kwargs)
