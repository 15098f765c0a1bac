"""Choosing NatMU's learning rate without a Retrain: ``natmu-lightning-select-lr``.

    natmu-lightning-select-lr --config configs/digits/base.yaml --config configs/digits/natmu.yaml \\
        --out runs/select_lr [--grid 3e-4 1e-3 3e-3 1e-2 3e-2 1e-1] [--validation-requests 2]

The paper's learning rate (1e-3 over ~2,000 steps) barely moves a model unlearned for a few
hundred steps, and the rate that works depends on the data, the model and the run length.
A search against Retrain finds it, but a user who brings their own model has no Retrain
(avoiding one is the point). This command picks the rate from the run's own config:

1. for every rate of ``--grid`` and every validation request ``v`` (the configured forget
   request drawn with data seed ``1000 + v``: for a random or hardest request another draw,
   which overlaps the served one by about the forget ratio; a class or index request does
   not depend on the seed, so its trials unlearn the served request itself, still without a
   Retrain), it runs the configured unlearning fit through ``natmu-lightning fit`` without a
   reference, without the config's callbacks and checkpoints (nothing is written outside
   ``--out``), in this process (one device: a multi-process strategy would re-run the whole
   command in every rank);
2. it scores each fit by the reference-free gap (``reference_free_gap``: the forget
   accuracy against the test accuracy, the entropy MIA on the forget set against held-out
   test images; ``natmu_lightning/metrics/reference_free.py``) plus the test accuracy lost
   against the original (``max(0, original test_acc - test_acc)``, the original's from the
   run's ``unlearning_record.json``): the reference-free targets alone cannot see a model
   that forgot everything, the test accuracy can;
3. it keeps the rate with the lowest mean score and writes ``selected_lr.yaml``, a config
   fragment to add after the run's own (``--config DIR/selected_lr.yaml``), and
   ``selection.json`` (every fit's numbers).

The score was chosen on a replay of the digits search (``benchmarks/selection_proxy.py``,
``benchmarks/RESULTS.md``); how close its choice lands to the searched one is measured there.
Cost: ``len(grid) x validation_requests`` unlearning fits of the configured length. A rate
whose fit diverges (a non-finite loss) scores infinity and is never selected.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from natmu_lightning.io import atomic_write_json, json_ready

#: Rates tried by default: half-decades around the paper's 1e-3.
DEFAULT_GRID = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
#: Data seed of validation request ``v``: away from the seeds runs use for their requests.
VALIDATION_SEED_OFFSET = 1000


def score(metrics: dict[str, Any], original_test_acc: float) -> float:
    """The selection score of one fit (lower is better).

    Example:
        >>> score({"reference_free_gap": 2.0, "test_acc": 90.0}, original_test_acc=93.5)
        5.5
        >>> score({"reference_free_gap": 2.0, "test_acc": 95.0}, original_test_acc=93.5)
        2.0
    """
    return float(metrics["reference_free_gap"]) + max(0.0, original_test_acc - float(metrics["test_acc"]))


def trial_args(config_args: Sequence[str], lr: float, seed: int, folder: Path) -> list[str]:
    """The ``natmu-lightning fit`` arguments of one trial: the run's config, the rate, the
    validation request's data seed, no reference, logs and checkpoints under ``folder``."""
    return [
        "fit",
        *config_args,
        "--model.init_args.recipe.lr",
        repr(lr),
        "--data.seed",
        str(seed),
        "--evaluator.reference_ckpt",
        "null",
        "--trainer.logger.init_args.save_dir",
        str(folder),
        "--trainer.logger.init_args.name",
        f"lr_{lr:g}",
        "--trainer.callbacks=[]",  # no user ModelCheckpoint with a dirpath of its own
        "--trainer.enable_checkpointing=false",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
    ]


def read_trial(run_folder: Path) -> dict[str, Any]:
    """The newest version's metrics and the original's test accuracy of a finished trial."""
    versions = sorted(run_folder.glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    if not versions:
        raise FileNotFoundError(f"no run under {run_folder}")
    metrics = json.loads((versions[-1] / "unlearning_metrics.json").read_text())
    record = json.loads((versions[-1] / "unlearning_record.json").read_text())
    before = record.get("metrics_before") or {}
    if "test_acc" not in before:
        raise ValueError(f"{versions[-1]}: the record has no metrics of the original (metrics_before)")
    return {"metrics": metrics, "original_test_acc": float(before["test_acc"])}


def select(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """The rate with the lowest mean score over its validation requests, and every rate's mean.

    Example:
        >>> select([{"lr": 0.01, "score": 3.0}, {"lr": 0.01, "score": 5.0}, {"lr": 0.1, "score": 6.0}])
        {'lr': 0.01, 'score': 4.0, 'mean_scores': {'0.01': 4.0, '0.1': 6.0}}
    """
    by_lr: dict[float, list[float]] = {}
    for trial in trials:
        by_lr.setdefault(trial["lr"], []).append(trial["score"])
    # a rate whose fit diverged on any validation request is out
    means = {lr: sum(scores) / len(scores) for lr, scores in by_lr.items() if all(map(math.isfinite, scores))}
    if not means:
        raise ValueError("no learning rate finished with a finite score")
    best = min(means, key=lambda lr: (means[lr], lr))
    return {"lr": best, "score": means[best], "mean_scores": {f"{lr:g}": mean for lr, mean in means.items()}}


def run(
    config_args: Sequence[str], out: Path, grid: Sequence[float] = DEFAULT_GRID, validation_requests: int = 2
) -> dict:
    """Run every trial (``natmu_lightning.cli.main`` in this process), select, write the files."""
    from natmu_lightning.cli import main

    trials = []
    for request in range(validation_requests):
        seed = VALIDATION_SEED_OFFSET + request
        folder = out / "trials" / f"seed{seed}"
        for lr in grid:
            try:
                main(trial_args(config_args, lr, seed, folder))
            except FloatingPointError as error:  # the unlearning module's non-finite loss check
                trials.append({"lr": lr, "seed": seed, "score": math.inf, "status": f"diverged: {error}"})
                print(f"lr {lr:g}, validation seed {seed}: diverged", flush=True)
                continue
            found = read_trial(folder / f"lr_{lr:g}")
            trials.append(
                {
                    "lr": lr,
                    "seed": seed,
                    "score": score(found["metrics"], found["original_test_acc"]),
                    "status": "ok",
                    "original_test_acc": found["original_test_acc"],
                    **{key: found["metrics"][key] for key in ("forget_acc", "test_acc", "reference_free_gap")},
                }
            )
            print(f"lr {lr:g}, validation seed {seed}: score {trials[-1]['score']:.2f}", flush=True)
    chosen = select(trials)
    result = {
        "config": list(config_args),
        "grid": list(grid),
        "validation_requests": validation_requests,
        "trials": trials,
        **chosen,
    }
    atomic_write_json(out / "selection.json", json_ready(result))  # a diverged trial's inf -> null
    fragment = (
        f"# natmu-lightning-select-lr chose lr {chosen['lr']:g} (mean score {chosen['score']:.2f} over "
        f"{validation_requests} validation requests; {out / 'selection.json'})\n"
        f"model:\n  init_args:\n    recipe:\n      lr: {chosen['lr']!r}\n"
    )
    (out / "selected_lr.yaml").write_text(fragment)
    return result


def entry_point(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="natmu-lightning-select-lr", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", action="append", required=True, help="the run's configs, in order (repeat)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the trials and the selection")
    parser.add_argument("--grid", type=float, nargs="+", default=list(DEFAULT_GRID))
    parser.add_argument("--validation-requests", type=int, default=2)
    args = parser.parse_args(argv)
    if args.validation_requests < 1 or any(lr <= 0 for lr in args.grid):
        parser.error("--validation-requests must be >= 1 and every --grid rate > 0")
    if (args.out / "selection.json").exists():
        parser.error(f"{args.out / 'selection.json'} exists: choose another --out")
    config_args = [arg for path in args.config for arg in ("--config", path)]
    result = run(config_args, args.out, args.grid, args.validation_requests)
    print(f"selected lr {result['lr']:g}: add --config {args.out / 'selected_lr.yaml'} to the fit")
