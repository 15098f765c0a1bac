"""Fixtures shared by the test modules.

- ``digits_checkpoints``: the original and Retrain checkpoints (``DIGITS_CHECKPOINTS``) fitted
  once per session by the shipped digits configs (2 epochs: mechanics, not quality).
- ``digits_workdir``: a fresh folder holding a copy of them where the digits configs look
  for them, made the working directory (the configs' paths are relative).
- ``in_tmp_path``: ``tmp_path`` made the working directory (runs write under ``runs/``).

Helpers that tests import live in plain modules beside this file (``tiny_runs``,
``plan_checks``, ``fake_data``, ...), never in test modules.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from natmu_lightning.cli import main
from tests.tiny_runs import DIGITS_ORIGINAL, DIGITS_RETRAIN, digits_args

REPO = Path(__file__).resolve().parents[1]
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
DIGITS_CHECKPOINTS = (DIGITS_ORIGINAL, DIGITS_RETRAIN)


@pytest.fixture(scope="session")
def digits_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding ``DIGITS_CHECKPOINTS`` from 2-epoch runs of the digits original and
    Retrain compositions (evaluated once, at the end). Read-only: copy it (``digits_workdir``)
    before running anything there."""
    root = tmp_path_factory.mktemp("digits_checkpoints")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        for name in ("original", "retrain"):
            main(
                [
                    "fit",
                    *digits_args(name),
                    "--trainer.max_epochs",
                    "2",
                    "--evaluator.every_n_epochs",
                    "100",
                    *QUIET,
                ]
            )
    finally:
        os.chdir(cwd)
    for path in DIGITS_CHECKPOINTS:
        assert (root / path).is_file()
    return root


@pytest.fixture
def digits_workdir(digits_checkpoints: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tmp_path`` as the working directory, with the session's digits checkpoints where the
    digits method configs read them (``DIGITS_CHECKPOINTS``)."""
    for path in DIGITS_CHECKPOINTS:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(digits_checkpoints / path, tmp_path / path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tmp_path``, made the working directory for the test."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
