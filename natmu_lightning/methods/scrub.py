"""``SCRUBModule``: unlearning by alternating away-from-teacher and towards-teacher steps."""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from natmu_lightning.methods.base import UnlearningModule, OptimizerName, ScheduleName, check_finite
from natmu_lightning.methods.teachers import FrozenTeachers, images_and_forget_flags, move_teachers


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

    Schedule. The paper's epoch is a full max pass over the forget set followed by a
    full min pass over the remaining set; the max pass happens only in the first
    ``msteps`` epochs. Here one shuffled ``"both"`` stream carries both kinds of rows,
    flagged by ``is_forget``, and each batch takes (manual optimisation, one
    optimizer, two steps):

    1. during the first ``max_phase_epochs`` epochs only, and only if the batch holds
       forgetting rows: one max step on the batch's forgetting rows;
    2. if the batch holds remaining rows: one min step on its remaining rows (a fresh
       forward pass, after the max step's update).

    So epochs ``0 .. max_phase_epochs - 1`` interleave max and min steps instead of
    doing all max steps first, and later epochs only do min steps, as in the paper.
    The max steps use the forgetting rows that fall into each batch (about
    ``batch_size x |D_f| / |D|`` of them, so more, smaller max steps per epoch than the
    authors' separate forget loader). The learning-rate schedule advances once per
    batch (``trainer.global_step`` counts both steps). Under DDP a step is taken on
    every rank when any rank's batch holds the step's rows; a rank without them
    contributes a zero gradient (so that all ranks step together).

    Defaults are the authors' (large-scale notebook and ``scrub.py`` usage): SGD,
    momentum 0.9, lr 5e-4, weight decay 5e-4, ``alpha = 0.001``, ``gamma = 0.99``,
    ``T = 4`` (``kd_T``), ``msteps = 2``, 3 epochs (``sgda_epochs``); the notebook
    counts epochs from 1 and maximises while ``epoch <= msteps``, i.e. in the first
    ``msteps`` epochs (``scrub.py`` counts from 0 with the same test, one more). Their step
    decay (x0.1 after epochs 3, 5, 9) never fires within 3 epochs, hence the
    ``"constant"`` schedule. Their SGDA smoothing (``smoothing = 0``) and gradient
    clipping (``clip``, unused in ``train_distill``) are not implemented. The
    authors' loaders use no augmentation (retain batches 256, forget batches 512 in
    the large-scale notebook).

    Args:
        backbone: the architecture of the model to unlearn.
        original_ckpt: the trained model to unlearn (required); also the teacher.
        alpha: weight of the KL term in min steps (>= 0).
        gamma: weight of the cross-entropy term in min steps (>= 0).
        temperature: distillation temperature ``T`` (> 0).
        max_phase_epochs: how many leading epochs include max steps (the authors'
            ``msteps``; >= 0, 0 disables forgetting steps).
        See :class:`~natmu_lightning.methods.base.BackboneModule` for the rest.

    Raises:
        ValueError: ``original_ckpt`` missing, ``temperature`` not positive,
            negative ``alpha``, ``gamma`` or ``max_phase_epochs``.
    """

    train_stream = "both"

    def __init__(
        self,
        backbone: nn.Module,
        original_ckpt: str,
        alpha: float = 0.001,
        gamma: float = 0.99,
        temperature: float = 4.0,
        max_phase_epochs: int = 2,
        optimizer: OptimizerName = "sgd",
        lr: float = 5e-4,
        weight_decay: float = 5e-4,
        momentum: float = 0.9,
        betas: Sequence[float] = (0.9, 0.999),
        lr_schedule: ScheduleName = "constant",
        warmup_epochs: float = 0.0,
        milestones: Sequence[float] = (0.6, 0.8),
    ) -> None:
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a positive number, got {temperature!r}")
        for name, value in (("alpha", alpha), ("gamma", gamma)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if isinstance(max_phase_epochs, bool) or not isinstance(max_phase_epochs, int) or max_phase_epochs < 0:
            raise ValueError(f"max_phase_epochs must be an integer >= 0, got {max_phase_epochs!r}")
        super().__init__(
            backbone, original_ckpt, optimizer, lr, weight_decay, momentum, betas,
            lr_schedule, warmup_epochs, milestones,
        )
        self.automatic_optimization = False
        self.teachers = FrozenTeachers()
        self.teachers.add("original", self.backbone)
        #: optimizer steps taken per epoch, ``{epoch: {"max": n, "min": n}}`` (this process only)
        self.step_counts: dict[int, dict[str, int]] = {}

    def on_fit_start(self) -> None:
        move_teachers(self.teachers, self.backbone)

    def in_max_phase(self, epoch: Optional[int] = None) -> bool:
        """Whether ``epoch`` (default: the current one) takes max steps."""
        epoch = self.current_epoch if epoch is None else epoch
        return epoch < self.hparams.max_phase_epochs

    def training_step(self, batch: Any, batch_idx: int) -> None:
        images, is_forget = images_and_forget_flags(batch, type(self).__name__)
        targets = batch["target"]
        remain = ~is_forget
        optimizer = self.optimizers()
        counts = self.step_counts.setdefault(self.current_epoch, {"max": 0, "min": 0})
        temperature = self.hparams.temperature
        any_forget, any_remain = self._any_rank(images.device, bool(is_forget.any()), bool(remain.any()))

        if self.in_max_phase() and any_forget:
            forget_rows = images[is_forget]
            if forget_rows.shape[0] > 0:
                teacher = self.teachers.logits("original", forget_rows)
                divergence = distill_kl(self(forget_rows), teacher, temperature)
                loss = -divergence
                self.log("train/max_kl", divergence.detach(), batch_size=forget_rows.shape[0])
            else:
                loss = self._zero_loss(images)
            check_finite(loss, self)
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()
            counts["max"] += 1

        if any_remain:
            remain_rows = images[remain]
            if remain_rows.shape[0] > 0:
                teacher = self.teachers.logits("original", remain_rows)
                logits = self(remain_rows)
                cross_entropy = F.cross_entropy(logits, targets[remain])
                divergence = distill_kl(logits, teacher, temperature)
                loss = self.hparams.gamma * cross_entropy + self.hparams.alpha * divergence
                n = remain_rows.shape[0]
                self.log("train/loss", loss.detach(), prog_bar=True, batch_size=n)
                self.log("train/min_kl", divergence.detach(), batch_size=n)
            else:
                loss = self._zero_loss(images)
            check_finite(loss, self)
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()
            counts["min"] += 1

        scheduler = self.lr_schedulers()
        if scheduler is not None:
            scheduler.step()

    def _any_rank(self, device: torch.device, *flags: bool) -> tuple[bool, ...]:
        """Each flag OR-ed over all processes (the flags on the batch's ``device``).

        Under DDP every rank must take the same optimizer steps, or the gradient
        all-reduce of one rank waits forever for the others.
        """
        if self.trainer.world_size <= 1:
            return flags
        local = torch.tensor([float(f) for f in flags], device=device)
        gathered = self.all_gather(local).reshape(-1, len(flags))
        return tuple(bool(v) for v in gathered.amax(0) > 0)

    def _zero_loss(self, images: Tensor) -> Tensor:
        """A zero loss reaching every parameter, for a rank whose batch lacks the step's rows.

        The student runs in eval mode on one image so that batch-norm statistics are
        neither used nor updated; DDP then averages a zero gradient from this rank.
        """
        was_training = self.backbone.training
        self.backbone.eval()
        try:
            return self(images[:1]).sum() * 0.0
        finally:
            self.backbone.train(was_training)
