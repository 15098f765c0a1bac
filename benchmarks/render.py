"""The tables of ``benchmarks/RESULTS.md`` rendered from their raw files, or checked against them.

    python -m benchmarks.render            # rewrite every rendered table of RESULTS.md
    python -m benchmarks.render --check    # exit 1, naming the table, when one differs

A rendered table sits in RESULTS.md between ``<!-- render: NAME -->`` and ``<!-- /render -->``;
``NAME`` is a key of :data:`TABLES`, which says which raw file under ``benchmarks/`` it comes from
and how it is drawn. ``--results PATH`` checks or rewrites another copy of the file.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python benchmarks/render.py` works too
from benchmarks import paper  # noqa: E402
from benchmarks.quality import QUALITY_COLUMNS, bank_table, rank_agreement, summarise, table_lines  # noqa: E402
from benchmarks.selection_proxy import search_rows, select  # noqa: E402
from natmu_lightning.metrics.functional import collapse_reason  # noqa: E402
from natmu_lightning.metrics.names import current_names  # noqa: E402

BENCHMARKS = Path(__file__).resolve().parent
RESULTS = BENCHMARKS / "RESULTS.md"
BLOCK = re.compile(r"(<!-- render: (?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /render -->)", re.DOTALL)


@dataclass(frozen=True)
class Table:
    """One rendered table: its raw files (relative to ``benchmarks/``) and how it is drawn."""

    raw: tuple[str, ...]
    draw: Callable[[list[dict]], str]


def step_overhead_table(raw: list[dict]) -> str:
    """Host time per training step, before and after the cuts, at widths 32 and 4
    (``step_overhead.json`` of ``benchmarks.step_overhead``: before, after, before and after at width 4)."""
    before, after, before_w4, after_w4 = raw
    lines = [
        "| width | stream | bare | plain | ours before | ours after | ours / bare, before -> after "
        "| ours - plain, before -> after |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    names = {"full": "full (Original)", "remain": "remain (FT)", "hybrid": "hybrid (NatMU)"}
    for width, old, new, label in ((32, before, after, names), (4, before_w4, after_w4, None)):
        for stream in ("full", "remain", "hybrid"):
            o, n = old["streams"][stream], new["streams"][stream]
            lines.append(
                f"| {width} | {label[stream] if label else stream} "
                f"| {o['bare_ms']:.2f} / {n['bare_ms']:.2f} "
                f"| {o['plain_lightning_ms']:.2f} / {n['plain_lightning_ms']:.2f} "
                f"| {o['lightning_ms']:.2f} | {n['lightning_ms']:.2f} "
                f"| {o['lightning_over_bare']:.2f} -> {n['lightning_over_bare']:.2f} "
                f"| {o['lightning_ms'] - o['plain_lightning_ms']:.2f} -> "
                f"{n['lightning_ms'] - n['plain_lightning_ms']:.2f} ms |"
            )
    return "\n".join(lines) + "\n"


def step_overhead_runs_table(raw: list[dict]) -> str:
    """Host time per training step, one row per run and stream, with the target judged
    (``step_overhead.json`` of ``benchmarks.step_overhead``, any number of runs)."""
    lines = [
        "| run | width | stream | bare | plain | ours | ours / bare | plain / bare | (ours - plain) / bare | target |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for number, run in enumerate(raw, 1):
        for stream in ("full", "remain", "hybrid"):
            row = run["streams"][stream]
            lines.append(
                f"| {number} | {run['width'] or 'preset'} | {stream} | {row['bare_ms']:.2f} "
                f"| {row['plain_lightning_ms']:.2f} | {row['lightning_ms']:.2f} | {row['lightning_over_bare']:.2f} "
                f"| {row['floor_over_bare']:.2f} | {row['our_part_over_bare']:.2f} "
                f"| {'met' if row['target_met'] else '**not met**'} |"
            )
    return "\n".join(lines) + "\n"


def quality_table(raw: list[dict]) -> str:
    """The table and rank-agreement line of ``benchmarks.quality``'s ``results.md`` (without its
    per-example table when the run had a bank), drawn from its ``results.json`` (one row per
    method and seed)."""
    (rows,) = raw
    summary = summarise(rows)
    return "\n".join([*table_lines(summary), "", rank_agreement(summary, rows)]) + "\n"


def early_quality_table(raw: list[dict]) -> str:
    """A quality table of ``results.json`` rows written before 2026-12 (re-run at the commit that
    made the published table). Their remaining accuracy is named ``retain_acc``; they carry no
    collapse flag, so each unlearning run is flagged here by the evaluator's own rule
    (:func:`~natmu_lightning.metrics.functional.collapse_reason`) against its seed's original row;
    the columns are those the rows have, and the rank agreement line follows when they have the
    reference-free gap."""
    (rows,) = raw
    rows = [current_names(row) for row in rows]
    originals = {row["seed"]: row for row in rows if row["method"] == "original"}
    for row in rows:
        if "collapsed" not in row and row["method"] not in ("original", "retrain") and row.get("status") == "ok":
            row["collapsed"] = collapse_reason(row, originals.get(row["seed"])) is not None
    summary = summarise(rows)
    columns = [column for column in QUALITY_COLUMNS if any(column[0] in entry for entry in summary)]
    lines = table_lines(summary, columns)
    if any("reference_free_gap" in row for row in rows):
        lines += ["", rank_agreement(summary, rows)]
    return "\n".join(lines) + "\n"


def quality_bank_table(raw: list[dict]) -> str:
    """The per-example table against each seed's bank of Retrains (``benchmarks.quality --bank``),
    drawn from its ``results.json``."""
    (rows,) = raw
    lines = bank_table(summarise(rows))
    return "\n".join(lines[lines.index("") + 1 :]) + "\n"  # the table, without its preamble


def gpu_vgg16_table(raw: list[dict]) -> str:
    """VGG-16 step, stream and evaluation timings of ``benchmarks/gpu_check.py``'s three H200 runs
    (the ``vgg16`` phase of each run's JSON)."""
    runs = [run["vgg16"] for run in raw]

    def ms(seconds: float) -> str:
        return f"{1000 * seconds:.1f} ms"

    def compiled(run: dict) -> str:
        found = run.get("compiled_bf16-mixed")
        return (
            "not run"
            if found is None
            else f"{ms(found['natmu_seconds_per_step'])} ({found['speedup_over_eager']:.2f}x)"
        )

    def hooks(run: dict) -> str:
        found = run["stream"].get("main_thread_ms_per_batch")
        return "" if found is None else f"{found['natmu']:.2f} / {found['ft']:.2f} ms"

    rows: list[tuple[str, Callable[[dict], str]]] = [
        ("NatMU step, `32-true`", lambda r: ms(r["32-true"]["natmu_seconds_per_step"])),
        ("FT step (remaining stream, crop + flip), `32-true`", lambda r: ms(r["32-true"]["ft_seconds_per_step"])),
        ("NatMU step / FT step, `32-true`", lambda r: f"{r['32-true']['natmu_step_over_ft_step']:.2f}"),
        ("NatMU step / FT step, `bf16-mixed`", lambda r: f"{r['bf16-mixed']['natmu_step_over_ft_step']:.2f}"),
        ("NatMU step, `bf16-mixed`", lambda r: ms(r["bf16-mixed"]["natmu_seconds_per_step"])),
        ("NatMU step, `bf16-mixed` + `torch.compile` (inductor)", compiled),
        (
            "training stream, loader alone (index, gather, collate, pin)",
            lambda r: f"{r['stream']['loader_images_per_s']:,.0f} img/s",
        ),
        (
            "training stream to the GPU (+ copy, mixing, augmentation)",
            lambda r: f"{r['stream']['loader_to_device_images_per_s']:,.0f} img/s",
        ),
        (
            "stream to the GPU / model's `bf16-mixed` rate",
            lambda r: f"{r['stream']['loader_to_device_over_bf16_model_rate']:.1f}x",
        ),
        ("main-thread time per batch of the transfer hooks, NatMU / FT", hooks),
        (
            "one evaluation during training (60,000 images, accuracies + entropy MIA)",
            lambda r: f"{r['evaluation']['seconds']['during_training']:.2f} s",
        ),
        (
            "final evaluation (adds the SVC and loss attacks, on the CPU)",
            lambda r: f"{r['evaluation']['seconds']['final']:.1f} s",
        ),
        (
            "evaluation during training / one NatMU epoch (`32-true`)",
            lambda r: f"{r['evaluation']['eval_fraction_32_true']:.3f}",
        ),
    ]
    lines = ["| figure | run 1 | run 2 | run 3 |", "|---|---|---|---|"]
    for label, cell in rows:
        cells = [cell(run) for run in runs]
        lines.append(f"| {label} |" + "".join(f" {value} |" if value else " |" for value in cells))
    return "\n".join(lines) + "\n"


ACCURACY_KEYS = ("forget_acc", "retain_acc", "test_acc", "mia_entropy")


def gpu_correctness_table(raw: list[dict]) -> str:
    """The correctness checks of ``benchmarks/gpu_check.py``'s runs 1 and 2 (the ``digits``,
    ``methods`` and ``ddp`` phases of each run's JSON); a check a run did not make says so."""

    def missing(index: int) -> str:
        return f"(not in run {index + 1})"

    def largest_difference(run: dict, index: int) -> str:
        gpu, cpu = run["digits"]["natmu_gpu"], run["digits"]["natmu_cpu"]
        differences = {key: abs(gpu[key] - cpu[key]) for key in gpu}
        key = max(differences, key=differences.__getitem__)
        unit = "nats" if key == "kl_to_reference" else "points"
        text = f"{differences[key]:.2g} {unit} in `{key}`"
        others = [f"`{name}` {differences[name]:.2f}" for name in ACCURACY_KEYS if name != key and differences[name]]
        if others:
            return text + "; also " + ", ".join(others)
        return text + ("; every accuracy and the MIA equal" if key not in ACCURACY_KEYS else "")

    def methods(run: dict, index: int) -> str:
        results = {name: found for name, found in run["methods"].items() if isinstance(found, dict) and "ok" in found}
        failed = [
            name
            for name, found in results.items()
            if not found["ok"] or not all(math.isfinite(found[key]) for key in ACCURACY_KEYS)
        ]
        return f"all {len(results)} finish, finite metrics" if not failed else "failed: " + ", ".join(failed)

    def diverging(run: dict, index: int) -> str:
        found = run["methods"].get("diverging_run")
        if found is None:
            return missing(index)
        return f'stopped ("{found["stopped"].split(";")[0]}"), {found["checkpoints_written"]} checkpoints written'

    def synchronise(run: dict, index: int) -> str:
        found = run["vgg16"]["stream"].get("transfer_hooks_synchronise")
        return missing(index) if found is None else ("synchronises" if found else "no synchronisation")

    def ddp(run: dict, index: int) -> str:
        found = run.get("ddp")
        return missing(index) if found is None else f"skipped: {found['skipped']}" if "skipped" in found else "ran"

    def flag(section: str, key: str, yes: str, no: str) -> Callable[[dict, int], str]:
        return lambda run, index: yes if run[section][key] else no

    def both_identical(run: dict, index: int) -> str:
        digits = run["digits"]
        return "identical" if digits["forget_set_identical"] and digits["hybrid_plan_identical"] else "differ"

    rows: list[tuple[str, Callable[[dict, int], str]]] = [
        ("digits NatMU on the GPU vs on the CPU, same checkpoints: forget set, hybrid plan", both_identical),
        ("same: largest metric difference", largest_difference),
        (
            "same: Retrain reference evaluated on the GPU vs the CPU",
            flag("digits", "reference_identical", "identical", "not identical"),
        ),
        (
            "re-run of the finished GPU fit (`fit --ckpt_path last`, evaluated in `on_fit_end` after teardown) "
            "= CPU `validate` of its checkpoint",
            flag("digits", "rerun_after_teardown_equals_cpu_validate", "yes, key for key", "no"),
        ),
        ("NatMU and the 9 baselines, digits configs, 1 epoch in `16-mixed`", methods),
        ("a diverging run (lr 1e12)", diverging),
        (
            "`on_before_batch_transfer` + copy + `on_after_batch_transfer` under "
            '`torch.cuda.set_sync_debug_mode("error")`',
            synchronise,
        ),
        ("DDP over all visible GPUs", ddp),
    ]
    lines = ["| check | run 1 | run 2 |", "|---|---|---|"]
    for label, cell in rows:
        lines.append(f"| {label} |" + "".join(f" {cell(run, index)} |" for index, run in enumerate(raw)))
    return "\n".join(lines) + "\n"


def gpu_bf16_table(raw: list[dict]) -> str:
    """NatMU on ``cifar10-small`` in each precision (the ``bf16`` phase of ``gpu_check.py``'s run 1)."""
    (run,) = raw
    lines = [
        "| NatMU | FA | RA | TA | MIA | avg gap | KL to Retrain | wall time |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for precision in ("32-true", "bf16-mixed"):
        m = run["bf16"][f"natmu_{precision}"]
        lines.append(
            f"| `{precision}` | {m['forget_acc']:.2f} | {m['retain_acc']:.2f} | {m['test_acc']:.2f} "
            f"| {m['mia_entropy']:.1f} | {m['avg_gap']:.2f} | {m['kl_to_reference']:.3f} "
            f"| {run['bf16']['seconds'][f'natmu_{precision}']:.1f} s |"
        )
    return "\n".join(lines) + "\n"


def paper_table(raw: list[dict]) -> str:
    """``benchmarks.paper``'s ``paper.json``: the paper's Retrain and every finished run
    (:func:`benchmarks.paper.table`), then each run a time limit or a failure left unfinished,
    with the last epoch and step its logger wrote."""
    (run,) = raw
    lines = [paper.table(run)]
    ended = run.get("stopped") or run.get("failed") or {}
    for name, progress in ended.get("running", {}).items():
        where = (
            "nothing logged" if progress.get("epoch") is None else f"epoch {progress['epoch']}, step {progress['step']}"
        )
        lines.append(f"| {name}: unfinished ({where}) | | | | | | {progress['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def gpu_fast_table(raw: list[dict]) -> str:
    """``benchmarks.gpu_fast``'s ``gpu_fast.json``: one row per variant of each run."""
    lines = [
        "| device | variant | ms per step | speed-up over `32-true` | fit, compilation included |",
        "|---|---|---:|---:|---:|",
    ]
    for run in raw:
        for name, row in run["variants"].items():
            if "error" in row:
                lines.append(f"| {run['device']} | `{name}` | failed: {row['error'][:100]} | | |")
                continue
            speedup = f"{row['speedup']:.2f}x" if "speedup" in row else ""
            lines.append(
                f"| {run['device']} | `{name}` | {1000 * row['seconds_per_step']:.2f} | {speedup} "
                f"| {row['fit_seconds']:.1f} s |"
            )
    return "\n".join(lines) + "\n"


def speed_table(raw: list[dict]) -> str:
    """One row per preset of ``benchmarks/speed.py``'s ``speed.json``."""
    lines = [
        "| preset | hybrid step ratio | `loader_images_per_s` | `data_path_speedup` | NatMU / Retrain wall time "
        "| evaluation during training | NatMU epoch | `eval_fraction` | final evaluation (whole sets, every attack) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in raw:
        seconds = run["seconds"]
        lines.append(
            f"| `{run['preset']}` | {run['hybrid_step_ratio']:.2f} | {run['loader_images_per_s']:,.0f} "
            f"| {run['data_path_speedup']:.1f}x "
            f"| {run['unlearn_vs_retrain_time']:.3f} ({run['retrain_epochs']}-epoch Retrain) "
            f"| {seconds['evaluation']:.3f} s (first {seconds['first_evaluation']:.3f} s) "
            f"| {seconds['natmu'] / run['unlearn_epochs']:.2f} s | {run['eval_fraction']:.3f} "
            f"| {seconds['final_evaluation']:.2f} s |"
        )
    return "\n".join(lines) + "\n"


def memory_table(raw: list[dict]) -> str:
    """The rows of ``benchmarks/memory.py``'s ``memory.json``."""
    (rows,) = raw
    lines = [
        "| path | training images | workers | peak memory (MiB) | images/s | load (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        path = "on disk" if row["path"] == "on_disk" else "in memory"
        lines.append(
            f"| {path} | {row['images']:,} | {row['num_workers']} | {row['peak_rss_mib']:,.0f} "
            f"| {row['images_per_s']:,.0f} | {row['load_s']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def selection_replay_table(raw: list[dict]) -> str:
    """The Retrain-free scores' picks of ``benchmarks/selection_proxy.py`` over a ``--search`` run's
    NatMU candidates (its ``search.json``)."""
    (data,) = raw
    result = select(search_rows(data), "natmu")

    def params(key: str) -> str:
        return ", ".join(f"{name} {value:g}" for name, value in json.loads(key).items())

    searched = result["searched_gap"]
    lines = [
        f"| score (lower is better) | selected | its true gap | vs the searched {searched:.2f} "
        "| one validation set alone |",
        "|---|---|---|---|---|",
        f"| average gap to Retrain (the search) | {params(result['searched'])} | {searched:.2f} | 1.00x | – |",
    ]
    labels = {
        "reference_free": "reference-free gap",
        "reference_free+test_drop": "reference-free gap + test accuracy lost against the original",
    }
    for name, label in labels.items():
        entry = result[name]
        alone = ", ".join(f"{each['ratio']:.2f}x" for each in entry["each_seed"])
        lines.append(
            f"| {label} | {params(entry['selected'])} | {entry['gap']:.2f} | {entry['ratio']:.2f}x | {alone} |"
        )
    return "\n".join(lines) + "\n"


def mean_of(values: list[float]) -> float:
    """The mean of ``values``; nan when there are none."""
    return sum(values) / len(values) if values else math.nan


def search_selection_table(raw: list) -> str:
    """What a ``--search`` run selected per method and each choice's validation gap (averaged over
    its validation sets), best first: its ``selection.json`` and ``search.json``."""
    selection, search = raw
    gaps: dict[tuple[str, str], list[float]] = {}
    for row in search_rows(search):
        if row.get("status") == "ok" and row.get("avg_gap") is not None:
            gaps.setdefault((row["method"], json.dumps(row["params"], sort_keys=True)), []).append(row["avg_gap"])
    entries: list[tuple[float, str]] = []
    for method, params in selection["selected"].items():
        if not params:
            entries.append((math.inf, f"| {method} | as shipped (nothing to search) | – | – |"))
            continue
        gap = mean_of(gaps.get((method, json.dumps(params, sort_keys=True)), []))
        delta = f"{params['delta']:g}" if "delta" in params else "as shipped"
        entries.append((gap, f"| {method} | {params['lr']:.3g} | {delta} | {gap:.2f} |"))
    entries.sort(key=lambda entry: entry[0])
    header = ["| method | selected lr | δ | mean validation gap |", "|---|---|---|---|"]
    return "\n".join([*header, *(line for _, line in entries)]) + "\n"


#: The presets of the memorisation table: the data and model behind each raw file, in order.
PRESET_SETUPS = (
    (
        "digits",
        "scikit-learn digits (1,257 train / 540 test, 8x8 grey) with fixed per-image Gaussian pixel noise, "
        "std 0.25 of the pixel range (`Digits(noise_std=0.25)`), SmallCNN, SGD lr 0.05 step schedule, 100 epochs",
    ),
    (
        "cifar10-small",
        "500 train and 200 test images per class of the offline CIFAR-10 JPEG copy (5,000 / 2,000, 32x32 RGB), "
        "ResNet-18 at width 8 (176k parameters), no augmentation, SGD lr 0.05 cosine, 20 epochs",
    ),
)


def memorisation_table(raw: list[list[dict]]) -> str:
    """Whether each preset's original memorises (remaining accuracy at least 99, and a Retrain
    that never saw the forget set gets clearly less of it right), from the original and Retrain
    rows of one quality run per preset (:data:`PRESET_SETUPS`), averaged over its seeds."""
    lines = [
        "| preset | data and model | seeds | original RA | original TA | original FA | Retrain FA | memorises |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (preset, setup), rows in zip(PRESET_SETUPS, raw, strict=True):
        rows = [current_names(row) for row in rows]
        originals = [row for row in rows if row["method"] == "original"]
        remain, test, forget = (
            mean_of([row[key] for row in originals]) for key in ("remain_acc", "test_acc", "forget_acc")
        )
        retrain_forget = mean_of([row["forget_acc"] for row in rows if row["method"] == "retrain"])
        memorises = remain >= 99.0 and forget - retrain_forget >= 5.0
        lines.append(
            f"| `{preset}` | {setup} | {len(originals)} | {remain:.2f} | {test:.2f} "
            f"| {forget:.2f} | {retrain_forget:.2f} | {'**yes**' if memorises else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def select_lr_table(raw: list[dict]) -> str:
    """NatMU with what ``natmu-lightning-select-lr`` chose on each seed's original against the
    quality run's NatMU (``benchmarks/select_lr.py``'s ``select_lr.json``, one per preset)."""
    lines = [
        "| preset | selected (lr, δ), seeds 0 / 1 / 2 | NatMU gap to Retrain with it | mean | "
        "the quality run's NatMU (lr, δ): gaps | mean | ratio | selection time per seed |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def gap(row: dict) -> str:
        return "failed" if row.get("status") != "ok" else f"{row['avg_gap']:.2f}"

    for run in raw:
        seeds = run["seeds"]
        selected = " / ".join(f"({entry['selected']['lr']:.3g}, {entry['selected']['delta']:g})" for entry in seeds)
        ours = [entry["natmu"]["avg_gap"] for entry in seeds if entry["natmu"].get("status") == "ok"]
        theirs = [entry["quality_natmu"]["avg_gap"] for entry in seeds if entry["quality_natmu"].get("status") == "ok"]
        params = {(entry["quality_params"]["lr"], entry["quality_params"]["delta"]) for entry in seeds}
        their_params = " / ".join(f"({lr:.3g}, {delta:g})" for lr, delta in sorted(params))
        seconds = mean_of([entry["selection_seconds"] for entry in seeds])
        lines.append(
            f"| `{run['preset']}` | {selected} | {' / '.join(gap(entry['natmu']) for entry in seeds)} "
            f"| {mean_of(ours):.2f} | {their_params}: {' / '.join(gap(entry['quality_natmu']) for entry in seeds)} "
            f"| {mean_of(theirs):.2f} | **{mean_of(ours) / mean_of(theirs):.2f}x** | {seconds / 60:.1f} min |"
        )
    return "\n".join(lines) + "\n"


TABLES: dict[str, Table] = {
    "step_overhead": Table(
        (
            "results/cpu/step_overhead_before.json",
            "results/cpu/step_overhead_after.json",
            "results/cpu/step_overhead_before_w4.json",
            "results/cpu/step_overhead_after_w4.json",
        ),
        step_overhead_table,
    ),
    "step_overhead_second_host": Table(
        (
            "results/cpu/step_overhead_second_host_1.json",
            "results/cpu/step_overhead_second_host_2.json",
            "results/cpu/step_overhead_second_host_3.json",
            "results/cpu/step_overhead_second_host_4.json",
            "results/cpu/step_overhead_second_host_w4_1.json",
            "results/cpu/step_overhead_second_host_w4_2.json",
        ),
        step_overhead_runs_table,
    ),
    "gpu_correctness": Table(("results/gpu/h200_run1.json", "results/gpu/h200_run2.json"), gpu_correctness_table),
    "gpu_bf16": Table(("results/gpu/h200_run1.json",), gpu_bf16_table),
    "gpu_vgg16": Table(
        ("results/gpu/h200_run1.json", "results/gpu/h200_run2.json", "results/gpu/h200_run3.json"), gpu_vgg16_table
    ),
    "speed": Table(
        (
            "results/cpu/speed_digits.json",
            "results/cpu/speed_cifar10_small.json",
            "results/cpu/speed_cifar10_small_retrain100.json",
        ),
        speed_table,
    ),
    "memory": Table(("results/cpu/memory.json",), memory_table),
    "quality_digits_random10_recipes": Table(
        ("results/cpu/quality_digits_random10_recipes.json",), early_quality_table
    ),
    "quality_digits_class3_recipes": Table(("results/cpu/quality_digits_class3_recipes.json",), early_quality_table),
    "quality_digits_hardest10_recipes": Table(
        ("results/cpu/quality_digits_hardest10_recipes.json",), early_quality_table
    ),
    "quality_digits_random1_recipes": Table(("results/cpu/quality_digits_random1_recipes.json",), early_quality_table),
    "quality_digits_sequential": Table(("results/cpu/quality_digits_sequential.json",), early_quality_table),
    "quality_digits_random10": Table(("results/cpu/quality_digits_random10.json",), quality_table),
    "quality_digits_search3_second_host": Table(
        ("results/cpu/quality_digits_search3_second_host/results.json",), quality_table
    ),
    "search_selection_digits_second_host": Table(
        (
            "results/cpu/quality_digits_search3_second_host/selection.json",
            "results/cpu/quality_digits_search3_second_host/search.json",
        ),
        search_selection_table,
    ),
    "quality_cifar10_small_search_second_host": Table(
        ("results/cpu/quality_cifar10_small_search_second_host/results.json",), quality_table
    ),
    "search_selection_cifar10_small_second_host": Table(
        (
            "results/cpu/quality_cifar10_small_search_second_host/selection.json",
            "results/cpu/quality_cifar10_small_search_second_host/search.json",
        ),
        search_selection_table,
    ),
    "quality_cifar10_small_random10_bank16": Table(
        ("results/cpu/quality_cifar10_small_random10_bank16.json",), quality_table
    ),
    "quality_cifar10_small_random10_bank_per_example": Table(
        ("results/cpu/quality_cifar10_small_random10_bank16.json",), quality_bank_table
    ),
    "memorisation": Table(
        ("results/cpu/quality_digits_random10.json", "results/cpu/quality_cifar10_small_random10_bank16.json"),
        memorisation_table,
    ),
    "selection_replay_digits_second_host": Table(
        ("results/cpu/selection_replay_digits_second_host.json",), selection_replay_table
    ),
    "select_lr": Table(
        ("results/cpu/select_lr_digits.json", "results/cpu/select_lr_cifar10_small.json"), select_lr_table
    ),
    "quality_digits_random10_bank_per_example": Table(
        ("results/cpu/quality_digits_random10_bank16.json",), quality_bank_table
    ),
}


def render(text: str) -> tuple[str, list[str]]:
    """``text`` with every rendered table drawn anew from its raw files, and the names of those
    that differed.

    Raises:
        ValueError: a block names a table :data:`TABLES` does not have.
    """
    changed: list[str] = []

    def redraw(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in TABLES:
            raise ValueError(f"RESULTS.md renders a table {name!r} that benchmarks/render.py does not know")
        table = TABLES[name]
        body = table.draw([json.loads((BENCHMARKS / path).read_text()) for path in table.raw])
        if body != match["body"]:
            changed.append(name)
        return match.group(1) + body + match.group(4)

    return BLOCK.sub(redraw, text), changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.render", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when a table differs")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the results file (default: RESULTS.md)")
    args = parser.parse_args(argv)
    text = args.results.read_text()
    rendered, changed = render(text)
    found = [match["name"] for match in BLOCK.finditer(text)]
    if args.check:
        for name in changed:
            print(f"{args.results}: table {name!r} differs from its raw files ({', '.join(TABLES[name].raw)})")
        print(f"{len(found) - len(changed)} of {len(found)} rendered tables match their raw files")
        return 1 if changed else 0
    if changed:
        args.results.write_text(rendered)
    print(f"rendered {len(found)} tables; rewrote {', '.join(changed) or 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
