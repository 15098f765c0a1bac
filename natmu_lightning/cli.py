"""The ``natmu-lightning`` command: Lightning's CLI with the unlearning evaluator attached.

Usage (a run composes a setting's base with one fragment; ``configs/README.md``)::

    natmu-lightning fit --config configs/digits/base.yaml --config configs/digits/natmu.yaml
    natmu-lightning validate --config configs/digits/base.yaml --config configs/digits/natmu.yaml --ckpt_path PATH
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any

import jsonargparse
import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from torch import Tensor
from torch.nn.parameter import is_lazy

from natmu_lightning.callbacks import UnlearningEvaluator
from natmu_lightning.callbacks.record import find_evaluator
from natmu_lightning.checkpoints import misfits, read_checkpoint, strip_prefixes
from natmu_lightning.data import ForgetRemainDataModule
from natmu_lightning.process_group import release_process_group

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
JSONARGPARSE_DIR = os.path.dirname(os.path.abspath(jsonargparse.__file__))


class NatMUCLI(LightningCLI):
    """LightningCLI whose config also has an ``evaluator:`` section (always attached)."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(UnlearningEvaluator, "evaluator")

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parse, then refuse a ``--ckpt_path`` that is not a Lightning checkpoint: Lightning reads
        its hyperparameters next and fails on such a file with a bare traceback (a plain state
        dict later, inside the run: ``KeyError: 'pytorch-lightning_version'``)."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        self._ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        self._ckpt_state = lightning_checkpoint_state(self._ckpt_path)

    def after_instantiate_classes(self) -> None:
        """Refuse a ``--ckpt_path`` whose weights do not fit the config's backbone before the run
        writes anything (Lightning would fail inside it, after its config and logs are written)."""
        super().after_instantiate_classes()
        if self._ckpt_state is not None:
            check_backbone_fits(self.model, self._ckpt_path, self._ckpt_state)
        self._ckpt_state = None

    def before_fit(self) -> None:
        """Refuse a further deletion request whose method does not start from the previous
        request's result before the fit writes anything (its config, its logs)."""
        check_continues = getattr(self.datamodule, "check_continues", None)
        training_needs = getattr(self.model, "training_needs", None)
        if callable(check_continues) and callable(training_needs):
            check_continues(training_needs())

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        place_checkpoints(trainer)
        evaluator = find_evaluator(trainer)
        if evaluator is not None:
            refuse_own_reference(trainer, evaluator.reference_ckpt)
        return trainer


def place_checkpoints(trainer: pl.Trainer) -> None:
    """Give every ``ModelCheckpoint`` without a ``dirpath`` the run's checkpoint folder,
    ``<logger save_dir>/<logger name>/checkpoints``.

    Lightning's own default is inside the log version (``.../version_N/checkpoints``), which is
    new for every run, so ``--ckpt_path last`` would never find the interrupted run's
    ``last.ckpt``. One folder per run name, shared by its log versions, resumes; each version
    keeps its own logs, config and unlearning record.
    """
    logger = trainer.logger
    if logger is None or logger.save_dir is None:
        return
    folder = os.path.join(logger.save_dir, logger.name or "", "checkpoints")
    if "://" not in folder:  # a local path, absolute as ModelCheckpoint makes its own
        folder = os.path.realpath(folder)
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
            callback.dirpath = folder


LIGHTNING_CKPT_KEYWORDS = ("last", "best", "hpc")
"""``ckpt_path`` values Lightning resolves itself (with ``registry`` ones and remote paths)."""


def lightning_checkpoint_state(ckpt_path: str | os.PathLike[str] | None) -> dict[str, Tensor] | None:
    """The ``state_dict`` of the Lightning checkpoint ``ckpt_path``; ``None`` without one, or for
    what Lightning resolves itself (its keywords, ``registry`` paths, remote paths, the folders
    of sharded checkpoints).

    Raises:
        ValueError: the file is missing, unreadable, or not a checkpoint a Lightning fit wrote.
    """
    if ckpt_path is None:
        return None
    ckpt_path = os.fspath(ckpt_path)
    lightnings = ckpt_path in LIGHTNING_CKPT_KEYWORDS or ckpt_path.startswith("registry") or "://" in ckpt_path
    if not ckpt_path or lightnings or os.path.isdir(ckpt_path):
        return None
    checkpoint = read_checkpoint(ckpt_path, "ckpt_path")
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or "pytorch-lightning_version" not in checkpoint:
        raise ValueError(
            f"ckpt_path {ckpt_path!r} is not a checkpoint written by a Lightning fit (a plain state dict?): "
            "--ckpt_path resumes or evaluates such a checkpoint; to start a method from these weights, pass "
            "them as --model.init_args.original_ckpt"
        )
    return state


def check_backbone_fits(model: pl.LightningModule, ckpt_path: object, state: dict[str, Tensor]) -> None:
    """Refuse a checkpoint's ``state`` whose ``backbone.`` tensors do not fit the model's
    ``backbone`` submodule. Left to Lightning: a module without one (or whose ``backbone`` is
    not the child it saves under that name), with lazy parameters or ``strict_loading`` off,
    and a checkpoint without ``backbone.`` tensors.

    Raises:
        ValueError: naming the missing, unexpected and mismatched tensors.
    """
    backbone = dict(model.named_children()).get("backbone")
    if backbone is None or not model.strict_loading or any(is_lazy(p) for p in backbone.parameters()):
        return
    saved = {key.removeprefix("backbone."): value for key, value in state.items() if key.startswith("backbone.")}
    if not saved:
        return
    details = misfits(strip_prefixes(saved), backbone.state_dict())  # a compiled backbone's _orig_mod. too
    if details:
        raise ValueError(
            f"ckpt_path {ckpt_path!r} does not fit the {type(backbone).__name__} backbone of the config: "
            + "; ".join(details)
            + " (another architecture or class count?)"
        )


def refuse_own_reference(trainer: pl.Trainer, reference_ckpt: str | None) -> None:
    """Raise ``ValueError`` when the evaluator's reference is a checkpoint this run writes itself
    (a forget-request fragment composed after ``retrain.yaml`` gives Retrain its own output)."""
    if reference_ckpt is None:
        return
    reference = os.path.realpath(reference_ckpt)
    for callback in trainer.checkpoint_callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.dirpath and callback.filename:
            if os.path.realpath(os.path.join(callback.dirpath, f"{callback.filename}.ckpt")) == reference:
                raise ValueError(
                    f"evaluator.reference_ckpt {reference_ckpt} is the checkpoint this run writes; compose a forget-"
                    "request fragment before original.yaml / retrain.yaml, or pass --evaluator.reference_ckpt null"
                )


def main(args: Sequence[str] | None = None, run: bool = True) -> NatMUCLI:
    """Run the CLI on ``args`` (default: ``sys.argv``); callable from tests.

    Args:
        args: command-line arguments, e.g. ``["fit", "--config", "configs/digits/base.yaml", "--config", ...]``.
        run: run the subcommand (``False`` only parses and instantiates).
    """
    return NatMUCLI(
        pl.LightningModule,
        ForgetRemainDataModule,
        subclass_mode_model=True,
        seed_everything_default=0,
        args=list(args) if args is not None else None,
        run=run,
        auto_configure_optimizers=False,
    )


def entry_point() -> None:
    """Console script: like :func:`main`, but bad input the package refuses ends with a one-line
    error and exit code 2, and a finished command releases the process group of a multi-process
    run. A ``ValueError`` raised elsewhere (torch, a user's backbone) keeps its traceback: it is
    a bug to find, not input to correct."""
    try:
        main()
    except (ValueError, FileNotFoundError, FloatingPointError) as error:
        if not raised_by_package(error):
            raise
        print(f"natmu-lightning: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    release_process_group()


def raised_by_package(error: BaseException) -> bool:
    """Whether ``error`` refuses input: raised by natmu_lightning's own code (its innermost
    frame), or by jsonargparse while it parses the command and builds the config's classes
    (it raises its own error carrying theirs)."""
    frames = [os.path.abspath(frame.filename) for frame in traceback.extract_tb(error.__traceback__)]
    return bool(frames) and (
        frames[-1].startswith(PACKAGE_DIR + os.sep) or any(f.startswith(JSONARGPARSE_DIR + os.sep) for f in frames)
    )
