"""Fixtures shared by the test modules.

- ``digits_checkpoints``: ``runs/digits/original.ckpt`` and ``retrain.ckpt`` fitted once per
  session by the shipped digits configs (2 epochs: mechanics, not quality).
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

REPO = Path(__file__).resolve().parents[1]
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
DIGITS_RUNS = Path("runs") / "digits"


@pytest.fixture(scope="session")
def digits_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding ``runs/digits/{original,retrain}.ckpt`` from 2-epoch runs of
    ``configs/digits/{original,retrain}.yaml`` (evaluated once, at the end). Read-only: copy it
    (``digits_workdir``) before running anything there."""
    root = tmp_path_factory.mktemp("digits_checkpoints")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        for name in ("original", "retrain"):
            main(
                [
                    "fit",
                    "--config",
                    str(REPO / "configs" / "digits" / f"{name}.yaml"),
                    "--trainer.max_epochs",
                    "2",
                    "--trainer.logger",
                    "false",
                    "--evaluator.every_n_epochs",
                    "100",
                    *QUIET,
                ]
            )
    finally:
        os.chdir(cwd)
    for name in ("original", "retrain"):
        assert (root / DIGITS_RUNS / f"{name}.ckpt").is_file()
    return root


@pytest.fixture
def digits_workdir(digits_checkpoints: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tmp_path`` as the working directory, with the session's digits checkpoints at
    ``runs/digits/{original,retrain}.ckpt``, where the digits method configs read them."""
    (tmp_path / DIGITS_RUNS).mkdir(parents=True)
    for name in ("original", "retrain"):
        shutil.copy2(digits_checkpoints / DIGITS_RUNS / f"{name}.ckpt", tmp_path / DIGITS_RUNS / f"{name}.ckpt")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``tmp_path``, made the working directory for the test."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
