"""``natmu-lightning-select-lr``: NatMU's learning rate and δ chosen without a Retrain."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from natmu_lightning import lr_selection
from natmu_lightning.cli import main
from natmu_lightning.lr_selection import (
    REFINE_FACTOR,
    VALIDATION_SEED_OFFSET,
    entry_point,
    score,
    select,
    trial_name,
)
from tests.tiny_runs import digits_args

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

ORIGINAL = {"rf_forget_acc_target": 90.0, "remain_acc": 99.0, "test_acc": 90.0, "rf_mia_target": 60.0}


def test_the_score_is_the_average_gap_to_retrain_predicted_from_the_original():
    # forget 95 vs 90, remaining 97 vs 99, test 88 vs 90, MIA 70 vs 60: (5 + 2 + 2 + 10) / 4
    assert score({"forget_acc": 95.0, "remain_acc": 97.0, "test_acc": 88.0, "mia_entropy": 70.0}, ORIGINAL) == 4.75
    # above a target costs as much as below it: a model that unfits everything scores badly
    forgot_all = {"forget_acc": 10.0, "remain_acc": 10.0, "test_acc": 10.0, "mia_entropy": 60.0}
    assert score(forgot_all, ORIGINAL) == pytest.approx((80 + 89 + 80 + 0) / 4)
    with pytest.raises(ValueError, match="rf_mia_target"):
        score(forgot_all, {key: v for key, v in ORIGINAL.items() if key != "rf_mia_target"})
    # a metric the evaluator could not measure (JSON null) makes the fit unusable, not the run
    assert score({**forgot_all, "mia_entropy": None}, ORIGINAL) == float("inf")
    assert score(forgot_all, {**ORIGINAL, "rf_mia_target": None}) == float("inf")


def test_selection_averages_the_requests_and_drops_a_candidate_that_diverged_on_one():
    trials = [
        {"lr": 0.1, "delta": -0.19, "score": 1.0},  # best on one request, bad on the other
        {"lr": 0.1, "delta": -0.19, "score": 9.0},
        {"lr": 0.01, "delta": -0.19, "score": 4.0},
        {"lr": 0.01, "delta": -0.19, "score": 4.5},
        {"lr": 0.01, "delta": 0.045, "score": 0.5},
        {"lr": 0.01, "delta": 0.045, "score": float("inf")},
    ]
    assert select(trials) == {"lr": 0.01, "delta": -0.19, "score": 4.25}
    with pytest.raises(ValueError, match="no candidate"):
        select([{"lr": 0.1, "delta": 0.0, "score": float("nan")}])


@pytest.mark.slow  # ~30 s: five unlearning fits and three parses of the CLI
@pytest.mark.usefixtures("digits_workdir")
@pytest.mark.timeout(600)
def test_select_lr_runs_the_three_steps_and_writes_a_fragment_the_cli_reads(tmp_path, capsys):
    out = tmp_path / "select"
    args = ["--out", str(out), "--grid", "0.001", "0.03", "--deltas", "0.045", "--validation-requests", "1"]
    entry_point([*digits_args("natmu"), *args])
    result = json.loads((out / "selection.json").read_text())
    shipped = main(digits_args("natmu"), run=False)
    own_delta = shipped.datamodule.natmu.delta
    assert result["config_delta"] == own_delta
    step1, step2, _ = result["steps"]
    kept_delta = step2["delta"]
    refined = [float(f"{step2['lr'] / REFINE_FACTOR:.3g}"), float(f"{step2['lr'] * REFINE_FACTOR:.3g}")]
    # step 1: the grid at the config's delta; step 2: the other delta at the kept rate;
    # step 3: a quarter decade either side of it at the kept delta
    assert [(t["lr"], t["delta"]) for t in result["trials"]] == [
        (0.001, own_delta),
        (0.03, own_delta),
        (step1["lr"], 0.045),
        *((lr, kept_delta) for lr in refined),
    ]
    for trial in result["trials"]:  # each score recomputed from the files its fit wrote
        version = (
            out / "trials" / f"seed{VALIDATION_SEED_OFFSET}" / trial_name(trial["lr"], trial["delta"]) / "version_0"
        )
        metrics = json.loads((version / "unlearning_metrics.json").read_text())
        record = json.loads((version / "unlearning_record.json").read_text())
        assert record["config"]["data"]["natmu"]["delta"] == trial["delta"]
        assert record["config"]["model"]["init_args"]["recipe"]["lr"] == trial["lr"]
        assert trial["score"] == pytest.approx(score(metrics, record["metrics_before"]))
        # the trials ran without a reference, on the validation request's data seed
        assert "reference" not in metrics and metrics["seed"] == VALIDATION_SEED_OFFSET
    best = min(result["trials"], key=lambda t: t["score"])
    assert (result["lr"], result["delta"]) == (best["lr"], best["delta"])
    assert not list(out.rglob("*.ckpt"))  # trials write no checkpoint, the config's callbacks are off
    # the fragment, added after the run's configs, sets exactly the chosen rate and delta
    selected = main([*digits_args("natmu"), "--config", str(out / "selected_lr.yaml")], run=False)
    assert selected.model.hparams["recipe"] == {**shipped.model.hparams["recipe"], "lr": result["lr"]}
    assert selected.datamodule.natmu == replace(shipped.datamodule.natmu, delta=result["delta"])
    assert f"add --config {out / 'selected_lr.yaml'}" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # an existing selection is never overwritten
        entry_point([*digits_args("natmu"), "--out", str(out)])


@pytest.mark.usefixtures("digits_workdir")
def test_trials_run_without_the_configs_reference_retrain_or_bank(tmp_path):
    """A bank judges its own forget request: kept in a trial on a validation request, its
    forget-set check would refuse the trial."""
    with_bank = [*digits_args("natmu"), "--evaluator.reference_bank", str(tmp_path / "bank.json")]
    args = lr_selection.trial_args(with_bank, 0.01, 0.045, 1000, tmp_path)
    shipped = main(args[1:], run=False)  # without the subcommand: parse and instantiate only
    assert shipped.config["evaluator"]["reference_ckpt"] is None
    assert shipped.config["evaluator"]["reference_bank"] is None


def test_bad_arguments_are_refused_before_any_fit(tmp_path, capsys):
    for bad in (["--grid", "0"], ["--grid", "nan"], ["--deltas", "1.5"], ["--validation-requests", "0"]):
        with pytest.raises(SystemExit):
            entry_point([*digits_args("natmu"), "--out", str(tmp_path / "out"), *bad])
        assert "must" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.usefixtures("digits_workdir")
def test_configs_without_natmu_or_on_several_processes_are_refused_before_any_fit(tmp_path, capsys):
    two_processes = ["--config", str(CONFIGS / "trainer" / "cpu_ddp2.yaml")]
    for configs, says in (
        (digits_args("ft"), "compose a natmu.yaml"),
        ([*digits_args("natmu"), *two_processes], "devices 1"),
    ):
        with pytest.raises(SystemExit):
            entry_point([*configs, "--out", str(tmp_path / "out")])
        assert says in capsys.readouterr().err
    assert not (tmp_path / "out" / "trials").exists()


def test_a_grid_that_diverges_everywhere_stops_with_the_trials_written(tmp_path, monkeypatch):
    calls = []

    def diverging_fit(args, run=True):
        calls.append(args)
        raise FloatingPointError("non-finite loss")

    monkeypatch.setattr(lr_selection, "config_delta", lambda config_args: -0.19)
    monkeypatch.setattr("natmu_lightning.cli.main", diverging_fit)
    with pytest.raises(ValueError, match="no rate of the grid"):
        lr_selection.run(["--config", "x.yaml"], tmp_path, grid=(0.1, 1.0), validation_requests=2)
    # a candidate that diverged on its first request is not fitted on the second
    assert len(calls) == 2
    trials = json.loads((tmp_path / "selection.json").read_text())["trials"]
    assert [(t["lr"], t["score"]) for t in trials] == [(0.1, None), (1.0, None)]
