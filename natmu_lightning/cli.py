"""The ``natmu-lightning`` command: Lightning's CLI with the unlearning evaluator attached.

Usage::

    natmu-lightning fit --config configs/digits/natmu.yaml
    natmu-lightning validate --config configs/digits/natmu.yaml --ckpt_path PATH
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import pytorch_lightning as pl
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from natmu_lightning.callbacks import UnlearningEvaluator
from natmu_lightning.data import ForgetRemainDataModule


class NatMUCLI(LightningCLI):
    """LightningCLI whose config also has an ``evaluator:`` section (always attached)."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(UnlearningEvaluator, "evaluator")


def main(args: Sequence[str] | None = None, run: bool = True) -> NatMUCLI:
    """Run the CLI on ``args`` (default: ``sys.argv``); callable from tests.

    Args:
        args: command-line arguments, e.g. ``["fit", "--config", "configs/digits/natmu.yaml"]``.
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
    """Console script: like :func:`main`, but bad input ends with a one-line error and exit code 2."""
    try:
        main()
    except (ValueError, FileNotFoundError, FloatingPointError) as error:
        print(f"natmu-lightning: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
