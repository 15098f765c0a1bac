"""Running the shipped configs through the CLI for the quality benchmark: the presets, one fit
(or a finished one read back), one seed's Original, Retrain and methods, and a validation.

Used by :mod:`benchmarks.quality`, :mod:`benchmarks.search` and :mod:`benchmarks.sequential`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # an uninstalled checkout runs too

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from benchmarks.presets import CIFAR10_JPEG  # noqa: E402
from natmu_lightning.bank.build import build as build_bank  # noqa: E402
from natmu_lightning.checkpoints import load_weights  # noqa: E402
from natmu_lightning.cli import main as cli_main  # noqa: E402
from natmu_lightning.configs import composition, config_args, merged, nested  # noqa: E402
from natmu_lightning.data import HardestForget  # noqa: E402
from natmu_lightning.io import atomic_write_json  # noqa: E402
from natmu_lightning.metrics.bank import BANK_SPLITS, BANK_VALUES  # noqa: E402
from natmu_lightning.metrics.names import current_names  # noqa: E402
from natmu_lightning.predict import predict_logits  # noqa: E402
from natmu_lightning.report import RESULT_METRICS, QualityRow  # noqa: E402

CLASSIFIERS = ("original", "retrain")
SCENARIOS = ("random10", "random1", "class", "hardest10", "sequential")
METRICS = RESULT_METRICS  # the schema lives beside the report that reads it
BANK_METRICS = tuple(f"bank_{split}_{what}" for split in BANK_SPLITS for what in BANK_VALUES)
"""The per-example metrics against a bank of Retrains a run keeps when it has one (``--bank``)."""
#: Where a config holds the learning rate the search varies (the module's recipe).
LR_KEYS = ("model", "init_args", "recipe", "lr")
#: Where a config holds NatMU's mask shift (the datamodule's hybrid options).
DELTA_KEYS = ("data", "natmu", "delta")
#: Written beside each fit's unlearning_metrics.json: its wall time, read back by ``--resume``.
TIMING_FILE = "benchmark_seconds.json"
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


@dataclass(frozen=True)
class QualityPreset:
    """A setting folder of ``configs/``: ``base.yaml``, forget-request fragments, ``original``,
    ``retrain`` and one fragment per method (``configs/README.md``).

    ``requests`` maps a scenario to the forget-request fragments composed after ``base.yaml``
    (none: the base's own request; the scenario's CLI overrides change it, see
    ``scenario_overrides``); ``data_args`` are CLI overrides pointing the configs' data source
    at an absolute path, since every run works in its own folder.
    """

    setting: str
    requests: dict
    data_args: tuple = ()

    def config(self, name: str, scenario: str) -> list[Path]:
        """The composed ``--config`` files of run ``name`` (``original``, ``retrain`` or a method)."""
        request = () if name == "original" else self.requests[scenario]
        return composition(self.setting, *request, name)

    def methods(self, scenario: str) -> list[str]:
        """Every method fragment of the setting, by name (each serves every scenario)."""
        folder = self.config("original", scenario)[0].parent
        names = [p.stem for p in folder.glob("*.yaml")]
        return sorted(n for n in names if n not in (*CLASSIFIERS, "base") and not n.startswith("forget_"))


def make_presets(data_root: Path) -> dict[str, QualityPreset]:
    every = lambda *request: dict.fromkeys(SCENARIOS, request)  # noqa: E731
    return {
        "digits": QualityPreset("digits", every()),
        "cifar10-small": QualityPreset(
            "cifar10_small", every(), ("--data.source.init_args.source.init_args.path", str(CIFAR10_JPEG))
        ),
        "cifar10-vgg16": QualityPreset(
            "cifar10_vgg16",
            {**every("forget_random10"), "random1": ()},
            ("--data.source.init_args.root", str(data_root.resolve())),
        ),
    }


PRESET_NAMES = ("digits", "cifar10-small", "cifar10-vgg16")


def scenario_overrides(scenario: str, forget_class: int) -> list[str]:
    """CLI overrides selecting the forget request of ``scenario`` (hardest10: see run_seed)."""
    if scenario == "random1":
        return ["--data.forget", "natmu_lightning.RandomForget", "--data.forget.ratio", "0.01"]
    if scenario == "class":
        return ["--data.forget", "natmu_lightning.ClassForget", "--data.forget.classes", f"[{forget_class}]"]
    return []


def hardest_indices(original_config: list[Path], workdir: Path, seed: int, out_file: Path) -> Path:
    """Resolve HardestForget(0.1) with the seed's trained original model; save the indices."""
    with working_dir(workdir):
        cli = cli_main(
            [*config_args(original_config), "--seed_everything", str(seed), "--data.seed", str(seed)], run=False
        )
        load_weights(cli.model.backbone, _checkpoint_of(cli), "original checkpoint")
        data = cli.datamodule.source.load()

        def losses(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.cross_entropy(predict_logits(cli.model, images), targets, reduction="none")

        indices = HardestForget(0.1).resolve(data, seed, original_losses=losses)
    np.save(out_file, indices.numpy())
    return out_file


def _checkpoint_of(cli) -> Path:
    """The file the config's ModelCheckpoint (fixed filename; its folder given or placed by the CLI) wrote."""
    callback = cli.trainer.checkpoint_callback
    return Path(callback.dirpath) / f"{callback.filename}.ckpt"


@contextlib.contextmanager
def working_dir(path: Path) -> Iterator[None]:
    previous = Path.cwd()
    path.mkdir(parents=True, exist_ok=True)
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def run_config(config: list[Path], seed: int, workdir: Path, extra: list[str]) -> tuple[dict, float, Path]:
    """Fit one composed config inside ``workdir``; return its final metrics, wall time and log dir."""
    args = [
        "fit",
        *config_args(config),
        "--seed_everything",
        str(seed),
        "--data.seed",
        str(seed),
        "--evaluator.save_outputs",
        "true",
        *QUIET,
        *extra,
    ]
    with working_dir(workdir):
        start = time.perf_counter()
        cli = cli_main(args)
        seconds = time.perf_counter() - start
        log_dir = Path(cli.trainer.log_dir).resolve()
        atomic_write_json(log_dir / TIMING_FILE, {"seconds": seconds})
        return read_metrics(log_dir), seconds, log_dir


def finished_run(config: list[Path], seed: int, workdir: Path, params: dict) -> tuple[dict, float | None, Path] | None:
    """The metrics, wall time and log dir of a finished fit of ``config`` in ``workdir`` with
    ``seed`` and ``params`` (``--resume``); None when there is none.

    A run counts as finished when its ``unlearning_metrics.json`` holds the final
    evaluation. Its saved ``config.yaml`` must carry the seed, and the lr and delta that
    ``params`` (or else ``config``) set. The wall time is None for runs written before
    the timing file existed.
    """
    shipped = merged(config)
    logger = nested(shipped, "trainer", "logger", "init_args") or {}
    if "save_dir" not in logger:
        return None
    run_folder = workdir / logger["save_dir"] / logger.get("name", "lightning_logs")
    expected = {
        ("seed_everything",): seed,
        ("data", "seed"): seed,
        LR_KEYS: params["lr"] if "lr" in params else nested(shipped, *LR_KEYS),
        DELTA_KEYS: params["delta"] if "delta" in params else nested(shipped, *DELTA_KEYS),
    }
    for log_dir in sorted(run_folder.glob("version_*")):
        metrics_file, saved = log_dir / "unlearning_metrics.json", log_dir / "config.yaml"
        if not (metrics_file.exists() and saved.exists()):
            continue
        metrics = read_metrics(log_dir)
        if metrics.get("final") is not True:
            continue
        saved_config = yaml.safe_load(saved.read_text())
        if not all(_saved_matches(nested(saved_config, *keys), value) for keys, value in expected.items()):
            continue
        timing = log_dir / TIMING_FILE
        seconds = json.loads(timing.read_text())["seconds"] if timing.exists() else None
        return metrics, seconds, log_dir.resolve()
    return None


def _saved_matches(saved, expected) -> bool:
    """A saved config value against the expected one; nothing expected (unset) matches anything."""
    return expected is None or (saved is not None and math.isclose(saved, expected))


def run_one(config: list[Path], row: QualityRow, workdir: Path, extra: list[str], resume: bool = False) -> QualityRow:
    """Fit one config; fill ``row`` with its metrics, or with the error when it fails.

    With ``resume``, a finished run of the same config, seed and parameters in
    ``workdir`` (``finished_run``) is read instead of fitted again.
    """
    print(f"[seed {row['seed']}] {row['method']} {row.get('params') or ''}", flush=True)
    previous = finished_run(config, row["seed"], workdir, row.get("params", {})) if resume else None
    if previous is not None:
        metrics, seconds, log_dir = previous
        row.update(
            {k: metrics.get(k) for k in (*METRICS, *BANK_METRICS) if k in metrics},
            **collapse_of(metrics),
            seconds=seconds,
            status="ok",
            log_dir=str(log_dir),
            resumed=True,
        )
        return row
    try:
        metrics, seconds, log_dir = run_config(config, row["seed"], workdir, extra + param_args(row.get("params", {})))
        row.update(
            {k: metrics.get(k) for k in (*METRICS, *BANK_METRICS) if k in metrics},
            **collapse_of(metrics),
            seconds=seconds,
            status="ok",
            log_dir=str(log_dir),
        )
    except (Exception, SystemExit) as error:  # the CLI exits on bad configs
        failed(row, error)
    return row


def collapse_of(metrics: dict) -> dict:
    """The evaluator's collapse verdict of a run (absent from metrics files written before it)."""
    return {"collapsed": bool(metrics.get("collapsed", False)), "collapse_reason": metrics.get("collapse_reason")}


def failed(row: QualityRow, error: BaseException) -> QualityRow:
    """``row`` marked failed with ``error`` and its traceback: reported, never dropped."""
    row.update(status="failed", error=f"{type(error).__name__}: {error}", traceback=traceback.format_exc()[-2000:])
    return row


def run_seed(
    preset: QualityPreset,
    methods: list[str],
    seed: int,
    workdir: Path,
    extra: list[str],
    scenario: str = "random10",
    forget_class: int = 0,
    params: dict | None = None,
    resume: bool = False,
    bank_members: int = 0,
) -> list[dict]:
    """Original and Retrain, then every method (with ``params[method]`` overrides), in ``workdir``
    (``resume``: see ``run_one``). With ``bank_members`` K, a bank of K Retrains of the seed's
    forget request is built first in ``workdir/bank`` (resumable member by member) and every run
    is also evaluated against it (``--evaluator.reference_bank``)."""
    params = params or {}
    forget = scenario_overrides(scenario, forget_class)
    original_config = preset.config("original", scenario)
    if bank_members:
        forget = forget + bank_args(preset.config("retrain", scenario), seed, workdir, extra + forget, bank_members)
    rows: list[dict] = []
    for name in CLASSIFIERS:
        row: dict = {"method": name, "seed": seed, "scenario": scenario, "params": {}}
        if scenario == "hardest10" and name == "retrain":
            try:
                indices = hardest_indices(original_config, workdir, seed, workdir / "hardest_forget_indices.npy")
                forget = ["--data.forget", "natmu_lightning.IndexForget", "--data.forget.indices", str(indices)]
                # The original was evaluated on the random set while training: evaluate it on this one.
                rows[0].update(validate_checkpoint(original_config, seed, workdir, extra + forget))
            except (Exception, SystemExit) as error:
                failed(row, error)
        if "status" not in row:
            run_one(preset.config(name, scenario), row, workdir, extra + forget, resume)
        rows.append(row)
        if row["status"] != "ok":
            print(f"[seed {seed}] {name} failed; skipping this seed's methods", flush=True)
            return rows
    rows[1]["avg_gap"] = 0.0
    for name in methods:
        row = {"method": name, "seed": seed, "scenario": scenario, "params": params.get(name, {})}
        try:
            config = preset.config(name, scenario)
        except FileNotFoundError as error:  # no such method in the setting
            rows.append(failed(row, error))
            continue
        rows.append(run_one(config, row, workdir, extra + forget, resume))
    for row in rows[1:]:
        if row["status"] == "ok" and None not in (rows[1]["seconds"], row["seconds"]):
            row["efficiency"] = rows[1]["seconds"] / row["seconds"]
    return rows


def bank_args(retrain_config: list[Path], seed: int, workdir: Path, extra: list[str], members: int) -> list[str]:
    """Build (or complete) the bank of ``members`` Retrains of the seed's forget request in
    ``workdir/bank``; the CLI arguments that evaluate a run against it."""
    folder = workdir / "bank"
    args = [*config_args(retrain_config), "--data.seed", str(seed), *QUIET, *extra]
    with working_dir(workdir):
        build_bank(args, folder, members=members, command=["benchmarks.quality", "--bank", str(members)])
    return ["--evaluator.reference_bank", str(folder / "bank.json")]


def param_args(params: dict) -> list[str]:
    """CLI overrides for searched hyperparameters."""
    args = []
    if "lr" in params:
        args += ["--" + ".".join(LR_KEYS), repr(params["lr"])]
    if "delta" in params:
        args += ["--" + ".".join(DELTA_KEYS), repr(params["delta"])]
    return args


def config_value(config: list[Path], *keys: str):
    """A nested value of a composed config (``configs.merged``), or None when a key is missing."""
    return nested(merged(config), *keys)


def validate_checkpoint(
    config: list[Path], seed: int, workdir: Path, extra: list[str], ckpt: Path | None = None
) -> dict:
    """Metrics of the weights in ``ckpt`` (default: the file the config's ModelCheckpoint
    writes) through ``config``'s module, data and evaluator, validated inside ``workdir``."""
    with working_dir(workdir):
        cli = cli_main(
            [
                *config_args(config),
                "--seed_everything",
                str(seed),
                "--data.seed",
                str(seed),
                "--evaluator.save_outputs",
                "true",
                *QUIET,
                *extra,
            ],
            run=False,
        )
        ckpt_path = str(ckpt if ckpt is not None else _checkpoint_of(cli))
        cli.trainer.validate(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt_path, verbose=False)
        log_dir = Path(cli.trainer.log_dir).resolve()
        metrics = read_metrics(log_dir)
    return {**{k: metrics[k] for k in METRICS if k in metrics}, "log_dir": str(log_dir)}


def read_metrics(log_dir: Path) -> dict:
    """A run's unlearning_metrics.json, with the current metric names (runs from before a
    rename are read back by ``--resume``)."""
    return current_names(json.loads((log_dir / "unlearning_metrics.json").read_text()))
