"""The benchmark scripts run end to end on tiny settings (their figures live in RESULTS.md)."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name):
    sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(600)
def test_quality_benchmark_writes_every_table(tmp_path, monkeypatch):
    quality = load("quality")
    rows = quality.main(["--seeds", "1", "--methods", "natmu,ft,missing_method", "--out", str(tmp_path / "q"),
                         "--extra", "--trainer.max_epochs", "1"])
    by_method = {row["method"]: row for row in rows}
    assert set(by_method) == {"original", "retrain", "natmu", "ft", "missing_method"}
    assert by_method["missing_method"]["status"] == "failed"  # reported, not dropped
    assert by_method["retrain"]["avg_gap"] == 0.0
    for name in ("natmu", "ft"):
        row = by_method[name]
        assert row["status"] == "ok" and row["efficiency"] > 0
        assert {"forget_acc", "retain_acc", "test_acc", "mia_entropy", "avg_gap", "kl_to_reference"} <= set(row)
    written = json.loads((tmp_path / "q" / "results.json").read_text())
    assert [r["method"] for r in written] == [r["method"] for r in rows]
    table = (tmp_path / "q" / "results.md").read_text()
    assert "| natmu | 1 | 0 |" in table and "| missing_method | 0 | 1 |" in table
    assert (tmp_path / "q" / "results.csv").read_text().startswith("method,seed,scenario,status")

    # The report turns the same folder into report.md with its three figures.
    pytest.importorskip("matplotlib")
    from natmu_lightning import report

    path = report.main([str(tmp_path / "q")])
    text = path.read_text()
    for figure in ("entropy.png", "forget_acc.png", "hybrids.png"):
        assert f"({figure})" in text and (tmp_path / "q" / figure).stat().st_size > 1000, figure
    assert "missing_method" in text  # failed runs are listed


@pytest.mark.timeout(600)
def test_speed_benchmark_reports_the_four_ratios(tmp_path):
    speed = load("speed")
    result = speed.main(["--out", str(tmp_path / "s"), "--steps", "3", "--retrain-epochs", "2"])
    for key in ("hybrid_step_ratio", "data_path_speedup", "unlearn_vs_retrain_time", "eval_fraction"):
        assert result[key] > 0, key
    assert json.loads((tmp_path / "s" / "speed.json").read_text())["preset"] == "digits"


@pytest.mark.timeout(600)
@pytest.mark.parametrize("scenario", ["class", "hardest10"])
def test_quality_benchmark_scenarios(tmp_path, scenario):
    quality = load("quality")
    rows = quality.main(["--seeds", "1", "--methods", "natmu", "--scenario", scenario, "--forget-class", "3",
                         "--out", str(tmp_path / scenario), "--extra", "--trainer.max_epochs", "1"])
    assert [r["status"] for r in rows] == ["ok", "ok", "ok"], [r.get("error") for r in rows]
    natmu_dir = Path(rows[2]["log_dir"])
    forget = np.load(natmu_dir / "forget_indices.npy")
    retrain_forget = np.load(Path(rows[1]["log_dir"]) / "forget_indices.npy")
    assert np.array_equal(forget, retrain_forget)  # the same set for Retrain and the method
    original_forget = np.load(Path(rows[0]["log_dir"]) / "forget_indices.npy")
    assert np.array_equal(forget, original_forget)  # and the original is reported on it too
    if scenario == "class":
        assert "forget_test_acc" in json.loads((natmu_dir / "unlearning_metrics.json").read_text())
    else:
        assert len(forget) == round(0.1 * 1257)
