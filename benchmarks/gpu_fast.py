"""Which of bf16-mixed, channels-last and ``torch.compile`` make the paper's training step faster.

    python -m benchmarks.gpu_fast --out DIR [--steps 150] [--warmup 50] [--variants ...]  # a GPU
    python -m benchmarks.gpu_fast --out DIR --dry-run  # the same plumbing on the CPU, digits, seconds

Issue 29 point 3 keeps a choice in the GPU trainer configs only where it gains. Each variant
trains NatMU's hybrid stream in the paper's setting (preset ``cifar10-vgg16``: CIFAR-10 random
10%, VGG-16-BN, batch 128, the offline JPEG copy from ``$NATMU_CIFAR10_NPZ``) through
``Trainer.fit`` with this package's module and datamodule (the training set resident on the
GPU, its default there), a fresh module from the same weights each time, one datamodule (the
data loaded and the hybrid plan drawn by the first fit):

- ``32-true``, ``bf16-mixed``: full precision, and under bf16 autocast;
- ``+cl``: with :class:`~natmu_lightning.callbacks.ChannelsLast`;
- ``+compile``: the module under ``torch.compile`` (Lightning's supported form:
  ``trainer.fit(torch.compile(module))``).

Seconds per step are the wall time of the steps after ``--warmup`` (compilation falls in the
warm-up; each fit's whole wall time is reported beside it), synchronising the device only at
the two ends, and each variant's ``speedup`` is ``32-true``'s time over its own. A variant that
fails records its error and the others still run; ``gpu_fast.json`` is written after each
variant, so a command stopped by a time limit keeps those it finished. The weights are random:
these are timings, not accuracies (whether a kept choice leaves the metrics within the seed
spread takes whole runs, ``benchmarks.paper``).

``--dry-run`` runs every variant on the CPU on the digits preset for a few steps, compiled
variants with the ``eager`` backend (inductor needs a compiler toolchain): a check of the
script, not a measurement.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python benchmarks/gpu_fast.py` works too
from benchmarks.gpu_check import timed_fit  # noqa: E402
from benchmarks.host import device_name  # noqa: E402
from benchmarks.presets import PRESETS  # noqa: E402
from benchmarks.step_overhead import backbones, datamodule, make_module  # noqa: E402
from natmu_lightning.callbacks import ChannelsLast  # noqa: E402
from natmu_lightning.data import ForgetRemainDataModule  # noqa: E402
from natmu_lightning.io import atomic_write_json  # noqa: E402

VARIANTS = ("32-true", "bf16-mixed", "bf16-mixed+cl", "32-true+cl", "bf16-mixed+cl+compile", "32-true+compile")
"""In the order they run: the likeliest gains first, the compiled ones (a minute or more of
compilation each) last, so that a time limit cuts the least informative."""
BASELINE = "32-true"


def parse_variant(name: str) -> tuple[str, bool, bool]:
    """``"bf16-mixed+cl+compile"`` -> (precision, channels-last, compiled)."""
    precision, *options = name.split("+")
    return precision, "cl" in options, "compile" in options


def time_variant(name: str, args: argparse.Namespace, original: Path, data: ForgetRemainDataModule) -> dict[str, Any]:
    """One variant's fit: seconds per step after the warm-up and the whole fit's seconds."""
    preset = PRESETS[args.preset]
    precision, channels_last, compiled = parse_variant(name)
    module = make_module(preset, backbones(preset, None), "hybrid", original)
    seconds_per_step, fit_seconds = timed_fit(
        module,
        data,
        "cpu" if args.dry_run else "gpu",
        args.steps,
        args.warmup,
        precision,
        args.work / "runs" / name,
        compiled=compiled,
        callbacks=[ChannelsLast()] if channels_last else (),
        compile_backend="eager" if args.dry_run else "inductor",
    )
    return {"seconds_per_step": seconds_per_step, "fit_seconds": fit_seconds}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="where gpu_fast.json goes")
    parser.add_argument("--work", type=Path, default=None, help="scratch: weights and run folders (default: --out)")
    parser.add_argument("--steps", type=int, default=None, help="steps per fit (default 150; 6 with --dry-run)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed first steps (default 50; 2 with --dry-run)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--dry-run", action="store_true", help="every variant on the CPU, digits, a few steps")
    args = parser.parse_args(argv)
    args.steps = args.steps if args.steps is not None else (6 if args.dry_run else 150)
    args.warmup = args.warmup if args.warmup is not None else (2 if args.dry_run else 50)
    if not 0 < args.warmup < args.steps:
        parser.error(f"--warmup must be at least 1 and below --steps ({args.steps}), got {args.warmup}")
    if not args.dry_run and not torch.cuda.is_available():
        parser.error("no CUDA device: this measures a GPU (--dry-run checks the script on the CPU)")
    args.variants = [BASELINE, *dict.fromkeys(v for v in args.variants if v != BASELINE)]  # speed-ups are over it
    args.preset = "digits" if args.dry_run else "cifar10-vgg16"
    args.work = args.work or args.out
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(0, verbose=False)
    original = args.work / "original.pt"
    torch.save(backbones(PRESETS[args.preset], None)().state_dict(), original)  # random weights: timings only
    # One datamodule for every variant: the data loaded and the hybrid plan drawn once (by the first fit).
    data = datamodule(PRESETS[args.preset], "hybrid")

    variants: dict[str, dict[str, Any]] = {}
    result = {
        "preset": args.preset,
        "dry_run": args.dry_run,
        "steps": args.steps,
        "warmup": args.warmup,
        "device": device_name(cuda=not args.dry_run),
        "torch": torch.__version__,
        "pytorch_lightning": pl.__version__,
        "command": "python -m benchmarks.gpu_fast " + " ".join(sys.argv[1:] if argv is None else argv),
        "variants": variants,
    }
    for number, name in enumerate(args.variants, 1):
        print(f"[{number}/{len(args.variants)}] {name} at {time.strftime('%H:%M:%S')}", flush=True)
        try:
            variants[name] = time_variant(name, args, original, data)
        except Exception as error:  # recorded; the other variants still run
            variants[name] = {
                "error": f"{type(error).__name__}: {error}"[:2000],
                "traceback": traceback.format_exc()[-4000:],
            }
            print(f"    failed: {variants[name]['error'][:300]}", flush=True)
        else:
            baseline = variants.get(BASELINE, {}).get("seconds_per_step")
            if baseline:
                variants[name]["speedup"] = baseline / variants[name]["seconds_per_step"]
            print(
                f"    {1000 * variants[name]['seconds_per_step']:.2f} ms a step"
                + (f", {variants[name]['speedup']:.2f}x {BASELINE}" if "speedup" in variants[name] else ""),
                flush=True,
            )
        atomic_write_json(args.out / "gpu_fast.json", result)
    return result


if __name__ == "__main__":
    main()
