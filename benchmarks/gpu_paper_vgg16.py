"""The NatMU paper's CIFAR-10 VGG-16 random-1% setting on one GPU, from the shipped configs.

    python benchmarks/gpu_paper_vgg16.py --cifar10-npz PATH --out DIR [--methods natmu,rl,salun,bad_teacher]

Runs the original and Retrain of ``configs/cifar10_vgg16`` (``base.yaml``, whose request is
the random 1%, with ``original.yaml`` / ``retrain.yaml``: 100 epochs each, the authors' SGD
recipe) side by side as two processes on the GPU, then NatMU, RL, SalUn and Bad Teacher
(``<method>.yaml``, 5 epochs) side by side, each composed with
``configs/trainer/gpu.yaml`` and reading the offline CIFAR-10 JPEG copy instead of
torchvision's folder. Writes ``paper_vgg16.json`` (every run's final metrics and wall time)
and prints it as one JSON line. The JPEG copy is lossy: compare the methods with this
Retrain, and the paper's Retrain row only as an outside reference.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # an uninstalled checkout runs too
from natmu_lightning.configs import composition, config_args, merged, run_folder  # noqa: E402

SETTING = "cifar10_vgg16"
PAPER_RETRAIN = {"test_acc": 93.34, "remain_acc": 99.94, "forget_acc": 94.08, "mia_entropy": 83.88}
KEYS = ("test_acc", "remain_acc", "forget_acc", "mia_entropy", "avg_gap", "kl_to_reference", "js_to_reference")


def launch(name: str, npz: Path, work: Path, log: Path, extra: list[str]) -> subprocess.Popen:
    args = [
        sys.executable,
        "-m",
        "natmu_lightning",
        "fit",
        *config_args(composition(SETTING, name)),
        "--config",
        str(REPO / "configs" / "trainer" / "gpu.yaml"),
        "--data.source",
        "natmu_lightning.CIFAR10JPEG",
        "--data.source.path",
        str(npz),
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
        *extra,
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen(args, cwd=work, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def run_together(names: list[str], npz: Path, work: Path, out: Path, extra: list[str]) -> dict[str, float]:
    """Start one process per run, wait for all; seconds each (raises naming a failed one)."""
    start, processes = time.perf_counter(), {}
    for name in names:
        processes[name] = launch(name, npz, work, out / f"{name}.log", extra)
    seconds = {}
    for name, process in processes.items():
        if process.wait() != 0:
            tail = (out / f"{name}.log").read_text()[-3000:]
            raise RuntimeError(f"{name} failed with exit code {process.returncode}:\n{tail}")
        seconds[name] = time.perf_counter() - start
    return seconds


def final_record(work: Path, name: str) -> dict[str, Any]:
    versions = sorted(
        (work / run_folder(merged(composition(SETTING, name)))).glob("version_*"),
        key=lambda p: int(p.name.split("_")[1]),
    )
    return json.loads((versions[-1] / "unlearning_metrics.json").read_text())


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cifar10-npz", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("runs/paper_vgg16"))
    parser.add_argument("--methods", default="natmu,rl,salun,bad_teacher")
    parser.add_argument(
        "--extra",
        nargs=argparse.REMAINDER,
        default=[],
        help="more CLI arguments for every run (e.g. a CPU dry run: --trainer.accelerator cpu ...)",
    )
    args = parser.parse_args(argv)
    npz = args.cifar10_npz.resolve()
    if not npz.is_file():
        parser.error(f"--cifar10-npz {npz} does not exist")
    methods = args.methods.split(",")
    try:
        for method in methods:
            composition(SETTING, method)
    except FileNotFoundError as error:
        parser.error(str(error))
    out = args.out.resolve()
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"setting": "CIFAR-10 VGG-16 (BN), random 1%, offline JPEG copy", "seconds": {}}
    result["seconds"].update(run_together(["original", "retrain"], npz, work, out, args.extra))
    result["seconds"].update(run_together(methods, npz, work, out, args.extra))
    result["retrain_random1"] = final_record(work, "natmu").get("reference")
    result["methods"] = {f"{name}_random1": {k: final_record(work, name).get(k) for k in KEYS} for name in methods}
    result["paper_retrain_random1"] = PAPER_RETRAIN
    (out / "paper_vgg16.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
