"""``ClassifierModule``: trains the original model (all data) and Retrain (remaining data)."""

from __future__ import annotations

from typing import Literal

from pytorch_lightning.utilities import rank_zero_warn
from torch import nn

from natmu_lightning.checks import check_choice
from natmu_lightning.methods.base import BackboneModule
from natmu_lightning.methods.recipe import Recipe

CLASSIFIER_RECIPE = Recipe(optimizer="sgd", lr=0.1, weight_decay=5e-4, lr_schedule="step", warmup_epochs=2.0)
"""The NatMU authors' recipe for original and Retrain models: SGD, momentum 0.9, lr 0.1,
weight decay 5e-4, 2 warm-up epochs, x0.1 at 60% and x0.01 at 80% of the steps."""


class ClassifierModule(BackboneModule):
    """Plain supervised training of a backbone: the original model and the Retrain reference.

    Defaults are the NatMU authors' recipe for original and Retrain models (SGD,
    momentum 0.9, lr 0.1, weight decay 5e-4, 2 warm-up epochs, x0.1 at 60% and x0.01
    at 80% of the steps). Retrain must start from the same initial weights as the
    original: run both with the same ``seed_everything``.

    Args:
        backbone: the network to train (freshly initialised).
        stream: the training stream: ``"full"`` trains on every training sample (the
            original model), ``"remain"`` on the remaining samples only (Retrain).
        original_ckpt: optional weights to start from.
        train_on: the old name of ``stream`` (0.2.0's configs and checkpoints), read with a
            warning until 0.3.0.
        See :class:`~natmu_lightning.methods.base.BackboneModule` for the rest.

    Example:
        >>> from natmu_lightning.backbones import SmallCNN
        >>> ClassifierModule(SmallCNN(), stream="remain").stream
        'remain'
    """

    def __init__(
        self,
        backbone: nn.Module,
        stream: Literal["full", "remain"] = "full",
        original_ckpt: str | None = None,
        recipe: Recipe = CLASSIFIER_RECIPE,
        reinit_classifier: bool = False,
        checkpoint_prefix: str | None = None,
        train_on: Literal["full", "remain"] | None = None,
    ) -> None:
        if train_on is not None:
            rank_zero_warn(
                f"ClassifierModule(train_on={train_on!r}) is the old name of stream={train_on!r} (removed in 0.3.0)"
            )
            stream = train_on
        check_choice("stream", stream, ("full", "remain"))
        recipe = Recipe.read(recipe, CLASSIFIER_RECIPE)
        super().__init__(backbone, original_ckpt, recipe, reinit_classifier, checkpoint_prefix)
        self.stream = stream
