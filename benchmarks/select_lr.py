"""``natmu-lightning-select-lr`` judged against Retrain: select on each seed's original, then unlearn.

    python -m benchmarks.select_lr --preset digits --quality runs/quality_digits --out runs/select_lr_digits

For every seed ``N`` of a finished ``benchmarks.quality`` run (random 10%; its ``seed<N>/``
folder holds the seed's original and Retrain), this runs the selection of
:mod:`natmu_lightning.lr_selection` on that original exactly as a user without a Retrain
would (the NatMU config as shipped, the default grid, δs and 2 validation requests), then
fits NatMU with the selected lr and δ (everything else as shipped; no checkpoints written)
on the seed's own forget request and measures it against the seed's Retrain. The quality
run's NatMU row of the same seed (its searched or shipped lr and δ) is the comparison.

Writes ``select_lr.json``: the command, and per seed the selection (lr, δ, mean score, every
trial), its wall time, the NatMU row fitted with it and the quality run's NatMU row. The
table of ``benchmarks/RESULTS.md`` is drawn from it (``python -m benchmarks.render``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python benchmarks/select_lr.py` works too
from benchmarks.runs import DELTA_KEYS, LR_KEYS, PRESET_NAMES, config_value, make_presets, run_one, working_dir  # noqa: E402
from natmu_lightning import lr_selection  # noqa: E402
from natmu_lightning.configs import config_args  # noqa: E402
from natmu_lightning.io import atomic_write_json, json_ready  # noqa: E402

#: What the NatMU fit with the selection leaves out: the shipped callbacks' checkpoints would
#: overwrite the quality run's NatMU checkpoint in the same seed folder.
NO_CHECKPOINTS = ["--trainer.callbacks=[]", "--trainer.enable_checkpointing=false"]


def quality_natmu_rows(quality: Path) -> dict[int, dict]:
    """The quality run's NatMU rows by seed (``results.json``)."""
    results = quality / "results.json"
    if not results.exists():
        raise FileNotFoundError(f"{results} not found: --quality takes the --out folder of a finished quality run")
    rows = json.loads(results.read_text())
    natmu = {row["seed"]: row for row in rows if row["method"] == "natmu" and row.get("scenario") == "random10"}
    if not natmu:
        raise ValueError(f"{results} has no NatMU row of the random10 scenario")
    return natmu


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.select_lr", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=PRESET_NAMES[:2], required=True)
    parser.add_argument("--quality", type=Path, required=True, help="the --out folder of a finished quality run")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    out, quality = args.out.resolve(), args.quality.resolve()
    if (out / "select_lr.json").exists():
        parser.error(f"{out / 'select_lr.json'} exists: choose another --out")
    try:
        searched = quality_natmu_rows(quality)
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    preset = make_presets(Path("data"))[args.preset]
    config = preset.config("natmu", "random10")
    extra = list(preset.data_args)
    result: dict = {
        "command": ["python", "-m", "benchmarks.select_lr", *(argv if argv is not None else sys.argv[1:])],
        "preset": args.preset,
        "seeds": [],
    }
    start = time.perf_counter()
    for seed, searched_row in sorted(searched.items()):
        workdir = quality / f"seed{seed}"
        with working_dir(workdir):  # the configs' relative checkpoint paths are the seed's models
            began = time.perf_counter()
            selection = lr_selection.run([*config_args(config), *extra], out / f"seed{seed}")
            selection_seconds = time.perf_counter() - began
        params = {"lr": selection["lr"], "delta": selection["delta"]}
        row = run_one(
            config, {"method": "natmu", "seed": seed, "scenario": "random10", "params": params}, workdir,
            [*extra, *NO_CHECKPOINTS],
        )  # fmt: skip
        result["seeds"].append(
            {
                "seed": seed,
                "selected": {**params, "score": selection["score"]},
                "selection_seconds": selection_seconds,
                "trials": selection["trials"],
                "natmu": row,
                "quality_natmu": searched_row,
                "quality_params": {  # what the quality run's NatMU fitted with: searched, or else as shipped
                    "lr": searched_row["params"].get("lr", config_value(config, *LR_KEYS)),
                    "delta": searched_row["params"].get("delta", config_value(config, *DELTA_KEYS)),
                },
            }
        )
        atomic_write_json(out / "select_lr.json", json_ready(result))  # partial results survive an interruption
    result["wall_seconds"] = time.perf_counter() - start
    atomic_write_json(out / "select_lr.json", json_ready(result))
    for entry in result["seeds"]:
        print(
            f"seed {entry['seed']}: selected lr {entry['selected']['lr']:g}, delta {entry['selected']['delta']:g}; "
            f"gap {entry['natmu'].get('avg_gap')} against the quality run's {entry['quality_natmu'].get('avg_gap')}"
        )
    return result


if __name__ == "__main__":
    main()
