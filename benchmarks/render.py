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
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python benchmarks/render.py` works too
from benchmarks.quality import bank_table, markdown, summarise  # noqa: E402

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


def quality_table(raw: list[dict]) -> str:
    """The table and rank-agreement line of ``benchmarks.quality``'s ``results.md``, drawn from
    its ``results.json`` (one row per method and seed)."""
    (rows,) = raw
    text = markdown(summarise(rows), "", 0, rows=rows)
    start = text.index("| method |")
    end = text.index("\n\nHyperparameters:")
    return text[start:end] + "\n"


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
    "gpu_vgg16": Table(
        ("gpu_results/h200_run1.json", "gpu_results/h200_run2.json", "gpu_results/h200_run3.json"), gpu_vgg16_table
    ),
    "quality_digits_random10": Table(("results/cpu/quality_digits_random10.json",), quality_table),
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
