"""``natmu-lightning-report RESULTS_DIR``: a Markdown report with figures from a quality run.

Reads ``results.json`` and ``results.md`` written by ``benchmarks/quality.py`` (and each
run's log dir named in the rows) and writes into RESULTS_DIR:

- ``report.md``: the results table and the figures below;
- ``entropy.png``: entropy of the forget set against the test set, per method, with
  Retrain's forget-set distribution for comparison (what the entropy MIA sees);
- ``forget_acc.png``: forget accuracy per epoch, per method, with Retrain's level;
- ``hybrids.png``: NatMU's hybrids (forgetting image, remaining image, hybrid and its
  label) for each mask.

Needs matplotlib (``pip install -e ".[report]"``).
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, TypedDict

import numpy as np

from natmu_lightning.io import atomic_write_bytes

RESULT_METRICS = (
    "forget_acc",
    "remain_acc",
    "test_acc",
    "mia_entropy",
    "avg_gap",
    "kl_to_reference",
    "js_to_reference",
    "reference_free_gap",
)
"""The evaluator's numbers a quality run keeps per fit (``unlearning_metrics.json`` keys)."""


class QualityRow(TypedDict, total=False):
    """One fit of ``benchmarks/quality.py``: a row of its ``results.json``, what this report reads.

    ``method`` is a config name (``original``, ``retrain``, ``natmu``, ...); ``params`` the
    searched hyperparameters it ran with (``{"lr": ..., "delta": ...}``, empty when shipped);
    the :data:`RESULT_METRICS` are in percent (divergences in nats); ``seconds`` is the fit's
    wall time and ``efficiency`` Retrain's over it; ``log_dir`` the run's Lightning log dir;
    a failed fit has ``error`` and ``traceback`` instead of metrics. A run read back by
    ``--resume`` has ``resumed``.
    """

    method: str
    seed: int
    scenario: str
    status: Literal["ok", "failed"]
    params: dict[str, float]
    forget_acc: float
    remain_acc: float
    test_acc: float
    mia_entropy: float
    avg_gap: float
    kl_to_reference: float
    js_to_reference: float
    reference_free_gap: float
    collapsed: bool
    collapse_reason: str | None
    seconds: float
    efficiency: float
    log_dir: str
    error: str
    traceback: str
    resumed: bool


TABLE_COLUMNS = (
    "method",
    "seed",
    "scenario",
    "status",
    "params",
    *RESULT_METRICS,
    "collapsed",
    "collapse_reason",
    "seconds",
    "efficiency",
    "error",
)
"""The columns of ``results.csv``."""

ENTROPY_FLOOR = 1e-7  # lowest left edge of a log entropy axis (float32 softmax entropies reach 0)
LOG_AXIS_BELOW = 0.05  # log entropy axis when the median entropy is under this fraction of the largest
CURVE_MARKERS = "osD^vP*Xh<>p"  # one shape per method on the forget-accuracy figure
MASK_NAMES = ("M1 centre band (rows)", "M2 centre band (cols)", "M3 top/bottom", "M4 left/right")


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise SystemExit("natmu-lightning-report needs matplotlib: pip install -e '.[report]'") from error
    return plt


def _first_seed_runs(rows: list[QualityRow], results_dir: Path) -> dict[str, Path]:
    """Log dir of each method's first successful run (lowest seed)."""
    runs: dict[str, Path] = {}
    for row in sorted(rows, key=lambda r: r["seed"]):
        if row.get("status") == "ok" and row.get("log_dir") and row["method"] not in runs:
            runs[row["method"]] = _log_dir(row, results_dir)
    return runs


def _log_dir(row: QualityRow, results_dir: Path) -> Path:
    """The run's recorded log dir, or the same folder under ``results_dir`` when the results were moved.

    ``quality.py`` records absolute paths under ``<out>/seed<N>/``; a missing folder is
    reported, and the figures go on without that method.
    """
    recorded = Path(row["log_dir"])
    if recorded.is_dir():
        return recorded
    parts = recorded.parts
    anchor = f"seed{row['seed']}"
    if anchor in parts:
        last = len(parts) - 1 - parts[::-1].index(anchor)
        moved = results_dir.joinpath(*parts[last:])
        if moved.is_dir():
            return moved
    print(f"warning: {row['method']}: log folder {recorded} not found; its figures are left out")
    return recorded


def entropy_bins(entropies: np.ndarray, count: int = 40) -> tuple[np.ndarray, bool]:
    """Histogram bin edges for output entropies, and whether they are log-spaced.

    A model that memorises puts most entropies within decades of 0, which a linear axis
    shows as one spike. When the median is under ``LOG_AXIS_BELOW`` of the largest value,
    the edges are log-spaced from the 1st percentile (at least ``ENTROPY_FLOOR``); values
    outside the edges are meant to be clipped into the end bins.

    >>> edges, log_axis = entropy_bins(np.array([0.5, 1.0, 1.5, 2.0]), count=4)
    >>> log_axis, edges.tolist()
    (False, [0.0, 0.5, 1.0, 1.5, 2.0])
    >>> edges, log_axis = entropy_bins(np.array([1e-5, 1e-4, 1e-3, 1e-2, 1.0]), count=4)
    >>> log_axis, bool(np.allclose(edges[1:] / edges[:-1], edges[1] / edges[0]))
    (True, True)
    """
    top = max(float(entropies.max()), 1e-3)
    if float(np.median(entropies)) < LOG_AXIS_BELOW * top:
        return np.geomspace(max(ENTROPY_FLOOR, float(np.percentile(entropies, 1))), top, count + 1), True
    return np.linspace(0.0, top, count + 1), False


def entropy_figure(runs: dict[str, Path], path: Path) -> Path | None:
    plt = _pyplot()
    outputs = {
        m: np.load(d / "evaluation_outputs.npz") for m, d in runs.items() if (d / "evaluation_outputs.npz").is_file()
    }
    methods = [m for m in outputs if m != "original"] or list(outputs)
    if not methods:
        return None
    reference = outputs.get("retrain")
    cols = min(4, len(methods))
    rows = -(-len(methods) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False, sharex=True)
    bins, log_axis = entropy_bins(
        np.concatenate([o[k] for o in outputs.values() for k in ("test_entropy", "forget_entropy")])
    )

    def hist(ax, values: np.ndarray, **kwargs) -> None:
        ax.hist(
            np.clip(values, bins[0], bins[-1]),
            bins=bins,
            weights=np.full(len(values), 1.0 / max(len(values), 1)),
            **kwargs,
        )

    for ax, method in zip(axes.flat, methods):
        hist(ax, outputs[method]["test_entropy"], alpha=0.5, label="test (non-member)")
        hist(ax, outputs[method]["forget_entropy"], alpha=0.5, label="forget set")
        if reference is not None:
            hist(
                ax,
                reference["forget_entropy"],
                histtype="step",
                color="black",
                linewidth=1.5,
                label="Retrain on forget set",
            )
        if log_axis:
            ax.set_xscale("log")
        ax.set_title(method)
        ax.set_xlabel("entropy of the softmax (nats" + (", log axis)" if log_axis else ")"))
        ax.set_ylabel("fraction of samples")
    for ax in list(axes.flat)[len(methods) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    title = "Output entropy: forget set vs test set (the entropy MIA's feature)"
    fig.suptitle(title + (f"; entropies below {bins[0]:.0e} are counted in the first bin" if log_axis else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def forget_curve_figure(runs: dict[str, Path], rows: list[QualityRow], path: Path) -> Path | None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 4.5))
    plotted = 0
    for method, log_dir in runs.items():
        if method in ("original", "retrain") or not (log_dir / "metrics.csv").is_file():
            continue
        with open(log_dir / "metrics.csv", newline="") as handle:
            points = [
                (int(r["epoch"]) + 1, float(r["forget/acc"])) for r in csv.DictReader(handle) if r.get("forget/acc")
            ]
        if points:
            # Methods often share a value (every one at 100% before it forgets): hollow markers,
            # each of its own shape and a little smaller than the last, keep coinciding curves visible.
            ax.plot(
                *zip(*points),
                marker=CURVE_MARKERS[plotted % len(CURVE_MARKERS)],
                markersize=max(4.0, 12.0 - 0.8 * plotted),
                markerfacecolor="none",
                label=method,
            )
            plotted += 1
    retrain = [
        r["forget_acc"]
        for r in rows
        if r["method"] == "retrain" and r.get("status") == "ok" and r["seed"] == min(x["seed"] for x in rows)
    ]
    if retrain:
        ax.axhline(retrain[0], color="black", linestyle="--", label="Retrain")
    if not plotted:
        plt.close(fig)
        return None
    ax.set_xlabel("epoch")
    ax.xaxis.get_major_locator().set_params(integer=True)  # epochs, not fractions of one
    ax.set_ylabel("forget accuracy (%)")
    ax.set_title("Forget accuracy during unlearning (target: Retrain's level)")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))  # outside: never over a curve
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def hybrid_figure(examples_path: Path, path: Path, samples: int = 2) -> Path | None:
    if not examples_path.is_file():
        return None
    plt = _pyplot()
    ex = np.load(examples_path)
    classes = list(ex["classes"])
    samples = min(samples, ex["hybrid"].shape[0])
    k = ex["hybrid"].shape[1]
    fig, axes = plt.subplots(samples * 3, k, figsize=(2.2 * k, 2.2 * 3 * samples), squeeze=False)

    def show(ax, image, title):
        image = np.transpose(image, (1, 2, 0))
        ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray" if image.shape[-1] == 1 else None)
        ax.set_title(title, fontsize=8)
        ax.axis("off")

    for s in range(samples):
        for j in range(k):
            label, own, mask = int(ex["label"][s, j]), int(ex["forget_label"][s, j]), int(ex["mask_id"][s, j])
            show(axes[3 * s, j], ex["forget"][s, j], f"forget: {classes[own]}")
            show(axes[3 * s + 1, j], ex["remain"][s, j], f"remaining: {classes[label]}")
            show(axes[3 * s + 2, j], ex["hybrid"][s, j], f"hybrid -> {classes[label]}\n{MASK_NAMES[mask]}")
    fig.suptitle(f"NatMU hybrids (delta = {float(ex['delta']):+.3f}); one column per mask")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(results_dir: Path) -> Path:
    """Write ``report.md`` and its figures into ``results_dir``; return the report's path."""
    rows: list[QualityRow] = json.loads((results_dir / "results.json").read_text())
    runs = _first_seed_runs(rows, results_dir)
    figures = []
    for title, made in (
        ("Entropy of the outputs", entropy_figure(runs, results_dir / "entropy.png")),
        ("Forget accuracy per epoch", forget_curve_figure(runs, rows, results_dir / "forget_acc.png")),
        (
            "Hybrids",
            hybrid_figure(runs["natmu"] / "hybrid_examples.npz", results_dir / "hybrids.png")
            if "natmu" in runs
            else None,
        ),
    ):
        if made is not None:
            figures.append(f"## {title}\n\n![{title}]({made.name})\n")
    table = (results_dir / "results.md").read_text() if (results_dir / "results.md").is_file() else ""
    failed = [
        f"- {r['method']} (seed {r['seed']}): {r.get('error', 'failed')}" for r in rows if r.get("status") != "ok"
    ]
    collapsed = [
        f"- {r['method']} (seed {r['seed']}): {r.get('collapse_reason')}"
        for r in rows
        if r.get("status") == "ok" and r.get("collapsed")
    ]
    sections = [("Failed runs", failed), ("Collapsed runs (the model was destroyed, not unlearned)", collapsed)]
    listed = "".join(f"## {title}\n\n" + "\n".join(items) + "\n\n" for title, items in sections if items)
    text = table + "\n" + listed + "\n".join(figures)
    return atomic_write_bytes(results_dir / "report.md", text.encode())


def main(args: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="natmu-lightning-report", description=__doc__.split("\n\n")[0])
    parser.add_argument("results_dir", type=Path, help="folder written by benchmarks/quality.py")
    ns = parser.parse_args(args)
    if not (ns.results_dir / "results.json").is_file():
        parser.error(f"{ns.results_dir} holds no results.json (run benchmarks/quality.py first)")
    path = write_report(ns.results_dir)
    print(f"report written to {path}")
    return path


def entry_point() -> None:
    main()


if __name__ == "__main__":
    entry_point()
