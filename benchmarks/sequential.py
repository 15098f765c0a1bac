"""The ``sequential`` scenario of ``benchmarks/quality.py``: three deletion requests in a row.

For each seed it trains the original, then for each method:

1. request 1 unlearns a class-balanced random 3.3% (``RandomForget(0.033)``) from the original;
2. requests 2 and 3 each unlearn another 3.3% draw, among the samples still in the training
   set, from the model the previous request wrote (``--data.previous_record`` names the
   previous run's ``unlearning_record.json``, ``--model.init_args.original_ckpt`` the
   checkpoint it lists), with ``data.seed`` moved by 1000 per request.

The requests' draws depend on the seed and the data only, so every method forgets the same
union. Retrain is trained once per seed on the samples outside the union; then each method's
final model is evaluated on the union against that Retrain (row ``<method> x3``, its time
the three requests' sum), the same method unlearns the whole union in one request from the
original for comparison (``<method> x1``), and the original is evaluated on the union. During
the requests the evaluator has no Retrain (``--evaluator.reference_ckpt null``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from benchmarks import runs as fits
from natmu_lightning.configs import checkpoint_files, merged
from natmu_lightning.records import load_previous_request, read_record

REQUESTS = 3
RATIO = 0.033
REQUEST_SEED_STEP = 1000


def random_forget(ratio: float) -> list[str]:
    return ["--data.forget", "natmu_lightning.RandomForget", "--data.forget.ratio", repr(ratio)]


def index_forget(indices: Path) -> list[str]:
    return ["--data.forget", "natmu_lightning.IndexForget", "--data.forget.indices", str(indices)]


def config_checkpoint(config: list[Path]) -> Path:
    """The fixed-name checkpoint a composed config writes (the original and Retrain runs name one)."""
    files = checkpoint_files(merged(config))
    if not files:
        raise ValueError(f"{config} declares no ModelCheckpoint with a fixed filename")
    return files[0]


def written_checkpoint(log_dir: Path) -> Path:
    """The checkpoint a request's run wrote, from its record: ``last.ckpt`` when there is one."""
    written = [Path(entry["path"]) for entry in read_record(log_dir)["checkpoints_written"]]
    if not written:
        raise ValueError(f"the run in {log_dir} wrote no checkpoint to continue from")
    return next((path for path in written if path.name == "last.ckpt"), written[-1])


def run_requests(
    config: list[Path], seed: int, folder: Path, original_ckpt: Path, extra: list[str], params: dict
) -> tuple[Path, list[Path], float]:
    """The three requests of one method; returns the final checkpoint, the log dirs and the total time."""
    checkpoint, log_dirs, seconds = original_ckpt, [], 0.0
    for request in range(REQUESTS):
        args = [
            *extra,
            *fits.param_args(params),
            *random_forget(RATIO),
            "--data.seed",
            str(seed + REQUEST_SEED_STEP * request),
            "--model.init_args.original_ckpt",
            str(checkpoint),
            "--evaluator.reference_ckpt",
            "null",
        ]
        if log_dirs:
            args += ["--data.previous_record", str(log_dirs[-1])]
        print(f"[seed {seed}] {config[-1].stem} request {request + 1} of {REQUESTS}", flush=True)
        _, spent, log_dir = fits.run_config(config, seed, folder / f"request{request + 1}", args)
        checkpoint, seconds = written_checkpoint(log_dir), seconds + spent
        log_dirs.append(log_dir)
    return checkpoint, log_dirs, seconds


def run_sequential_seed(
    preset: fits.QualityPreset,
    methods: list[str],
    seed: int,
    workdir: Path,
    extra: list[str],
    params: dict | None = None,
) -> list[dict]:
    """Original, each method's three requests, Retrain on their union, and the comparisons."""
    params = params or {}
    scenario = "sequential"
    original_config = preset.config("original", scenario)
    original = fits.run_one(
        original_config, {"method": "original", "seed": seed, "scenario": scenario, "params": {}}, workdir, extra
    )
    if original["status"] != "ok":
        return [original]
    original_ckpt = (workdir / config_checkpoint(original_config)).resolve()
    rows, finals, union = [original], {}, None
    for method in methods:
        row = {"method": f"{method} x{REQUESTS}", "seed": seed, "scenario": scenario, "params": params.get(method, {})}
        try:
            final, log_dirs, seconds = run_requests(
                preset.config(method, scenario), seed, workdir / scenario / method, original_ckpt, extra, row["params"]
            )
            forgotten = load_previous_request(log_dirs[-1]).already_forgotten
            if union is not None and not torch.equal(union, forgotten):
                raise RuntimeError(f"{method}'s requests forgot another union than the first method's")
            union, finals[method] = forgotten, final
            row.update(seconds=seconds, status="ok", log_dir=str(log_dirs[-1]))
        except (Exception, SystemExit) as error:
            fits.failed(row, error)
        rows.append(row)
    if union is None:
        return rows
    union_file = workdir / scenario / "union_forget_indices.npy"
    np.save(union_file, union.numpy())
    on_union = [*extra, *index_forget(union_file)]

    retrain_config = preset.config("retrain", scenario)
    retrain = fits.run_one(
        retrain_config,
        {"method": "retrain", "seed": seed, "scenario": scenario, "params": {}},
        workdir / scenario / "retrain",
        on_union,
    )
    rows.insert(1, retrain)
    if retrain["status"] != "ok":
        return rows
    retrain["avg_gap"] = 0.0
    reference = [
        "--evaluator.reference_ckpt",
        str((workdir / scenario / "retrain" / config_checkpoint(retrain_config)).resolve()),
    ]
    from_original = ["--model.init_args.original_ckpt", str(original_ckpt)]
    original.update(fits.validate_checkpoint(original_config, seed, workdir, [*on_union, *reference], original_ckpt))
    for row in rows[2:]:
        method = row["method"].rsplit(" x", 1)[0]
        one = {"method": f"{method} x1", "seed": seed, "scenario": scenario, "params": params.get(method, {})}
        try:
            config = preset.config(method, scenario)
        except FileNotFoundError as error:  # no such method in the setting
            rows.append(fits.failed(one, error))
            continue
        if method in finals:
            row.update(
                fits.validate_checkpoint(config, seed, workdir, [*on_union, *from_original, *reference], finals[method])
            )
        rows.append(
            fits.run_one(
                config, one, workdir / scenario / method / "one_request", [*on_union, *from_original, *reference]
            )
        )
    for row in rows[2:]:
        if row["status"] == "ok":
            row["efficiency"] = retrain["seconds"] / row["seconds"]
    return rows
