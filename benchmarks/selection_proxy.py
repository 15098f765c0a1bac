"""Could a run choose NatMU's learning rate without a Retrain? Replays a ``--search`` run.

    python -m benchmarks.selection_proxy runs/rf_select_digits/search.json [--method natmu]

``benchmarks/quality.py --search`` scores every candidate (lr, delta) on validation forget
sets by its average gap to Retrain, which a user who brings their own model does not have.
This script reads the candidates' rows of such a run (``search.json``) and asks which
candidate a Retrain-free score would have picked, and how far that candidate's true gap is
from the searched one's. Scores (lower is better), from the row and the same seed's original:

* ``reference_free``: the evaluator's ``reference_free_gap`` (forget accuracy against test
  accuracy, the entropy MIA on the forget set against held-out test images).
* ``reference_free+test_drop``: the same plus the test accuracy lost against the original
  (``max(0, original test_acc - test_acc)``): a model that forgot everything meets the
  reference-free targets trivially, and only the test accuracy shows it.

It prints, for each score, the candidate it selects over all validation sets together and
over each set alone, with the ratio of its true gap to the searched best.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

Row = dict[str, Any]
SCORES: dict[str, Callable[[Row, Row], float]] = {
    "reference_free": lambda row, original: row["reference_free_gap"],
    "reference_free+test_drop": lambda row, original: (
        row["reference_free_gap"] + max(0.0, original["test_acc"] - row["test_acc"])
    ),
}


def candidates(rows: list[Row], method: str) -> tuple[dict[str, dict[int, Row]], dict[int, Row], list[int]]:
    """The method's finished rows by candidate (its params as JSON) and seed, the originals by
    seed, and the validation seeds; only candidates run on every seed are kept."""
    originals = {r["seed"]: r for r in rows if r["method"] == "original" and r.get("status") == "ok"}
    by_params: dict[str, dict[int, Row]] = defaultdict(dict)
    for row in rows:
        if row["method"] == method and row.get("status") == "ok":
            by_params[json.dumps(row["params"], sort_keys=True)][row["seed"]] = row
    seeds = sorted(originals)
    return {p: runs for p, runs in by_params.items() if sorted(runs) == seeds}, originals, seeds


def select(rows: list[Row], method: str = "natmu") -> dict[str, Any]:
    """For each score: the candidate it selects (all seeds together, and each seed alone) and
    the ratio of that candidate's true gap to the best true gap."""
    found, originals, seeds = candidates(rows, method)
    if not found:
        raise ValueError(f"no candidate of {method!r} finished on every validation seed {seeds}")
    true_gap = lambda p, seeds: sum(found[p][s]["avg_gap"] for s in seeds) / len(seeds)  # noqa: E731
    searched = min(found, key=lambda p: true_gap(p, seeds))
    result: dict[str, Any] = {"seeds": seeds, "searched": searched, "searched_gap": true_gap(searched, seeds)}
    for name, score in SCORES.items():
        chosen = min(found, key=lambda p: sum(score(found[p][s], originals[s]) for s in seeds))
        alone = []
        for s in seeds:
            pick = min(found, key=lambda p: score(found[p][s], originals[s]))
            alone.append(
                {"seed": s, "selected": pick, "ratio": true_gap(pick, [s]) / min(true_gap(p, [s]) for p in found)}
            )
        result[name] = {
            "selected": chosen,
            "gap": true_gap(chosen, seeds),
            "ratio": true_gap(chosen, seeds) / result["searched_gap"],
            "each_seed": alone,
        }
    return result


def search_rows(data: dict[str, Any] | list[Row]) -> list[Row]:
    """The candidate rows of a loaded ``search.json``: a list of rows, or a mapping that holds them
    under ``"rows"``."""
    return data["rows"] if isinstance(data, dict) else data


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("search_json", type=Path, help="search.json of a benchmarks/quality.py --search run")
    parser.add_argument("--method", default="natmu")
    args = parser.parse_args(argv)
    result = select(search_rows(json.loads(args.search_json.read_text())), args.method)
    print(f"searched (true gap): {result['searched']} gap {result['searched_gap']:.2f} on seeds {result['seeds']}")
    for name in SCORES:
        entry = result[name]
        each = ", ".join(f"{e['seed']}: {e['ratio']:.2f}x" for e in entry["each_seed"])
        print(f"{name}: {entry['selected']} gap {entry['gap']:.2f} ({entry['ratio']:.2f}x); one set alone: {each}")
    return result


if __name__ == "__main__":
    main()
