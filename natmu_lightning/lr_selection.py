"""Choosing NatMU's learning rate and δ without a Retrain: ``natmu-lightning-select-lr``.

    natmu-lightning-select-lr --config configs/digits/base.yaml --config configs/digits/natmu.yaml \\
        --out runs/select_lr [--grid 3e-4 1e-3 3e-3 1e-2 3e-2 1e-1] [--deltas -0.19 -0.053 0.045] \\
        [--validation-requests 2]

The paper's learning rate (1e-3 over ~2,000 steps) barely moves a model unlearned for a few
hundred steps, and the rate (and the hybrids' mask offset δ) that works depends on the
data, the model and the run length. A search against Retrain finds them, but a user who
brings their own model has no Retrain (avoiding one is the point). This command picks them
from the run's own config.

**Trials.** A trial is the configured unlearning fit, run through ``natmu-lightning fit``
with one (lr, δ), without a reference (Retrain or bank), without the config's callbacks and checkpoints
(nothing is written outside ``--out``), in this process (one device: a multi-process
strategy would re-run the whole command in every rank), on each of ``--validation-requests``
validation requests: the configured forget request drawn with data seed ``1000 + v`` (for a
random or hardest request another draw, which overlaps the served one by about the forget
ratio; a class or index request does not depend on the seed, so its trials unlearn the
served request itself, still without a Retrain).

**Score** (:func:`score`, lower is better): the paper's average gap (mean over forget,
remaining and test accuracy and the entropy MIA of the absolute difference to Retrain's
value, docs/design.md §3) with Retrain's values predicted from the original, whose metrics
each trial's ``unlearning_record.json`` holds (``metrics_before``): a Retrain never saw the
forget set, so its forget accuracy is the original's accuracy on unseen samples of the same
kind (``rf_forget_acc_target``: the test accuracy for a random request, 0 for whole
classes), its entropy MIA on the forget set is the original's on held-out test images
(``rf_mia_target``, ``natmu_lightning/metrics/reference_free.py``), and it fits the
remaining set and generalises as the original does (``remain_acc``, ``test_acc``). Unlike the evaluator's
``reference_free_gap``, whose targets move with the unlearned model, these targets are
fixed, so a rate that forgets by unfitting everything (remaining and test accuracy fall,
the MIA of a worse-fitted model drifts) scores badly.

**Search** (each step keeps the candidate with the lowest mean score over the requests):

1. every rate of ``--grid`` (half decades around the paper's 1e-3) at the config's δ;
2. every δ of ``--deltas`` (the δ values the paper publishes, docs/design.md §2.3) at that
   rate;
3. the rates a quarter decade either side of the kept one (``x 10**±0.25``), at the kept δ.

Cost: ``len(grid)`` + the ``--deltas`` other than the config's + 2 candidates, each fitted
once per validation request (20 unlearning fits of the configured length by default when
the config's δ is one of ``--deltas``). A candidate whose fit diverges (a non-finite loss)
on a request, or whose metrics are not finite, scores infinity and is never kept; when no
rate of the grid scores finitely the command stops with an error (``selection.json``
holds the trials).
It writes ``selected_lr.yaml``, a config fragment with the kept lr and δ to add after the
run's own configs (``--config DIR/selected_lr.yaml``), and ``selection.json`` (every fit's
numbers). How close the choice lands to a search against Retrain is measured in
``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from natmu_lightning.configs import newest_version
from natmu_lightning.data.contracts import training_stream
from natmu_lightning.io import atomic_write_json, json_ready

#: Rates tried first: half decades around the paper's 1e-3.
DEFAULT_GRID = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
#: δ values tried at the kept rate: those the paper publishes (docs/design.md §2.3).
DEFAULT_DELTAS = (-0.19, -0.053, 0.045)
#: The last step tries the kept rate times and divided by this (a quarter decade).
REFINE_FACTOR = 10**0.25
#: Data seed of validation request ``v``: away from the seeds runs use for their requests.
VALIDATION_SEED_OFFSET = 1000
#: The four metrics of the paper's average gap.
GAP_METRICS = ("forget_acc", "remain_acc", "test_acc", "mia_entropy")


def retrain_targets(original: dict[str, Any]) -> dict[str, float]:
    """Retrain's four metrics as predicted from the original's (see the module docstring).

    Example:
        >>> original = {"rf_forget_acc_target": 91.0, "remain_acc": 100.0, "test_acc": 91.0, "rf_mia_target": 65.0}
        >>> retrain_targets(original)
        {'forget_acc': 91.0, 'remain_acc': 100.0, 'test_acc': 91.0, 'mia_entropy': 65.0}
    """
    missing = {"rf_forget_acc_target", "remain_acc", "test_acc", "rf_mia_target"} - set(original)
    if missing:
        raise ValueError(f"the original's metrics lack {sorted(missing)}")
    read = lambda key: math.nan if original[key] is None else float(original[key])  # noqa: E731  (JSON null: nan)
    return {
        "forget_acc": read("rf_forget_acc_target"),
        "remain_acc": read("remain_acc"),
        "test_acc": read("test_acc"),
        "mia_entropy": read("rf_mia_target"),
    }


def score(metrics: dict[str, Any], original: dict[str, Any]) -> float:
    """The average gap of one fit to Retrain's metrics predicted from the original's;
    infinity where a metric is missing or not finite (a set too small to measure).

    Example:
        >>> original = {"rf_forget_acc_target": 91.0, "remain_acc": 100.0, "test_acc": 91.0, "rf_mia_target": 65.0}
        >>> score({"forget_acc": 93.0, "remain_acc": 98.0, "test_acc": 90.0, "mia_entropy": 70.0}, original)
        2.5
    """
    targets = retrain_targets(original)
    values = [math.nan if metrics.get(key) is None else float(metrics[key]) for key in GAP_METRICS]
    gap = sum(abs(value - targets[key]) for value, key in zip(values, GAP_METRICS)) / len(GAP_METRICS)
    return gap if math.isfinite(gap) else math.inf


def trial_args(config_args: Sequence[str], lr: float, delta: float, seed: int, folder: Path) -> list[str]:
    """The ``natmu-lightning fit`` arguments of one trial: the run's config, the rate, the δ,
    the validation request's data seed, no reference (neither Retrain nor a bank: a bank judges its
    own forget request, not a validation request), logs under ``folder``, no checkpoints."""
    return [
        "fit",
        *config_args,
        "--model.init_args.recipe.lr",
        repr(lr),
        "--data.natmu.delta",
        repr(delta),
        "--data.seed",
        str(seed),
        "--evaluator.reference_ckpt",
        "null",
        "--evaluator.reference_bank",
        "null",
        "--trainer.logger.init_args.save_dir",
        str(folder),
        "--trainer.logger.init_args.name",
        trial_name(lr, delta),
        "--trainer.callbacks=[]",  # no user ModelCheckpoint with a dirpath of its own
        "--trainer.enable_checkpointing=false",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
    ]


def trial_name(lr: float, delta: float) -> str:
    """A trial's log folder name.

    Example:
        >>> trial_name(0.01, -0.053)
        'lr_0.01_delta_-0.053'
    """
    return f"lr_{lr:g}_delta_{delta:g}"


def read_trial(run_folder: Path) -> dict[str, Any]:
    """The newest version's metrics and the original's (the record's ``metrics_before``)."""
    newest = newest_version(run_folder)
    if newest is None:
        raise FileNotFoundError(f"no run under {run_folder}")
    metrics = json.loads((newest / "unlearning_metrics.json").read_text())
    record = json.loads((newest / "unlearning_record.json").read_text())
    before = record.get("metrics_before")
    if not before:
        raise ValueError(f"{newest}: the record has no metrics of the original (metrics_before)")
    return {"metrics": metrics, "original": before}


def select(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """The (lr, δ) with the lowest mean score over its validation requests.

    Example:
        >>> select([{"lr": 0.01, "delta": -0.19, "score": 3.0}, {"lr": 0.01, "delta": -0.19, "score": 5.0},
        ...         {"lr": 0.1, "delta": -0.19, "score": 6.0}])
        {'lr': 0.01, 'delta': -0.19, 'score': 4.0}
    """
    by_candidate: dict[tuple[float, float], list[float]] = {}
    for trial in trials:
        by_candidate.setdefault((trial["lr"], trial["delta"]), []).append(trial["score"])
    # a candidate whose fit diverged on any validation request is out
    means = {key: sum(s) / len(s) for key, s in by_candidate.items() if all(map(math.isfinite, s))}
    if not means:
        raise ValueError("no candidate (lr, delta) finished with a finite score")
    lr, delta = min(means, key=lambda key: (means[key], key))
    return {"lr": lr, "delta": delta, "score": means[(lr, delta)]}


def config_delta(config_args: Sequence[str]) -> float:
    """The δ the run's configs set (parsing them also checks them before any trial runs).

    Raises:
        ValueError: the configs do not unlearn with NatMU's hybrid stream (there is no δ to
            choose), or they train on more than one process (every rank would re-run the search).
    """
    from natmu_lightning.cli import main

    cli = main(list(config_args), run=False)
    training_needs = getattr(cli.model, "training_needs", None)
    stream = training_stream(cli.datamodule.requested_stream, training_needs() if callable(training_needs) else None)
    if stream != "hybrid":
        raise ValueError(
            f"select-lr chooses NatMU's lr and delta, but these configs train {type(cli.model).__name__} on the "
            f"{stream!r} stream: compose a natmu.yaml fragment"
        )
    if cli.trainer.world_size > 1:
        raise ValueError(
            f"the configs train on {cli.trainer.world_size} processes; select-lr runs its trials in this process: "
            "run it with --trainer.devices 1"
        )
    return float(cli.datamodule.natmu.delta)


class _Trials:
    """Runs candidates on every validation request (each at most once) and keeps their rows."""

    def __init__(self, config_args: Sequence[str], out: Path, validation_requests: int) -> None:
        self.config_args, self.out, self.validation_requests = list(config_args), out, validation_requests
        self.rows: list[dict[str, Any]] = []

    def run(self, lr: float, delta: float) -> None:
        """Fit (lr, δ) on every validation request, unless that candidate ran already."""
        from natmu_lightning.cli import main

        if any(row["lr"] == lr and row["delta"] == delta for row in self.rows):
            return
        for request in range(self.validation_requests):
            seed = VALIDATION_SEED_OFFSET + request
            folder = self.out / "trials" / f"seed{seed}"
            label = f"lr {lr:g}, delta {delta:g}, validation seed {seed}"
            row: dict[str, Any] = {"lr": lr, "delta": delta, "seed": seed}
            try:
                main(trial_args(self.config_args, lr, delta, seed, folder))
            except FloatingPointError as error:  # the unlearning module's non-finite loss check
                self.rows.append({**row, "score": math.inf, "status": f"diverged: {error}"})
                print(f"{label}: diverged", flush=True)
                break  # out whatever the other requests score
            found = read_trial(folder / trial_name(lr, delta))
            row["score"] = score(found["metrics"], found["original"])
            row["status"] = "ok"
            row.update({key: found["metrics"][key] for key in (*GAP_METRICS, "reference_free_gap")})
            row["targets"] = retrain_targets(found["original"])
            self.rows.append(row)
            print(f"{label}: score {row['score']:.2f}", flush=True)

    def best(self, lrs: Sequence[float] | None = None, deltas: Sequence[float] | None = None) -> dict[str, Any]:
        """:func:`select` over the rows of the given rates and δs (all when ``None``)."""
        return select(
            [
                row
                for row in self.rows
                if (lrs is None or row["lr"] in lrs) and (deltas is None or row["delta"] in deltas)
            ]
        )


def run(
    config_args: Sequence[str],
    out: Path,
    grid: Sequence[float] = DEFAULT_GRID,
    deltas: Sequence[float] = DEFAULT_DELTAS,
    validation_requests: int = 2,
) -> dict:
    """The three search steps of the module docstring (``natmu_lightning.cli.main`` in this
    process); writes ``selection.json`` and ``selected_lr.yaml``."""
    own_delta = config_delta(config_args)
    trials = _Trials(config_args, out, validation_requests)
    for lr in grid:
        trials.run(lr, own_delta)
    if not any(math.isfinite(row["score"]) for row in trials.rows):
        atomic_write_json(out / "selection.json", json_ready({"config": list(config_args), "trials": trials.rows}))
        raise ValueError(f"no rate of the grid {list(grid)} gave a finite score ({out / 'selection.json'})")
    steps = [trials.best()]
    for delta in deltas:
        trials.run(steps[-1]["lr"], delta)
    steps.append(trials.best(lrs=[steps[-1]["lr"]]))
    for lr in (steps[-1]["lr"] / REFINE_FACTOR, steps[-1]["lr"] * REFINE_FACTOR):
        trials.run(float(f"{lr:.3g}"), steps[-1]["delta"])
    steps.append(trials.best(deltas=[steps[-1]["delta"]]))
    chosen = steps[-1]
    result = {
        "config": list(config_args),
        "grid": list(grid),
        "deltas": list(deltas),
        "config_delta": own_delta,
        "validation_requests": validation_requests,
        "steps": steps,
        "trials": trials.rows,
        **chosen,
    }
    atomic_write_json(out / "selection.json", json_ready(result))  # a diverged trial's inf -> null
    fragment = (
        f"# natmu-lightning-select-lr chose lr {chosen['lr']:g} and delta {chosen['delta']:g} (mean score "
        f"{chosen['score']:.2f} over {validation_requests} validation requests; {out / 'selection.json'})\n"
        f"model:\n  init_args:\n    recipe:\n      lr: {chosen['lr']!r}\n"
        f"data:\n  natmu:\n    delta: {chosen['delta']!r}\n"
    )
    (out / "selected_lr.yaml").write_text(fragment)
    return result


def entry_point(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="natmu-lightning-select-lr", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", action="append", required=True, help="the run's configs, in order (repeat)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the trials and the selection")
    parser.add_argument("--grid", type=float, nargs="+", default=list(DEFAULT_GRID), help="rates of step 1")
    parser.add_argument(
        "--deltas", type=float, nargs="*", default=list(DEFAULT_DELTAS), help="δs of step 2 (none: keep the config's)"
    )
    parser.add_argument("--validation-requests", type=int, default=2)
    args = parser.parse_args(argv)
    if args.validation_requests < 1 or not all(math.isfinite(lr) and lr > 0 for lr in args.grid):
        parser.error("--validation-requests must be >= 1 and every --grid rate a finite number > 0")
    if any(not -1.0 <= delta <= 1.0 for delta in args.deltas):
        parser.error("every --deltas value must lie in [-1, 1]")
    if (args.out / "selection.json").exists():
        parser.error(f"{args.out / 'selection.json'} exists: choose another --out")
    config_args = [arg for path in args.config for arg in ("--config", path)]
    try:
        result = run(config_args, args.out, args.grid, args.deltas, args.validation_requests)
    except ValueError as error:  # a bad config or no finite score
        parser.exit(2, f"natmu-lightning-select-lr: error: {error}\n")
    chosen = f"lr {result['lr']:g}, delta {result['delta']:g}"
    print(f"selected {chosen}: add --config {args.out / 'selected_lr.yaml'} to the fit")
