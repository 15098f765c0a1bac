"""``NegGradPlusModule``: descent on the remaining samples, ascent on the forgetting ones."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from natmu_lightning.checks import check_in_range, check_integer, check_non_negative
from natmu_lightning.data.contracts import TrainingNeeds
from natmu_lightning.data.streams import NUM_REMAIN, batch_fields
from natmu_lightning.methods.base import UnlearningModule, check_finite, log_training_values
from natmu_lightning.methods.recipe import Recipe


def neggrad_plus_loss(
    remain_logits: Tensor, remain_targets: Tensor, forget_logits: Tensor, forget_targets: Tensor, alpha: float
) -> Tensor:
    """``alpha * CE(remaining batch) - (1 - alpha) * CE(forget batch)``, each the batch mean.

    The SCRUB authors' ``train_negrad``: ``loss = alpha * r_loss - (1 - alpha) * del_loss``.

    Example:
        >>> import torch
        >>> logits, y = torch.zeros(2, 2), torch.tensor([0, 1])
        >>> round(float(neggrad_plus_loss(logits, y, logits, y, 0.75)), 4)  # (0.75 - 0.25) * ln 2
        0.3466
    """
    remain_ce = nn.functional.cross_entropy(remain_logits, remain_targets)
    forget_ce = nn.functional.cross_entropy(forget_logits, forget_targets)
    return alpha * remain_ce - (1.0 - alpha) * forget_ce


def anchor_penalty(parameters: Sequence[Tensor], anchors: Sequence[Tensor], decay: float) -> Tensor:
    """``decay / 2 * sum ||p - p_0||^2`` over the parameters: the SCRUB notebook's ``l2_penalty``.

    Example:
        >>> p, p0 = torch.tensor([1.0, 3.0]), torch.tensor([0.0, 1.0])
        >>> float(anchor_penalty([p], [p0], 0.1))  # 0.05 * (1 + 4)
        0.25
    """
    total = sum(((p - p0) ** 2).sum() for p, p0 in zip(parameters, anchors))
    return torch.as_tensor(total) * (decay / 2.0)


NEGGRAD_RECIPE = Recipe(optimizer="sgd", lr=0.01, weight_decay=0.0, momentum=0.0, lr_schedule="constant")
"""See NegGradPlusModule for where each number comes from."""


class NegGradPlusModule(UnlearningModule):
    """NegGrad+: Kurmanji, Triantafillou, Hayes, Triantafillou, "Towards Unbounded
    Machine Unlearning" (NeurIPS 2023, arXiv 2302.09880), public code
    https://github.com/meghdadk/SCRUB (``train_negrad`` in
    ``thirdparty/repdistiller/helper/loops.py`` and ``run_neggrad_epoch`` in
    ``small_scale_unlearning.ipynb``).

    Loss per step: ``alpha * CE(remaining batch) - (1 - alpha) * CE(forget batch)``
    (:func:`neggrad_plus_loss`): fine-tuning on D_r and gradient ascent on D_f at once,
    ``alpha`` in [0, 1] trading them off (1 is FT, 0 is GA). As the authors'
    ``zip(retain_loader, cycle(forget_loader))``, the datamodule's ``"paired"`` stream
    gives every remaining batch (the datamodule's ``batch_size``) together with a forget
    batch (``forget_batch_size``), the forget batches taken in turn and repeated when
    exhausted; the two go through the model in two forward passes, as theirs (so
    batch-norm statistics are those of each batch). An epoch is one pass over D_r.

    By default the loss and the model's mode are those of ``train_negrad`` (train mode, no
    anchor). The notebook's ``run_neggrad_epoch`` (``small_scale_unlearning.ipynb``, which
    ``negative_grad`` runs) differs in two ways, each an option: it keeps the model in eval
    mode (``eval_mode=True``: batch-norm layers use and keep the original's running
    statistics, dropout is off), and it adds ``l2_penalty(model, model_init, weight_decay)``,
    ``anchor_decay / 2 * ||theta - theta_0||^2`` with ``theta_0`` the original weights, to the
    remaining term (``anchor_decay``; the notebook's ``--weight-decay 0.1``). The loss is then
    ``alpha * (CE_r + penalty) - (1 - alpha) * CE_f``. ``configs/cifar10_vgg16/neggrad.yaml``
    runs the notebook's form; the digits and cifar10-small configs keep ``train_negrad``'s,
    whose numbers benchmarks/RESULTS.md reports.

    Default recipe: the SCRUB authors' small-scale notebook (``negative_grad``: SGD
    without momentum or weight decay, lr 0.01, 10 epochs, ``alpha = 0.95``; remaining
    batches of 32 (``args.retain_bs``, set the datamodule's ``batch_size``), forget
    batches of 64 (``args.forget_bs``); no augmentation (set the datamodule's
    ``crop_padding: 0`` and ``horizontal_flip: false``). These values come from their
    small-scale CIFAR-5 / Lacuna experiments, not from a ResNet-18 CIFAR-10 recipe; other
    public re-implementations use ``alpha = 0.9999`` with 5 epochs, so tune ``alpha``
    per setting. The NatMU paper publishes no NegGrad+ recipe of its own.

    Args:
        backbone: the architecture of the model to unlearn.
        original_ckpt: the trained model to unlearn (required).
        alpha: weight of the remaining-set term, in [0, 1].
        forget_batch_size: forget rows paired with each remaining batch (>= 1).
        eval_mode: train with the backbone in eval mode, as the notebook's ``run_neggrad_epoch``.
        anchor_decay: weight of the pull towards the original weights (the notebook's 0.1; >= 0).
        reinit_classifier: re-initialise the final linear layer first.
        See :class:`~natmu_lightning.methods.base.BackboneModule` for the rest.

    Raises:
        ValueError: ``original_ckpt`` missing, ``alpha`` outside [0, 1] or
            ``forget_batch_size`` < 1, ``anchor_decay`` negative, or ``anchor_decay`` > 0
            with ``reinit_classifier=True``.
    """

    stream = "paired"

    def __init__(
        self,
        backbone: nn.Module,
        original_ckpt: str,
        alpha: float = 0.95,
        forget_batch_size: int = 64,
        eval_mode: bool = False,
        anchor_decay: float = 0.0,
        recipe: Recipe = NEGGRAD_RECIPE,
        **kwargs: Any,
    ) -> None:
        check_in_range("alpha", alpha, 0.0, 1.0, meaning="the weight of the remaining-set term")
        check_integer("forget_batch_size", forget_batch_size, 1)
        check_non_negative("anchor_decay", anchor_decay)
        if anchor_decay > 0 and kwargs.get("reinit_classifier"):
            raise ValueError(
                "anchor_decay pulls the weights towards the original ones, which a re-initialised classifier no "
                "longer has: use one or the other"
            )
        super().__init__(backbone, original_ckpt, Recipe.read(recipe, NEGGRAD_RECIPE), **kwargs)
        # theta_0: the original weights as loaded (a resumed fit reloads them from original_ckpt too)
        self._anchors = [p.detach().clone() for p in self.backbone.parameters()] if anchor_decay > 0 else []

    def on_fit_start(self) -> None:
        # the strategy has placed the module: the anchors follow its parameters' device and dtype
        self._anchors = [a.to(p) for a, p in zip(self._anchors, self.backbone.parameters())]

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_start(batch, batch_idx)
        if self.hparams["eval_mode"]:  # Lightning puts the module in train mode at every epoch's start
            self.backbone.eval()

    def training_needs(self) -> TrainingNeeds:
        """The paired stream, with ``forget_batch_size`` forget rows per step."""
        return replace(super().training_needs(), forget_batch_size=int(self.hparams["forget_batch_size"]))

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        # remaining rows, then forget rows
        num_remain, images, targets = batch_fields(batch, NUM_REMAIN, "image", "target", user=type(self).__name__)
        remain_logits = self(images[:num_remain])
        forget_logits = self(images[num_remain:])
        alpha = float(self.hparams["alpha"])
        loss = neggrad_plus_loss(remain_logits, targets[:num_remain], forget_logits, targets[num_remain:], alpha)
        if self._anchors:
            trainable = [(p, a) for p, a in zip(self.backbone.parameters(), self._anchors) if p.requires_grad]
            parameters, anchors = [p for p, _ in trainable], [a for _, a in trainable]
            loss = loss + alpha * anchor_penalty(parameters, anchors, float(self.hparams["anchor_decay"]))
        check_finite(loss, self)
        log_training_values(self, {"train/loss": loss}, batch_size=num_remain)
        return loss
