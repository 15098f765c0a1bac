"""The NatMU paper's main table in one command: CIFAR-10, VGG-16 (BN), random 1% (or 10%).

    python -m benchmarks.paper --cifar10-npz PATH --out DIR [--request random1|random10]
        [--classifier-epochs N] [--fit-in SECONDS --step-overhead step_overhead.json] [--loader-path]
    python -m benchmarks.paper --dry-run --out DIR

Runs the shipped compositions of ``configs/cifar10_vgg16`` (``base.yaml``, with
``forget_random10.yaml`` for ``--request random10``) on the offline CIFAR-10 JPEG copy, with
the trainer fragment ``--trainer-config`` (default ``configs/trainer/gpu.yaml``; the training
images on the GPU when they fit, as the datamodule does by default, or with ``--loader-path``
fed by the DataLoader from host memory):

1. the original and Retrain (100 epochs each, the paper's; ``--classifier-epochs`` sets fewer,
   and ``--fit-in S --step-overhead FILE`` lowers them to what lets the whole table fit in S
   seconds at the VGG-16 step time that ``benchmarks.step_overhead`` measured on this device,
   :func:`benchmarks.paper_time.epochs_that_fit`), side by side as two processes;
2. NatMU and the nine baselines (Bad Teacher, FT, GA, l1-sparse, NegGrad+, RL, SalUn, SCRUB,
   SSD), ``--parallel`` processes at a time (default: all of them). Each run's final
   evaluation fits its attacks (the SVC ones take tens of seconds on a CPU core) in its own
   process, beside the other runs' GPU work.

Writes ``DIR/paper.json``: every run's final metrics (``unlearning_metrics.json``) and wall
time, ``wall_seconds`` for the whole command, the device, package versions, the npz's
SHA-256 and the command, after each phase; stopped by SIGTERM or SIGINT (a time limit), or
when a run fails, it kills its runs, keeps the rows of those that finished and adds ``stopped``
(or ``failed``): the phase, and each unfinished run's seconds and the last epoch and step its
logger wrote. Then prints the table beside the paper's Retrain reference
(docs/design.md, "Retrain references"). The JPEG copy is lossy (about 2-3 points of test
accuracy): compare the methods with this Retrain, and the paper's Retrain row only as an
outside reference.

``--dry-run`` runs the same phases on the CPU, one process at a time, on a synthetic npz of
a few hundred random images written under DIR (20 training and 5 test images per class, one
forgetting sample per class), each run for at most two optimizer steps: it checks the whole
command, not any number.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # an uninstalled checkout runs too
from benchmarks.host import device_name  # noqa: E402
from benchmarks.paper_time import PAPER_CLASSIFIER_EPOCHS, planned_epochs  # noqa: E402
from natmu_lightning.configs import composition, config_args, merged, newest_version, run_folder  # noqa: E402
from natmu_lightning.io import atomic_write_json  # noqa: E402

SETTING = "cifar10_vgg16"
CLASSIFIERS = ("original", "retrain")
METHODS = ("natmu", "bad_teacher", "ft", "ga", "l1_sparse", "neggrad", "rl", "salun", "scrub", "ssd")
REQUESTS = {"random1": (), "random10": ("forget_random10",)}
#: The NatMU authors' Retrain on the original CIFAR-10 files (docs/design.md).
PAPER_RETRAIN = {
    "random1": {"test_acc": 93.34, "remain_acc": 99.94, "forget_acc": 94.08, "mia_entropy": 83.88},
    "random10": {"test_acc": 93.12, "remain_acc": 99.94, "forget_acc": 93.20, "mia_entropy": 80.80},
}
COLUMNS = ("test_acc", "remain_acc", "forget_acc", "mia_entropy", "avg_gap")
KEYS = (
    *COLUMNS,
    "kl_to_reference",
    "js_to_reference",
    "mia_svc_entropy",
    "mia_loss_cv",
    "collapsed",
    "collapse_reason",
    "epoch",
    "global_step",
)
NPZ_ARRAYS = ("train_jpeg", "train_offsets", "test_jpeg", "test_offsets", "y_train", "y_test")
DRY_RUN_PER_CLASS = (20, 5)  # synthetic training and test images per class
DRY_RUN_ARGS = [
    "--trainer.accelerator",
    "cpu",
    "--trainer.max_epochs",
    "1",
    "--trainer.max_steps",
    "2",
    "--data.num_workers",
    "0",
    "--data.batch_size",
    "32",
    "--data.eval_batch_size",
    "128",
]


def check_npz(path: Path, dry_run: bool) -> str:
    """The file's SHA-256, after checking it is CIFAR-10 in the offline copy's format.

    Raises:
        SystemExit: the file is missing, not an npz of that format, or not 50,000 + 10,000
            images (a synthetic file of a dry run may be smaller).
    """
    if not path.is_file():
        raise SystemExit(f"--cifar10-npz {path} does not exist (the offline CIFAR-10 JPEG copy, cifar10_jpeg.npz)")
    try:
        with np.load(path) as arrays:
            missing = [name for name in NPZ_ARRAYS if name not in arrays.files]
            sizes = (len(arrays["y_train"]), len(arrays["y_test"])) if not missing else None
    except (OSError, ValueError) as error:
        raise SystemExit(f"--cifar10-npz {path} is not a readable npz file: {error}") from error
    if missing:
        raise SystemExit(f"--cifar10-npz {path} is not the CIFAR-10 JPEG copy: it lacks the arrays {missing}")
    if not dry_run and sizes != (50_000, 10_000):
        raise SystemExit(f"--cifar10-npz {path} holds {sizes} train/test images, not CIFAR-10's (50000, 10000)")
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def synthetic_npz(path: Path) -> Path:
    """A few hundred random 32x32 JPEGs in the offline copy's format (``tests/fake_data.py``)."""
    from tests.fake_data import make_fake_cifar10_npz

    train, test = DRY_RUN_PER_CLASS
    return make_fake_cifar10_npz(path, train_per_class=train, test_per_class=test)


class Runner:
    """Starts ``natmu-lightning fit`` processes for the runs of one request, in ``work``."""

    def __init__(
        self,
        args: argparse.Namespace,
        npz: Path,
        work: Path,
        logs: Path,
        classifier_epochs: int = PAPER_CLASSIFIER_EPOCHS,
    ) -> None:
        self.request, self.npz, self.work, self.logs = args.request, npz, work, logs
        self.classifier_epochs = classifier_epochs
        self.running: dict[str, tuple[subprocess.Popen, float]] = {}  # name: (process, start time)
        self.stop_signal: str | None = None  # set by the handler of :meth:`stopping_on_signals`
        self.finished: dict[str, float] = {}  # name: wall seconds, of every run that ended well
        self.extra = [
            *(["--config", str(args.trainer_config.resolve())] if not args.dry_run else []),
            *(["--data.device_resident", "false"] if args.loader_path else []),
            *(DRY_RUN_ARGS + self.dry_run_request() if args.dry_run else []),
        ]

    def dry_run_request(self) -> list[str]:
        ratio = (1 if self.request == "random1" else 2) / DRY_RUN_PER_CLASS[0]  # 1 or 2 forget images per class
        return ["--data.forget.init_args.ratio", str(ratio)]

    def paths(self, name: str) -> list[Path]:
        return composition(SETTING, *REQUESTS[self.request], name)

    def command(self, name: str) -> list[str]:
        """The ``natmu-lightning fit`` command of one run."""
        epochs = self.classifier_epochs if name in CLASSIFIERS else None
        return [
            sys.executable,
            "-m",
            "natmu_lightning",
            "fit",
            *config_args(self.paths(name)),
            "--data.source",
            "natmu_lightning.CIFAR10JPEG",
            "--data.source.path",
            str(self.npz),
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.enable_model_summary",
            "false",
            *(["--trainer.max_epochs", str(epochs)] if epochs not in (None, PAPER_CLASSIFIER_EPOCHS) else []),
            *self.extra,  # after the epochs: a dry run's one epoch and two steps win
        ]

    def start(self, name: str, threads: int) -> subprocess.Popen:
        env = {
            **os.environ,
            "OMP_NUM_THREADS": str(threads),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
        log = (self.logs / f"{name}.log").open("w")
        return subprocess.Popen(self.command(name), cwd=self.work, env=env, stdout=log, stderr=subprocess.STDOUT)

    def run(self, names: list[str], parallel: int) -> None:
        """Run ``names``, ``parallel`` at a time; each one's wall seconds from its own start go to
        :attr:`finished` as it ends (kept there when a later run fails or a signal stops the rest)."""
        pending = list(names)
        threads = max(1, (os.cpu_count() or 1) // min(parallel, len(names)))  # the cores shared by the runs at once
        while pending or self.running:
            self.check_stop()  # here every started run is registered
            while pending and len(self.running) < parallel:
                name = pending.pop(0)
                self.running[name] = (self.start(name, threads), time.perf_counter())
            for name, (process, started) in list(self.running.items()):
                if process.poll() is None:
                    continue
                if process.returncode != 0:
                    time.sleep(0.5)  # `timeout` signals the runs with this command: its signal may be on the way
                self.check_stop()  # a run the signal ended has neither finished nor failed
                del self.running[name]
                if process.returncode != 0:
                    tail = (self.logs / f"{name}.log").read_text()[-3000:]
                    raise RuntimeError(f"{name} failed with exit code {process.returncode}:\n{tail}")
                self.finished[name] = time.perf_counter() - started
            time.sleep(0.2)

    def check_stop(self) -> None:
        """Raise :class:`Stopped` once a signal has been noted."""
        if self.stop_signal is not None:
            raise Stopped(self.stop_signal)

    @contextlib.contextmanager
    def stopping_on_signals(self) -> Iterator[None]:
        """Within the block, SIGTERM or SIGINT makes :meth:`run` raise :class:`Stopped` at its next
        turn (the handler only notes the signal: raised inside ``Popen`` it could leave a run
        started but unknown, never killed); the former handlers after it."""

        def note(number: int, frame: Any) -> None:
            self.stop_signal = signal.Signals(number).name

        former = {number: signal.signal(number, note) for number in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for number, handler in former.items():
                signal.signal(number, handler)

    def settle(self) -> None:
        """Count as finished the runs still going whose final metrics are written (a stop can come
        while such a run tears down, and an interrupted fit may exit 0, so the file decides)."""
        now = time.perf_counter()
        for name, (_, started) in list(self.running.items()):
            folder = self.version_folder(name)
            if folder is not None and (folder / "unlearning_metrics.json").is_file():
                self.finished[name] = now - started
                del self.running[name]

    def stop(self) -> None:
        """Kill the runs still going."""
        for process, _ in self.running.values():
            process.kill()

    def version_folder(self, name: str) -> Path | None:
        """The run's latest ``version_N`` folder, ``None`` before its logger made one."""
        return newest_version(self.work / run_folder(merged(self.paths(name))))

    def final_metrics(self, name: str) -> dict[str, Any]:
        folder = self.version_folder(name)
        if folder is None:
            raise RuntimeError(f"{name} finished without a run folder under {self.work}")
        return json.loads((folder / "unlearning_metrics.json").read_text())

    def progress(self) -> dict[str, dict[str, Any]]:
        """How far each run still going got: its wall seconds and the last epoch and step its
        logger wrote (``metrics.csv`` is written every 100 steps; ``None`` before, or where the
        last row is cut short by the run's end), so the next GPU session knows the seconds per epoch."""
        now, runs = time.perf_counter(), {}
        for name, (_, started) in self.running.items():
            runs[name] = {"seconds": now - started, **last_logged_step(self.version_folder(name))}
        return runs


def last_logged_step(folder: Path | None) -> dict[str, int | None]:
    """``epoch`` and ``step`` of the last complete row of ``folder/metrics.csv`` (``None`` each
    where there is none)."""
    path = folder / "metrics.csv" if folder is not None else None
    try:
        text = path.read_text() if path is not None else ""
    except OSError:
        text = ""
    lines = text[: text.rfind("\n") + 1].splitlines()  # a last line without its newline may be cut short
    for row in reversed(list(csv.DictReader(lines))):
        if None in row.values() or None in row:  # fewer or more fields than the header: cut short
            continue
        try:
            return {"epoch": int(row["epoch"]), "step": int(row["step"])}
        except (KeyError, ValueError):
            continue
    return {"epoch": None, "step": None}


class Stopped(Exception):
    """The command received SIGTERM or SIGINT (a time limit, or Ctrl-C) while runs were going."""


def add_rows(result: dict[str, Any], runner: Runner, names: list[str], skip_unreadable: bool = False) -> None:
    """The final metrics and wall seconds of finished runs, into ``result["runs"]``; with
    ``skip_unreadable`` (after a stop or a failure) a run whose metrics cannot be read is left out."""
    for name in names:
        try:
            metrics = runner.final_metrics(name)
        except (OSError, ValueError, RuntimeError):
            if not skip_unreadable:
                raise
            continue
        result["runs"][name] = {**{key: metrics.get(key) for key in KEYS}, "seconds": runner.finished[name]}


def versions() -> dict[str, str]:
    import pytorch_lightning
    import sklearn
    import torch
    import torchmetrics

    import natmu_lightning

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pytorch_lightning": pytorch_lightning.__version__,
        "torchmetrics": torchmetrics.__version__,
        "scikit-learn": sklearn.__version__,
        "natmu_lightning": natmu_lightning.__version__,
    }


def table(result: dict[str, Any]) -> str:
    """The runs as a Markdown table, the paper's Retrain first."""
    header = "| run | TA | RA | FA | MIA | avg gap | seconds |"
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|"]
    paper = result["paper_retrain"]
    lines.append(
        "| paper's Retrain (original CIFAR-10 files) | " + " | ".join(f"{paper[k]:.2f}" for k in COLUMNS[:4]) + " | | |"
    )
    for name, row in result["runs"].items():
        cells = ["" if row.get(k) is None else f"{row[k]:.2f}" for k in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {row['seconds']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cifar10-npz", type=Path, help="the offline CIFAR-10 JPEG copy (not with --dry-run)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--request", choices=sorted(REQUESTS), default="random1")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument(
        "--parallel", type=int, default=None, help="unlearning runs side by side (default: all; 1 with --dry-run)"
    )
    parser.add_argument("--trainer-config", type=Path, default=REPO / "configs" / "trainer" / "gpu.yaml")
    parser.add_argument("--dry-run", action="store_true", help="the same phases on the CPU on synthetic images")
    parser.add_argument(
        "--classifier-epochs",
        type=int,
        default=PAPER_CLASSIFIER_EPOCHS,
        help="the original's and Retrain's epochs (default: the paper's 100; fewer are a deviation, recorded)",
    )
    parser.add_argument(
        "--fit-in", type=float, help="lower --classifier-epochs so the whole table fits in this many seconds"
    )
    parser.add_argument(
        "--step-overhead", type=Path, help="with --fit-in: step_overhead.json of VGG-16 on this device (its step time)"
    )
    parser.add_argument(
        "--loader-path",
        action="store_true",
        help="batches through the DataLoader from host memory (device_resident: false), not from a GPU copy",
    )
    args = parser.parse_args(argv)
    epochs = planned_epochs(args, parser)
    started = time.perf_counter()
    args.parallel = args.parallel or (1 if args.dry_run else len(args.methods))
    if args.parallel < 1:
        parser.error("--parallel must be at least 1")
    if args.dry_run == (args.cifar10_npz is not None):
        parser.error("give --cifar10-npz PATH, or --dry-run (which writes its own synthetic file)")
    if not args.dry_run and not args.trainer_config.is_file():
        parser.error(f"--trainer-config {args.trainer_config} does not exist")
    out = args.out.resolve()
    work, logs = out / "work", out / "logs"
    if (work / "runs").exists():  # the configs read fixed checkpoint names that a second run would version
        parser.error(f"--out {out} already holds runs ({work / 'runs'}): choose a new folder")
    for folder in (work, logs):
        folder.mkdir(parents=True, exist_ok=True)
    npz = synthetic_npz(out / "synthetic_cifar10.npz") if args.dry_run else args.cifar10_npz.resolve()
    sha256 = check_npz(npz, args.dry_run)  # before any training
    runner = Runner(args, npz, work, logs, epochs["epochs"])

    result: dict[str, Any] = {
        "setting": f"CIFAR-10, VGG-16 (BN), {args.request}, offline JPEG copy"
        + (
            f", original and Retrain {epochs['epochs']} epochs (the paper's: {PAPER_CLASSIFIER_EPOCHS})"
            if epochs["epochs"] != PAPER_CLASSIFIER_EPOCHS
            else ""
        )
        + (" (DRY RUN: synthetic)" if args.dry_run else ""),
        "request": args.request,
        "dry_run": args.dry_run,
        "device": device_name(cuda=not args.dry_run),
        "versions": versions(),
        "npz_sha256": sha256,
        "trainer_config": None if args.dry_run else str(args.trainer_config),
        "device_resident": False if args.loader_path else "default (on CUDA when the images fit)",
        "command": "python -m benchmarks.paper " + " ".join(sys.argv[1:] if argv is None else argv),
        "classifier_epochs": epochs,
        "paper_retrain": PAPER_RETRAIN[args.request],
        "runs": {},
    }
    phases = [
        (f"original and Retrain side by side ({args.request})", list(CLASSIFIERS), 1 if args.dry_run else 2),
        (f"{len(args.methods)} unlearning runs, {args.parallel} at a time", list(args.methods), args.parallel),
    ]
    with runner.stopping_on_signals():  # `timeout` sends SIGTERM
        for number, (title, names, parallel) in enumerate(phases, 1):
            print(f"[{number}/{len(phases)}] {title}", flush=True)
            try:
                runner.run(names, parallel)
                runner.check_stop()
                add_rows(result, runner, names)
            except BaseException as error:
                # a time limit or a failed run: every finished run's row, and how far the others got
                try:
                    runner.settle()
                    ended = {"phase": title, "running": runner.progress()}
                    if isinstance(error, Stopped):
                        result["stopped"] = {"signal": error.args[0], **ended}
                    else:
                        result["failed"] = {"error": repr(error)[-3000:], **ended}
                    add_rows(result, runner, [name for name in names if name in runner.finished], skip_unreadable=True)
                finally:
                    runner.stop()
                    result["wall_seconds"] = time.perf_counter() - started
                    atomic_write_json(out / "paper.json", result)
                if isinstance(error, Stopped):
                    where = f"during phase {number} ({title}); {out / 'paper.json'}"
                    raise SystemExit(f"stopped by {error.args[0]} {where}") from None
                raise
            # written after each phase: a command stopped by a time limit keeps what it finished
            result["wall_seconds"] = time.perf_counter() - started
            atomic_write_json(out / "paper.json", result)
    print(table(result))
    print(f"wall time {result['wall_seconds']:.0f} s; {out / 'paper.json'}")
    return result


if __name__ == "__main__":
    main()
