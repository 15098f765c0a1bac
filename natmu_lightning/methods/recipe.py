"""``Recipe``: how a module optimises (optimiser, learning rate, its schedule), as one object.

Every trainable module takes ``recipe: Recipe`` and declares its own default instance
beside its class (``NATMU_RECIPE``, ``FT_RECIPE``, ...), with where each number comes from.
From YAML or the CLI only what differs from the method's default needs saying::

    model:
      class_path: natmu_lightning.NatMUModule
      init_args:
        recipe:
          lr: 0.03            # the rest stays NatMU's default recipe

    natmu-lightning fit --config configs/digits/base.yaml --config configs/digits/natmu.yaml \
        --model.init_args.recipe.lr 0.01

From Python: ``NatMUModule(backbone, original_ckpt=..., recipe=NATMU_RECIPE.replace(lr=0.03))``
(a plain dict, e.g. ``{"lr": 0.03}``, is read the same way). Checkpoints hold the recipe as a
plain dict in their hyperparameters, so they load with ``weights_only=True`` and reload it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from natmu_lightning.checks import check_choice, check_in_range, check_non_negative, check_positive, options_from

OptimizerName = Literal["adamw", "sgd"]
ScheduleName = Literal["cosine", "step", "constant"]


@dataclass(frozen=True)
class Recipe:
    """An optimisation recipe, checked when made.

    Args:
        optimizer: ``"adamw"`` or ``"sgd"`` (momentum, Nesterov off).
        lr: peak learning rate.
        weight_decay: decoupled (AdamW) or L2 (SGD) weight decay.
        momentum: SGD momentum.
        betas: AdamW betas.
        lr_schedule: ``"cosine"`` (per step to zero), ``"step"`` (x0.1 at
            ``milestones[0]`` and x0.01 at ``milestones[1]`` of the steps) or ``"constant"``.
        warmup_epochs: linear warm-up length in epochs (may be fractional).
        milestones: fractions of the run for the ``"step"`` schedule.

    Example:
        >>> Recipe(optimizer="sgd", lr=0.1).replace(lr=0.01).lr
        0.01
    """

    optimizer: OptimizerName = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    lr_schedule: ScheduleName = "cosine"
    warmup_epochs: float = 0.0
    milestones: tuple[float, float] = (0.6, 0.8)

    def __post_init__(self) -> None:
        # YAML and checkpoints give lists; the recipe keeps tuples (hashable, immutable).
        object.__setattr__(self, "betas", tuple(self.betas))
        object.__setattr__(self, "milestones", tuple(self.milestones))
        check_choice("optimizer", self.optimizer, ("adamw", "sgd"))
        check_choice("lr_schedule", self.lr_schedule, ("cosine", "step", "constant"))
        check_positive("lr", self.lr)
        for name in ("weight_decay", "momentum", "warmup_epochs"):
            check_non_negative(name, getattr(self, name))
        if len(self.betas) != 2:
            raise ValueError(f"betas must be two numbers, got {self.betas!r}")
        for beta in self.betas:
            check_in_range("betas", beta, 0.0, 1.0, high_open=True)
        for milestone in self.milestones:
            check_in_range("milestones", milestone, 0.0, 1.0, meaning="fractions of the run")

    def replace(self, **changes: Any) -> Recipe:
        """This recipe with ``changes`` (checked again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def read(cls, value: Recipe | Mapping[str, Any], default: Recipe) -> Recipe:
        """``value`` as a recipe: itself, or a mapping of the fields that differ from ``default``
        (a checkpoint's hyperparameters, a dict from Python).

        Raises:
            ValueError: a field no recipe has.
        """
        return options_from("recipe", value, default)

    def as_dict(self) -> dict[str, Any]:
        """The fields as plain values, tuples as lists: hyperparameters that ``hparams.yaml``
        and checkpoints hold, read back with ``yaml.safe_load`` and ``weights_only=True``.

        Example:
            >>> Recipe().as_dict()["betas"]
            [0.9, 0.999]
        """
        return {
            key: list(value) if isinstance(value, tuple) else value for key, value in dataclasses.asdict(self).items()
        }

    def optimizer_for(self, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        if self.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=self.lr, betas=self.betas, weight_decay=self.weight_decay)
        return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)

    def lr_factor(self, total_steps: int, steps_per_epoch: int) -> LrFactor:
        """The per-step learning-rate multiplier of a run of ``total_steps`` optimizer steps."""
        return LrFactor(self.lr_schedule, total_steps, round(self.warmup_epochs * steps_per_epoch), self.milestones)


class LrFactor:
    """Picklable per-step learning-rate factor (``LambdaLR`` keeps it in its state).

    Example:
        >>> f = LrFactor("cosine", total_steps=10, warmup_steps=0)
        >>> f(0), round(f(5), 3), f(10)
        (1.0, 0.5, 0.0)
    """

    def __init__(
        self, schedule: str, total_steps: int, warmup_steps: int, milestones: Sequence[float] = (0.6, 0.8)
    ) -> None:
        self.schedule, self.total, self.warmup = schedule, total_steps, warmup_steps
        self.milestones = tuple(milestones)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.schedule == "cosine":
            span = max(self.total - self.warmup, 1)
            return 0.5 * (1.0 + math.cos(math.pi * min(step - self.warmup, span) / span))
        if self.schedule == "step":
            return 0.1 ** sum(step >= m * self.total for m in self.milestones)
        return 1.0
