"""A 2-process CPU NatMU fit against the 1-process fit (Lightning's own DDP, gloo)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.tiny_runs import digits_args, digits_run_folder, newest_version

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
NATMU_RUNS = digits_run_folder("natmu")
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def cli(args, cwd):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "natmu_lightning", *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_a_finished_command_releases_the_process_group_and_a_failed_one_does_not(tmp_path, monkeypatch):
    """A DDP rank exiting with its gloo group alive can abort at exit after a finished fit (seen
    once in CI, rank 1: "terminate called without an active exception"): the console script
    destroys the group once the command has succeeded, and leaves it after an error."""
    import torch.distributed as dist

    from natmu_lightning import cli as cli_module

    stores = iter(("first_store", "second_store"))  # a FileStore file serves one group

    def init_group():
        store = dist.FileStore(str(tmp_path / next(stores)), 1)
        dist.init_process_group("gloo", store=store, rank=0, world_size=1)

    def init_group_then_fail():
        init_group()
        raise ValueError("bad input")

    try:
        monkeypatch.setattr(cli_module, "main", init_group)
        cli_module.entry_point()
        assert not dist.is_initialized()
        monkeypatch.setattr(cli_module, "main", init_group_then_fail)
        with pytest.raises(ValueError, match="bad input"):  # raised outside the package: its traceback kept
            cli_module.entry_point()
        assert dist.is_initialized()
    finally:  # no group left for the tests after this one, whatever failed
        cli_module.release_process_group()


def test_a_fit_that_ended_well_releases_the_group_at_exit_once(tmp_path, monkeypatch):
    """Lightning's spawned ranks (and scripts launched per rank) end with the interpreter, not in
    the console script: the modules' ``teardown`` registers the release for the process's exit,
    once, and only while a group exists (a one-process fit registers nothing)."""
    import torch.distributed as dist

    from natmu_lightning import process_group
    from tests.tiny_runs import make_dm, make_model, quiet_trainer

    registered = []
    monkeypatch.setattr(process_group.atexit, "register", registered.append)
    monkeypatch.setattr(process_group, "_registered", False)
    quiet_trainer(tmp_path, max_steps=1).fit(make_model(), datamodule=make_dm())
    assert registered == []
    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        module = make_model()
        module.teardown("fit")
        module.teardown("validate")
        assert registered == [process_group.release_process_group]
        registered[0]()  # what the interpreter runs at exit
        assert not dist.is_initialized()
    finally:
        process_group.release_process_group()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_process_fit_matches_one_process_up_to_batching(tmp_path):
    for name in ("original", "retrain"):
        cli(["fit", *digits_args(name), "--trainer.max_epochs", "5", *QUIET], tmp_path)
    # lr 1e-3 (the paper's, not digits' searched 3e-2): the check is that batching is the only
    # difference; at 3e-2 the two trajectories drift further apart through it (forget accuracy
    # 84.6 against 90.0 after 3 epochs, measured 2026-11-30).
    natmu = [
        "fit",
        *digits_args("natmu"),
        "--trainer.max_epochs",
        "3",
        "--model.init_args.recipe.lr",
        "1e-3",
        *QUIET,
    ]
    cli([*natmu, "--trainer.logger.init_args.save_dir", "one"], tmp_path)
    # Global batch kept at 64: 2 processes x 32 per process.
    two_processes = [*natmu, "--config", str(CONFIGS / "trainer" / "cpu_ddp2.yaml"), "--data.batch_size", "32"]
    cli([*two_processes, "--trainer.logger.init_args.save_dir", "two"], tmp_path)
    # The same 2-process fit with the training images "device-resident" (on a CPU: index batches,
    # gathered after the transfer; on CUDA the default whenever the set fits, DDP included).
    cli([*two_processes, "--data.device_resident", "true", "--trainer.logger.init_args.save_dir", "resident"], tmp_path)
    one, two = newest_version(tmp_path / "one" / "natmu"), newest_version(tmp_path / "two" / "natmu")
    resident = json.loads((newest_version(tmp_path / "resident" / "natmu") / "unlearning_metrics.json").read_text())
    assert resident == json.loads((two / "unlearning_metrics.json").read_text())  # every value, to the bit

    # Exactly the same forget set, hybrid plan and Retrain reference numbers.
    assert np.array_equal(np.load(one / "forget_indices.npy"), np.load(two / "forget_indices.npy"))
    plan_one, plan_two = np.load(one / "hybrid_plan.npz"), np.load(two / "hybrid_plan.npz")
    assert all(np.array_equal(plan_one[k], plan_two[k]) for k in plan_one.files)
    a = json.loads((one / "unlearning_metrics.json").read_text())
    b = json.loads((two / "unlearning_metrics.json").read_text())
    assert (a["world_size"], b["world_size"]) == (1, 2)
    assert a["reference"] == b["reference"]
    assert a["global_step"] == b["global_step"]  # same global batch -> same number of steps
    # The trained weights differ only through batching (sample order, per-process batch-norm
    # statistics), so the metrics agree closely but not bitwise (measured 2026-12-07: 0.0, 0.6,
    # 0.4 and 2.3 points apart: 0, 7, 2 and 3 samples).
    for key in ("forget_acc", "remain_acc", "test_acc"):
        assert abs(a[key] - b[key]) <= 3.0, (key, a[key], b[key])
    assert abs(a["mia_entropy"] - b["mia_entropy"]) <= 8.0
    # ... while the fit itself moves the remaining accuracy by more than that bound (89.97 ->
    # 95.56 measured), so a 2-process run that did not train would fail it.
    before = json.loads((one / "unlearning_record.json").read_text())["metrics_before"]
    assert abs(a["remain_acc"] - before["remain_acc"]) > 3.0, (a["remain_acc"], before["remain_acc"])

    # The unlearning record: written once (rank 0), the original measured exactly as on one process.
    record_a = json.loads((one / "unlearning_record.json").read_text())
    record_b = json.loads((two / "unlearning_record.json").read_text())
    assert (record_a["world_size"], record_b["world_size"]) == (1, 2)
    same = lambda entry: {k: v for k, v in entry.items() if k != "indices_file"}  # noqa: E731  (each run's own folder)
    assert same(record_a["forgotten"]) == same(record_b["forgotten"])
    assert record_a["original_checkpoint"]["sha256"] == record_b["original_checkpoint"]["sha256"]
    assert record_a["metrics_before"] == record_b["metrics_before"]
    assert (record_a["metrics_after"], record_b["metrics_after"]) == (a, b)
    assert record_b["config"]["data"]["batch_size"] == 32 and record_b["config"]["trainer"]["devices"] == 2


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_process_fit_evaluates_the_checkpoint_it_saves(tmp_path):
    """With Lightning's validation loop off, nothing else syncs the ranks' batch-norm buffers:
    the evaluator's final numbers of a 2-process fit must still be those of its last.ckpt,
    as a 1-process validate computes them, per sample and key for key."""
    for name in ("original", "retrain"):
        cli(["fit", *digits_args(name), "--trainer.max_epochs", "3", *QUIET], tmp_path)
    natmu = [*digits_args("natmu"), "--evaluator.save_outputs", "true", *QUIET]
    cli(
        [
            "fit",
            *natmu,
            "--config",
            str(CONFIGS / "trainer" / "cpu_ddp2.yaml"),
            "--data.batch_size",
            "32",
            "--trainer.max_epochs",
            "2",
            "--trainer.limit_val_batches",
            "0",
        ],
        tmp_path,
    )
    fitted = newest_version(tmp_path / NATMU_RUNS)
    cli(
        [
            "validate",
            *natmu,
            "--ckpt_path",
            str(NATMU_RUNS / "checkpoints" / "last.ckpt"),
            "--trainer.logger.init_args.save_dir",
            "validated",
        ],
        tmp_path,
    )
    validated = newest_version(tmp_path / "validated" / "natmu")

    a = json.loads((fitted / "unlearning_metrics.json").read_text())
    b = json.loads((validated / "unlearning_metrics.json").read_text())
    assert (a.pop("world_size"), b.pop("world_size")) == (2, 1)
    assert (a.pop("stage"), b.pop("stage")) == ("fit", "validate")
    for record in (a, b):
        for key in ("epoch", "global_step", "effective_batch_size"):
            record.pop(key)
    assert a == b
    outputs_a, outputs_b = np.load(fitted / "evaluation_outputs.npz"), np.load(validated / "evaluation_outputs.npz")
    assert sorted(outputs_a.files) == sorted(outputs_b.files)
    for key in outputs_a.files:
        assert np.array_equal(outputs_a[key], outputs_b[key]), key
