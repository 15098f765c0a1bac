"""``L1SparseModule``: fine-tuning on the remaining data with a decaying L1 penalty."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import torch
from torch import Tensor, nn

from natmu_lightning.checks import check_choice, check_integer, check_non_negative
from natmu_lightning.data.streams import batch_fields
from natmu_lightning.methods.base import UnlearningModule, check_finite, log_training_values
from natmu_lightning.methods.recipe import Recipe

L1Schedule = Literal["epoch", "step"]


def l1_epoch_weight(alpha: float, epoch: int, epochs: int, no_l1_epochs: int = 0) -> float:
    """The authors' per-epoch penalty weight: ``alpha * (1 - epoch / (epochs - no_l1_epochs))``
    in the first ``epochs - no_l1_epochs`` epochs (counted from 0), 0 after
    (``FT_iter`` in ``unlearn/FT.py`` of https://github.com/OPTML-Group/Unlearn-Sparse).

    Example:
        >>> [l1_epoch_weight(1.0, e, 4) for e in range(4)]
        [1.0, 0.75, 0.5, 0.25]
        >>> [l1_epoch_weight(1.0, e, 4, no_l1_epochs=2) for e in range(4)]
        [1.0, 0.5, 0, 0]
    """
    if epoch < epochs - no_l1_epochs:
        return alpha * (1 - epoch / (epochs - no_l1_epochs))
    return 0


def l1_weight(alpha: float, step: int, total_steps: int) -> float:
    """The penalty weight at optimizer step ``step`` of ``total_steps``: ``alpha * (1 - step / total)``.

    Linear from ``alpha`` at the first step to 0 at the end of the run (``step =
    total_steps``), never negative. At the first step of epoch ``e`` of ``E`` it equals
    ``alpha * (1 - e / E)``, the per-epoch value of the reference code.

    Example:
        >>> [l1_weight(1.0, s, 4) for s in range(5)]
        [1.0, 0.75, 0.5, 0.25, 0.0]
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    return alpha * max(0.0, 1.0 - step / total_steps)


def l1_norm(params: Iterable[Tensor]) -> Tensor:
    """``sum |theta|`` over every element of ``params`` (one differentiable scalar)."""
    terms = [p.abs().sum() for p in params]
    if not terms:
        raise ValueError("the L1 penalty needs at least one trainable parameter")
    return torch.stack(terms).sum()


def l1_sparse_loss(
    logits: Tensor, targets: Tensor, params: Iterable[Tensor], weight: float
) -> tuple[Tensor, Tensor, Tensor]:
    """``(CE + weight * ||theta||_1, CE, ||theta||_1)``."""
    ce = nn.functional.cross_entropy(logits, targets)
    l1 = l1_norm(params)
    return ce + weight * l1, ce, l1


L1_SPARSE_RECIPE = Recipe(optimizer="sgd", lr=0.01, weight_decay=5e-4, lr_schedule="constant")
"""See L1SparseModule for where each number comes from."""


class L1SparseModule(UnlearningModule):
    """l1-sparse unlearning ("sparsity-aware unlearning"): Jia, Liu, Ram, Yao, Liu, Liu,
    Sharma, Liu, "Model Sparsity Can Simplify Machine Unlearning", NeurIPS 2023 (arXiv
    2304.04934), public code https://github.com/OPTML-Group/Unlearn-Sparse (``FT_l1``
    in ``unlearn/FT.py``, method name ``FT_prune`` on their command line).

    Fine-tune on the remaining data (``stream = "remain"``) with
    ``loss = CE + alpha_t * ||theta||_1``, the L1 norm taken over every trainable
    parameter of the backbone (their ``l1_regularization`` sums ``|p|`` over all of
    ``model.parameters()``: convolutions, batch-norm affine weights, biases and the
    classifier). The weight decays linearly to zero so that the sparsity prior acts
    early and the last steps are plain fine-tuning.

    Schedule (``l1_schedule``): ``"epoch"`` (default) is the reference code's staircase,
    per epoch ``e`` of ``E``, ``alpha_e = alpha * (1 - e / (E - no_l1_epochs))`` (0 in
    the final ``no_l1_epochs`` epochs, default 0), which stops at ``alpha / E``
    (:func:`l1_epoch_weight`). ``"step"`` is its per-step interpolation
    :func:`l1_weight`, ``alpha_t = alpha * (1 - t / T)`` for optimizer step ``t`` of
    ``T`` (``trainer.estimated_stepping_batches``): equal to the reference value at the
    start of every epoch and 0 at the end of the run.

    Default recipe: the OPTML-Group code's l1-sparse command (``--unlearn FT_prune
    --unlearn_lr 0.01 --unlearn_epochs 10``; SGD with momentum 0.9 and weight decay
    5e-4 from their argument defaults; their ``decreasing_lr`` milestones 91 and 136
    never fire in 10 epochs, so the rate is constant; batch 256, their ``--batch_size``
    default). That README command forgets ``--num_indexes_to_replace 4500`` samples of
    ``--class_to_replace``, whose default is class 0: a class-wise request (90% of one
    CIFAR-10 class), not a random one. ``alpha`` is tuned per setting:
    earlier READMEs pass ``--alpha ${alpha}``; the current one passes 0.2, the
    argument default shared with the Fisher methods, which would swamp the
    cross-entropy of a ResNet; public run scripts built on that code use 1e-4, our
    default. The NatMU paper publishes no l1-sparse recipe of its own. With
    Adam-type optimizers the penalty's gradient (``alpha_t * sign(theta)``) is
    rescaled per weight, so ``alpha`` values do not transfer between SGD and AdamW.

    Args:
        backbone: the architecture of the model to unlearn.
        original_ckpt: the trained model to unlearn (required).
        alpha: initial weight of the L1 penalty (>= 0).
        l1_schedule: ``"epoch"`` (the authors' staircase) or ``"step"`` (linear per step).
        no_l1_epochs: final epochs without the penalty (``"epoch"`` schedule; >= 0).
        reinit_classifier: re-initialise the final linear layer first.
        See :class:`~natmu_lightning.methods.base.BackboneModule` for the rest.

    Raises:
        ValueError: ``original_ckpt`` missing, ``alpha`` negative or not finite, an
            unknown ``l1_schedule`` or a negative ``no_l1_epochs``.
    """

    stream = "remain"

    def __init__(
        self,
        backbone: nn.Module,
        original_ckpt: str,
        alpha: float = 1e-4,
        l1_schedule: L1Schedule = "epoch",
        no_l1_epochs: int = 0,
        recipe: Recipe = L1_SPARSE_RECIPE,
        **kwargs: Any,
    ) -> None:
        check_non_negative("alpha", alpha)  # the initial L1 weight
        check_choice("l1_schedule", l1_schedule, ("epoch", "step"))
        check_integer("no_l1_epochs", no_l1_epochs, 0)
        super().__init__(backbone, original_ckpt, Recipe.read(recipe, L1_SPARSE_RECIPE), **kwargs)
        self.total_steps: int | None = None

    def on_train_start(self) -> None:
        self.total_steps = max(int(self.trainer.estimated_stepping_batches), 1)

    def current_l1_weight(self) -> float:
        """The penalty weight of the coming optimizer step."""
        alpha = float(self.hparams["alpha"])
        if self.hparams.get("l1_schedule", "step") == "epoch":
            epochs = self.trainer.max_epochs
            if epochs is None or epochs < 1:
                raise ValueError("l1_schedule='epoch' needs the trainer's max_epochs; use l1_schedule='step'")
            return l1_epoch_weight(alpha, self.current_epoch, epochs, int(self.hparams.get("no_l1_epochs", 0)))
        if self.total_steps is None:
            raise RuntimeError("the L1 schedule is set when training starts (total_steps is unknown)")
        return l1_weight(alpha, self.global_step, self.total_steps)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        images, targets = batch_fields(batch, "image", "target", user=type(self).__name__)
        weight = self.current_l1_weight()
        params = [p for p in self.backbone.parameters() if p.requires_grad]
        loss, ce, l1 = l1_sparse_loss(self(images), targets, params, weight)
        check_finite(loss, self)
        n = targets.numel()
        values: dict[str, Tensor | float] = {
            "train/loss": loss,
            "train/ce": ce,
            "train/l1_norm": l1,
            "train/l1_weight": weight,
        }
        log_training_values(self, values, batch_size=n)
        return loss
