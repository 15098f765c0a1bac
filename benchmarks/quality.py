"""Quality benchmark: Original, Retrain and every method on the same forget set, over seeds.

    python benchmarks/quality.py --preset digits --seeds 3 --out runs/quality [--scenario random10]

For each seed ``s`` it runs, through the real CLI and the shipped configs of the preset
(``configs/<preset>/``): the original model, Retrain (same initial weights), then every
unlearning method config in that folder on the same forget set (``data.seed = s``) and
the same original checkpoint, each evaluated against that seed's Retrain. It writes
``results.json`` (one row per method and seed), ``results.csv`` and ``results.md``
(mean ± std over seeds, run-time efficiency = Retrain time / method time). A method that
fails is reported as failed, not dropped. Hyperparameters are the configs' own: nothing
is selected on the reported numbers.

Scenarios (``--scenario``): ``random10`` (the configs' own 10% class-balanced request),
``random1`` (1%), ``class`` (every sample of class ``--forget-class``) and ``hardest10``
(the 10% of training samples with the highest loss under that seed's original model,
resolved once from the original checkpoint and passed to every run as explicit indices;
the original itself is then re-evaluated on that set).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Iterator, Optional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from natmu_lightning.checkpoints import load_weights  # noqa: E402
from natmu_lightning.cli import main as cli_main  # noqa: E402
from natmu_lightning.data import HardestForget  # noqa: E402
from natmu_lightning.io import atomic_write_bytes, atomic_write_json  # noqa: E402
from natmu_lightning.predict import predict_logits  # noqa: E402

PRESETS = {"digits": REPO / "configs" / "digits"}
CLASSIFIERS = ("original", "retrain")
SCENARIOS = ("random10", "random1", "class", "hardest10")
METRICS = ("forget_acc", "retain_acc", "test_acc", "mia_entropy", "avg_gap", "kl_to_reference", "js_to_reference")
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def scenario_overrides(scenario: str, forget_class: int) -> list[str]:
    """CLI overrides selecting the forget request of ``scenario`` (hardest10: see run_seed)."""
    if scenario == "random1":
        return ["--data.forget", "natmu_lightning.data.RandomForget", "--data.forget.ratio", "0.01"]
    if scenario == "class":
        return ["--data.forget", "natmu_lightning.data.ClassForget", "--data.forget.classes", f"[{forget_class}]"]
    return []


def hardest_indices(original_config: Path, workdir: Path, seed: int, out_file: Path) -> Path:
    """Resolve HardestForget(0.1) with the seed's trained original model; save the indices."""
    with working_dir(workdir):
        cli = cli_main(["--config", str(original_config), "--seed_everything", str(seed), "--data.seed", str(seed)], run=False)
        load_weights(cli.model.backbone, _checkpoint_of(cli), "original checkpoint")
        data = cli.datamodule.source.load()

        def losses(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.cross_entropy(predict_logits(cli.model, images), targets, reduction="none")

        indices = HardestForget(0.1).resolve(data, seed, original_losses=losses)
    np.save(out_file, indices.numpy())
    return out_file


def _checkpoint_of(cli) -> Path:
    """The file the config's ModelCheckpoint (fixed dirpath and filename) wrote."""
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


def run_config(config: Path, seed: int, workdir: Path, extra: list[str]) -> tuple[dict, float, Path]:
    """Fit one config inside ``workdir``; return its final metrics, wall time and log dir."""
    args = ["fit", "--config", str(config), "--seed_everything", str(seed), "--data.seed", str(seed),
            "--evaluator.save_outputs", "true", *QUIET, *extra]
    with working_dir(workdir):
        start = time.perf_counter()
        cli = cli_main(args)
        seconds = time.perf_counter() - start
        log_dir = Path(cli.trainer.log_dir).resolve()
        return json.loads((log_dir / "unlearning_metrics.json").read_text()), seconds, log_dir


def run_seed(preset_dir: Path, methods: list[str], seed: int, out: Path, extra: list[str],
             scenario: str = "random10", forget_class: int = 0) -> list[dict]:
    workdir = out / f"seed{seed}"
    rows: list[dict] = []
    times: dict[str, float] = {}
    forget = scenario_overrides(scenario, forget_class)
    for name in (*CLASSIFIERS, *methods):
        print(f"[seed {seed}] {name}", flush=True)
        row: dict = {"method": name, "seed": seed, "scenario": scenario}
        try:
            if scenario == "hardest10" and name == "retrain":
                indices = hardest_indices(preset_dir / "original.yaml", workdir, seed, workdir / "hardest_forget_indices.npy")
                forget = ["--data.forget", "natmu_lightning.data.IndexForget", "--data.forget.indices", str(indices)]
                # The original was evaluated on the random set while training: evaluate it on this one.
                rows[0].update(_revalidate_original(preset_dir / "original.yaml", seed, workdir, extra + forget))
            metrics, seconds, log_dir = run_config(preset_dir / f"{name}.yaml", seed, workdir, extra + forget)
            row.update({k: metrics.get(k) for k in METRICS if k in metrics}, seconds=seconds, status="ok", log_dir=str(log_dir))
            if name == "retrain":
                row["avg_gap"] = 0.0
            times[name] = seconds
        except (Exception, SystemExit) as error:  # reported as failed, never dropped (the CLI exits on bad configs)
            row.update(status="failed", error=f"{type(error).__name__}: {error}", traceback=traceback.format_exc()[-2000:])
            if name in CLASSIFIERS:
                rows.append(row)
                print(f"[seed {seed}] {name} failed; skipping this seed's methods", flush=True)
                return rows
        rows.append(row)
    for row in rows:
        if row.get("status") == "ok" and row["method"] != "original":
            row["efficiency"] = times["retrain"] / row["seconds"]
    return rows


def _revalidate_original(config: Path, seed: int, workdir: Path, extra: list[str]) -> dict:
    with working_dir(workdir):
        cli = cli_main(["--config", str(config), "--seed_everything", str(seed), "--data.seed", str(seed),
                        "--evaluator.save_outputs", "true", *QUIET, *extra], run=False)
        cli.trainer.validate(cli.model, datamodule=cli.datamodule, ckpt_path=str(_checkpoint_of(cli)), verbose=False)
        log_dir = Path(cli.trainer.log_dir).resolve()
        metrics = json.loads((log_dir / "unlearning_metrics.json").read_text())
    return {**{k: metrics[k] for k in METRICS if k in metrics}, "log_dir": str(log_dir)}


def summarise(rows: list[dict]) -> list[dict]:
    summary = []
    for method in dict.fromkeys(r["method"] for r in rows):
        ok = [r for r in rows if r["method"] == method and r.get("status") == "ok"]
        entry: dict = {"method": method, "runs": len(ok), "failed": sum(r["method"] == method for r in rows) - len(ok)}
        for key in (*METRICS, "seconds", "efficiency"):
            values = [r[key] for r in ok if r.get(key) is not None and not math.isnan(r[key])]
            if values:
                entry[key] = (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0)
        summary.append(entry)
    return summary


def markdown(summary: list[dict], preset: str, seeds: int, scenario: str = "random10") -> str:
    columns = [("forget_acc", "FA"), ("retain_acc", "RA"), ("test_acc", "TA"), ("mia_entropy", "MIA (entropy)"),
               ("avg_gap", "avg gap"), ("kl_to_reference", "KL(Retrain‖·) on D_f"), ("js_to_reference", "JS on D_f"),
               ("seconds", "seconds"), ("efficiency", "efficiency")]
    lines = [f"# Quality: preset `{preset}`, scenario `{scenario}`, {seeds} seed(s)", "",
             "Mean ± std over seeds; gaps and divergences are to each seed's Retrain. "
             "Efficiency = Retrain time / method time.", "",
             "| method | runs | failed | " + " | ".join(label for _, label in columns) + " |",
             "|---" * (3 + len(columns)) + "|"]
    for entry in summary:
        cells = []
        for key, _ in columns:
            if key in entry:
                mean, std = entry[key]
                cells.append(f"{mean:.3f} ± {std:.3f}" if key in ("kl_to_reference", "js_to_reference") else f"{mean:.2f} ± {std:.2f}")
            else:
                cells.append("–")
        lines.append(f"| {entry['method']} | {entry['runs']} | {entry['failed']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="digits")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--scenario", choices=SCENARIOS, default="random10")
    parser.add_argument("--forget-class", type=int, default=0, help="the class forgotten by --scenario class")
    parser.add_argument("--methods", default=None, help="comma-separated config names (default: every method config)")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="CLI overrides passed to every run")
    args = parser.parse_args(argv)
    preset_dir = PRESETS[args.preset]
    methods = args.methods.split(",") if args.methods else sorted(
        p.stem for p in preset_dir.glob("*.yaml") if p.stem not in CLASSIFIERS)
    out = args.out.resolve()
    if (out / "results.json").exists():
        parser.error(f"{out} already holds results; pick another --out")
    rows: list[dict] = []
    for seed in range(args.seeds):
        rows.extend(run_seed(preset_dir, methods, seed, out, args.extra, args.scenario, args.forget_class))
        atomic_write_json(out / "results.json", rows)  # partial results survive an interruption
    summary = summarise(rows)
    atomic_write_json(out / "results.json", rows)
    keys = ["method", "seed", "scenario", "status", *METRICS, "seconds", "efficiency", "error"]
    with (out / "results.csv.tmp").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(out / "results.csv.tmp", out / "results.csv")
    table = markdown(summary, args.preset, args.seeds, args.scenario)
    atomic_write_bytes(out / "results.md", table.encode())
    print(table)
    return rows


if __name__ == "__main__":
    main()
