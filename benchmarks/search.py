"""The quality benchmark's hyperparameter search on validation forget requests (``--search``).

Every candidate is a fit through :mod:`benchmarks.runs`, on validation requests distinct from
every reported one; see :func:`search` and the constants below.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks import runs as fits  # called through the module, so tests can stand in for a fit
from benchmarks.runs import QualityPreset

#: NatMU's delta candidates: the paper's random-forgetting extremes (CIFAR-10 -0.19,
#: TinyImageNet +0.045) and its class recipe (-0.053), then three steps above the
#: paper's range, because on cifar10-small the validation optimum sat on +0.045, the
#: old grid's edge (benchmarks/RESULTS.md).
SEARCH_DELTAS = (-0.19, -0.053, 0.045, 0.075, 0.1, 0.15)
#: Learning-rate candidates, as factors of each config's own lr (tried in this order).
SEARCH_LR_FACTORS = (1.0, 0.3, 3.0, 0.1, 10.0)
#: When a method's best lr is the largest (smallest) tried, the search goes on beyond it
#: by this factor, at most SEARCH_LR_EDGE_STEPS times: an optimum on the grid's edge says
#: the grid stopped too early, and every method gets the same chance to leave it.
SEARCH_LR_EDGE_FACTOR = 3.0
SEARCH_LR_EDGE_STEPS = 2
#: After the grid, every method's lr walks in half steps of 3 (x 3**±0.5) while its gap
#: falls, at most this many steps: a grid of whole steps of 3 can straddle the optimum
#: (on cifar10-small at delta 0.045, NatMU's validation gap at lr 5e-3 was under half
#: its gap at 3e-3 or 1e-2).
SEARCH_LR_WALK_STEPS = 3
#: NatMU's lr and delta interact (a larger delta wants a larger lr), so the search
#: alternates the delta grid and the lr walk until neither moves, at most this many rounds.
SEARCH_NATMU_ROUNDS = 2


@dataclass(frozen=True)
class ValidationSet:
    """One validation forget request of the search: its seed (data and models), the folder
    of its original and Retrain, and the class that ``--scenario class`` forgets."""

    seed: int
    workdir: Path
    forget_class: int


def validation_sets(seed: int, count: int, forget_class: int, num_classes: int, out: Path) -> list[ValidationSet]:
    """``count`` validation requests: seeds ``seed``, ``seed + 1``, ...; for ``class``, the
    classes after ``forget_class`` in turn (never ``forget_class`` itself)."""
    return [
        ValidationSet(seed + i, out / f"seed{seed + i}", (forget_class + 1 + i) % num_classes) for i in range(count)
    ]


def search(
    preset: QualityPreset,
    methods: list[str],
    validations: list[ValidationSet],
    extra: list[str],
    scenario: str,
    resume: bool = False,
) -> tuple[dict, list[dict]]:
    """Select each method's lr (and NatMU's delta) by average gap on validation forget sets.

    A candidate's score is its average gap to Retrain, averaged over ``validations``
    (each with its own original and Retrain). The lr grid grows past its edge while the
    best candidate sits there (``lr_factor_beyond_edge``); the best lr then walks by half
    steps (``_walk_lr``). NatMU alternates its delta grid with that walk.
    Returns the selected parameters per method and one row per run (``resume``: see ``run_one``).
    """
    rows: list[dict] = []
    for validation in validations:
        runs = fits.run_seed(
            preset, [], validation.seed, validation.workdir, extra, scenario, validation.forget_class, resume=resume
        )
        rows.extend(runs)
        if any(row["status"] != "ok" for row in runs):
            raise RuntimeError(
                f"the validation original/Retrain of seed {validation.seed} failed: {runs[-1].get('error')}"
            )
    selected: dict = {}
    best_of = lambda method, grid: _best_candidate(preset, method, grid, validations, extra, scenario, rows, resume)  # noqa: E731
    for method in methods:
        try:
            config = preset.config(method, scenario)
        except FileNotFoundError:  # no such method in the setting: reported as failed when run
            selected[method] = {}
            continue
        lr = fits.config_value(config, *fits.LR_KEYS)
        if lr is None:  # no optimiser (SSD) or no such config: run as shipped
            selected[method] = {}
            continue
        factors = list(SEARCH_LR_FACTORS)
        while True:
            index, best = best_of(method, [{"lr": _round_lr(lr * factor)} for factor in factors])
            beyond = lr_factor_beyond_edge(factors, factors[index])
            if beyond is None:
                break
            factors.append(beyond)
        best = _walk_lr(best_of, method, best)
        if method == "natmu":
            config_delta = fits.config_value(config, *fits.DELTA_KEYS)
            for _ in range(SEARCH_NATMU_ROUNDS):
                previous = best
                deltas = [d for d in SEARCH_DELTAS if d != best.get("delta", config_delta)]
                _, best = best_of(method, [best] + [_with_delta(best, d, config_delta) for d in deltas])
                best = _walk_lr(best_of, method, best)
                if best == previous:
                    break
        selected[method] = best
    return selected, rows


def _round_lr(lr: float) -> float:
    """Three significant digits, so that the same lr reached two ways is one candidate."""
    return float(f"{lr:.3g}")


def _with_delta(params: dict, delta: float, config_delta: float | None) -> dict:
    """``params`` at ``delta``; the config's own delta is left implicit, as in the first runs."""
    others = {k: v for k, v in params.items() if k != "delta"}
    return others if delta == config_delta else {**others, "delta": delta}


def _walk_lr(best_of: Callable[[str, list[dict]], tuple[int, dict]], method: str, best: dict) -> dict:
    """Move ``best``'s lr by half steps of 3 while that lowers the gap (at most ``SEARCH_LR_WALK_STEPS``).

    ``best_of(method, grid)`` scores a grid (``_best_candidate``). The first step tries
    both directions; later steps go on in the direction taken, the other side being
    known worse.
    """
    factors = [3**-0.5, 3**0.5]
    for _ in range(SEARCH_LR_WALK_STEPS):
        index, step = best_of(method, [best] + [{**best, "lr": _round_lr(best["lr"] * f)} for f in factors])
        if index == 0:
            break
        factors = [factors[index - 1]]
        best = step
    return best


def lr_factor_beyond_edge(factors: list[float], chosen: float) -> float | None:
    """The next lr factor to try when ``chosen`` is the largest or smallest of ``factors``.

    None when ``chosen`` lies inside the grid or the grid already holds
    ``SEARCH_LR_EDGE_STEPS`` extensions.
    """
    if len(factors) >= len(SEARCH_LR_FACTORS) + SEARCH_LR_EDGE_STEPS:
        return None
    if chosen == max(factors):
        return chosen * SEARCH_LR_EDGE_FACTOR
    if chosen == min(factors):
        return chosen / SEARCH_LR_EDGE_FACTOR
    return None


def _best_candidate(
    preset: QualityPreset,
    method: str,
    grid: list[dict],
    validations: list[ValidationSet],
    extra: list[str],
    scenario: str,
    rows: list[dict],
    resume: bool,
) -> tuple[int, dict]:
    """Run each candidate of ``grid`` on every validation set where it has not run yet; keep the lowest mean gap.

    Each run gets its own folder beside that validation set's checkpoints. Returns the
    best candidate's index in ``grid`` and the parameters it ran with: a candidate whose
    lr is within 1% of a run's (the half-step walk and the grid of 0.3, 3, 10 land near
    each other) is that run. A candidate that fails on any validation set scores inf.
    """
    gaps, ran = [], []
    for params in grid:
        runs = [
            _validation_run(preset, method, params, validation, extra, scenario, rows, resume)
            for validation in validations
        ]
        ran.append(runs[0]["params"])
        ok = all(r["status"] == "ok" and r.get("avg_gap") is not None for r in runs)
        gaps.append(statistics.fmean(r["avg_gap"] for r in runs) if ok else math.inf)
    index = int(np.argmin(gaps))
    return index, ran[index]


def _validation_run(
    preset: QualityPreset,
    method: str,
    params: dict,
    validation: ValidationSet,
    extra: list[str],
    scenario: str,
    rows: list[dict],
    resume: bool,
) -> dict:
    """The row of ``method`` with ``params`` on ``validation``: one in ``rows``, or a new run added to them."""
    mine = [r for r in rows if r["method"] == method and r["seed"] == validation.seed]
    done = [r for r in mine if _same_params(r["params"], params)]
    if done:
        return done[0]
    folder = validation.workdir / f"{method}_{len(mine)}"
    _link_checkpoints(preset.config(method, scenario), validation.workdir, folder)
    row = {"method": method, "seed": validation.seed, "scenario": scenario, "params": params}
    rows.append(
        fits.run_one(
            preset.config(method, scenario),
            row,
            folder,
            extra + fits.scenario_overrides(scenario, validation.forget_class),
            resume,
        )
    )
    return row


def _same_params(a: dict, b: dict) -> bool:
    """Equal parameters, the lr up to 1%."""
    if a.keys() != b.keys():
        return False
    return all(math.isclose(a[k], b[k], rel_tol=0.01) if k == "lr" else a[k] == b[k] for k in a)


def _link_checkpoints(config: list[Path], source: Path, folder: Path) -> None:
    """Make the original and Retrain checkpoints that ``config`` names visible from ``folder``."""
    for path in (
        fits.config_value(config, "model", "init_args", "original_ckpt"),
        fits.config_value(config, "evaluator", "reference_ckpt"),
    ):
        if path:
            link = folder / path
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to((source / path).resolve())
