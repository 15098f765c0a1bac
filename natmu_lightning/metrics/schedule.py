"""When and on what the evaluator measures (docs/design.md §3, "When"): the fixed seeded subsets
of the remaining and test sets that evaluations during training use
(``UnlearningEvaluator(remain_subset=..., test_subset=...)``), and what that asks of Lightning's
checkpoint callbacks and validation loop during a fit."""

from __future__ import annotations

import math
from collections.abc import Collection

import pytorch_lightning as pl
import torch
from torch import Tensor

from natmu_lightning.images import Images, take

Splits = dict[str, tuple[Images, Tensor]]
"""Each evaluation split's images and labels, by name (``forget``, ``remain``, ``test``, ...)."""


def check_subset(name: str, size: int | float | None) -> None:
    """Refuse a ``remain_subset`` / ``test_subset`` that is neither a fraction in (0, 1], a number
    of samples >= 1, nor ``None``.

    Raises:
        ValueError: naming ``name``.
    """
    valid = (
        size is None
        or (isinstance(size, int) and not isinstance(size, bool) and size >= 1)
        or (isinstance(size, float) and 0.0 < size <= 1.0)
    )
    if not valid:
        raise ValueError(f"{name} must be a fraction in (0, 1], a number of samples >= 1, or None; got {size!r}")


def subset_size(total: int, size: int | float | None) -> int:
    """How many of ``total`` samples a ``remain_subset`` / ``test_subset`` of ``size`` evaluates:
    a fraction rounded up, a count, or all of them.

    Example:
        >>> subset_size(45_000, 0.1), subset_size(45_000, 1000), subset_size(500, 1000), subset_size(500, None)
        (4500, 1000, 500, 500)
    """
    count = total if size is None else math.ceil(size * total) if isinstance(size, float) else size
    return min(count, total)


def subset_indices(total: int, size: int | float | None, seed: int) -> Tensor | None:
    """Sorted indices of a seeded subset of :func:`subset_size` samples out of ``total``;
    ``None`` when that is every sample."""
    count = subset_size(total, size)
    if count >= total:
        return None
    return torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:count].sort().values


MEASURED_SPLITS = ("forget", "remain", "test")
"""The splits every evaluation measures (accuracy, the MIA's members and non-members); an empty
``forget_test`` (a class without test samples) only leaves its own numbers undefined."""


def measured_splits(splits: Splits) -> Splits:
    """``splits``, once checked to hold samples in each of :data:`MEASURED_SPLITS`.

    Raises:
        ValueError: naming the empty splits.
    """
    empty = [name for name in MEASURED_SPLITS if splits[name][1].numel() == 0]
    if empty:
        raise ValueError(
            f"the evaluation split(s) {empty} are empty: UnlearningEvaluator measures every one of "
            f"{list(MEASURED_SPLITS)} (a dataset without test samples, or none outside the forgotten classes?)"
        )
    return splits


def training_subsets(
    splits: Splits, remain_subset: int | float | None, test_subset: int | float | None, seed: int
) -> Splits:
    """``splits`` with the remaining set cut to its subset drawn from ``seed`` and the test set to
    its subset drawn from ``seed + 1``; the other splits whole."""
    subsets = dict(splits)
    for offset, (name, size) in enumerate((("remain", remain_subset), ("test", test_subset))):
        images, targets = splits[name]
        keep = subset_indices(targets.numel(), size, seed + offset)
        if keep is not None:
            subsets[name] = (take(images, keep), targets[keep])
    return subsets


def check_checkpoint_monitors(trainer: pl.Trainer, evaluator_keys: Collection[str], every_n_epochs: int) -> None:
    """Refuse a checkpoint callback that monitors one of ``evaluator_keys`` (logged at the end of
    every ``every_n_epochs``-th epoch) but would look for it at other times.

    Raises:
        ValueError: such a callback saves every n training steps or on a time interval, or
            every n epochs with n not a multiple of ``every_n_epochs``.
    """
    for checkpoint in trainer.checkpoint_callbacks:
        monitor = getattr(checkpoint, "monitor", None)
        if monitor not in evaluator_keys:
            continue
        # ModelCheckpoint keeps its schedule private: read here, never written
        steps = getattr(checkpoint, "_every_n_train_steps", 0) or 0
        interval = getattr(checkpoint, "_train_time_interval", None)
        epochs = getattr(checkpoint, "_every_n_epochs", 1)
        if steps > 0 or interval is not None:
            raise ValueError(
                f"ModelCheckpoint(monitor={monitor!r}) saves every n training steps or on a time interval, but "
                f"the evaluator measures {monitor!r} at epoch ends only (every {every_n_epochs}): use every_n_epochs"
            )
        if epochs > 0 and epochs % every_n_epochs:
            raise ValueError(
                f"ModelCheckpoint(monitor={monitor!r}) saves every {epochs} epoch(s), but the evaluator measures "
                f"{monitor!r} every {every_n_epochs}: set that ModelCheckpoint's every_n_epochs to a multiple of "
                f"{every_n_epochs}"
            )


def needs_lightning_validation(trainer: pl.Trainer, monitors: Collection[object]) -> bool:
    """Whether a fit must keep Lightning's validation loop, which the evaluator makes redundant
    (it measures the test split again): when a callback monitors a ``val/`` key, or the trainer
    validates on a schedule of its own (``check_val_every_n_epoch`` other than 1:
    ``ModelCheckpoint`` then saves after validation only, so it must keep running)."""
    watches_validation = any(isinstance(m, str) and m.startswith("val/") for m in monitors)
    return watches_validation or trainer.check_val_every_n_epoch != 1


class ValidationLoopSwitch:
    """Lightning's validation loop switched off for a fit (through the trainer's public
    ``limit_val_batches``) and the user's value given back after it, also when it fails."""

    def __init__(self) -> None:
        self._to_restore: int | float | None = None

    def switch_off(self, trainer: pl.Trainer, monitors: Collection[object], keep: bool) -> None:
        """Switch it off unless ``keep`` or :func:`needs_lightning_validation`."""
        if keep or needs_lightning_validation(trainer, monitors):
            return
        if self._to_restore is None:  # not already switched off by an unfinished fit
            self._to_restore = trainer.limit_val_batches
        trainer.limit_val_batches = 0

    def restore(self, trainer: pl.Trainer) -> None:
        """Give the user's ``limit_val_batches`` back (at teardown, or on an exception, which skips it)."""
        if self._to_restore is not None:
            trainer.limit_val_batches = self._to_restore
            self._to_restore = None
