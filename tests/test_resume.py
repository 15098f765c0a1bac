"""An unlearning run killed mid-training resumes with --ckpt_path last to the same result."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.tiny_runs import DIGITS_ORIGINAL, DIGITS_RETRAIN, digits_args, digits_run_folder

REPO = Path(__file__).resolve().parents[1]
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def cli(args, cwd, **popen):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "natmu_lightning", *args]
    if popen:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def final_state(run_root: Path):
    ckpt = torch.load(run_root / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    metrics_files = sorted(run_root.glob("version_*/unlearning_metrics.json"))
    return ckpt, json.loads(metrics_files[-1].read_text())


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_killed_run_resumes_exactly(tmp_path):
    epochs = ["--trainer.max_epochs", "3"]
    for name in ("original", "retrain"):
        cli(["fit", *digits_args(name), "--trainer.max_epochs", "3", *QUIET], tmp_path)

    straight = tmp_path / "straight"
    straight.mkdir()
    natmu = [
        "fit",
        *digits_args("natmu"),
        *epochs,
        *QUIET,
        "--model.init_args.original_ckpt",
        str(tmp_path / DIGITS_ORIGINAL),
        "--evaluator.reference_ckpt",
        str(tmp_path / DIGITS_RETRAIN),
    ]
    cli(natmu, straight)

    interrupted = tmp_path / "interrupted"
    interrupted.mkdir()
    marker = tmp_path / "paused"
    pause = [
        "--trainer.callbacks+=tests.pause_callback.PauseAfterEpoch",
        "--trainer.callbacks.epoch=0",
        f"--trainer.callbacks.marker={marker}",
    ]
    process = cli(natmu + pause, interrupted, popen=True)
    deadline = time.time() + 300
    while not marker.exists():
        assert process.poll() is None, "the run ended before it could be interrupted"
        assert time.time() < deadline
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    cli(natmu + ["--ckpt_path", "last"], interrupted)

    run = digits_run_folder("natmu")
    a_ckpt, a_metrics = final_state(straight / run)
    b_ckpt, b_metrics = final_state(interrupted / run)
    steps_per_epoch = -(-(1127 + 4 * 130) // 64)  # remaining + 4 hybrids per forget sample, batch 64
    assert a_ckpt["global_step"] == b_ckpt["global_step"] == 3 * steps_per_epoch
    assert a_ckpt["state_dict"].keys() == b_ckpt["state_dict"].keys()
    for key in a_ckpt["state_dict"]:
        assert torch.equal(a_ckpt["state_dict"][key], b_ckpt["state_dict"][key]), key
    assert a_metrics == b_metrics

    # The resumed run's record keeps the first start and the original's metrics.
    records = [json.loads(p.read_text()) for p in sorted((interrupted / run).glob("version_*/unlearning_record.json"))]
    straight_record = json.loads(next((straight / run).glob("version_*/unlearning_record.json")).read_text())
    assert len(records) == 1  # the killed run never reached the end of its fit
    assert len(records[0]["resumed_at"]) == 1 and records[0]["started_at"] < records[0]["resumed_at"][0]
    assert records[0]["metrics_before"] == straight_record["metrics_before"]
    assert records[0]["metrics_after"] == b_metrics
