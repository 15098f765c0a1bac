"""The two-minute demo: original, Retrain and NatMU on scikit-learn digits, side by side.

Its settings are read from ``configs/digits`` (:meth:`QuickstartConfig.from_configs`). The
digits carry a fixed per-image pixel noise (``Digits(noise_std=0.25)``), so that the
original memorises its training images and a forget set has something to unlearn.

``natmu-lightning-quickstart`` (or ``python -m natmu_lightning.quickstart``):

1. trains the original model on every training sample,
2. trains the Retrain reference on the remaining samples only (same initial weights),
3. unlearns a 10% class-balanced random forget set from the original with NatMU,
4. evaluates all three and prints forget / remaining / test accuracy, the entropy MIA
   and each model's average gap to Retrain; writes ``summary.json`` in ``--out``, and
   the NatMU run's ``unlearning_record.json`` (with ``natmu.ckpt``'s hash) in ``--out/natmu``.

Original and Retrain checkpoints are cached by their configuration (in the ``quickstart``
folder of ``$NATMU_CACHE`` or ``~/.cache/natmu-lightning``), so a second run skips them.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.utilities.warnings import PossibleUserWarning

from natmu_lightning import __version__
from natmu_lightning.backbones import SmallCNN
from natmu_lightning.callbacks import UnlearningEvaluator
from natmu_lightning.callbacks.record import find_record
from natmu_lightning.configs import composition, merged, nested
from natmu_lightning.data import Digits, ForgetRemainDataModule, RandomForget
from natmu_lightning.data.sources import default_cache_dir
from natmu_lightning.io import atomic_write_json
from natmu_lightning.methods import ClassifierModule, NatMUModule
from natmu_lightning.methods.classifier import CLASSIFIER_RECIPE
from natmu_lightning.methods.recipe import Recipe
from natmu_lightning.metrics.functional import avg_gap
from natmu_lightning.natmu.hybrids import HybridOptions
from natmu_lightning.natmu.module import NATMU_RECIPE


@dataclass(frozen=True)
class QuickstartConfig:
    """Every setting of the demo. :meth:`from_configs` reads them from the digits configs
    (``configs/digits``: ``base.yaml`` with ``original.yaml`` and with ``natmu.yaml``), the
    files ``natmu-lightning fit`` runs, so the two cannot drift apart."""

    noise_std: float
    forget_ratio: float
    batch_size: int
    crop_padding: int
    horizontal_flip: bool
    classifier_epochs: int
    classifier_recipe: Recipe
    unlearn_epochs: int
    unlearn_recipe: Recipe
    hybrids: HybridOptions
    seed: int = 0

    @classmethod
    def from_configs(cls, seed: int = 0) -> QuickstartConfig:
        """The digits configs' settings, with ``seed`` as the run seed and the forget set's seed.

        Raises:
            ValueError: the digits Retrain config trains otherwise than the original (the demo
                trains both with one recipe and length, as the paper does).
        """
        original = merged(composition("digits", "original"))
        retrain = merged(composition("digits", "retrain"))
        natmu = merged(composition("digits", "natmu"))
        for keys in (("trainer", "max_epochs"), ("model", "init_args", "recipe"), ("data",)):
            if nested(retrain, *keys) != nested(original, *keys):
                raise ValueError(f"configs/digits: retrain.yaml's {'.'.join(keys)} differs from original.yaml's")
        data = original["data"]
        return cls(
            noise_std=data["source"]["init_args"]["noise_std"],
            forget_ratio=data["forget"]["init_args"]["ratio"],
            batch_size=data["batch_size"],
            crop_padding=data["crop_padding"],
            horizontal_flip=data["horizontal_flip"],
            classifier_epochs=original["trainer"]["max_epochs"],
            classifier_recipe=Recipe.read(original["model"]["init_args"]["recipe"], CLASSIFIER_RECIPE),
            unlearn_epochs=natmu["trainer"]["max_epochs"],
            unlearn_recipe=Recipe.read(natmu["model"]["init_args"]["recipe"], NATMU_RECIPE),
            hybrids=HybridOptions.read(natmu["data"]["natmu"]),
            seed=seed,
        )


def _datamodule(cfg: QuickstartConfig, **kwargs: Any) -> ForgetRemainDataModule:
    return ForgetRemainDataModule(
        source=Digits(noise_std=cfg.noise_std),
        forget=RandomForget(cfg.forget_ratio),
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        crop_padding=cfg.crop_padding,
        horizontal_flip=cfg.horizontal_flip,
        **kwargs,
    )


def _trainer(folder: Path, epochs: int, evaluator: UnlearningEvaluator, progress: bool) -> pl.Trainer:
    """A CPU trainer; its evaluator decides when to evaluate (once for the original and Retrain,
    every epoch for NatMU)."""
    return pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=CSVLogger(str(folder), name="", version=""),
        callbacks=[evaluator],
        enable_checkpointing=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        check_val_every_n_epoch=max(epochs, 1),
    )


def _cache_key(cfg: QuickstartConfig, role: str) -> str:
    fields = {"role": role, "version": __version__, **asdict(cfg)}
    for unrelated in ("unlearn_epochs", "unlearn_recipe", "hybrids"):
        fields.pop(unrelated)
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def _classifier(cfg: QuickstartConfig, role: str, out: Path, cache: Path, progress: bool) -> tuple[Path, dict, bool]:
    """Train (or reuse from the cache) the original or the Retrain model; return its metrics."""
    ckpt = cache / f"{role}-{_cache_key(cfg, role)}.ckpt"
    stream: Literal["full", "remain"] = "full" if role == "original" else "remain"
    pl.seed_everything(cfg.seed, verbose=False)  # same initial weights for original and Retrain
    cached = ckpt.is_file()
    model = ClassifierModule(
        SmallCNN(num_classes=10),
        stream=stream,
        original_ckpt=str(ckpt) if cached else None,
        recipe=cfg.classifier_recipe,
    )
    evaluator = UnlearningEvaluator(every_n_epochs=cfg.classifier_epochs)
    trainer = _trainer(out / role, cfg.classifier_epochs, evaluator, progress)
    if cached:
        trainer.validate(model, datamodule=_datamodule(cfg), verbose=False)
    else:
        trainer.fit(model, datamodule=_datamodule(cfg))
        _save_checkpoint(trainer, ckpt)
    return ckpt, _final_metrics(evaluator), cached


def _final_metrics(evaluator: UnlearningEvaluator) -> dict[str, Any]:
    """A copy of the evaluator's last record: the run's final evaluation."""
    if evaluator.last_metrics is None:
        raise RuntimeError("the evaluator has not evaluated this run")
    return dict(evaluator.last_metrics)


def _save_checkpoint(trainer: pl.Trainer, path: Path) -> None:
    """Write a full (resumable) checkpoint under a temporary name, then rename it.

    Lightning writes the file itself, so ``io.atomic_write_bytes`` does not fit; a failed
    save leaves neither a partial ``path`` nor the temporary file behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        trainer.save_checkpoint(tmp, weights_only=False)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def quiet_stack() -> Iterator[None]:
    """Keep the demo's console to its own lines, the progress bars and the final table.

    Lightning reports through the ``pytorch_lightning`` loggers at INFO (hardware found,
    a tip about a logging service, "Loading `train_dataloader`", why ``fit`` stopped, and
    this package's per-epoch metric lines, all in the files the runs write), and the stack
    warns about its own use of deprecated APIs and about settings that are deliberate here
    (no DataLoader workers, fewer batches than the logging interval). None of it is about
    the user's run, so inside the demo those loggers show warnings and errors only and
    deprecation, future and Lightning's "possible user" warnings are ignored; everything
    else, errors included, still shows.
    """
    loggers = [logging.getLogger(name) for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        for category in (DeprecationWarning, FutureWarning, PossibleUserWarning):
            warnings.filterwarnings("ignore", category=category)
        for logger in loggers:
            logger.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


def run(cfg: QuickstartConfig, out: Path, cache: Path | None = None, progress: bool = True) -> dict:
    """Run the whole demo and return the summary written to ``out/summary.json``."""
    with quiet_stack():
        return _run(cfg, out, cache, progress)


def _run(cfg: QuickstartConfig, out: Path, cache: Path | None, progress: bool) -> dict:
    cache = Path(cache) if cache is not None else default_cache_dir() / "quickstart"
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    results: dict[str, dict] = {}
    paths: dict[str, str] = {}
    for step, role in enumerate(("original", "retrain"), start=1):
        print(
            f"[{step}/3] {role}: {'training' if role == 'original' else 'retraining on the remaining data'} "
            "(cached checkpoints are reused)",
            flush=True,
        )
        start = time.perf_counter()
        ckpt, metrics, cached = _classifier(cfg, role, out, cache, progress)
        seconds[role] = time.perf_counter() - start
        results[role], paths[f"{role}_ckpt"] = metrics, str(ckpt)
        if cached:
            print(f"      reused {ckpt}", flush=True)

    print("[3/3] natmu: unlearning the forget set from the original model", flush=True)
    start = time.perf_counter()
    pl.seed_everything(cfg.seed, verbose=False)
    natmu = NatMUModule(
        SmallCNN(num_classes=10),
        original_ckpt=paths["original_ckpt"],
        recipe=cfg.unlearn_recipe,
    )
    evaluator = UnlearningEvaluator(reference_ckpt=paths["retrain_ckpt"])
    trainer = _trainer(out / "natmu", cfg.unlearn_epochs, evaluator, progress)
    datamodule = _datamodule(cfg, natmu=cfg.hybrids)
    trainer.fit(natmu, datamodule=datamodule)
    natmu_ckpt = out / "natmu.ckpt"
    _save_checkpoint(trainer, natmu_ckpt)
    record = find_record(trainer)
    if record is None or record.path is None:
        raise RuntimeError("NatMUModule attaches an UnlearningRecord, but this run has none")
    record.add_checkpoint(natmu_ckpt)
    paths["natmu_ckpt"], paths["record"] = str(natmu_ckpt), str(record.path)
    seconds["natmu"] = time.perf_counter() - start
    results["natmu"] = _final_metrics(evaluator)

    reference = evaluator.reference_metrics
    if reference is None:
        raise RuntimeError("the evaluator holds no Retrain metrics")
    for metrics in results.values():
        metrics["avg_gap"] = avg_gap(metrics, reference)
    models = {role: _public(metrics) for role, metrics in results.items()}
    summary = {
        "config": asdict(cfg),
        "models": models,
        "seconds": seconds,
        "forget_indices": str(out / "natmu" / "forget_indices.npy"),
        **paths,
    }
    atomic_write_json(out / "summary.json", summary)
    print(format_table(models))
    print(f"\nSummary written to {out / 'summary.json'}")
    print(f"What was forgotten, from and into which files: {record.path} (natmu-lightning-record {record.path.parent})")
    return summary


def _public(metrics: dict) -> dict:
    keys = ("forget_acc", "remain_acc", "test_acc", "mia_entropy", "avg_gap")
    return {key: round(float(metrics[key]), 4) for key in keys if key in metrics}


def format_table(models: dict[str, dict]) -> str:
    """A fixed-width table of the models' metrics (percent)."""
    header = (
        f"{'model':<10}{'forget acc':>12}{'remain acc':>12}{'test acc':>10}"
        f"{'MIA (entropy)':>15}{'avg gap to Retrain':>20}"
    )
    lines = ["", header, "-" * len(header)]
    for role, m in models.items():
        lines.append(
            f"{role:<10}{m['forget_acc']:>12.2f}{m['remain_acc']:>12.2f}{m['test_acc']:>10.2f}"
            f"{m['mia_entropy']:>15.2f}{m['avg_gap']:>20.2f}"
        )
    return "\n".join(lines)


def _default_out() -> Path:
    return Path("runs") / "quickstart" / time.strftime("%Y%m%d-%H%M%S")


def main(args: Sequence[str] | None = None) -> dict:
    """Parse ``args`` (default: ``sys.argv``), run the demo, return its summary."""
    parser = argparse.ArgumentParser(prog="natmu-lightning-quickstart", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: runs/quickstart/<timestamp>); must not hold a result yet (see --overwrite)",
    )
    parser.add_argument("--cache-dir", type=Path, default=None, help="where original/Retrain checkpoints are cached")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="allow an --out folder that already holds a summary")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")
    ns = parser.parse_args(args)
    out = ns.out if ns.out is not None else _default_out()
    if (out / "summary.json").exists() and not ns.overwrite:
        parser.error(f"{out} already holds a quickstart result; pick another --out or pass --overwrite")
    return run(QuickstartConfig.from_configs(seed=ns.seed), out, ns.cache_dir, progress=not ns.no_progress)


def entry_point() -> None:
    """Console script (returns nothing, so the exit code is 0 on success)."""
    main()


if __name__ == "__main__":
    entry_point()
