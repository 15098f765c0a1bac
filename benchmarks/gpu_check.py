"""One command that checks natmu-lightning on a CUDA machine and prints one JSON line of figures.

    python benchmarks/gpu_check.py --out DIR [--cifar10-npz PATH] [--phases digits,bf16,ddp,vgg16]

Phases (each one's figures go under its own key; a failed phase records its error and
the others still run):

* ``digits``: the README's CLI path on one GPU (``configs/digits/*.yaml`` composed with
  ``configs/trainer/gpu.yaml``): Original, Retrain, NatMU; then the same NatMU fit on the
  CPU from the same checkpoints. Reports both metric records, whether the forget set and
  hybrid plan are identical, the largest metric difference, and whether a re-run of the
  finished GPU fit (``fit --ckpt_path last``: evaluated in ``on_fit_end`` after teardown
  moved the module to the CPU) equals a CPU ``validate`` of its checkpoint.
* ``methods``: NatMU and every baseline's ``configs/digits/<method>.yaml`` for one epoch in
  ``16-mixed`` on the GPU (``bf16-mixed`` in the CPU dry run), from the digits checkpoints.
* ``bf16``: ``configs/cifar10_small`` on one GPU (the offline CIFAR-10 JPEG copy): Original,
  Retrain, then NatMU in ``32-true`` and in ``bf16-mixed``.
* ``ddp``: with two or more visible GPUs, the digits NatMU fit on all of them
  (``ddp_spawn``, global batch kept at 64) against the one-GPU fit; skipped otherwise.
* ``vgg16``: CIFAR-10 VGG-16 (BN) at batch 128, the NatMU random-10% data pipeline, through
  Lightning's own loop: seconds per NatMU step and per plain fine-tuning step (FT's remaining
  stream) in ``32-true`` and ``bf16-mixed`` and with ``torch.compile``; the training stream's
  images/s (loader alone, and loader + transfer + mixing and augmentation on the GPU) against
  the model's; one evaluation (during training, and final) against one NatMU epoch. The model
  is randomly initialised: these are timings, not accuracies.

Where CUDA is absent it says so and exits 0. ``--cpu-dry-run`` runs every phase on the CPU
at toy sizes (one epoch, a few steps) so the script itself is tested without a GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # an uninstalled checkout runs too

from benchmarks.host import device_name  # noqa: E402
from natmu_lightning import VGG16BN, ForgetRemainDataModule, FTModule, NatMUModule, UnlearningEvaluator  # noqa: E402
from natmu_lightning.configs import (  # noqa: E402
    checkpoint_files,
    composition,
    config_args,
    merged,
    newest_version,
    run_folder,
)
from natmu_lightning.data import CIFAR10JPEG, RandomForget  # noqa: E402
from natmu_lightning.natmu.hybrids import HybridOptions  # noqa: E402

CONFIGS = REPO / "configs"
GPU = ["--config", str(CONFIGS / "trainer" / "gpu.yaml")]
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
METRICS = ("forget_acc", "remain_acc", "test_acc", "mia_entropy", "avg_gap", "kl_to_reference")
METHODS = ("natmu", "ft", "ga", "l1_sparse", "neggrad", "rl", "salun", "scrub", "ssd", "bad_teacher")


@contextlib.contextmanager
def working_dir(path: Path) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield path
    finally:
        os.chdir(previous)


def cli(args: list[str]) -> float:
    """Run ``natmu-lightning`` in this process; returns its wall time in seconds."""
    from natmu_lightning.cli import main

    start = time.perf_counter()
    main([*args, *QUIET])
    return time.perf_counter() - start


def run_args(setting: str, name: str) -> list[str]:
    """The ``--config`` arguments of a shipped run (``configs/README.md``)."""
    return config_args(composition(setting, name))


def folder_of(setting: str, name: str) -> Path:
    """The run's folder (``version_N/`` logs, ``checkpoints/``), relative to its working folder."""
    return run_folder(merged(composition(setting, name)))


def checkpoint_of(setting: str, name: str) -> Path:
    """The checkpoint the original or Retrain run writes, relative to its working folder."""
    return checkpoint_files(merged(composition(setting, name)))[0]


def log_dir(run_root: Path) -> Path:
    """The newest ``version_N`` log folder of a run folder."""
    folder = newest_version(run_root)
    if folder is None:
        raise FileNotFoundError(f"no version_N log folder under {run_root}")
    return folder


def record(run_root: Path) -> dict[str, Any]:
    """The newest unlearning_metrics.json of a run folder."""
    return json.loads((log_dir(run_root) / "unlearning_metrics.json").read_text())


def pick(metrics: dict[str, Any]) -> dict[str, Any]:
    return {key: metrics.get(key) for key in METRICS}


def max_difference(a: dict[str, Any], b: dict[str, Any]) -> float:
    return max(abs(a[k] - b[k]) for k in METRICS if isinstance(a.get(k), float) and isinstance(b.get(k), float))


def digits_checkpoints(work: Path) -> list[str]:
    """Overrides pointing a digits run at the digits phase's original and Retrain checkpoints."""
    return [
        "--model.init_args.original_ckpt",
        str(work / "digits" / checkpoint_of("digits", "original")),
        "--evaluator.reference_ckpt",
        str(work / "digits" / checkpoint_of("digits", "retrain")),
    ]


# ---------------------------------------------------------------------------------------- phases
def phase_digits(work: Path, device: list[str], epochs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"seconds": {}}
    with working_dir(work / "digits"):
        for name in ("original", "retrain"):
            out["seconds"][name] = cli(["fit", *run_args("digits", name), *device, *epochs])
    natmu = [*run_args("digits", "natmu"), *digits_checkpoints(work)]
    runs = {}
    for where, placement in (("gpu", device), ("cpu", ["--trainer.accelerator", "cpu"])):
        with working_dir(work / "digits" / where):
            out["seconds"][f"natmu_{where}"] = cli(["fit", *natmu, *placement])
            runs[where] = work / "digits" / where / folder_of("digits", "natmu")
    gpu, cpu = record(runs["gpu"]), record(runs["cpu"])
    out["natmu_gpu"], out["natmu_cpu"] = pick(gpu), pick(cpu)
    out["max_metric_difference"] = max_difference(gpu, cpu)
    out["reference_identical"] = gpu.get("reference") == cpu.get("reference")
    a, b = log_dir(runs["gpu"]), log_dir(runs["cpu"])
    out["forget_set_identical"] = bool(
        np.array_equal(np.load(a / "forget_indices.npy"), np.load(b / "forget_indices.npy"))
    )
    plan_a, plan_b = np.load(a / "hybrid_plan.npz"), np.load(b / "hybrid_plan.npz")
    out["hybrid_plan_identical"] = all(np.array_equal(plan_a[k], plan_b[k]) for k in plan_a.files)

    with working_dir(work / "digits" / "gpu"):
        cli(["fit", *natmu, *device, "--ckpt_path", "last"])
        rerun = record(runs["gpu"])
        cli(
            [
                "validate",
                *natmu,
                "--trainer.accelerator",
                "cpu",
                "--trainer.logger.init_args.save_dir",
                "validated_cpu",
                "--ckpt_path",
                str(runs["gpu"] / "checkpoints" / "last.ckpt"),
            ]
        )
        validated = record(work / "digits" / "gpu" / "validated_cpu" / "natmu")
    run_fields = ("stage", "epoch", "global_step")
    out["rerun_after_teardown_equals_cpu_validate"] = {k: v for k, v in rerun.items() if k not in run_fields} == {
        k: v for k, v in validated.items() if k not in run_fields
    }
    out["rerun_vs_gpu_fit_max_difference"] = max_difference(rerun, gpu)
    return out


def phase_methods(work: Path, device: list[str], precision: str) -> dict[str, Any]:
    """NatMU and every baseline's digits config for one epoch in ``precision`` (from the digits
    phase's checkpoints): each either finishes with finite metrics or reports its error."""
    checkpoints = digits_checkpoints(work)
    out: dict[str, Any] = {"precision": precision}
    for method in METHODS:
        with working_dir(work / "methods" / method):
            try:
                seconds = cli(
                    [
                        "fit",
                        *run_args("digits", method),
                        *device,
                        *checkpoints,
                        "--trainer.max_epochs",
                        "1",
                        "--trainer.precision",
                        precision,
                    ]
                )
                metrics = record(work / "methods" / method / folder_of("digits", method))
                finite = all(isinstance(metrics.get(k), float) and math.isfinite(metrics[k]) for k in METRICS)
                out[method] = {"ok": finite, "seconds": seconds, **pick(metrics)}
            except Exception as error:
                out[method] = {"ok": False, "error": f"{type(error).__name__}: {error}"[:1000]}
    out["all_ok"] = all(out[m]["ok"] for m in METHODS)
    # A diverging run must stop with the loss check's message (deferred on a GPU: read at the
    # next step's start or the epoch's end) before a checkpoint of it is written.
    with working_dir(work / "methods" / "diverging"):
        try:
            cli(
                [
                    "fit",
                    *run_args("digits", "natmu"),
                    *device,
                    *checkpoints,
                    "--trainer.max_epochs",
                    "1",
                    "--model.init_args.recipe.lr",
                    "1e12",
                ]
            )
            out["diverging_run"] = "not stopped"
        except FloatingPointError as error:
            saved = list((work / "methods" / "diverging").rglob("*.ckpt"))
            out["diverging_run"] = {"stopped": str(error)[:200], "checkpoints_written": len(saved)}
    return out


def phase_bf16(work: Path, device: list[str], epochs: list[str], data: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"seconds": {}}
    with working_dir(work / "bf16"):
        for name in ("original", "retrain"):
            out["seconds"][name] = cli(["fit", *run_args("cifar10_small", name), *device, *data, *epochs])
    checkpoints = [
        "--model.init_args.original_ckpt",
        str(work / "bf16" / checkpoint_of("cifar10_small", "original")),
        "--evaluator.reference_ckpt",
        str(work / "bf16" / checkpoint_of("cifar10_small", "retrain")),
    ]
    for precision in ("32-true", "bf16-mixed"):
        with working_dir(work / "bf16" / precision):
            out["seconds"][f"natmu_{precision}"] = cli(
                [
                    "fit",
                    *run_args("cifar10_small", "natmu"),
                    *device,
                    *data,
                    *epochs,
                    *checkpoints,
                    "--trainer.precision",
                    precision,
                ]
            )
        out[f"natmu_{precision}"] = pick(record(work / "bf16" / precision / folder_of("cifar10_small", "natmu")))
    out["max_metric_difference"] = max_difference(out["natmu_32-true"], out["natmu_bf16-mixed"])
    return out


def phase_ddp(work: Path, device: list[str], epochs: list[str], dry_run: bool) -> dict[str, Any]:
    gpus = torch.cuda.device_count()
    if gpus < 2 and not dry_run:
        return {"skipped": f"{gpus} visible GPU: DDP needs two or more"}
    processes = 2 if dry_run else gpus
    checkpoints = digits_checkpoints(work)
    strategy = ["--trainer.devices", str(processes), "--trainer.strategy", "ddp_spawn"]
    if dry_run:
        strategy += ["--trainer.accelerator", "cpu"]
    if 64 % processes:
        return {"skipped": f"{processes} GPUs do not divide the global batch of 64"}
    with working_dir(work / "ddp"):
        seconds = cli(
            [
                "fit",
                *run_args("digits", "natmu"),
                *checkpoints,
                *device,
                *strategy,
                "--data.batch_size",
                str(64 // processes),
            ]
        )
        many = record(work / "ddp" / folder_of("digits", "natmu"))
    one = record(work / "digits" / "gpu" / folder_of("digits", "natmu"))
    return {
        "processes": processes,
        "seconds": seconds,
        "natmu": pick(many),
        "max_metric_difference_to_one_gpu": max_difference(many, one),
        "reference_identical": many.get("reference") == one.get("reference"),
    }


class StepTimer(pl.Callback):
    """Wall time of the steps after ``warmup``, synchronising the device only at the two ends."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.seconds_per_step = warmup, 0.0, math.nan
        self.evaluation: dict[str, float] = {}

    def _sync(self, module: pl.LightningModule) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup:
            self._sync(pl_module)
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        self._sync(pl_module)
        steps = trainer.global_step - self.warmup
        self.seconds_per_step = (time.perf_counter() - self.start) / max(steps, 1)


def timed_fit(
    module: pl.LightningModule,
    datamodule: ForgetRemainDataModule,
    accelerator: str,
    steps: int,
    warmup: int,
    precision: str,
    root: Path,
    compiled: bool = False,
    callbacks: Sequence[pl.Callback] = (),
    compile_backend: str = "inductor",
) -> tuple[float, float]:
    """(seconds per step after warm-up, seconds of the whole fit) of ``steps`` steps; ``callbacks``
    join the step timer, ``compile_backend`` is ``torch.compile``'s when ``compiled``."""
    timer = StepTimer(warmup)
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=1,
        max_steps=steps,
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[timer, *callbacks],
        default_root_dir=root,
    )
    start = time.perf_counter()
    trainer.fit(torch.compile(module, backend=compile_backend) if compiled else module, datamodule=datamodule)
    return timer.seconds_per_step, time.perf_counter() - start


def stream_rates(datamodule: ForgetRemainDataModule, batches: int, device: torch.device) -> dict[str, float]:
    """Images/s of the training stream: the loader alone (index, gather, collate, pin), then
    with the copy to ``device`` and the per-batch mixing and augmentation there."""
    loader = datamodule.train_dataloader()

    def run(to_device: bool) -> float:
        count, start = 0, time.perf_counter()
        for i, batch in enumerate(loader):
            if to_device:
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                batch = datamodule.on_after_batch_transfer(batch, 0)
            count += batch["target"].numel()
            if i + 1 == batches:
                break
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return count / (time.perf_counter() - start)

    run(False)  # warm-up: workers started, pages touched
    rates = {"loader_images_per_s": run(False), "loader_to_device_images_per_s": run(True)}
    if device.type == "cuda":  # the transfer hooks must not make the host wait for the GPU
        batch = next(iter(loader))
        torch.cuda.set_sync_debug_mode("error")
        try:
            prepared = datamodule.on_before_batch_transfer(batch, 0)
            moved = {
                k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in prepared.items()
            }
            datamodule.on_after_batch_transfer(moved, 0)
            rates["transfer_hooks_synchronise"] = False
        except RuntimeError as error:
            rates["transfer_hooks_synchronise"] = f"{error}"[:500]
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return rates


def transfer_hook_seconds(datamodule: ForgetRemainDataModule, batches: int, device: torch.device) -> float:
    """Main-thread seconds per batch of what Lightning does between the loader and the step:
    ``on_before_batch_transfer``, the copy, ``on_after_batch_transfer`` (batches prefetched)."""
    loaded = []
    for i, batch in enumerate(datamodule.train_dataloader()):
        loaded.append(batch)
        if i + 1 == batches:
            break
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for batch in loaded:
        prepared = datamodule.on_before_batch_transfer(batch, 0)
        moved = {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in prepared.items()}
        datamodule.on_after_batch_transfer(moved, 0)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / max(len(loaded), 1)


def phase_vgg16(work: Path, npz: Path, dry_run: bool, compile_step: bool = True) -> dict[str, Any]:
    accelerator = "cpu" if dry_run else "gpu"
    device = torch.device("cpu" if dry_run else "cuda")
    batch = 8 if dry_run else 128
    steps, warmup = (4, 2) if dry_run else (120, 30)
    root = work / "vgg16"
    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    original = root / "original.pt"
    torch.save(VGG16BN(num_classes=10).state_dict(), original)
    workers = 0 if dry_run else 4

    def datamodule(stream: str) -> ForgetRemainDataModule:
        return ForgetRemainDataModule(
            source=CIFAR10JPEG(str(npz)),
            forget=RandomForget(0.1),
            stream=stream,
            batch_size=batch,
            eval_batch_size=512,
            num_workers=workers,
            crop_padding=4,
            horizontal_flip=True,
            natmu=HybridOptions(k=4, delta=-0.19),
        )

    def module(cls: type) -> pl.LightningModule:
        torch.manual_seed(0)
        return cls(VGG16BN(num_classes=10), original_ckpt=str(original), recipe={"lr": 1e-3, "weight_decay": 2e-3})

    out: dict[str, Any] = {"batch_size": batch, "timed_steps": steps - warmup, "num_workers": workers}
    natmu_dm, ft_dm = datamodule("hybrid"), datamodule("remain")
    for precision in ("32-true", "bf16-mixed"):
        natmu_step, _ = timed_fit(module(NatMUModule), natmu_dm, accelerator, steps, warmup, precision, root)
        ft_step, _ = timed_fit(module(FTModule), ft_dm, accelerator, steps, warmup, precision, root)
        out[precision] = {
            "natmu_seconds_per_step": natmu_step,
            "ft_seconds_per_step": ft_step,
            "natmu_step_over_ft_step": natmu_step / ft_step,
            "model_images_per_s": batch / natmu_step,
        }
    out["stream"] = stream_rates(natmu_dm, 4 if dry_run else 150, device)
    out["stream"]["main_thread_ms_per_batch"] = {
        "natmu": 1000 * transfer_hook_seconds(natmu_dm, 4 if dry_run else 100, device),
        "ft": 1000 * transfer_hook_seconds(ft_dm, 4 if dry_run else 100, device),
    }
    model_rate = out["bf16-mixed"]["model_images_per_s"]
    out["stream"]["loader_to_device_over_bf16_model_rate"] = out["stream"]["loader_to_device_images_per_s"] / model_rate

    # One evaluation against one NatMU epoch (45,000 remaining + 4 x 5,000 hybrid rows).
    trainer = natmu_dm.trainer
    net = module(NatMUModule).to(device)
    evaluator = UnlearningEvaluator(remain_subset=None)
    seconds = {}
    for final in (False, True):
        start = time.perf_counter()
        evaluator.evaluate(trainer, net, final=final)
        seconds["final" if final else "during_training"] = time.perf_counter() - start
    rows = natmu_dm.remain_indices.numel() + natmu_dm.natmu.k * natmu_dm.forget_indices.numel()
    epoch_seconds = math.ceil(rows / batch) * out["32-true"]["natmu_seconds_per_step"]
    out["evaluation"] = {
        "seconds": seconds,
        "natmu_epoch_seconds_32_true": epoch_seconds,
        "eval_fraction_32_true": seconds["during_training"] / epoch_seconds,
    }
    if not dry_run and compile_step:  # inductor needs a C++/Triton toolchain: measured on the GPU machine only
        try:
            compiled_step, compiled_fit = timed_fit(
                module(NatMUModule), natmu_dm, accelerator, steps, warmup, "bf16-mixed", root, compiled=True
            )
            out["compiled_bf16-mixed"] = {
                "natmu_seconds_per_step": compiled_step,
                "fit_seconds_with_compile": compiled_fit,
                "speedup_over_eager": out["bf16-mixed"]["natmu_seconds_per_step"] / compiled_step,
            }
        except Exception as error:  # reported; the figures above stand
            out["compiled_bf16-mixed"] = {"error": f"{type(error).__name__}: {error}"[:2000]}
    return out


# ---------------------------------------------------------------------------------------- main
def run_phase(name: str, results: dict[str, Any], work: Callable[[], dict[str, Any]]) -> None:
    start = time.perf_counter()
    try:
        results[name] = work()
    except Exception as error:  # a failed phase is reported, the others still run
        results[name] = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()[-2000:]}
    results[name]["phase_seconds"] = time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/gpu_check"))
    parser.add_argument(
        "--cifar10-npz", type=Path, default=Path(os.environ.get("NATMU_CIFAR10_NPZ", "data/cifar10_jpeg.npz"))
    )
    parser.add_argument("--phases", default="digits,methods,bf16,ddp,vgg16")
    parser.add_argument("--skip-compile", action="store_true", help="leave out the torch.compile timing")
    parser.add_argument(
        "--cpu-dry-run", action="store_true", help="every phase on the CPU at toy sizes (tests the script)"
    )
    args = parser.parse_args(argv)
    if not torch.cuda.is_available() and not args.cpu_dry_run:
        result: dict[str, Any] = {"cuda": False, "message": "CUDA is not available on this machine: nothing to check"}
        print(json.dumps(result))
        return result
    phases = args.phases.split(",")
    unknown = set(phases) - {"digits", "methods", "bf16", "ddp", "vgg16"}
    if unknown:
        parser.error(f"unknown phases {sorted(unknown)}")
    npz = args.cifar10_npz.resolve()
    if {"bf16", "vgg16"} & set(phases) and not npz.is_file():
        parser.error(f"--cifar10-npz {npz} does not exist (the bf16 and vgg16 phases need it)")
    work = args.out.resolve() / "work"
    dry = args.cpu_dry_run
    device = ["--trainer.accelerator", "cpu"] if dry else GPU
    epochs = ["--trainer.max_epochs", "1"] if dry else []
    results: dict[str, Any] = {
        "cuda": torch.cuda.is_available(),
        "cpu_dry_run": dry,
        "device": device_name(cuda=not dry),
        "gpus": torch.cuda.device_count(),
        "torch": torch.__version__,
        "pytorch_lightning": pl.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }
    if "digits" in phases:
        run_phase("digits", results, lambda: phase_digits(work, device, epochs))
    if "methods" in phases:  # 16-mixed on a GPU; on a CPU Lightning would swap in bf16-mixed
        run_phase("methods", results, lambda: phase_methods(work, device, "bf16-mixed" if dry else "16-mixed"))
    data = ["--data.source.init_args.source.init_args.path", str(npz)]
    if dry:  # the toy npz of the dry run holds fewer images per class than the preset's subset
        data += ["--data.source.init_args.train_per_class", "20", "--data.source.init_args.test_per_class", "5"]
    if "bf16" in phases:
        run_phase("bf16", results, lambda: phase_bf16(work, device, epochs, data))
    if "ddp" in phases:
        run_phase("ddp", results, lambda: phase_ddp(work, device, epochs, dry))
    if "vgg16" in phases:
        run_phase("vgg16", results, lambda: phase_vgg16(work, npz, dry, not args.skip_compile))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(results, indent=2, default=str))
    print(json.dumps(results, default=str))
    return results


if __name__ == "__main__":
    main()
