"""Frozen teacher networks for distillation baselines (Bad Teacher, SCRUB).

A teacher must stay in eval mode, receive no gradient, and stay out of the student's
checkpoint and optimizer. Registering it as a child module would break all three:
Lightning calls ``.train()`` on the LightningModule before every training epoch
(which would switch the teacher's batch norm to batch statistics), ``parameters()``
would hand its weights to the optimizer, and ``state_dict()`` would save them.

:class:`FrozenTeachers` therefore holds the teachers in a plain Python dict. A plain
object assigned to a module attribute is not an ``nn.Module``, so ``nn.Module``
stores it as an ordinary attribute: ``.train()``, ``.eval()``, ``.to()``,
``.parameters()`` and ``.state_dict()`` of the LightningModule never see the
teachers. The module moves them to its device (and floating dtype) itself, in
``on_fit_start``, and :meth:`FrozenTeachers.logits` re-asserts eval mode and
``no_grad`` on every call.

Teachers are rebuilt from the constructor's arguments (the original weights, a seed),
so a run resumed with ``fit --ckpt_path`` gets the same teachers without storing them.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import torch
from torch import Tensor, nn


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` in eval mode with every parameter frozen.

    Example:
        >>> net = nn.Linear(2, 2)
        >>> teacher = frozen_copy(net)
        >>> teacher.training, any(p.requires_grad for p in teacher.parameters())
        (False, False)
        >>> teacher.weight is net.weight
        False
    """
    teacher = copy.deepcopy(module)
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


def randomly_initialised_copy(module: nn.Module, seed: int) -> nn.Module:
    """A frozen copy of ``module`` whose layers are re-initialised from ``seed``.

    Every sub-module with a ``reset_parameters()`` method (convolutions, linear and
    batch-norm layers, ...) is reset in ``modules()`` order under a forked RNG seeded
    with ``seed``; batch-norm running statistics are reset too. The global RNG state
    is left untouched. The copy is drawn and returned on the CPU. Layers without
    ``reset_parameters`` keep the copied values; a backbone in which nothing at all can be
    reset is rejected.

    Args:
        module: the architecture to copy (its current weights are discarded).
        seed: seed of the new initialisation.

    Returns:
        A frozen (eval mode, ``requires_grad=False``) randomly initialised copy.

    Raises:
        ValueError: no sub-module of ``module`` can be re-initialised.
    """
    fresh = copy.deepcopy(module).cpu()  # draw on the CPU: the same values whatever the device
    reset = 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for sub in fresh.modules():
            reset_parameters = getattr(sub, "reset_parameters", None)
            if callable(reset_parameters):
                reset_parameters()
                reset += 1
    if reset == 0:
        raise ValueError(
            f"cannot randomly initialise a copy of {type(module).__name__}: none of its layers "
            "has a reset_parameters() method"
        )
    return frozen_copy(fresh)


class FrozenTeachers:
    """Named frozen networks kept outside a LightningModule's module tree.

    Assign an instance to a LightningModule attribute (``self.teachers =
    FrozenTeachers()``); because it is not an ``nn.Module``, the LightningModule's
    ``.train()``, ``.to()``, ``parameters()`` and ``state_dict()`` ignore it.

    Example:
        >>> teachers = FrozenTeachers()
        >>> _ = teachers.add("competent", nn.Linear(3, 2))
        >>> teachers.names()
        ['competent']
        >>> teachers.logits("competent", torch.zeros(4, 3)).requires_grad
        False
    """

    def __init__(self) -> None:
        self._nets: dict[str, nn.Module] = {}

    def add(self, name: str, module: nn.Module) -> nn.Module:
        """Store a frozen copy of ``module`` under ``name`` and return it."""
        if name in self._nets:
            raise ValueError(f"a teacher named {name!r} already exists")
        self._nets[name] = frozen_copy(module)
        return self._nets[name]

    def __getitem__(self, name: str) -> nn.Module:
        return self._nets[name]

    def __contains__(self, name: object) -> bool:
        return name in self._nets

    def __iter__(self) -> Iterator[nn.Module]:
        return iter(self._nets.values())

    def __len__(self) -> int:
        return len(self._nets)

    def names(self) -> list[str]:
        return list(self._nets)

    def to(self, device: torch.device, dtype: torch.dtype | None = None) -> FrozenTeachers:
        """Move every teacher to ``device`` (and floating ``dtype``, if given), in eval mode."""
        for net in self._nets.values():
            if dtype is None:
                net.to(device)
            else:
                net.to(device=device, dtype=dtype)
            net.eval()
        return self

    def logits(self, name: str, images: Tensor) -> Tensor:
        """The teacher's outputs on ``images``, in eval mode, without autograd history."""
        net = self._nets[name]
        if net.training:  # nobody should have switched it, but never distil from batch statistics
            net.eval()
        with torch.no_grad():
            return net(images)


def move_teachers(teachers: FrozenTeachers, student: nn.Module) -> None:
    """Put ``teachers`` on the student's device and floating dtype (e.g. under ``16-true``)."""
    reference = next((p for p in student.parameters() if p.is_floating_point()), None)
    if reference is None:
        return
    teachers.to(reference.device, reference.dtype)
