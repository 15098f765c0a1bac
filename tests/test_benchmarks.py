"""The benchmark scripts run end to end on tiny settings (their figures live in RESULTS.md)."""

import importlib
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from natmu_lightning.configs import composition
from tests.tiny_runs import digits_args

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name):
    """``benchmarks.<name>``, importable from the repository root."""
    if str(BENCHMARKS.parent) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS.parent))
    return importlib.import_module(f"benchmarks.{name}")


@pytest.mark.timeout(600)
def test_quality_benchmark_writes_every_table(tmp_path, monkeypatch):
    quality = load("quality")
    rows = quality.main(
        [
            "--seeds",
            "1",
            "--methods",
            "natmu,ft,missing_method",
            "--out",
            str(tmp_path / "q"),
            "--extra",
            "--trainer.max_epochs",
            "1",
        ]
    )
    by_method = {row["method"]: row for row in rows}
    assert set(by_method) == {"original", "retrain", "natmu", "ft", "missing_method"}
    assert by_method["missing_method"]["status"] == "failed"  # reported, not dropped
    assert by_method["retrain"]["avg_gap"] == 0.0
    for name in ("natmu", "ft"):
        row = by_method[name]
        assert row["status"] == "ok" and row["efficiency"] > 0
        assert {"forget_acc", "remain_acc", "test_acc", "mia_entropy", "avg_gap", "kl_to_reference"} <= set(row)
    written = json.loads((tmp_path / "q" / "results.json").read_text())
    assert [r["method"] for r in written] == [r["method"] for r in rows]
    table = (tmp_path / "q" / "results.md").read_text()
    assert "| natmu | 1 | 0 |" in table and "| missing_method | 0 | 1 |" in table
    assert (tmp_path / "q" / "results.csv").read_text().startswith("method,seed,scenario,status")

    # --resume reads every finished run back instead of fitting it again; a changed lr is a new run.
    def no_fit(*args):
        raise AssertionError(f"--resume fitted a finished run again: {args}")

    monkeypatch.setattr(load("runs"), "run_config", no_fit)
    resumed = quality.main(
        [
            "--seeds",
            "1",
            "--methods",
            "natmu,ft,missing_method",
            "--out",
            str(tmp_path / "q"),
            "--resume",
            "--extra",
            "--trainer.max_epochs",
            "1",
        ]
    )
    for before, after in zip(rows, resumed):
        if before["status"] == "ok":
            assert after["resumed"] and after["log_dir"] == before["log_dir"]
            assert {k: after.get(k) for k in (*quality.METRICS, "seconds", "efficiency")} == {
                k: before.get(k) for k in (*quality.METRICS, "seconds", "efficiency")
            }
    assert resumed[-1]["status"] == "failed"
    natmu_config = quality.make_presets(tmp_path)["digits"].config("natmu", "random10")
    workdir = tmp_path / "q" / "seed0"
    assert load("runs").finished_run(natmu_config, 0, workdir, {}) is not None
    assert load("runs").finished_run(natmu_config, 0, workdir, {"lr": 0.5}) is None
    assert load("runs").finished_run(natmu_config, 1, workdir, {}) is None

    # The report turns the same folder into report.md with its three figures.
    pytest.importorskip("matplotlib")
    from natmu_lightning import report

    path = report.main([str(tmp_path / "q")])
    text = path.read_text()
    for figure in ("entropy.png", "forget_acc.png", "hybrids.png"):
        assert f"({figure})" in text and (tmp_path / "q" / figure).stat().st_size > 1000, figure
    assert "missing_method" in text  # failed runs are listed

    # A results folder moved after the run still gets its figures (log dirs are found under it).
    moved = tmp_path / "elsewhere" / "q"
    moved.parent.mkdir()
    (tmp_path / "q").rename(moved)
    for figure in ("entropy.png", "forget_acc.png", "hybrids.png"):
        (moved / figure).unlink()
    text = report.main([str(moved)]).read_text()
    for figure in ("entropy.png", "forget_acc.png", "hybrids.png"):
        assert f"({figure})" in text and (moved / figure).stat().st_size > 1000, figure


def test_lr_search_goes_past_the_edge_of_its_grid():
    search = load("search")
    base = list(search.SEARCH_LR_FACTORS)
    assert search.lr_factor_beyond_edge(base, max(base)) == pytest.approx(3 * max(base))
    assert search.lr_factor_beyond_edge(base, min(base)) == pytest.approx(min(base) / 3)
    assert search.lr_factor_beyond_edge(base, 1.0) is None  # inside the grid: done
    # The second step past the edge is the last one.
    once = base + [3 * max(base)]
    assert search.lr_factor_beyond_edge(once, max(once)) == pytest.approx(9 * max(base))
    twice = once + [9 * max(base)]
    assert search.lr_factor_beyond_edge(twice, max(twice)) is None


def test_search_walks_the_lr_and_alternates_natmu_delta(tmp_path, monkeypatch):
    """The search on a synthetic gap: no training, every candidate scored by a known function."""
    quality = load("quality")

    def gap(method: str, params: dict) -> float:
        log3 = lambda x: math.log(x) / math.log(3)  # noqa: E731
        if method == "ft":  # optimum at lr 2e-2: past the grid's edge, then between half steps
            return log3(params["lr"] / 2e-2) ** 2
        delta = params.get("delta", -0.19)  # NatMU: a positive delta wants half a step more lr
        best_lr = 3e-3 * (3**0.5 if delta > 0 else 1)
        return log3(params["lr"] / best_lr) ** 2 + 100 * (delta - 0.075) ** 2

    def fake_run_one(config, row, workdir, extra, resume=False):
        row.update(status="ok", seconds=1.0)
        if row["method"] not in ("original", "retrain"):
            row["avg_gap"] = gap(row["method"], row["params"])
        return row

    monkeypatch.setattr(load("runs"), "run_one", fake_run_one)
    # Start both from lr 1e-3 whatever the shipped configs hold (the walk below is computed from it).
    shipped = quality.config_value
    monkeypatch.setattr(
        load("runs"), "config_value", lambda config, *keys: 1e-3 if keys[-1] == "lr" else shipped(config, *keys)
    )
    preset = quality.make_presets(tmp_path)["digits"]
    validations = quality.validation_sets(100, 1, 0, 10, tmp_path)
    selected, rows = quality.search(preset, ["ft", "natmu"], validations, [], "random10")
    ft = [r["params"]["lr"] for r in rows if r["method"] == "ft"]
    # the grid, two steps past its edge, then the half-step walk down from 3e-2 (stopping above 1e-2, already run)
    assert ft == [1e-3, 3e-4, 3e-3, 1e-4, 1e-2, 3e-2, 9e-2, 1.73e-2, 5.2e-2]
    assert selected["ft"] == {"lr": 1.73e-2}
    natmu = [r["params"] for r in rows if r["method"] == "natmu"]
    assert natmu[:5] == [{"lr": lr} for lr in (1e-3, 3e-4, 3e-3, 1e-4, 1e-2)]
    assert natmu[5:7] == [{"lr": 1.73e-3}, {"lr": 5.2e-3}]  # the walk at the config's delta stays at 3e-3
    # One delta round at lr 3e-3 picks 0.075; the walk at 0.075 then moves the lr half a step up,
    # a point the delta grid at the first lr alone would have missed. The second round confirms it.
    assert {"lr": 3e-3, "delta": 0.075} in natmu and {"lr": 5.2e-3, "delta": 0.075} in natmu
    assert selected["natmu"] == {"lr": 5.2e-3, "delta": 0.075}
    assert len({json.dumps(p, sort_keys=True) for p in natmu}) == len(natmu)


def test_search_averages_the_gap_over_its_validation_sets(tmp_path, monkeypatch):
    """Two validation sets whose synthetic optima differ: the search picks the lr best on average."""
    quality = load("quality")
    optimum = {100: 1e-3, 101: 1e-2}  # per validation seed; the mean gap is lowest at 3.2e-3, nearest candidate 3e-3

    def fake_run_one(config, row, workdir, extra, resume=False):
        row.update(status="ok", seconds=1.0)
        if row["method"] in ("original", "retrain"):
            assert Path(workdir).name == f"seed{row['seed']}"
        else:  # each candidate runs beside its own validation set's checkpoints
            assert Path(workdir).parent.name == f"seed{row['seed']}"
            row["avg_gap"] = math.log(row["params"]["lr"] / optimum[row["seed"]]) ** 2
        return row

    monkeypatch.setattr(load("runs"), "run_one", fake_run_one)
    preset = quality.make_presets(tmp_path)["digits"]
    validations = quality.validation_sets(100, 2, 0, 10, tmp_path / "search")
    assert [(v.seed, v.workdir.name, v.forget_class) for v in validations] == [(100, "seed100", 1), (101, "seed101", 2)]
    selected, rows = quality.search(preset, ["ft"], validations, [], "random10")
    assert [(r["method"], r["seed"]) for r in rows[:4]] == [
        ("original", 100),
        ("retrain", 100),
        ("original", 101),
        ("retrain", 101),
    ]
    ft = [r for r in rows if r["method"] == "ft"]
    by_seed = {seed: [r["params"]["lr"] for r in ft if r["seed"] == seed] for seed in optimum}
    assert by_seed[100] == by_seed[101] and len(set(by_seed[100])) == len(by_seed[100])  # each candidate once per set
    assert selected["ft"] == {"lr": 3e-3}  # neither set's own optimum (1e-3 alone, 1e-2 alone)


@pytest.mark.usefixtures("digits_workdir")
def test_speed_digits_preset_is_the_quality_configs_as_the_cli_reads_them():
    """presets.py reads configs/digits; the CLI parsing the same compositions is the reference."""
    from natmu_lightning.cli import main

    preset = load("presets").PRESETS["digits"]
    original = main(digits_args("original"), run=False)
    natmu = main(digits_args("natmu"), run=False)
    source = preset.source()
    assert type(source) is type(original.datamodule.source) and source.noise_std == original.datamodule.source.noise_std
    assert preset.backbone().state_dict().keys() == original.model.backbone.state_dict().keys()
    assert (preset.batch_size, preset.crop_padding, preset.horizontal_flip) == (
        original.datamodule.batch_size,
        original.datamodule.crop_padding,
        original.datamodule.horizontal_flip,
    )
    assert (preset.classifier_epochs, preset.classifier_recipe) == (original.trainer.max_epochs, original.model.recipe)
    assert (preset.unlearn_epochs, preset.natmu_recipe) == (natmu.trainer.max_epochs, natmu.model.recipe)
    assert preset.hybrids == natmu.datamodule.natmu


@pytest.mark.timeout(600)
def test_speed_benchmark_reports_the_four_ratios_and_the_loader_rate(tmp_path):
    speed = load("speed")
    result = speed.main(["--out", str(tmp_path / "s"), "--steps", "3", "--retrain-epochs", "2"])
    for key in (
        "hybrid_step_ratio",
        "data_path_speedup",
        "loader_images_per_s",
        "unlearn_vs_retrain_time",
        "eval_fraction",
    ):
        assert result[key] > 0, key
    saved = json.loads((tmp_path / "s" / "speed.json").read_text())
    assert saved["preset"] == "digits"
    # three alternated rounds per side (the default --repeats); each side keeps its fastest
    steps, data = saved["step_seconds"], saved["data_path"]
    assert [len(steps["rounds"][k]) for k in ("natmu", "fine_tune")] == [3, 3]
    assert steps["natmu"] == min(steps["rounds"]["natmu"]) and steps["fine_tune"] == min(steps["rounds"]["fine_tune"])
    assert data["speedup"] == pytest.approx(max(data["rounds"]["loader"]) / max(data["rounds"]["pil"]))
    assert data["with_device_work_speedup"] == pytest.approx(
        max(data["rounds"]["with_device_work"]) / max(data["rounds"]["pil"])
    )
    assert result["loader_images_per_s"] == max(data["rounds"]["loader"])
    assert result["hybrid_step_ratio"] == pytest.approx(steps["natmu"] / steps["fine_tune"])


@pytest.mark.timeout(600)
@pytest.mark.parametrize("scenario", ["class", "hardest10"])
def test_quality_benchmark_scenarios(tmp_path, scenario):
    quality = load("quality")
    rows = quality.main(
        [
            "--seeds",
            "1",
            "--methods",
            "natmu",
            "--scenario",
            scenario,
            "--forget-class",
            "3",
            "--out",
            str(tmp_path / scenario),
            "--extra",
            "--trainer.max_epochs",
            "1",
        ]
    )
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


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_quality_sequential_scenario_compares_three_requests_with_retrain_on_their_union(tmp_path):
    quality = load("quality")
    out = tmp_path / "sequential"
    rows = quality.main(
        [
            "--seeds",
            "1",
            "--methods",
            "natmu",
            "--scenario",
            "sequential",
            "--out",
            str(out),
            "--extra",
            "--trainer.max_epochs",
            "1",
        ]
    )
    assert [r["method"] for r in rows] == ["original", "retrain", "natmu x3", "natmu x1"]
    assert [r["status"] for r in rows] == ["ok"] * 4, [r.get("error") for r in rows]
    union = np.load(out / "seed0" / "sequential" / "union_forget_indices.npy")
    requests = [
        np.load(p) for p in sorted((out / "seed0" / "sequential" / "natmu").glob("request*/**/forget_indices.npy"))
    ]
    assert [len(r) for r in requests] == [40, 40, 40]  # 3.3% of digits' 1257 training samples, class-balanced
    assert np.array_equal(np.sort(np.concatenate(requests)), union) and len(np.unique(union)) == 120
    for row in rows:  # every model is judged on the union, against the one Retrain on it
        assert np.array_equal(np.load(Path(row["log_dir"]) / "forget_indices.npy"), union), row["method"]
        assert "avg_gap" in row
    assert "| natmu x3 | 1 | 0 |" in (out / "results.md").read_text()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_quality_search_selects_on_the_validation_set_only(tmp_path, monkeypatch):
    yaml = pytest.importorskip("yaml")
    quality = load("quality")
    # One walk step and one delta round keep this real run short; the unit test above covers longer walks.
    monkeypatch.setattr(load("search"), "SEARCH_LR_WALK_STEPS", 1)
    monkeypatch.setattr(load("search"), "SEARCH_NATMU_ROUNDS", 1)
    out = tmp_path / "search"
    rows = quality.main(
        [
            "--seeds",
            "1",
            "--methods",
            "natmu,ft,ssd",
            "--search",
            "--out",
            str(out),
            "--extra",
            "--trainer.max_epochs",
            "1",
        ]
    )
    selection = json.loads((out / "selection.json").read_text())
    candidates = json.loads((out / "search.json").read_text())
    assert {r["seed"] for r in candidates} == {100}  # every candidate ran on the validation seed only
    assert [r["method"] for r in candidates[:2]] == ["original", "retrain"]
    ft = [r for r in candidates if r["method"] == "ft"]
    natmu = [r for r in candidates if r["method"] == "natmu"]
    for method, runs in (("ft", ft), ("natmu", natmu)):
        assert all(r["status"] == "ok" for r in runs)
        base = quality.config_value(composition("digits", method), *load("runs").LR_KEYS)
        assert [r["params"]["lr"] for r in runs][:5] == [float(f"{base * f:.3g}") for f in (1, 0.3, 3, 0.1, 10)]
        assert len({json.dumps(r["params"], sort_keys=True) for r in runs}) == len(runs)  # no candidate twice
        assert selection["selected"][method] == min(runs, key=lambda r: r["avg_gap"])["params"]
    assert {r["params"].get("delta") for r in natmu} == {None, -0.053, 0.045, 0.075, 0.1, 0.15}
    assert selection["selected"]["ssd"] == {}  # no optimiser: run as shipped

    reported = {r["method"]: r for r in rows}
    assert {r["seed"] for r in rows} == {0}
    for method in ("natmu", "ft"):
        assert reported[method]["params"] == selection["selected"][method]
        hparams = yaml.safe_load((Path(reported[method]["log_dir"]) / "hparams.yaml").read_text())
        assert hparams["recipe"]["lr"] == pytest.approx(selection["selected"][method]["lr"])
    validation_set = np.load(Path(candidates[1]["log_dir"]) / "forget_indices.npy")
    reported_set = np.load(Path(reported["retrain"]["log_dir"]) / "forget_indices.npy")
    assert not np.array_equal(np.sort(validation_set), np.sort(reported_set))
    table = (out / "results.md").read_text()
    assert (
        "selected by average gap on validation forget sets (data.seed = 100," in table
        and "- ssd: the config's own" in table
    )


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--search", "--scenario", "hardest10"], "not available for hardest10"),
        (["--search", "--scenario", "sequential"], "not available for sequential"),
        (["--search", "--seeds", "3", "--search-seed", "2"], "overlaps the reported seeds 0..2"),
        (["--search", "--seeds", "3", "--search-seed", "-1", "--search-seeds", "2"], "overlaps the reported seeds"),
        (["--search", "--search-seeds", "0"], "--search-seeds must be >= 1"),
        (["--search-seeds", "3"], "--search-seeds needs --search"),
        (["--search", "--scenario", "class", "--search-seeds", "10"], "at most 9"),
        (["--seeds", "0"], "--seeds must be >= 1"),
        (["--bank", "1"], "--bank needs at least 2 members"),
        (["--bank", "4", "--scenario", "sequential"], "--bank needs at least 2 members and a random10"),
    ],
)
def test_quality_refuses_bad_arguments(tmp_path, capsys, argv, message):
    quality = load("quality")
    with pytest.raises(SystemExit) as exit_info:
        quality.main([*argv, "--out", str(tmp_path / "q")])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "q").exists()


def test_quality_presets_find_their_configs(tmp_path):
    presets = load("quality").make_presets(tmp_path)
    every_method = ["bad_teacher", "ft", "ga", "l1_sparse", "natmu", "neggrad", "rl", "salun", "scrub", "ssd"]
    assert presets["digits"].methods("random10") == presets["cifar10-small"].methods("random10") == every_method
    vgg = presets["cifar10-vgg16"]
    for scenario, request in (("random10", ["forget_random10"]), ("random1", []), ("class", ["forget_random10"])):
        assert vgg.methods(scenario) == every_method
        assert [p.stem for p in vgg.config("retrain", scenario)] == ["base", *request, "retrain"]
        assert [p.stem for p in vgg.config("original", scenario)] == ["base", "original"]
        assert all(
            p.is_file() for m in ("original", "retrain", *vgg.methods(scenario)) for p in vgg.config(m, scenario)
        )
    assert vgg.data_args == ("--data.source.init_args.root", str(tmp_path.resolve()))


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_quality_cifar10_small_preset_runs_on_a_tiny_subset(tmp_path):
    quality = load("quality")
    if not load("runs").CIFAR10_JPEG.is_file():
        pytest.skip(f"{load('runs').CIFAR10_JPEG} is not on this machine")
    rows = quality.main(
        [
            "--preset",
            "cifar10-small",
            "--seeds",
            "1",
            "--methods",
            "natmu",
            "--out",
            str(tmp_path / "c"),
            "--extra",
            "--trainer.max_epochs",
            "1",
            "--data.source.init_args.train_per_class",
            "8",
            "--data.source.init_args.test_per_class",
            "2",
        ]
    )
    assert [r["status"] for r in rows] == ["ok", "ok", "ok"], [r.get("error") for r in rows]
    outputs = np.load(Path(rows[2]["log_dir"]) / "evaluation_outputs.npz")
    assert {len(outputs[k]) for k in outputs.files if k.startswith("test")} == {20}  # 2 test images per class

    # The report draws RGB hybrids as well as grey ones.
    pytest.importorskip("matplotlib")
    from natmu_lightning import report

    report.main([str(tmp_path / "c")])
    examples = np.load(Path(rows[2]["log_dir"]) / "hybrid_examples.npz")
    assert examples["hybrid"].shape[2] == 3  # rows x k x C x H x W
    assert (tmp_path / "c" / "hybrids.png").stat().st_size > 1000


def test_gpu_check_without_cuda_says_so_and_exits_cleanly(tmp_path, monkeypatch, capsys):
    gpu_check = load("gpu_check")
    monkeypatch.setattr(gpu_check.torch.cuda, "is_available", lambda: False)
    result = gpu_check.main(["--out", str(tmp_path / "g")])
    assert result == {"cuda": False, "message": "CUDA is not available on this machine: nothing to check"}
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == result
    assert not (tmp_path / "g").exists()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_gpu_check_dry_run_on_cpu_runs_every_phase(tmp_path, monkeypatch):
    """The GPU check's logic at toy sizes on the CPU: every phase completes and reports."""
    sys.path.insert(0, str(BENCHMARKS.parent))
    from tests.fake_data import make_fake_cifar10_npz

    npz = make_fake_cifar10_npz(tmp_path / "cifar10_jpeg.npz", train_per_class=30, test_per_class=10)
    monkeypatch.setenv("NATMU_CACHE", str(tmp_path / "cache"))
    gpu_check = load("gpu_check")
    result = gpu_check.main(["--out", str(tmp_path / "g"), "--cifar10-npz", str(npz), "--cpu-dry-run"])
    for phase in ("digits", "methods", "bf16", "ddp", "vgg16"):
        assert "error" not in result[phase], result[phase].get("traceback")
    assert result["methods"]["all_ok"], result["methods"]
    assert result["methods"]["diverging_run"]["checkpoints_written"] == 0
    assert "the training loss became" in result["methods"]["diverging_run"]["stopped"]
    digits = result["digits"]
    assert digits["forget_set_identical"] and digits["hybrid_plan_identical"] and digits["reference_identical"]
    assert digits["max_metric_difference"] == 0.0  # CPU against CPU: the same numbers
    assert digits["rerun_after_teardown_equals_cpu_validate"] is True
    assert result["ddp"]["processes"] == 2 and result["ddp"]["reference_identical"]
    assert set(result["bf16"]) >= {"natmu_32-true", "natmu_bf16-mixed", "max_metric_difference"}
    vgg = result["vgg16"]
    assert vgg["32-true"]["natmu_step_over_ft_step"] > 0 and vgg["stream"]["loader_images_per_s"] > 0
    assert 0 < vgg["evaluation"]["eval_fraction_32_true"]
    assert json.loads((tmp_path / "g" / "gpu_check.json").read_text())["vgg16"]["batch_size"] == 8


def test_selection_proxy_replays_a_search_by_hand_computed_scores():
    """Two seeds, three candidates, the same on both. True gaps: A 1, B 2, C 9 (A is the
    searched one). Reference-free gaps: A 3, B 2, C 0 (C forgot everything: test accuracy 10
    against the original's 90), so reference_free picks C (ratio 9). With the test drop the
    scores are A 3 + 0, B 2 + 5, C 0 + 80: A, on each seed alone and on both."""
    proxy = load("selection_proxy")
    original = lambda seed: {"method": "original", "seed": seed, "status": "ok", "test_acc": 90.0}  # noqa: E731
    rows = [original(100), original(101)]
    for seed in (100, 101):
        for lr, gap, rf, test in ((0.01, 1.0, 3.0, 90.0), (0.03, 2.0, 2.0, 85.0), (0.3, 9.0, 0.0, 10.0)):
            rows.append({"method": "natmu", "seed": seed, "status": "ok", "params": {"lr": lr}, "avg_gap": gap,
                         "reference_free_gap": rf, "test_acc": test})  # fmt: skip
    rows.append(
        {"method": "natmu", "seed": 100, "status": "ok", "params": {"lr": 1.0}, "avg_gap": 0.0}
    )  # one seed only
    result = proxy.select(rows)
    assert result["searched"] == '{"lr": 0.01}' and result["searched_gap"] == 1.0
    assert result["reference_free"]["selected"] == '{"lr": 0.3}' and result["reference_free"]["ratio"] == 9.0
    with_drop = result["reference_free+test_drop"]
    assert with_drop["selected"] == '{"lr": 0.01}' and with_drop["ratio"] == 1.0
    assert [e["ratio"] for e in with_drop["each_seed"]] == [1.0, 1.0]


def test_select_lr_benchmark_selects_in_each_seed_folder_and_fits_with_the_choice(tmp_path, monkeypatch):
    """The selection runs inside each seed's folder of the quality run (where the configs' relative
    checkpoint paths are that seed's original and Retrain), the NatMU fit gets the selected lr and
    delta without checkpoints, and select_lr.json pairs it with the quality run's NatMU row."""
    select_lr = load("select_lr")
    quality = tmp_path / "quality"
    rows = [{"method": "original", "seed": s, "scenario": "random10", "params": {}} for s in (0, 1)]
    rows += [{"method": "natmu", "seed": s, "scenario": "random10", "params": {}, "status": "ok", "avg_gap": 2.0 + s}
             for s in (0, 1)]  # fmt: skip
    quality.mkdir()
    (quality / "results.json").write_text(json.dumps(rows))
    selections, fits = [], []

    def fake_selection(config_args, out):
        selections.append((Path.cwd().name, out.name, config_args))
        return {"lr": 0.01 * (len(selections)), "delta": -0.053, "score": 1.5, "trials": [{"lr": 0.01}]}

    def fake_fit(config, row, workdir, extra):
        fits.append((workdir.name, row["params"], extra))
        return {**row, "status": "ok", "avg_gap": 1.0}

    monkeypatch.setattr(select_lr.lr_selection, "run", fake_selection)
    monkeypatch.setattr(select_lr, "run_one", fake_fit)
    result = select_lr.main(["--preset", "digits", "--quality", str(quality), "--out", str(tmp_path / "out")])
    assert [(cwd, out) for cwd, out, _ in selections] == [("seed0", "seed0"), ("seed1", "seed1")]
    assert "configs/digits/natmu.yaml" in " ".join(selections[0][2])
    assert [(workdir, params) for workdir, params, _ in fits] == [
        ("seed0", {"lr": 0.01, "delta": -0.053}),
        ("seed1", {"lr": 0.02, "delta": -0.053}),
    ]
    assert all("--trainer.enable_checkpointing=false" in extra for _, _, extra in fits)
    written = json.loads((tmp_path / "out" / "select_lr.json").read_text())
    assert written == json.loads(json.dumps(result))
    first = written["seeds"][0]
    assert first["quality_natmu"]["avg_gap"] == 2.0 and first["natmu"]["avg_gap"] == 1.0
    assert first["quality_params"] == {"lr": 0.03, "delta": -0.19}  # the digits config as shipped
    assert written["preset"] == "digits" and written["wall_seconds"] >= 0


def test_select_lr_benchmark_refuses_a_folder_without_a_finished_quality_run(tmp_path, capsys):
    select_lr = load("select_lr")
    with pytest.raises(SystemExit):
        select_lr.main(["--preset", "digits", "--quality", str(tmp_path), "--out", str(tmp_path / "out")])
    assert "results.json not found" in capsys.readouterr().err


@pytest.mark.slow  # ~20 s: four fresh processes import torch
@pytest.mark.timeout(300)
def test_memory_benchmark_measures_both_paths_on_a_folder_it_makes(tmp_path):
    """``benchmarks/memory.py`` end to end on a 300-image folder made from the offline CIFAR-10
    copy: both paths read the same folder, rows carry the keys RESULTS.md reports."""
    memory = load("memory")
    if not memory.CIFAR10_JPEG.is_file():
        pytest.skip(f"{memory.CIFAR10_JPEG} is not on this machine")
    memory.main(["--out", str(tmp_path), "--sizes", "300", "--image-size", "16", "--batches", "12"])
    rows = json.loads((tmp_path / "memory.json").read_text())
    assert [(row["path"], row["images"], row["num_workers"]) for row in rows] == [
        ("in_memory", 300, 0),
        ("on_disk", 300, 2),
    ]
    assert all(row["peak_rss_mib"] > 50 and row["images_per_s"] > 0 for row in rows)  # torch alone is > 50 MiB
    folder = tmp_path / "folders" / "300"
    counts = sorted(len(list(d.iterdir())) for d in (folder / "train").iterdir())
    assert sum(counts) == 300 and counts[0] > 10  # a seeded order: every class present
    with pytest.raises(SystemExit):
        memory.main(["--out", str(tmp_path), "--batches", "5"])


def test_raw_files_name_the_processor_not_just_the_architecture(monkeypatch, tmp_path):
    """Timings and floats differ between CPU generations: ``benchmarks.host`` names the model and
    family from /proc/cpuinfo (read here from a planted copy) and the cores this process may use."""
    host = load("host")
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\ncpu family\t: 26\nmodel name\t: AMD EPYC 9999\n\n"
        "processor\t: 1\ncpu family\t: 25\nmodel name\t: other\n"
    )
    monkeypatch.setattr(host, "CPUINFO", cpuinfo)
    monkeypatch.setattr(host.os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert host.cpu_name() == "CPU AMD EPYC 9999 (family 26), 3 cores"
    assert host.device_name(cuda=False) == host.cpu_name()
    monkeypatch.setattr(host, "CPUINFO", tmp_path / "missing")
    monkeypatch.setattr(host.platform, "processor", lambda: "x86_64")
    assert host.cpu_name() == "CPU x86_64, 3 cores"


def test_step_overhead_keeps_the_streams_it_finished_when_stopped(tmp_path, monkeypatch):
    """The file is written after each stream: a time limit during the second keeps the first (the
    GPU session plans the paper's epochs from the remain stream, timed first)."""
    overhead = load("step_overhead")
    row = {"bare_ms": 1.0, "plain_lightning_ms": 1.1, "lightning_ms": 1.2, "lightning_over_bare": 1.2}
    row.update(our_part_over_bare=0.1, target_met=True)

    def measure(preset, backbone, stream, args, device):
        if stream == "hybrid":
            raise KeyboardInterrupt  # what SIGINT does; SIGTERM ends the process the same way here
        return row

    monkeypatch.setattr(overhead, "measure_stream", measure)
    with pytest.raises(KeyboardInterrupt):
        overhead.main(["--out", str(tmp_path), "--streams", "remain", "hybrid"])
    assert json.loads((tmp_path / "step_overhead.json").read_text())["streams"] == {"remain": row}


def test_gpu_fast_dry_run_times_every_variant(tmp_path):
    """``benchmarks/gpu_fast.py --dry-run``: each precision / channels-last / compile variant is a
    real short fit on the CPU, timed, with its speed-up over ``32-true``."""
    fast = load("gpu_fast")
    result = fast.main(["--dry-run", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "gpu_fast.json").read_text())
    assert saved["variants"].keys() == set(fast.VARIANTS) and saved["dry_run"] and saved["preset"] == "digits"
    baseline = saved["variants"]["32-true"]["seconds_per_step"]
    for name, row in saved["variants"].items():
        assert "error" not in row, (name, row.get("traceback"))
        assert row["fit_seconds"] > row["seconds_per_step"] > 0, name
        assert row["speedup"] == pytest.approx(baseline / row["seconds_per_step"]), name
    assert result["variants"] == saved["variants"]


def test_gpu_session_fast_mode_brings_back_the_variants(tmp_path):
    """``gpu_session.sh --fast --dry-run``: the second device call runs only benchmarks.gpu_fast and
    brings back its JSON and log, nothing else (no run folders: 8 files come back at most)."""
    import subprocess

    out = tmp_path / "out"
    env = {
        **os.environ,
        "OUT": str(out),
        "GPU_SESSION_BUDGET": "120",
        "TMPDIR": str(tmp_path),
        "PYTHON": sys.executable,
    }
    done = subprocess.run(
        ["bash", "benchmarks/gpu_session.sh", "--fast", "--dry-run"],
        cwd=BENCHMARKS.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert {p.name for p in out.iterdir()} == {"gpu_fast.json", "gpu_fast_log.txt"}
    assert json.loads((out / "gpu_fast.json").read_text())["variants"].keys() == set(load("gpu_fast").VARIANTS)
    assert not list(tmp_path.glob("natmu_gpu_session.*")), "the work folder was left behind"


def test_gpu_fast_passes_each_choice_and_keeps_going_past_a_failure(tmp_path, monkeypatch):
    fast = load("gpu_fast")
    calls = {}

    def fake_timed_fit(module, dm, accelerator, steps, warmup, precision, root, compiled, callbacks, compile_backend):
        name = root.name
        calls[name] = (precision, [type(c).__name__ for c in callbacks], compiled, compile_backend, steps, warmup)
        if name == "32-true+cl":
            raise RuntimeError("no kernel for this layout")
        return (0.01 if name == "32-true" else 0.005), 1.0

    monkeypatch.setattr(fast, "timed_fit", fake_timed_fit)
    result = fast.main(["--dry-run", "--out", str(tmp_path), "--variants", "32-true+cl", "bf16-mixed+cl+compile"])
    assert list(result["variants"]) == ["32-true", "32-true+cl", "bf16-mixed+cl+compile"]  # the baseline first
    assert calls["32-true"] == ("32-true", [], False, "eager", 6, 2)
    assert calls["32-true+cl"][:3] == ("32-true", ["ChannelsLast"], False)
    assert calls["bf16-mixed+cl+compile"][:3] == ("bf16-mixed", ["ChannelsLast"], True)
    assert "no kernel for this layout" in result["variants"]["32-true+cl"]["error"]
    assert result["variants"]["bf16-mixed+cl+compile"]["speedup"] == pytest.approx(2.0)
    reordered = fast.main(["--dry-run", "--out", str(tmp_path), "--variants", "bf16-mixed", "32-true", "bf16-mixed"])
    assert list(reordered["variants"]) == ["32-true", "bf16-mixed"]  # the baseline first, each once
    for bad in (["--steps", "4", "--warmup", "4"], ["--steps", "0"]):
        with pytest.raises(SystemExit):
            fast.main(["--dry-run", "--out", str(tmp_path), *bad])


@pytest.mark.slow  # ~15 s: 3 streams x 3 sides x 2 rounds of short fits
@pytest.mark.timeout(600)
def test_step_overhead_times_three_sides_for_every_stream(tmp_path):
    """``benchmarks/step_overhead.py``: per stream the three sides, each its fastest round, and
    the target judged from them."""
    overhead = load("step_overhead")
    result = overhead.main(["--out", str(tmp_path), "--epochs", "2", "--repeats", "2"])
    saved = json.loads((tmp_path / "step_overhead.json").read_text())
    assert saved["streams"].keys() == {"full", "remain", "hybrid"} == result["streams"].keys()
    for stream, row in saved["streams"].items():
        for side in overhead.SIDES:
            rounds = row["rounds"][side]
            assert len(rounds) == 2 and row[f"{side}_ms"] == min(r["mean_ms"] for r in rounds) > 0, (stream, side)
            assert all(r["median_ms"] > 0 for r in rounds), (stream, side)
        assert row["lightning_over_bare"] == pytest.approx(row["lightning_ms"] / row["bare_ms"])
        our_part = (row["lightning_ms"] - row["plain_lightning_ms"]) / row["bare_ms"]
        assert row["our_part_over_bare"] == pytest.approx(our_part)
        assert row["target_met"] == overhead.meets_target(row)
    # digits: 1257 training samples, 130 forgotten, 4 hybrids each; batches of 64
    assert [saved["streams"][s]["rows_per_epoch"] for s in ("full", "remain", "hybrid")] == [1257, 1127, 1127 + 520]
    assert overhead.meets_target({"floor_over_bare": 1.1, "lightning_over_bare": 1.3, "our_part_over_bare": 0.2})
    assert not overhead.meets_target({"floor_over_bare": 1.5, "lightning_over_bare": 1.55, "our_part_over_bare": 0.11})
    with pytest.raises(SystemExit):
        overhead.main(["--out", str(tmp_path), "--epochs", "1"])


@pytest.mark.slow  # VGG-16 on the CPU: twelve short runs, about two minutes
@pytest.mark.timeout(900)
def test_paper_dry_run_writes_a_row_for_every_run(tmp_path):
    paper = load("paper")
    result = paper.main(["--dry-run", "--out", str(tmp_path), "--classifier-epochs", "3"])
    saved = json.loads((tmp_path / "paper.json").read_text())
    assert list(result["runs"]) == ["original", "retrain", *paper.METHODS]
    assert sorted(saved["runs"]) == sorted(result["runs"])  # the file's keys are sorted
    assert saved["dry_run"] and saved["wall_seconds"] > 0 and saved["device"].startswith("CPU")
    assert saved["paper_retrain"]["test_acc"] == 93.34 and saved["versions"]["torch"]
    assert saved["classifier_epochs"] == {"epochs": 3, "paper": 100}
    assert "original and Retrain 3 epochs (the paper's: 100)" in saved["setting"]
    for name, row in saved["runs"].items():
        assert row["seconds"] > 0 and all(math.isfinite(row[k]) for k in ("test_acc", "remain_acc", "forget_acc")), name
    assert all(math.isfinite(row["avg_gap"]) for name, row in saved["runs"].items() if name in paper.METHODS)


@pytest.mark.slow  # a dry run stopped in its first phase: about 15 s
@pytest.mark.timeout(300)
def test_paper_stopped_by_a_time_limit_says_how_far_it_got(tmp_path):
    """SIGTERM (what ``timeout`` sends) while the original and Retrain train: the command kills
    them and still writes paper.json, naming the phase and each unfinished run's seconds."""
    import signal
    import subprocess
    import time

    out = tmp_path / "paper"
    command = [sys.executable, "-m", "benchmarks.paper", "--dry-run", "--out", str(out)]
    process = subprocess.Popen(
        command, cwd=BENCHMARKS.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 120
    while not (out / "logs" / "original.log").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert process.poll() is None and (out / "logs" / "original.log").exists(), process.communicate()[0]
    process.send_signal(signal.SIGTERM)  # at once: the run may be starting, not yet registered
    output = process.communicate(timeout=60)[0]
    assert process.returncode == 1, output
    time.sleep(1)
    runs_left = [p for p in Path("/proc").glob("[0-9]*") if str(out) in _cmdline(p)]
    assert runs_left == [], "a run outlived the stopped command"
    saved = json.loads((out / "paper.json").read_text())
    assert saved["runs"] == {} and saved["stopped"]["signal"] == "SIGTERM", saved
    assert saved["stopped"]["phase"].startswith("original and Retrain")
    assert list(saved["stopped"]["running"]) == ["original"]  # a dry run runs one at a time
    assert saved["stopped"]["running"]["original"]["seconds"] > 0
    assert "stopped by SIGTERM during phase 1" in output


@pytest.mark.slow  # about two minutes: the step overhead, then the paper's dry run until its time is up
@pytest.mark.timeout(600)
def test_gpu_session_script_brings_back_its_files_within_its_time(tmp_path):
    """``benchmarks/gpu_session.sh --dry-run`` with a 120-s budget: the device command's plumbing
    (wheel check, step overhead, the epochs planned from it, the paper command under `timeout`, the
    copies and the archive) ends inside its budget and leaves what a GPU session would bring back."""
    import subprocess
    import tarfile
    import time

    out = tmp_path / "out"
    fake_bin = tmp_path / "bin"  # an nvidia-smi printing a sample a second: the GPU monitor's plumbing
    fake_bin.mkdir()
    fake_smi = fake_bin / "nvidia-smi"
    fake_smi.write_text('#!/bin/sh\necho "timestamp, utilization.gpu"\nwhile true; do echo "t, 5 %"; sleep 1; done\n')
    fake_smi.chmod(0o755)
    env = {**os.environ, "OUT": str(out), "GPU_SESSION_BUDGET": "120", "TMPDIR": str(tmp_path)}
    env["PYTHON"] = sys.executable  # this interpreter has the package's dependencies
    env["PATH"] = f"{fake_bin}{os.pathsep}{env['PATH']}"
    started = time.monotonic()
    done = subprocess.run(
        ["bash", "benchmarks/gpu_session.sh", "--dry-run"],
        cwd=BENCHMARKS.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode in (0, 1), done.stdout[-3000:] + done.stderr[-3000:]
    seconds = int(done.stdout.strip().splitlines()[-1].split()[1])  # "gpu_session.sh: N s"
    assert seconds <= 120 and time.monotonic() - started < 120 + 30, done.stdout[-3000:]
    assert not list(tmp_path.glob("natmu_gpu_session.*")), "the work folder (checkpoints) was left behind"
    names = {"step_overhead.json", "paper.json", "paper_runs.tar.gz", "overhead_log.txt", "overhead_err.txt"}
    assert names <= {p.name for p in out.iterdir()}, done.stdout[-3000:]
    saved = json.loads((out / "paper.json").read_text())
    assert saved["dry_run"] and "fits" in saved["classifier_epochs"]
    assert saved.get("stopped", {"signal": "SIGTERM"})["signal"] == "SIGTERM"
    with tarfile.open(out / "paper_runs.tar.gz") as archive:
        assert "logs/original.log" in archive.getnames()
    samples = (out / "gpu_util.csv").read_text().splitlines()
    assert samples[0].startswith("timestamp") and len(samples) > 10  # sampled through the whole session
    monitors = [p for p in Path("/proc").iterdir() if p.name.isdigit() and str(fake_smi) in _cmdline(p)]
    assert not monitors, "the GPU monitor outlived the session"


def _cmdline(process: Path) -> str:
    try:
        return (process / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:  # ended meanwhile
        return ""


def test_paper_lowers_the_classifier_epochs_to_what_fits_in_the_time_given(tmp_path, capsys):
    """``--fit-in S --step-overhead FILE``: the original's and Retrain's epochs with which the
    table is estimated to fit, passed to those two runs only and recorded with the estimate; bad
    input refused before anything is written."""
    import argparse

    paper, timing = load("paper"), load("paper_time")
    # by hand: (470 - 130) s at 5 ms a step is 68,000 steps; the unlearning runs take 39,000;
    # 29,000 steps / 778 per epoch of the original and Retrain = 37 epochs
    assert timing.epochs_that_fit(5.0, 470.0) == 37
    assert timing.estimated_seconds(5.0, 37) == pytest.approx(130 + (39_000 + 37 * 778) * 0.005)
    assert timing.epochs_that_fit(2.0, 470.0) == 100 and timing.epochs_that_fit(2.0, 470.0, most=60) == 60
    assert timing.epochs_that_fit(50.0, 470.0) == timing.MIN_FITTED_EPOCHS == 10
    assert timing.epochs_that_fit(50.0, 470.0, most=5) == 5  # it only ever lowers what was asked
    # the docstring's examples (benchmarks/ doctests are not collected)
    assert [timing.epochs_that_fit(ms, 460.0) for ms in (3.0, 5.0, 12.0)] == [91, 34, 10]
    for bad_step in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="positive"):
            timing.epochs_that_fit(bad_step, 470.0)

    def plan(step_ms, preset="cifar10-vgg16", dry_run=False):
        overhead = tmp_path / f"step_overhead_{step_ms}_{preset}.json"
        overhead.write_text(json.dumps({"preset": preset, "streams": {"remain": {"lightning_ms": step_ms}}}))
        args = argparse.Namespace(classifier_epochs=100, fit_in=470.0, step_overhead=overhead, dry_run=dry_run)
        return timing.planned_epochs(args, argparse.ArgumentParser())

    planned = plan(5.0)
    assert {key: planned[key] for key in ("epochs", "paper", "fit_in_seconds", "step_ms", "fits")} == {
        "epochs": 37,
        "paper": 100,
        "fit_in_seconds": 470.0,
        "step_ms": 5.0,
        "fits": True,
    }
    slow = plan(12.0)  # 10 epochs: 130 + (39,000 + 7,780) x 0.012 = 691 s, over the 470 given
    assert slow["epochs"] == 10 and not slow["fits"] and slow["estimated_seconds"] == pytest.approx(691.36)
    assert "not expected to fit" in capsys.readouterr().out
    assert plan(5.0, preset="digits", dry_run=True)["epochs"] == 37  # a dry run times the CPU preset
    for wrong in (lambda: plan(5.0, preset="digits"), lambda: plan(0.0)):
        with pytest.raises(SystemExit):
            wrong()
    capsys.readouterr()
    shipped = argparse.Namespace(request="random1", trainer_config=Path("gpu.yaml"), dry_run=False, loader_path=False)

    def epochs_of(name, classifier_epochs):
        command = paper.Runner(shipped, Path("c.npz"), tmp_path, tmp_path, classifier_epochs).command(name)
        return command[command.index("--trainer.max_epochs") + 1] if "--trainer.max_epochs" in command else None

    assert [epochs_of(name, 37) for name in ("original", "retrain", "natmu", "ft")] == ["37", "37", None, None]
    assert epochs_of("original", 100) is None  # the configs' own 100
    loader = argparse.Namespace(**{**vars(shipped), "loader_path": True})
    for name in (*paper.CLASSIFIERS, *paper.METHODS):
        assert "--data.device_resident" not in paper.Runner(shipped, Path("c.npz"), tmp_path, tmp_path).command(name)
        command = paper.Runner(loader, Path("c.npz"), tmp_path, tmp_path).command(name)
        at = command.index("--data.device_resident")
        assert command[at + 1] == "false" and at > command.index(str(Path("gpu.yaml").resolve())), name
    missing = str(tmp_path / "missing.json")
    for bad, says in (
        (["--fit-in", "470"], "--step-overhead"),
        (["--fit-in", "470", "--step-overhead", missing], "--step-overhead"),
        (["--classifier-epochs", "0"], "--classifier-epochs"),
    ):
        with pytest.raises(SystemExit):
            paper.main(["--dry-run", "--out", str(tmp_path / "never"), *bad])
        assert says in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_paper_keeps_the_finished_rows_when_a_run_fails(tmp_path, monkeypatch):
    """A run that fails ends the command, but paper.json keeps the rows of the runs that finished
    and says which failed (here the original finishes, then Retrain fails)."""
    paper = load("paper")

    def run(runner, names, parallel):
        folder = runner.work / paper.run_folder(paper.merged(runner.paths("original"))) / "version_0"
        folder.mkdir(parents=True)
        (folder / "unlearning_metrics.json").write_text(json.dumps({"test_acc": 91.5, "forget_acc": 90.0}))
        runner.finished["original"] = 12.0
        raise RuntimeError("retrain failed with exit code 1")

    monkeypatch.setattr(paper.Runner, "run", run)
    with pytest.raises(RuntimeError, match="retrain failed"):
        paper.main(["--dry-run", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "paper.json").read_text())
    assert saved["runs"]["original"]["test_acc"] == 91.5 and saved["runs"]["original"]["seconds"] == 12.0
    assert list(saved["runs"]) == ["original"] and "retrain failed" in saved["failed"]["error"]
    assert saved["failed"]["phase"].startswith("original and Retrain") and "stopped" not in saved


def test_a_stopped_run_reports_the_last_complete_row_its_logger_wrote(tmp_path):
    paper = load("paper")
    folder = tmp_path / "version_0"
    folder.mkdir()
    assert paper.last_logged_step(folder) == {"epoch": None, "step": None}  # no metrics.csv yet
    assert paper.last_logged_step(None) == {"epoch": None, "step": None}  # no version folder yet
    (folder / "metrics.csv").write_text("epoch,step,train/loss\n0,49,2.3\n1,99,1.9\n1,1")  # cut short
    assert paper.last_logged_step(folder) == {"epoch": 1, "step": 99}
    (folder / "metrics.csv").write_text("epoch,step\n0,49\n1,9")  # cut inside its last field: 99 or 999?
    assert paper.last_logged_step(folder) == {"epoch": 0, "step": 49}
    (folder / "metrics.csv").write_text("epoch,step,train/loss\n0,49,2.3\n1,99\n")  # a row with a field missing
    assert paper.last_logged_step(folder) == {"epoch": 0, "step": 49}
    (folder / "metrics.csv").write_text("epoch,step,train/loss\n")
    assert paper.last_logged_step(folder) == {"epoch": None, "step": None}


def test_paper_refuses_a_missing_or_foreign_npz_before_any_training(tmp_path, capsys):
    paper = load("paper")
    with pytest.raises(SystemExit, match="does not exist"):
        paper.main(["--cifar10-npz", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "a")])
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, x=np.zeros(3))
    with pytest.raises(SystemExit, match="lacks the arrays"):
        paper.main(["--cifar10-npz", str(foreign), "--out", str(tmp_path / "b")])
    small = paper.synthetic_npz(tmp_path / "small.npz")
    with pytest.raises(SystemExit, match="not CIFAR-10's"):
        paper.main(["--cifar10-npz", str(small), "--out", str(tmp_path / "c")])
    assert not (tmp_path / "c" / "work" / "runs").exists()  # nothing was trained
    with pytest.raises(SystemExit):
        paper.main(["--out", str(tmp_path / "d")])  # neither a file nor --dry-run


def test_quality_tables_mark_collapsed_runs_and_rank_without_them():
    quality = load("quality")

    def row(method, seed, gap, free, collapsed=False):
        metrics = dict.fromkeys(quality.METRICS, 50.0)
        reason = "test_acc 9.00 is below 80% of the original's 90.00" if collapsed else None
        return {
            "method": method,
            "seed": seed,
            "status": "ok",
            **metrics,
            "avg_gap": gap,
            "reference_free_gap": free,
            "collapsed": collapsed,
            "collapse_reason": reason,
        }

    rows = [row(m, s, g + s, f + s) for m, g, f in (("natmu", 1, 1), ("ft", 2, 3), ("rl", 3, 2)) for s in range(2)]
    rows += [row("ga", 0, 40.0, 0.5, collapsed=True), row("ga", 1, 41.0, 0.6)]
    summary = quality.summarise(rows)
    assert {e["method"]: e["collapsed"] for e in summary} == {"natmu": 0, "ft": 0, "rl": 0, "ga": 1}
    table = quality.markdown(summary, "digits", 2, rows=rows)
    assert "| ga (collapsed) | 2 | 0 | 1 |" in table and "| natmu | 2 | 0 | 0 |" in table
    # ga's one collapsed run and ga's mean (it has a collapsed run) are out of the correlation
    assert "over 7 runs" in table and "over the 3 methods' means" in table


def test_quality_tables_add_the_bank_metrics_when_runs_have_them():
    quality = load("quality")
    rows = [
        {"method": "natmu", "seed": seed, "status": "ok", **dict.fromkeys(quality.METRICS, 1.0)}
        | {key: 10.0 * (seed + 1) for key in quality.BANK_METRICS}
        for seed in range(2)
    ]
    table = quality.markdown(quality.summarise(rows), "digits", 2, rows=rows)
    assert "| method | forget outside % | forget mean abs z |" in table
    assert "| natmu | 15.00 ± 7.07 | 15.00 ± 7.07 |" in table  # mean and std of 10 and 20
    assert "forget outside" not in quality.markdown(
        quality.summarise([{**rows[0], **dict.fromkeys(quality.BANK_METRICS)}]), "digits", 1
    )
