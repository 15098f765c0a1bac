"""``UnlearningRecord``: what an unlearning run forgot, from which file, into which files, and how.

Every fit of an unlearning method (a module with ``requires_original_ckpt``) writes
``unlearning_record.json`` beside the evaluator's ``unlearning_metrics.json`` in the run's
log dir; the methods attach this callback themselves (``configure_callbacks``) unless the
trainer already holds one. ``natmu-lightning-record PATH`` prints a short summary of it
(:mod:`natmu_lightning.records` holds the file format's helpers).

The record holds:

- ``forgotten``: the request, the number of training samples forgotten, their count per
  class, ``indices_file`` (the run's ``forget_indices.npy``) and ``indices_sha256``, the
  SHA-256 of the sorted training indices as little-endian int64 bytes
  (``hashlib.sha256(np.sort(indices).astype("<i8").tobytes())``), so two records can be
  compared without the index files;
- ``previous_record`` and ``already_forgotten`` (``null`` for a first request): for a
  further deletion request (``ForgetRemainDataModule(previous_record=...)``), path, size and
  SHA-256 of the previous request's record, and count, digest and index file
  (``already_forgotten_indices.npy``) of every sample the earlier requests forgot;
- ``original_checkpoint``: path, size and SHA-256 of the bytes of the checkpoint the
  method started from, hashed when the fit starts;
- ``checkpoints_written``: path, size and SHA-256 of each checkpoint file of the run's
  ``ModelCheckpoint`` callbacks that exists at the end of the fit (the files they track,
  and the files in their folders written since the fit started), plus any file passed to
  :meth:`UnlearningRecord.add_checkpoint` (a checkpoint saved by hand after ``fit``);
- ``method``, ``method_class_path`` and ``config``: the module's class name and class path,
  and the resolved configuration (the
  CLI's whole config when run through ``natmu-lightning``, else the module's
  hyperparameters, the datamodule's settings and the trainer's, its callbacks' class paths
  included);
- ``metrics_before`` and ``metrics_after``: the evaluator's evaluation of the original
  weights (read again from ``original_checkpoint``; without the slower attacks) and its final
  evaluation of the unlearned model,
  with the gaps to Retrain when the evaluator has a ``reference_ckpt``; ``null`` without an
  ``UnlearningEvaluator``;
- ``world_size``, ``seed`` (the datamodule's) and ``global_seed`` (``seed_everything``'s),
  package ``versions``, ``started_at`` / ``finished_at`` (UTC, ISO 8601) and, for a resumed
  fit, ``resumed_at``.

A resumed fit (``ckpt_path``) keeps the first start's time, original hash and
``metrics_before``: they travel in the checkpoint as this callback's state.
"""

from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.cli import SaveConfigCallback
from torch import Tensor

from natmu_lightning.callbacks.evaluator import UnlearningEvaluator
from natmu_lightning.io import atomic_write_json, check_file_name, json_ready, run_dir
from natmu_lightning.records import (
    ALREADY_FORGOTTEN_FILENAME,
    FORGET_INDICES_FILENAME,
    RECORD_FILENAME,
    file_entry,
    indices_entry,
)

VERSIONED_PACKAGES = (
    "natmu-lightning",
    "torch",
    "torchvision",
    "pytorch-lightning",
    "torchmetrics",
    "lightning-utilities",
    "numpy",
    "scikit-learn",
    "jsonargparse",
)


class UnlearningRecord(Callback):
    """Writes ``unlearning_record.json``: the forget set, the files read and written, the
    method and its config, the metrics before and after, and the environment.

    Args:
        filename: name of the record in the run's log dir.
        metrics_before: evaluate the original weights when the fit starts (one evaluation of
            every split, without the slower attacks); ``False`` records ``null``.
    """

    def __init__(self, filename: str = RECORD_FILENAME, metrics_before: bool = True) -> None:
        check_file_name("UnlearningRecord filename", filename)
        self.filename, self.metrics_before = filename, metrics_before
        self.record: dict[str, Any] = {}
        self.path: Path | None = None
        self._resumed = False

    @property
    def state_key(self) -> str:
        return self._generate_state_key(filename=self.filename)

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        evaluator = find_evaluator(trainer)
        if evaluator is not None and evaluator.filename == self.filename:
            raise ValueError(f"UnlearningEvaluator and UnlearningRecord would both write {self.filename!r}: rename one")
        # Called before the strategy restores a resumed fit's state (see load_state_dict).
        self.record, self._resumed = {}, False

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        folder = run_dir(trainer)  # a collective under DDP: every rank asks
        self.path = folder / self.filename
        if not self._resumed:
            original = pl_module.hparams.get("original_ckpt") if hasattr(pl_module, "hparams") else None
            self.record.update(
                {
                    "started_at": _now(),
                    "original_checkpoint": file_entry(original) if original and trainer.is_global_zero else None,
                    "metrics_before": None,
                }
            )
            evaluator = find_evaluator(trainer)
            if self.metrics_before and evaluator is not None and original:
                # Read again from the file: by now a resumed fit holds later weights and NatMU's
                # full-class recipe a re-initialised classifier. A collective: every rank measures.
                self.record["metrics_before"] = evaluator.measure_checkpoint(
                    trainer,
                    pl_module,
                    original,
                    "original_ckpt",
                    attacks=(),
                    prefix=pl_module.hparams.get("checkpoint_prefix"),
                )
        self.record.update(describe_run(trainer, pl_module))
        evaluator = find_evaluator(trainer)
        if evaluator is not None:  # what the evaluator judges a collapse against (also on resume)
            evaluator.original_metrics = self.record.get("metrics_before")

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        evaluator = find_evaluator(trainer)
        after = evaluator.final_metrics(trainer, pl_module) if evaluator is not None else None
        if not trainer.is_global_zero:
            self.path = None  # rank 0 alone writes the record (and add_checkpoint)
        if self.path is None:
            return
        since = datetime.fromisoformat(self.record["started_at"]).timestamp()
        written = [file_entry(path) for path in checkpoint_paths(trainer, since)]
        self.record.update(
            {
                "metrics_after": after,
                "checkpoints_written": written,
                "finished_at": _now(),
                "global_step": trainer.global_step,
            }
        )
        atomic_write_json(self.path, json_ready(self.record))

    def add_checkpoint(self, path: str | Path) -> None:
        """Add a checkpoint written after ``fit`` (``trainer.save_checkpoint``) to the record
        and rewrite it. Under DDP only global rank 0 writes (a no-op on the other ranks); with
        ``ddp_spawn`` the record lives in the worker processes, so this cannot reach it."""
        if not self.record.get("finished_at"):
            if self.record:  # a rank other than 0 after fit
                return
            raise RuntimeError("no record yet: add checkpoints after trainer.fit has finished")
        entry = file_entry(path)
        written = [item for item in self.record.get("checkpoints_written", []) if item["path"] != entry["path"]]
        self.record["checkpoints_written"] = [*written, entry]
        assert self.path is not None  # rank 0 keeps its record's path
        atomic_write_json(self.path, json_ready(self.record))

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        keep = ("started_at", "original_checkpoint", "metrics_before", "resumed_at")
        return {"record": json.dumps(json_ready({k: self.record[k] for k in keep if k in self.record}))}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = json.loads(state_dict.get("record", "{}"))
        if not saved:
            return
        # Strategies that restore after on_fit_start (DeepSpeed, FSDP) already filled the rest.
        self.record.update(saved)
        self.record["resumed_at"] = [*saved.get("resumed_at", []), _now()]
        self._resumed = True


def find_record(trainer: pl.Trainer) -> UnlearningRecord | None:
    """The trainer's :class:`UnlearningRecord` (attached by the method during ``fit``), if any."""
    return next((c for c in trainer.callbacks if isinstance(c, UnlearningRecord)), None)  # type: ignore[attr-defined]  # Lightning sets it


def find_evaluator(trainer: pl.Trainer) -> UnlearningEvaluator | None:
    """The trainer's first :class:`UnlearningEvaluator`, if any."""
    return next((c for c in trainer.callbacks if isinstance(c, UnlearningEvaluator)), None)  # type: ignore[attr-defined]  # Lightning sets it


def describe_run(trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
    """The forget set, the method, its configuration and the environment of a fit."""
    datamodule = getattr(trainer, "datamodule", None)
    hparams = dict(getattr(pl_module, "hparams", {}))
    class_path = hparams.pop("_class_path", f"{type(pl_module).__module__}.{type(pl_module).__qualname__}")
    return {
        "method": type(pl_module).__name__,
        "method_class_path": class_path,
        "config": cli_config(trainer)
        or {
            "model": {
                "class_path": class_path,
                "init_args": hparams,
                "backbone": _class_path(getattr(pl_module, "backbone", None)),
            },
            "data": datamodule_settings(datamodule),
            "trainer": {
                "max_epochs": trainer.max_epochs,
                "max_steps": trainer.max_steps,
                "precision": str(trainer.precision),
                "accumulate_grad_batches": trainer.accumulate_grad_batches,
                "callbacks": [_class_path(c) for c in trainer.callbacks],  # type: ignore[attr-defined]  # Lightning sets it
            },
        },
        **forgotten(datamodule),
        "world_size": trainer.world_size,
        "seed": getattr(datamodule, "seed", None),
        "global_seed": _int_or_none(os.environ.get("PL_GLOBAL_SEED")),
        "versions": package_versions(),
    }


def forgotten(datamodule: Any) -> dict[str, Any]:
    """The datamodule's forget set (``forgotten``: request, count, per-class counts, digest and
    index file) and, for a further deletion request, the link to the previous one
    (``previous_record``) and what the earlier requests forgot (``already_forgotten``)."""
    indices = getattr(datamodule, "forget_indices", None)
    if not isinstance(indices, Tensor):
        return {"forgotten": None, "previous_record": None, "already_forgotten": None}
    saved = getattr(datamodule, "saved_files", {})
    request = getattr(datamodule, "forget", None)
    describe = getattr(request, "describe", None)
    entry: dict[str, Any] = {
        "request": describe() if callable(describe) else repr(request),
        **indices_entry(indices, saved.get(FORGET_INDICES_FILENAME)),
        "per_class": None,
    }
    targets = getattr(datamodule, "train_targets", None)
    if isinstance(targets, Tensor):
        counts = np.bincount(targets[indices].numpy(), minlength=int(targets.max()) + 1)
        names = getattr(getattr(datamodule, "data", None), "classes", None) or range(len(counts))
        entry["per_class"] = {str(name): int(n) for name, n in zip(names, counts) if n}
    previous = getattr(datamodule, "previous_request", None)
    if previous is None:
        return {"forgotten": entry, "previous_record": None, "already_forgotten": None}
    return {
        "forgotten": entry,
        "previous_record": previous.record,
        "already_forgotten": indices_entry(previous.already_forgotten, saved.get(ALREADY_FORGOTTEN_FILENAME)),
    }


def checkpoint_paths(trainer: pl.Trainer, since: float | None = None) -> list[str]:
    """Checkpoint files of the trainer's ``ModelCheckpoint`` callbacks that exist now: the
    top-k and last files they track and, since a callback without a monitor tracks only its
    latest file, every checkpoint file in their folders written at or after ``since``
    (a POSIX time), once each."""
    paths: list[str] = []
    for callback in trainer.checkpoint_callbacks:
        if not isinstance(callback, ModelCheckpoint):
            continue
        tracked = [*callback.best_k_models, callback.last_model_path, callback.best_model_path]
        folder = Path(callback.dirpath) if callback.dirpath else None
        if since is not None and folder is not None and folder.is_dir():
            tracked += sorted(
                str(p) for p in folder.glob(f"*{callback.FILE_EXTENSION}") if p.is_file() and p.stat().st_mtime >= since
            )
        for path in tracked:
            if path and Path(path).is_file() and str(Path(path).resolve()) not in paths:
                paths.append(str(Path(path).resolve()))
    return paths


def cli_config(trainer: pl.Trainer) -> dict[str, Any] | None:
    """The whole resolved config of a ``natmu-lightning`` (LightningCLI) run, else ``None``."""
    import yaml  # jsonargparse's dependency

    for callback in trainer.callbacks:  # type: ignore[attr-defined]  # Lightning sets it
        if isinstance(callback, SaveConfigCallback):
            return yaml.safe_load(callback.parser.dump(callback.config, skip_none=False, skip_check=True))
    return None


def datamodule_settings(datamodule: Any) -> dict[str, Any] | None:
    """The settings of a :class:`~natmu_lightning.data.ForgetRemainDataModule` built in Python."""
    if datamodule is None:
        return None
    names = (
        "batch_size",
        "eval_batch_size",
        "num_workers",
        "seed",
        "crop_padding",
        "horizontal_flip",
        "stream",
        "previous_record",
    )
    settings = {name: getattr(datamodule, name) for name in names if hasattr(datamodule, name)}
    settings["class_path"] = _class_path(datamodule)
    settings["source"] = repr(getattr(datamodule, "source", None))
    settings["forget"] = repr(getattr(datamodule, "forget", None))
    return settings


def package_versions() -> dict[str, str | None]:
    """Installed versions of the stack (``None`` when a package is absent), and Python's."""
    versions: dict[str, str | None] = {}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["python"] = platform.python_version()
    return versions


def _class_path(obj: Any) -> str | None:
    return None if obj is None else f"{type(obj).__module__}.{type(obj).__qualname__}"


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
