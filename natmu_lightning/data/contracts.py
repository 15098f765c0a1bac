"""The contract between the data and the methods, declared once, in both directions.

- What a method needs from the data: :class:`TrainingNeeds`, a value the method builds and
  hands to the datamodule, together with the model when a step must run it (ranking hybrid
  partners, hardest samples), through ``ForgetRemainDataModule.prepare_for``. The data side
  never looks the module up.
- What the methods and callbacks read from the datamodule: :class:`UnlearningData`.
  :class:`~natmu_lightning.data.ForgetRemainDataModule` provides all of it. Another
  datamodule works with a method or a callback when it provides what that part reads:
  :func:`unlearning_data` checks exactly those names, before any work, and says which
  are missing.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from torch import Tensor

from natmu_lightning.images import Images

#: What every part that evaluates, or reads the forget set, needs.
EVALUATION = ("evaluation_splits",)


@dataclass(frozen=True)
class TrainingNeeds:
    """What a method needs from the data: declared by the method, handed to the datamodule.

    Attributes:
        stream: the training stream (``ForgetRemainDataModule``'s docstring says which is which).
        original_ckpt: the weights the method starts from, if any (ranking the hardest
            samples needs them).
        unlearns: an unlearning method: in a further deletion request its ``original_ckpt``
            must be the previous request's result.
        forget_batch_size: forget rows per batch of the ``forget_then_remain`` and ``paired``
            streams (``None``: the datamodule's ``batch_size``).
        max_phase_epochs: how many leading epochs of a ``forget_then_remain`` stream hold
            the forget pass, SCRUB's max steps (``None``: every epoch).
    """

    stream: str
    original_ckpt: str | None = None
    unlearns: bool = False
    forget_batch_size: int | None = None
    max_phase_epochs: int | None = None


def training_stream(requested: str | None, needs: TrainingNeeds | None) -> str | None:
    """The stream a fit trains on: the datamodule's ``stream`` argument when given, else the one
    the method declares (``None`` without either)."""
    return requested or (needs.stream if needs is not None else None)


class UnlearningData(Protocol):
    """The datamodule as methods, the evaluator and the record read it.

    Attributes:
        seed: seed of the forget set (and of what is drawn from it).
        eval_batch_size: batch size of evaluation passes.
        forget_indices: training-set indices of the forget set, once resolved (``setup``).
    """

    seed: int
    eval_batch_size: int
    forget_indices: Tensor | None

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        ...

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of every image."""
        ...

    @property
    def train_targets(self) -> Tensor:
        """Label of every training sample (index = training-set index)."""
        ...

    def evaluation_splits(self) -> dict[str, tuple[Images, Tensor]]:
        """(uint8 images in memory or on disk, labels) of ``forget``, ``remain`` and ``test`` (and ``forget_test``
        for class requests)."""
        ...


def unlearning_data(trainer: Any, user: str, needs: Sequence[str] = EVALUATION, hint: str = "") -> UnlearningData:
    """The trainer's datamodule, once it declares every name in ``needs``.

    Names are looked up without evaluating properties (no dataset is loaded to check).

    Args:
        trainer: the Lightning trainer (or None, outside one).
        user: who asks, for the error (e.g. ``"SSDModule"``).
        needs: the :class:`UnlearningData` members ``user`` reads.
        hint: appended to the error (another way to run ``user``).

    Raises:
        ValueError: no datamodule, or one that lacks some of ``needs``.
    """
    datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
    missing = [name for name in needs if not _declares(datamodule, name)]
    if datamodule is None or missing:
        found = "the trainer has none" if datamodule is None else f"{type(datamodule).__name__} lacks {missing}"
        raise ValueError(
            f"{user} needs a datamodule with {', '.join(needs)}, e.g. ForgetRemainDataModule ({found}){hint}"
        )
    return cast(UnlearningData, datamodule)


def _declares(obj: Any, name: str) -> bool:
    try:
        inspect.getattr_static(obj, name)
    except AttributeError:
        return False
    return True
