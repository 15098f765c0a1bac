"""Tiny synthetic runs for the evaluator tests: a 4-class 8x8 image source, its datamodule,
a small model and a quiet CPU trainer with a CSV logger, and readers of what a run wrote;
where the shipped digits runs read and write (``digits_args``, ``digits_run_folder``)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger

from natmu_lightning import ClassifierModule, ForgetRemainDataModule, SmallCNN
from natmu_lightning.configs import checkpoint_files, composition, config_args, merged, run_folder
from natmu_lightning.data import DataSource, RandomForget, SyntheticImages
from natmu_lightning.data.transforms import to_unit_float

NUM_CLASSES = 4


def digits_checkpoint(name: str) -> Path:
    """The checkpoint file the digits run ``name`` writes (a path relative to its working folder)."""
    return checkpoint_files(merged(composition("digits", name)))[0]


DIGITS_ORIGINAL, DIGITS_RETRAIN = digits_checkpoint("original"), digits_checkpoint("retrain")


def digits_args(name: str) -> list[str]:
    """The ``--config`` arguments of the shipped digits run ``name`` (base.yaml, then the fragment)."""
    return config_args(composition("digits", name))


def digits_run_folder(name: str) -> Path:
    """Where the digits run ``name`` logs (``version_N/``) and checkpoints (``checkpoints/``)."""
    return run_folder(merged(composition("digits", name)))


def newest_version(run_folder: Path) -> Path:
    """The newest ``version_N`` log folder of a run folder."""
    return max(run_folder.glob("version_*"), key=lambda p: int(p.name.split("_")[1]))


def synthetic(**kw) -> SyntheticImages:
    args = dict(num_classes=NUM_CLASSES, train_per_class=15, test_per_class=9, channels=1, height=8, width=8, seed=3)
    args.update(kw)
    return SyntheticImages(**args)


def make_dm(forget=None, source=None, **kw) -> ForgetRemainDataModule:
    args = dict(stream="remain", batch_size=16, eval_batch_size=64, crop_padding=1, horizontal_flip=False)
    args.update(kw)
    return ForgetRemainDataModule(
        source=source if source is not None else synthetic(),
        forget=forget if forget is not None else RandomForget(0.2),
        **args,
    )


def make_model(
    width: int = 4, num_classes: int = NUM_CLASSES, original_ckpt: str | None = None, **recipe
) -> ClassifierModule:
    """A small classifier on the remaining set: AdamW at a constant lr 1e-3 unless ``recipe``
    fields say otherwise."""
    torch.manual_seed(0)
    fields = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.0, "lr_schedule": "constant", "warmup_epochs": 0.0}
    fields.update(recipe)
    return ClassifierModule(
        SmallCNN(num_classes=num_classes, width=width), stream="remain", original_ckpt=original_ckpt, recipe=fields
    )


def quiet_trainer(root: Path, **overrides: Any) -> pl.Trainer:
    """A one-device CPU trainer that writes nothing (no logger, no checkpoint), prints no progress
    bar or model summary and runs no Lightning validation loop; ``overrides`` change any of it."""
    args: dict[str, Any] = dict(
        accelerator="cpu",
        devices=1,
        default_root_dir=str(root),
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        limit_val_batches=0,
    )
    return pl.Trainer(**{**args, **overrides})


def make_trainer(root: Path, callbacks, **kw) -> pl.Trainer:
    """A :func:`quiet_trainer` for one epoch that logs to CSV (``root/logs``) and runs Lightning's
    validation loop without sanity steps."""
    args: dict[str, Any] = dict(
        max_epochs=1, logger=CSVLogger(str(root), name="logs"), num_sanity_val_steps=0, limit_val_batches=None
    )
    return quiet_trainer(root, callbacks=callbacks, **{**args, **kw})


def pretrained_small_cnn(
    source: DataSource, num_classes: int, path: Path, seed: int = 0, steps: int = 60, batch_size: int = 64
) -> str:
    """A width-4 SmallCNN trained briefly by a plain torch loop (Adam, lr 1e-2, random batches of the
    training split drawn from ``seed``), saved as a state dict at ``path``: varied, confident outputs."""
    torch.manual_seed(seed)
    net = SmallCNN(num_classes=num_classes, width=4)
    data = source.load().train
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, data.targets.numel(), (batch_size,), generator=generator)
        loss = torch.nn.functional.cross_entropy(net(to_unit_float(data.images[idx])), data.targets[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.save(net.state_dict(), path)
    return str(path)


def read_json(trainer: pl.Trainer, name: str = "unlearning_metrics.json") -> dict:
    path = Path(trainer.log_dir) / name
    assert path.is_file(), f"{path} was not written"
    return json.loads(path.read_text())


def read_csv(trainer: pl.Trainer) -> list[dict]:
    with open(Path(trainer.log_dir) / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def setup_fit(dm: Any) -> None:
    """What Lightning's fit does to a datamodule before training, without training: its
    ``setup("fit")``, then the hand-over of the needs of the module its trainer holds (what
    ``BackboneModule.setup`` does), so the stream and the hybrid plan are ready."""
    module = dm.trainer.lightning_module
    dm.setup("fit")
    dm.prepare_for("fit", module.training_needs(), module)


class FailingBackbone(torch.nn.Module):
    """A backbone with a bug: its forward raises ``ValueError`` (as torch does for shape mismatches)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(1, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise ValueError("a bug in a user's backbone")
