"""``BadTeacherModule``: unlearning by distilling from a competent and an incompetent teacher."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from natmu_lightning.checks import check_choice, check_positive
from natmu_lightning.data.streams import batch_fields
from natmu_lightning.methods.base import UnlearningModule, check_finite, log_training_values
from natmu_lightning.methods.recipe import Recipe
from natmu_lightning.methods.teachers import (
    FrozenTeachers,
    move_teachers,
    randomly_initialised_copy,
)

KLReduction = Literal["batchmean", "mean"]


def bad_teacher_loss(
    student_logits: Tensor,
    competent_logits: Tensor,
    incompetent_logits: Tensor,
    is_forget: Tensor,
    temperature: float,
    reduction: KLReduction = "batchmean",
) -> Tensor:
    """KL(teacher_T || student_T), the teacher being chosen per row.

    ``teacher_T = softmax(t / T)`` of the incompetent teacher for forgetting rows and
    of the competent one for remaining rows; ``student_T = softmax(s / T)``. Computed
    as ``F.kl_div(log_softmax(s / T), teacher_T, reduction=reduction)``, with no
    ``T**2`` factor (neither reference implementation has one):

    - ``"batchmean"``: sum over rows and classes divided by the number of rows (the
      NatMU authors' ``blindspot.py``, with which their published recipes were tuned);
    - ``"mean"``: divided by rows x classes (``F.kl_div``'s default, used by the Bad
      Teaching authors' ``UnlearnerLoss``), i.e. ``"batchmean"`` / num_classes.

    Example:
        >>> s = torch.zeros(2, 4)
        >>> float(bad_teacher_loss(s, s, s, torch.tensor([True, False]), temperature=2.0))
        0.0
    """
    teacher = torch.where(
        is_forget.view(-1, 1),
        F.softmax(incompetent_logits.float() / temperature, dim=1),
        F.softmax(competent_logits.float() / temperature, dim=1),
    )
    loss = F.kl_div(F.log_softmax(student_logits.float() / temperature, dim=1), teacher, reduction="batchmean")
    if reduction == "mean":  # F.kl_div's "mean", without its deprecation warning at every step
        loss = loss / student_logits.shape[1]
    return loss


BAD_TEACHER_RECIPE = Recipe(optimizer="adamw", lr=5e-5, weight_decay=9e-4, lr_schedule="cosine")
"""See BadTeacherModule for where each number comes from."""


class BadTeacherModule(UnlearningModule):
    """Bad Teacher / "blindspot" unlearning: Chundawat, Tarun, Mandal, Kankanhalli,
    "Can Bad Teaching Induce Forgetting? Unlearning in Deep Networks Using an
    Incompetent Teacher", AAAI 2023 (arXiv 2205.08096); public code
    https://github.com/vikram2000b/bad-teaching-unlearning (``unlearn.py``).

    The student (this module's backbone, starting from the original weights) is
    trained on one shuffled stream over the remaining AND forgetting samples
    (``stream = "both"``; the batch's ``is_forget`` flags say which is which) to
    match, at temperature ``T``, the competent teacher (a frozen copy of the original
    model) on remaining rows and the incompetent teacher (a frozen, randomly
    initialised copy of the backbone, seeded by ``incompetent_seed``) on forgetting
    rows. See :func:`bad_teacher_loss` for the exact loss and reduction. Teachers run
    in eval mode, the student in train mode; the teachers are held outside the module
    tree (:mod:`natmu_lightning.methods.teachers`): not trained, not saved.

    The incompetent teacher is drawn with ``reset_parameters()`` on every layer (the
    PyTorch default initialisation, as a freshly built backbone has); the NatMU
    authors build it as a fresh, unloaded model after seeding.

    Recipes of the NatMU paper (its authors' ``sample-wise/scripts/*/badteacher.sh``:
    AdamW, 5 epochs, per-step cosine to zero, no warm-up, ``batchmean`` KL, the
    training stream without augmentation):

    ======================== ========= ======= ============ ======
    setting                  model     lr      weight decay T
    ======================== ========= ======= ============ ======
    CIFAR-10, random         VGG-16    5.0e-5  9.0e-4       7.2
    CIFAR-100, random        ResNet-18 2.8e-4  9.0e-4       2.4
    TinyImageNet, random     ResNet-34 2.7e-4  7.5e-4       1.8
    ======================== ========= ======= ============ ======

    (batch 128; 256 for TinyImageNet.) The defaults here are the CIFAR-10 row. The
    Bad Teaching paper itself used Adam, lr 1e-4, T = 1, one epoch, a 30% subset of
    the remaining data and ``F.kl_div``'s default ``"mean"`` reduction (see also the
    SSD authors' re-run, ``forget_random_strategies.blindspot``).

    Args:
        backbone: the architecture of the model to unlearn.
        original_ckpt: the trained model to unlearn (required); also the competent teacher.
        temperature: distillation temperature ``T`` (> 0).
        incompetent_seed: seed of the incompetent teacher's random initialisation.
        kl_reduction: ``"batchmean"`` (NatMU's code) or ``"mean"`` (Bad Teaching's code).
        reinit_classifier: re-initialise the STUDENT's final linear layer when the fit starts
            (the competent teacher keeps the original's): the NatMU authors' full-class script
            (``class-wise/scripts/full-class/badteacher.sh`` passes ``-i``, ``init_linear``).
        See :class:`~natmu_lightning.methods.base.BackboneModule` for the rest.

    Raises:
        ValueError: ``original_ckpt`` missing, ``temperature`` not a positive number,
            or an unknown ``kl_reduction``.
    """

    stream = "both"

    def __init__(
        self,
        backbone: nn.Module,
        original_ckpt: str,
        temperature: float = 7.2,
        incompetent_seed: int = 0,
        kl_reduction: KLReduction = "batchmean",
        recipe: Recipe = BAD_TEACHER_RECIPE,
        **kwargs: Any,
    ) -> None:
        check_positive("temperature", temperature)
        check_choice("kl_reduction", kl_reduction, ("batchmean", "mean"))
        recipe = Recipe.read(recipe, BAD_TEACHER_RECIPE)
        super().__init__(backbone, original_ckpt, recipe, **kwargs)
        self.teachers = FrozenTeachers()
        self.teachers.add("competent", self.backbone)
        self.teachers.add("incompetent", randomly_initialised_copy(self.backbone, incompetent_seed))

    def on_fit_start(self) -> None:
        move_teachers(self.teachers, self.backbone)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        images, is_forget = batch_fields(batch, "image", "is_forget", user=type(self).__name__)
        is_forget = is_forget.bool()
        competent = self.teachers.logits("competent", images)
        incompetent = self.teachers.logits("incompetent", images)
        loss = bad_teacher_loss(
            self(images), competent, incompetent, is_forget, self.hparams["temperature"], self.hparams["kl_reduction"]
        )
        check_finite(loss, self)
        n = images.shape[0]
        log_training_values(self, {"train/loss": loss, "train/forget_fraction": is_forget.float().mean()}, batch_size=n)
        return loss
