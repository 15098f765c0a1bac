"""Quality benchmark: Original, Retrain and every method on the same forget set, over seeds.

    python benchmarks/quality.py --preset digits --seeds 3 --out runs/quality \
        [--scenario random10] [--search [--search-seeds K]] [--resume]

For each seed ``s`` it runs, through the real CLI and the shipped configs of the preset
(``configs/<preset folder>/``): the original model, Retrain (same initial weights), then
every unlearning method config in that folder on the same forget set (``data.seed = s``)
and the same original checkpoint, each evaluated against that seed's Retrain. It writes
``results.json`` (one row per method and seed), ``results.csv`` and ``results.md``
(mean ± std over seeds, run-time efficiency = Retrain time / method time, and the Spearman
rank correlation between the reference-free gap and the gap to Retrain over runs and over
methods). A method that fails is reported as failed, not dropped.

Presets: ``digits`` (configs/digits, minutes on a CPU), ``cifar10-small``
(configs/cifar10_small: a 5,000-image subset of the offline CIFAR-10 JPEG copy and a
width-8 ResNet-18, about half an hour on 2 CPU cores) and ``cifar10-vgg16``
(configs/cifar10_vgg16: the paper's full recipe, for a GPU; CIFAR-10 in torchvision's
layout under ``--data-root``).

Scenarios (``--scenario``): ``random10`` (the configs' own 10% class-balanced request),
``random1`` (1%), ``class`` (every sample of class ``--forget-class``) and ``hardest10``
(the 10% of training samples with the highest loss under that seed's original model,
resolved once from the original checkpoint and passed to every run as explicit indices;
the original itself is then re-evaluated on that set) and ``sequential`` (three deletion
requests of 3.3% in a row on each method's own result, compared with one Retrain on their
union and with the method unlearning the union at once: ``benchmarks/sequential.py``).

``--bank K`` first builds, per seed, a bank of K Retrains of that seed's forget request
(``seed<N>/bank``, ``natmu-lightning-bank``: members of seeds 1000 onwards, resumable) and
evaluates every run against it: ``results.md`` then adds a table of the per-example metrics
(``bank_forget_outside``, ...; docs/bank.md). Not for ``hardest10`` or ``sequential``.

Hyperparameters are the configs' own unless ``--search`` is given. The search runs
first, on VALIDATION forget sets distinct from every reported one: the forget request
drawn with ``data.seed = --search-seed`` (its own original and Retrain, in
``search/seed<N>``), or for ``class`` the class after ``--forget-class``. With
``--search-seeds K`` it uses K such sets (seeds ``--search-seed`` onwards; for ``class``
the K classes after ``--forget-class``, each with the next seed) and scores every candidate by its gap averaged
over them: one small validation set is a noisy judge. For every method with a learning
rate it tries the config's lr times 1, 0.3, 3, 0.1 and 10 (and up to two more steps of 3
past the edge while the best sits on it), then walks the best lr by half steps of 3
while the gap falls. For NatMU it then alternates the deltas of ``SEARCH_DELTAS`` at the
chosen lr and the lr walk at the chosen delta until neither moves (at most two rounds).
Every step keeps the candidate with the lowest average gap to the validation Retrains.
The reported seeds then run with the kept values; no reported number takes part in any
choice. ``search.json`` holds every candidate.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python benchmarks/quality.py` from anywhere

import numpy as np  # noqa: E402

from benchmarks.runs import BANK_METRICS, METRICS, PRESET_NAMES, SCENARIOS, config_value, make_presets, run_seed  # noqa: E402
from benchmarks.search import search, validation_sets  # noqa: E402
from benchmarks.sequential import run_sequential_seed  # noqa: E402
from natmu_lightning.io import atomic_write_bytes, atomic_write_json  # noqa: E402
from natmu_lightning.report import TABLE_COLUMNS, QualityRow  # noqa: E402


def summarise(rows: list[dict]) -> list[dict]:
    summary = []
    for method in dict.fromkeys(r["method"] for r in rows):
        ok = [r for r in rows if r["method"] == method and r.get("status") == "ok"]
        entry: dict = {"method": method, "runs": len(ok), "failed": sum(r["method"] == method for r in rows) - len(ok)}
        entry["collapsed"] = sum(bool(r.get("collapsed")) for r in ok)
        for key in (*METRICS, *BANK_METRICS, "seconds", "efficiency"):
            values = [r[key] for r in ok if r.get(key) is not None and not math.isnan(r[key])]
            if values:
                entry[key] = (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0)
        summary.append(entry)
    return summary


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); ``nan`` under 3 pairs or a constant side."""
    if len(a) != len(b) or len(a) < 3:
        return float("nan")
    ranks = [_average_ranks(np.asarray(v, dtype=float)) for v in (a, b)]
    if ranks[0].std() == 0 or ranks[1].std() == 0:
        return float("nan")
    return float(np.corrcoef(ranks[0], ranks[1])[0, 1])


def _average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    for value in np.unique(values):  # ties share their mean rank
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def rank_agreement(summary: list[dict], rows: list[dict]) -> str:
    """How well the reference-free gap ranks runs and methods the way the gap to Retrain does."""
    runs = [
        r
        for r in rows
        if r.get("status") == "ok"
        and not r.get("collapsed")
        and r["method"] != "retrain"
        and _finite(r.get("avg_gap"))
        and _finite(r.get("reference_free_gap"))
    ]
    means = [
        e
        for e in summary
        if e["method"] != "retrain" and not e.get("collapsed") and "avg_gap" in e and "reference_free_gap" in e
    ]
    pooled = spearman([r["avg_gap"] for r in runs], [r["reference_free_gap"] for r in runs])
    by_method = spearman([e["avg_gap"][0] for e in means], [e["reference_free_gap"][0] for e in means])
    return (
        f"Reference-free gap (no Retrain needed) against the gap to Retrain, Spearman rank correlation: "
        f"{pooled:.2f} over {len(runs)} runs (every method and seed but Retrain and collapsed runs), "
        f"{by_method:.2f} over the {len(means)} methods' means (a method with a collapsed run left out)."
    )


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


QUALITY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("forget_acc", "FA"),
    ("remain_acc", "RA"),
    ("test_acc", "TA"),
    ("mia_entropy", "MIA (entropy)"),
    ("avg_gap", "avg gap"),
    ("kl_to_reference", "KL(Retrain‖·) on D_f"),
    ("js_to_reference", "JS on D_f"),
    ("reference_free_gap", "ref.-free gap"),
    ("seconds", "seconds"),
    ("efficiency", "efficiency"),
)


def table_lines(summary: list[dict], columns: Sequence[tuple[str, str]] = QUALITY_COLUMNS) -> list[str]:
    """The quality table of :func:`summarise`'s entries: run, failure and collapse counts, then mean ± std
    per column (``–`` where a method has none)."""
    lines = [
        "| method | runs | failed | collapsed | " + " | ".join(label for _, label in columns) + " |",
        "|---" * (4 + len(columns)) + "|",
    ]
    for entry in summary:
        cells = []
        for key, _ in columns:
            if key in entry:
                mean, std = entry[key]
                cells.append(
                    f"{mean:.3f} ± {std:.3f}"
                    if key in ("kl_to_reference", "js_to_reference")
                    else f"{mean:.2f} ± {std:.2f}"
                )
            else:
                cells.append("–")
        name = f"{entry['method']} (collapsed)" if entry.get("collapsed") else entry["method"]
        counts = f"{entry['runs']} | {entry['failed']} | {entry.get('collapsed', 0)}"
        lines.append(f"| {name} | {counts} | " + " | ".join(cells) + " |")
    return lines


def markdown(
    summary: list[dict],
    preset: str,
    seeds: int,
    scenario: str = "random10",
    selection: dict | None = None,
    rows: list[dict] | None = None,
) -> str:
    lines = [
        f"# Quality: preset `{preset}`, scenario `{scenario}`, {seeds} seed(s)",
        "",
        "Mean ± std over seeds; gaps and divergences are to each seed's Retrain. "
        "Efficiency = Retrain time / method time. `collapsed`: runs whose test or remaining accuracy fell "
        "below 80% of the original's, or whose metrics are not finite (unlearning_metrics.json "
        "`collapse_reason`); such runs are left out of the rank correlation, and a method with one is marked and "
        "its mean left out of it.",
        "",
        *table_lines(summary),
        "",
        rank_agreement(summary, rows or []),
    ]
    if any("bank_forget_outside" in entry for entry in summary):
        lines += ["", *bank_table(summary)]
    if selection is None:
        lines += ["", "Hyperparameters: each config's own (no search)."]
    else:
        lines += [
            "",
            f"Hyperparameters selected by average gap on validation forget sets ({selection['validation']}), "
            "never on the reported sets (candidates in search.json):",
            "",
        ]
        for method, params in selection["selected"].items():
            chosen = ", ".join(f"{k} = {v:g}" for k, v in params.items()) or "the config's own (nothing to search)"
            lines.append(f"- {method}: {chosen}")
    return "\n".join(lines) + "\n"


def bank_table(summary: list[dict]) -> list[str]:
    """Per example against each seed's bank of Retrains (``--bank``): mean ± std over seeds."""
    columns = [
        ("bank_forget_outside", "forget outside %"),
        ("bank_forget_divergence", "forget mean abs z"),
        ("bank_forget_shift", "forget mean z"),
        ("bank_remain_outside", "remain outside %"),
        ("bank_test_outside", "test outside %"),
        ("bank_test_shift", "test mean z"),
    ]
    lines = [
        "Per example against each seed's bank of Retrains (every forget sample's logit confidence on its label "
        "against the members' 95% Student-t predictive interval; remain and test: seeded slices of at most 1000, "
        "controls). A model drawn like a Retrain has about 5% outside and mean z near 0.",
        "",
        "| method | " + " | ".join(label for _, label in columns) + " |",
        "|---" * (1 + len(columns)) + "|",
    ]
    for entry in summary:
        cells = [f"{entry[key][0]:.2f} ± {entry[key][1]:.2f}" if key in entry else "–" for key, _ in columns]
        name = f"{entry['method']} (collapsed)" if entry.get("collapsed") else entry["method"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def write_rows(rows: list[QualityRow], out: Path, name: str) -> None:
    """``name.json`` (every field) and ``name.csv`` (the table's fields)."""
    atomic_write_json(out / f"{name}.json", rows)
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=TABLE_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows({**row, "params": json.dumps(row.get("params", {}))} for row in rows)
    atomic_write_bytes(out / f"{name}.csv", table.getvalue().encode())


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=PRESET_NAMES, default="digits")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--scenario", choices=SCENARIOS, default="random10")
    parser.add_argument("--forget-class", type=int, default=0, help="the class forgotten by --scenario class")
    parser.add_argument("--methods", default=None, help="comma-separated config names (default: every method config)")
    parser.add_argument(
        "--search", action="store_true", help="select lr (and NatMU's delta) on validation forget sets first"
    )
    parser.add_argument(
        "--search-seed", type=int, default=100, help="seed of the (first) validation forget set and its models"
    )
    parser.add_argument(
        "--search-seeds",
        type=int,
        default=1,
        help="validation forget sets (seeds --search-seed, --search-seed + 1, ...); a candidate's "
        "score is its gap averaged over them",
    )
    parser.add_argument(
        "--data-root", type=Path, default=Path("data"), help="CIFAR-10 folder of the cifar10-vgg16 preset"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted command with the same --out and arguments: a run whose folder "
        "already holds its final metrics (same config, seed, lr and delta) is read, not fitted again",
    )
    parser.add_argument(
        "--bank",
        type=int,
        default=0,
        metavar="K",
        help="build a bank of K Retrains per seed (in seed<N>/bank, resumable) and evaluate every run against it",
    )
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="CLI overrides passed to every run")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    if args.search and args.scenario in ("hardest10", "sequential"):
        parser.error(
            f"--search is not available for {args.scenario}: select on random10 and pass the values with --extra"
        )
    if args.bank and (args.bank < 2 or args.scenario in ("hardest10", "sequential")):
        parser.error(f"--bank needs at least 2 members and a random10, random1 or class scenario, got {args.bank}")
    if args.search_seeds < 1:
        parser.error(f"--search-seeds must be >= 1, got {args.search_seeds}")
    if args.search_seeds > 1 and not args.search:
        parser.error("--search-seeds needs --search")
    search_seeds = range(args.search_seed, args.search_seed + args.search_seeds)
    if args.search and set(search_seeds) & set(range(args.seeds)):
        parser.error(
            f"--search-seed {args.search_seed} with --search-seeds {args.search_seeds} (validation seeds "
            f"{search_seeds[0]}..{search_seeds[-1]}) overlaps the reported seeds 0..{args.seeds - 1}"
        )
    preset = make_presets(args.data_root)[args.preset]
    num_classes = (
        config_value(
            preset.config("original", args.scenario), "model", "init_args", "backbone", "init_args", "num_classes"
        )
        or 10
    )
    if args.search and args.scenario == "class" and args.search_seeds >= num_classes:
        parser.error(
            f"--search-seeds {args.search_seeds}: the class scenario validates on the other classes, "
            f"at most {num_classes - 1}"
        )
    methods = args.methods.split(",") if args.methods else preset.methods(args.scenario)
    out = args.out.resolve()
    if (out / "results.json").exists() and not args.resume:
        parser.error(f"{out} already holds results; pick another --out (or --resume an interrupted command)")
    if args.resume and args.scenario == "sequential":
        parser.error("--resume is not available for the sequential scenario")
    extra = [*preset.data_args, *args.extra]

    selection = None
    if args.search:
        validations = validation_sets(
            args.search_seed, args.search_seeds, args.forget_class, num_classes, out / "search"
        )
        selected, candidates = search(preset, methods, validations, extra, args.scenario, args.resume)
        seeds = ", ".join(str(v.seed) for v in validations)
        what = (
            f"class {', '.join(str(v.forget_class) for v in validations)}"
            if args.scenario == "class"
            else f"data.seed = {seeds}"
        )
        averaged = f"; gaps averaged over the {len(validations)} sets" if len(validations) > 1 else ""
        plural = "s" if len(validations) > 1 else ""
        selection = {"validation": f"{what}, models trained with seed{plural} {seeds}{averaged}", "selected": selected}
        write_rows(candidates, out, "search")
        atomic_write_json(out / "selection.json", selection)

    rows: list[dict] = []
    for seed in range(args.seeds):
        params = selection["selected"] if selection else None
        if args.scenario == "sequential":
            rows.extend(run_sequential_seed(preset, methods, seed, out / f"seed{seed}", extra, params))
        else:
            rows.extend(
                run_seed(
                    preset,
                    methods,
                    seed,
                    out / f"seed{seed}",
                    extra,
                    args.scenario,
                    args.forget_class,
                    params,
                    args.resume,
                    args.bank,
                )
            )
        atomic_write_json(out / "results.json", rows)  # partial results survive an interruption
    write_rows(rows, out, "results")
    table = markdown(summarise(rows), args.preset, args.seeds, args.scenario, selection, rows)
    atomic_write_bytes(out / "results.md", table.encode())
    print(table)
    return rows


if __name__ == "__main__":
    main()
