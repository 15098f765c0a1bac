"""``NegGradPlusModule``: descent on the remaining samples, ascent on the forgetting ones."""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from natmu_lightning.methods.base import UnlearningModule, OptimizerName, ScheduleName, check_finite
from natmu_lightning.methods.rl import forget_flags


def _mean_ce(logits: Tensor, targets: Tensor, rows: Tensor) -> Tensor:
    """Mean cross-entropy over ``rows`` (0, still in the graph, when no row is selected)."""
    per_row = nn.functional.cross_entropy(logits, targets, reduction="none")
    return torch.where(rows, per_row, torch.zeros_like(per_row)).sum() / rows.sum().clamp(min=1)


def neggrad_plus_loss(logits: Tensor, targets: Tensor, is_forget: Tensor, alpha: float) -> Tensor:
    """``alpha * CE(remaining rows) - (1 - alpha) * CE(forgetting rows)``.

    Each cross-entropy is the mean over its own rows of the batch (as the reference
    code averages over a separate remaining batch and forget batch); a term whose rows
    are absent from the batch is 0.

    Example:
        >>> import torch
        >>> logits, y = torch.zeros(4, 2), torch.tensor([0, 1, 0, 1])
        >>> flags = torch.tensor([False, False, True, True])
        >>> round(float(neggrad_plus_loss(logits, y, flags, 0.75)), 4)  # (0.75 - 0.25) * ln 2
        0.3466
    """
    is_forget = is_forget.bool()
    remain_ce = _mean_ce(logits, targets, ~is_forget)
    forget_ce = _mean_ce(logits, targets, is_forget)
    return alpha * remain_ce - (1.0 - alpha) * forget_ce


class NegGradPlusModule(UnlearningModule):
    """NegGrad+: Kurmanji, Triantafillou, Hayes, Triantafillou, "Towards Unbounded
    Machine Unlearning" (NeurIPS 2023, arXiv 2302.09880), public code
    https://github.com/meghdadk/SCRUB (``train_negrad`` in
    ``thirdparty/repdistiller/helper/loops.py`` and ``run_neggrad_epoch`` in
    ``small_scale_unlearning.ipynb``).

    Loss per step: ``alpha * CE(remaining) - (1 - alpha) * CE(forgetting)``
    (:func:`neggrad_plus_loss`): fine-tuning on D_r and gradient ascent on D_f at once,
    ``alpha`` in [0, 1] trading them off (1 is FT, 0 is GA). The reference code zips a
    remaining loader with a cycled forget loader, so every step sees a full remaining
    batch and a full forget batch. Here the module trains on one shuffled stream over
    both sets (``train_stream = "both"``) and splits each batch by its ``is_forget``
    flags; each term is the mean over its own rows. Forget rows therefore arrive at
    their natural rate (|D_f| / |D| of a batch) and steps without a forget row are
    plain fine-tuning steps; at equal ``alpha`` the ascent term acts less often than in
    the reference code.

    The loss is that of ``train_negrad``. The notebook's ``run_neggrad_epoch`` also
    adds ``alpha * weight_decay / 2 * ||theta - theta_0||^2`` to the remaining term
    and keeps the model in eval mode; neither is done here (the model trains in train
    mode; use ``weight_decay`` for plain decay).

    Default recipe: the authors' small-scale notebook (``negative_grad``: SGD without
    momentum or weight decay, lr 0.01, 10 epochs, ``alpha = 0.95``); other public
    re-implementations use ``alpha = 0.9999`` with 5 epochs, so tune ``alpha`` per
    setting. The NatMU paper publishes no NegGrad+ recipe of its own.

    Args:
        backbone: the architecture of the model to unlearn.
        original_ckpt: the trained model to unlearn (required).
        alpha: weight of the remaining-set term, in [0, 1].
        reinit_classifier: re-initialise the final linear layer first.
        See :class:`~natmu_lightning.methods.base.BackboneModule` for the rest.

    Raises:
        ValueError: ``original_ckpt`` missing or ``alpha`` outside [0, 1].
    """

    train_stream = "both"

    def __init__(
        self,
        backbone: nn.Module,
        original_ckpt: str,
        alpha: float = 0.95,
        optimizer: OptimizerName = "sgd",
        lr: float = 0.01,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        betas: Sequence[float] = (0.9, 0.999),
        lr_schedule: ScheduleName = "constant",
        warmup_epochs: float = 0.0,
        milestones: Sequence[float] = (0.6, 0.8),
        reinit_classifier: bool = False,
    ) -> None:
        if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and 0.0 <= alpha <= 1.0):
            raise ValueError(f"alpha must lie in [0, 1] (the weight of the remaining-set term), got {alpha!r}")
        super().__init__(
            backbone, original_ckpt, optimizer, lr, weight_decay, momentum, betas,
            lr_schedule, warmup_epochs, milestones, reinit_classifier,
        )

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        is_forget = forget_flags(batch, type(self).__name__)
        images, targets = batch["image"], batch["target"]
        loss = neggrad_plus_loss(self(images), targets, is_forget, float(self.hparams.alpha))
        check_finite(loss, self)
        n = targets.numel()
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        self.log("train/forget_fraction", is_forget.float().mean(), batch_size=n)
        return loss
