"""``SCRUBModule``: unlearning by alternating away-from-teacher and towards-teacher steps."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from natmu_lightning.checks import check_choice, check_integer, check_non_negative, check_positive
from natmu_lightning.data.contracts import TrainingNeeds
from natmu_lightning.data.streams import PHASE, batch_fields
from natmu_lightning.methods.base import UnlearningModule, check_finite, log_training_values
from natmu_lightning.methods.recipe import Recipe
from natmu_lightning.methods.teachers import FrozenTeachers, move_teachers


def distill_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """KL(softmax(t / T) || softmax(s / T)) summed over classes, averaged over rows, times ``T**2``.

    This is RepDistiller's ``DistillKL`` (Hinton et al. 2015), which SCRUB uses for
    both its max and min steps: ``F.kl_div(log_softmax(s/T), softmax(t/T),
    size_average=False) * T**2 / batch``.

    Example:
        >>> import torch
        >>> s = torch.zeros(3, 5)
        >>> float(distill_kl(s, s, temperature=4.0))
        0.0
    """
    log_student = F.log_softmax(student_logits.float() / temperature, dim=1)
    teacher = F.softmax(teacher_logits.float() / temperature, dim=1)
    return F.kl_div(log_student, teacher, reduction="batchmean") * temperature**2


SCRUB_RECIPE = Recipe(optimizer="sgd", lr=5e-4, weight_decay=5e-4, lr_schedule="constant")
"""See SCRUBModule for where each number comes from."""


class SCRUBModule(UnlearningModule):
    """SCRUB: Kurmanji, Triantafillou, Hayes, Triantafillou, "Towards Unbounded Machine
    Unlearning", NeurIPS 2023 (arXiv 2302.09880); public code
    https://github.com/meghdadk/SCRUB (``large_scale_unlearning.ipynb``, ``scrub.py``,
    ``thirdparty/repdistiller/helper/loops.py::train_distill``).

    The teacher is a frozen copy of the original model (eval mode, held outside the
    module tree, see :mod:`natmu_lightning.methods.teachers`); the student (this
    module's backbone) starts from the same weights and trains in train mode.

    - max step, on forgetting rows: minimise ``-KL_T(teacher || student)``
      (push the student away from the teacher);
    - min step, on remaining rows: minimise ``gamma * CE(student, y) + alpha *
      KL_T(teacher || student)`` (stay close to the teacher and keep the labels).

    ``KL_T`` is :func:`distill_kl` (temperature ``T``, times ``T**2``, averaged over
    rows). SCRUB's paper writes the same objective with ``alpha`` on the KL term and
    ``gamma`` on the cross-entropy; the authors' code names them ``args.alpha`` and
    ``args.gamma`` (its ``args.beta`` weighs a further distillation loss and is 0 for
    plain SCRUB, so it is left out here).

    Schedule, as the authors' loop (``for epoch in 1..sgda_epochs: if epoch <= msteps:
    train_distill(forget_loader, "maximize"); train_distill(retain_loader, "minimize")``):
    the datamodule's ``"forget_then_remain"`` stream gives, per epoch, one pass of max
    steps over the forget set in its own batches of ``forget_batch_size`` (only in the
    first ``max_phase_epochs`` epochs), then one pass of min steps over the remaining
    set in batches of the datamodule's ``batch_size``; each batch carries its ``phase``.
    One optimizer (SGD with momentum by default) takes every step, as theirs. The
    learning-rate schedule advances per step; Lightning sizes it from the first epoch's
    length, which includes the forget pass (the authors' constant rate makes this moot).
    Under DDP each phase's batches are split across the ranks on their own, so all ranks
    are in the same phase at every step.

    Defaults are the authors' (large-scale notebook and ``scrub.py`` usage): SGD,
    momentum 0.9, lr 5e-4, weight decay 5e-4, ``alpha = 0.001``, ``gamma = 0.99``,
    ``T = 4`` (``kd_T``), ``msteps = 2``, 3 epochs (``sgda_epochs``); the notebook
    counts epochs from 1 and maximises while ``epoch <= msteps``, i.e. in the first
    ``msteps`` epochs (``scrub.py`` counts from 0 with the same test, one more). Their step
    decay (x0.1 after epochs 3, 5, 9) never fires within 3 epochs, hence the
    ``"constant"`` schedule. Their SGDA smoothing (``smoothing = 0``) and gradient
    clipping (``clip``, unused in ``train_distill``) are not implemented. The
    authors' loaders use no augmentation (set the datamodule's ``crop_padding: 0`` and
    ``horizontal_flip: false``) and, in the large-scale notebook, batches of 256
    (remaining; the datamodule's ``batch_size``) and 512 (forget; ``forget_batch_size``).

    Args:
        backbone: the architecture of the model to unlearn.
        original_ckpt: the trained model to unlearn (required); also the teacher.
        alpha: weight of the KL term in min steps (>= 0).
        gamma: weight of the cross-entropy term in min steps (>= 0).
        temperature: distillation temperature ``T`` (> 0).
        max_phase_epochs: how many leading epochs include max steps (the authors'
            ``msteps``; >= 0, 0 disables forgetting steps).
        forget_batch_size: batch size of the max steps' pass over the forget set (>= 1).
        reinit_classifier: re-initialise the STUDENT's final linear layer when the fit starts
            (the teacher keeps the original's).
        See :class:`~natmu_lightning.methods.base.BackboneModule` for the rest.

    Raises:
        ValueError: ``original_ckpt`` missing, ``temperature`` not positive,
            negative ``alpha``, ``gamma`` or ``max_phase_epochs``, ``forget_batch_size`` < 1.
    """

    stream = "forget_then_remain"

    def __init__(
        self,
        backbone: nn.Module,
        original_ckpt: str,
        alpha: float = 0.001,
        gamma: float = 0.99,
        temperature: float = 4.0,
        max_phase_epochs: int = 2,
        forget_batch_size: int = 512,
        recipe: Recipe = SCRUB_RECIPE,
        **kwargs: Any,
    ) -> None:
        check_positive("temperature", temperature)
        check_non_negative("alpha", alpha)
        check_non_negative("gamma", gamma)
        check_integer("max_phase_epochs", max_phase_epochs, 0)
        check_integer("forget_batch_size", forget_batch_size, 1)
        recipe = Recipe.read(recipe, SCRUB_RECIPE)
        super().__init__(backbone, original_ckpt, recipe, **kwargs)
        self.teachers = FrozenTeachers()
        self.teachers.add("original", self.backbone)
        #: optimizer steps taken per epoch, ``{epoch: {"max": n, "min": n}}`` (this process only)
        self.step_counts: dict[int, dict[str, int]] = {}

    def on_fit_start(self) -> None:
        move_teachers(self.teachers, self.backbone)

    def training_needs(self) -> TrainingNeeds:
        """The forget-then-remain stream: forget passes of ``forget_batch_size`` in the first
        ``max_phase_epochs`` epochs."""
        needs = super().training_needs()
        return replace(
            needs,
            forget_batch_size=int(self.hparams["forget_batch_size"]),
            max_phase_epochs=int(self.hparams["max_phase_epochs"]),
        )

    def in_max_phase(self, epoch: int | None = None) -> bool:
        """Whether ``epoch`` (default: the current one) takes max steps."""
        epoch = self.current_epoch if epoch is None else epoch
        return epoch < self.hparams["max_phase_epochs"]

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        phase, images, targets = batch_fields(batch, PHASE, "image", "target", user=type(self).__name__)
        check_choice(PHASE, phase, ("forget", "remain"))
        counts = self.step_counts.setdefault(self.current_epoch, {"max": 0, "min": 0})
        temperature = self.hparams["temperature"]
        teacher = self.teachers.logits("original", images)
        logits = self(images)
        divergence = distill_kl(logits, teacher, temperature)
        n = targets.numel()
        if phase == "forget":
            loss = -divergence
            log_training_values(self, {"train/max_kl": divergence.detach()}, batch_size=n)
            counts["max"] += 1
        else:
            loss = self.hparams["gamma"] * F.cross_entropy(logits, targets) + self.hparams["alpha"] * divergence
            log_training_values(self, {"train/loss": loss.detach(), "train/min_kl": divergence.detach()}, batch_size=n)
            counts["min"] += 1
        check_finite(loss, self)
        return loss
