"""``GAModule``: unlearning by gradient ascent on the forgetting samples."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from natmu_lightning.data.streams import batch_fields
from natmu_lightning.methods.base import UnlearningModule, check_finite, log_training_values
from natmu_lightning.methods.recipe import Recipe

GA_RECIPE = Recipe(optimizer="sgd", lr=1e-4, weight_decay=5e-4, lr_schedule="constant")
"""See GAModule for where each number comes from."""


class GAModule(UnlearningModule):
    """Gradient ascent (GA, "NegGrad"): maximise the cross-entropy of the forgetting
    samples, i.e. minimise ``loss = -CE(f(x_f), y_f)`` over the forget set only.
    Thudi, Deza, Chandrasekaran, Papernot, "Unrolling SGD: Understanding Factors
    Influencing Machine Unlearning" (EuroS&P 2022), the reference SalUn and Jia et
    al. cite for GA; the recipe is that of Jia et al., "Model Sparsity Can Simplify Machine
    Unlearning" (NeurIPS 2023), public code https://github.com/OPTML-Group/Unlearn-Sparse
    (``GA`` in ``unlearn/GA.py``, also in SalUn's repository).

    The module trains on the datamodule's ``"forget"`` stream (``stream``). The
    loss is unbounded below: GA over-forgets quickly, and a too large learning rate or
    too many epochs end in a non-finite loss (stopped by ``check_finite`` with the step
    number).

    Default recipe: Jia et al.'s README command for GA (SGD, momentum 0.9, weight decay
    5e-4 from their argument defaults, lr 1e-4, 5 epochs, constant rate). The NatMU
    paper publishes no GA recipe of its own. Like FT's (:class:`~natmu_lightning.methods.ft.FTModule`),
    that command forgets 90% of one class with batches of 256.

    Arguments and errors: those of :class:`~natmu_lightning.methods.base.BackboneModule`
    (``original_ckpt`` required).
    """

    stream = "forget"

    def __init__(self, backbone: nn.Module, original_ckpt: str, recipe: Recipe = GA_RECIPE, **kwargs: Any) -> None:
        super().__init__(backbone, original_ckpt, Recipe.read(recipe, GA_RECIPE), **kwargs)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        images, targets = batch_fields(batch, "image", "target", user=type(self).__name__)
        forget_ce = nn.functional.cross_entropy(self(images), targets)
        loss = -forget_ce
        check_finite(loss, self)
        n = targets.numel()
        log_training_values(self, {"train/loss": loss, "train/forget_ce": forget_ce}, batch_size=n)
        return loss
