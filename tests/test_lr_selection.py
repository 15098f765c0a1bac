"""``natmu-lightning-select-lr``: NatMU's learning rate chosen without a Retrain."""

from __future__ import annotations

import json

import pytest

from natmu_lightning.cli import main
from natmu_lightning.lr_selection import VALIDATION_SEED_OFFSET, entry_point, score, select
from tests.tiny_runs import digits_args


def test_the_score_adds_the_lost_test_accuracy_and_selection_averages_the_requests():
    metrics = {"reference_free_gap": 1.5, "test_acc": 80.0}
    assert score(metrics, 90.0) == pytest.approx(11.5) and score(metrics, 70.0) == 1.5
    trials = [
        {"lr": 0.1, "score": 1.0},  # best on one request, bad on the other
        {"lr": 0.1, "score": 9.0},
        {"lr": 0.01, "score": 4.0},
        {"lr": 0.01, "score": 4.5},
    ]
    assert select(trials)["lr"] == 0.01
    with pytest.raises(ValueError, match="no learning rate finished"):
        select([{"lr": 0.1, "score": float("nan")}])


@pytest.mark.slow  # ~10 s: two unlearning fits and two parses of the CLI
@pytest.mark.usefixtures("digits_workdir")
@pytest.mark.timeout(300)
def test_select_lr_runs_the_trials_and_writes_a_fragment_the_cli_reads(tmp_path):
    out = tmp_path / "select"
    entry_point([*digits_args("natmu"), "--out", str(out), "--grid", "0.0001", "0.1", "--validation-requests", "1"])
    result = json.loads((out / "selection.json").read_text())
    assert [(t["lr"], t["seed"]) for t in result["trials"]] == [
        (0.0001, VALIDATION_SEED_OFFSET),
        (0.1, VALIDATION_SEED_OFFSET),
    ]
    for trial in result["trials"]:  # each score recomputed from the files its fit wrote
        version = out / "trials" / f"seed{VALIDATION_SEED_OFFSET}" / f"lr_{trial['lr']:g}" / "version_0"
        metrics = json.loads((version / "unlearning_metrics.json").read_text())
        before = json.loads((version / "unlearning_record.json").read_text())["metrics_before"]
        assert trial["score"] == pytest.approx(score(metrics, before["test_acc"]))
    assert not list(out.rglob("*.ckpt"))  # trials write no checkpoint, the config's callbacks are off
    assert result["lr"] == min(result["trials"], key=lambda t: t["score"])["lr"]
    # the trials ran without a reference, on the validation request's data seed
    metrics = json.loads(next((out / "trials").rglob("unlearning_metrics.json")).read_text())
    assert "reference" not in metrics and metrics["seed"] == VALIDATION_SEED_OFFSET
    # the fragment, added after the run's configs, sets exactly the chosen rate
    selected = main([*digits_args("natmu"), "--config", str(out / "selected_lr.yaml")], run=False).model.hparams
    shipped = main(digits_args("natmu"), run=False).model.hparams
    assert selected["recipe"] == {**shipped["recipe"], "lr": result["lr"]}
    with pytest.raises(SystemExit):  # an existing selection is never overwritten
        entry_point([*digits_args("natmu"), "--out", str(out)])
