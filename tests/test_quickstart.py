"""The README's main job, end to end, as a user runs it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from natmu_lightning import quickstart
from tests.tiny_runs import digits_args


def readme_quickstart_table() -> dict[str, dict[str, float]]:
    """The quickstart table README.md states: ``{model: {metric: value}}``."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = text.split("For its default seed (0) it printed", 1)[1].split("```text", 1)[1].split("```", 1)[0]
    keys = ("forget_acc", "remain_acc", "test_acc", "mia_entropy", "avg_gap")
    rows = [line.split() for line in block.strip().splitlines()[1:] if line.strip("-")]  # not the rule
    return {row[0]: dict(zip(keys, map(float, row[1:]))) for row in rows}


def test_the_readme_states_the_quickstart_table():
    table = readme_quickstart_table()
    assert list(table) == ["original", "retrain", "natmu"] and all(len(v) == 5 for v in table.values())
    assert table["retrain"]["avg_gap"] == 0.0


@pytest.mark.slow  # about a minute: three trainings (the README's first command, run by CI's slow suite)
def test_quickstart_end_to_end_and_cache(tmp_path, capsys):
    cache = tmp_path / "cache"
    summary = quickstart.main(["--out", str(tmp_path / "run1"), "--cache-dir", str(cache), "--no-progress"])
    written = json.loads((tmp_path / "run1" / "summary.json").read_text())
    assert written == json.loads(json.dumps(summary))
    assert set(written["models"]) == {"original", "retrain", "natmu"}
    for metrics in written["models"].values():
        assert set(metrics) == {"forget_acc", "remain_acc", "test_acc", "mia_entropy", "avg_gap"}
        assert all(0 <= metrics[k] <= 100 for k in ("forget_acc", "remain_acc", "test_acc", "mia_entropy"))
    assert written["models"]["retrain"]["avg_gap"] == 0.0
    # The original memorises its training data (test accuracy clearly lower); Retrain
    # never saw the forget set.
    original = written["models"]["original"]
    assert original["remain_acc"] >= 99.0 and original["test_acc"] <= original["remain_acc"] - 3
    for key in ("original_ckpt", "retrain_ckpt", "natmu_ckpt", "forget_indices"):
        assert Path(written[key]).is_file(), key
    table = capsys.readouterr().out
    assert "avg gap to Retrain" in table and "natmu" in table

    # A second run reuses both cached checkpoints untouched and reproduces their numbers.
    stamps = {key: os.stat(written[key]).st_mtime_ns for key in ("original_ckpt", "retrain_ckpt")}
    again = quickstart.main(["--out", str(tmp_path / "run2"), "--cache-dir", str(cache), "--no-progress"])
    assert "reused" in capsys.readouterr().out
    assert {key: os.stat(again[key]).st_mtime_ns for key in stamps} == stamps
    for role in ("original", "retrain"):
        assert again["models"][role] == written["models"][role]

    # The table README.md states for the default seed, within a few samples: another CPU generation's
    # floats differ. The two machines measured (README.md gives both) differed by at most 4 of the
    # 130 forget images (3.08 points; MIA 3 images), 3 of 1,127 remaining (0.27), 8 of 540 test
    # images (1.48) and 0.30 in the average gap: bounds of about twice that, per metric.
    tolerance = {"forget_acc": 6.2, "mia_entropy": 6.2, "remain_acc": 0.6, "test_acc": 3.0, "avg_gap": 0.6}
    stated = readme_quickstart_table()
    assert set(stated) == set(written["models"])
    for role, values in stated.items():
        for key, value in values.items():
            measured = written["models"][role][key]
            assert abs(measured - value) <= tolerance[key], (role, key, measured, value)

    # NatMU lands near Retrain (issue 17's bar; its lr was selected on other seeds' forget sets). Its
    # forget accuracy on one seed moves with the machine (2.31 and 3.85 points from Retrain's on the
    # two measured; over seeds it spreads by ± 2.35, benchmarks/RESULTS.md's shipped digits table).
    natmu, retrain = written["models"]["natmu"], written["models"]["retrain"]
    assert natmu["avg_gap"] <= 2.5 and abs(natmu["forget_acc"] - retrain["forget_acc"]) <= 4.0, natmu
    record = json.loads(Path(written["record"]).read_text())
    assert Path(written["natmu_ckpt"]).resolve() in {Path(e["path"]) for e in record["checkpoints_written"]}

    # As a user sees it: one line per phase, the table, and nothing from the stack.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "natmu_lightning.quickstart",
            "--out",
            str(tmp_path / "run3"),
            "--cache-dir",
            str(cache),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    console = result.stdout + result.stderr
    assert [line[:5] for line in console.splitlines() if line.startswith("[")] == ["[1/3]", "[2/3]", "[3/3]"]
    for noise in ("Tip", "deprecated", "GPU available", "Warning", "LOCAL_RANK", "Loading `train_dataloader`"):
        assert noise not in console, (noise, console)
    assert "avg gap to Retrain" in console


def test_quickstart_refuses_to_overwrite(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "summary.json").write_text("{}")
    with pytest.raises(SystemExit):
        quickstart.main(["--out", str(out), "--cache-dir", str(tmp_path / "cache")])
    assert (out / "summary.json").read_text() == "{}"


def test_module_entry_point_help():
    result = subprocess.run(
        [sys.executable, "-m", "natmu_lightning.quickstart", "--help"], capture_output=True, text=True, check=True
    )
    assert "--out" in result.stdout


@pytest.mark.usefixtures("digits_workdir")
def test_quickstart_settings_are_the_digits_configs_as_the_cli_reads_them():
    """The quickstart reads configs/digits; the CLI, parsing the same compositions, is the reference."""
    from natmu_lightning.cli import main

    cfg = quickstart.QuickstartConfig.from_configs(seed=0)
    original = main(digits_args("original"), run=False)
    natmu = main(digits_args("natmu"), run=False)
    assert original.trainer.max_epochs == cfg.classifier_epochs
    assert original.model.recipe == cfg.classifier_recipe
    assert natmu.trainer.max_epochs == cfg.unlearn_epochs
    assert natmu.model.recipe == cfg.unlearn_recipe
    for cli in (original, natmu):
        data = cli.datamodule
        assert data.source.noise_std == cfg.noise_std and data.forget.ratio == cfg.forget_ratio
        assert (data.batch_size, data.crop_padding, data.horizontal_flip, data.seed) == (
            cfg.batch_size,
            cfg.crop_padding,
            cfg.horizontal_flip,
            cfg.seed,
        )
    assert natmu.datamodule.natmu == cfg.hybrids
    # The values README.md states for the quickstart, pinned here so a config edit shows up.
    assert (cfg.classifier_epochs, cfg.unlearn_epochs, cfg.unlearn_recipe.lr) == (100, 5, 0.03)
    assert (cfg.forget_ratio, cfg.hybrids.delta, cfg.hybrids.k, cfg.noise_std) == (0.1, -0.19, 4, 0.25)


def test_failed_checkpoint_save_keeps_the_previous_file_and_no_temporary(tmp_path):
    class FailingTrainer:
        def save_checkpoint(self, path, weights_only=False):
            Path(path).write_bytes(b"partial")
            raise OSError("disk full")

    ckpt = tmp_path / "natmu.ckpt"
    ckpt.write_bytes(b"earlier run")
    with pytest.raises(OSError, match="disk full"):
        quickstart._save_checkpoint(FailingTrainer(), ckpt)
    assert ckpt.read_bytes() == b"earlier run"
    assert [p.name for p in tmp_path.iterdir()] == ["natmu.ckpt"]


def readme_python_example() -> str:
    """README.md's Python API block, which docs/your-model-and-data.md repeats word for word."""
    root = Path(__file__).resolve().parents[1]
    blocks = [
        [block for block in path.read_text().split("```python\n")[1:] if "trainer.fit(" in block][0].split("```")[0]
        for path in (root / "README.md", root / "docs" / "your-model-and-data.md")
    ]
    assert blocks[0] == blocks[1], "README.md and docs/your-model-and-data.md show different Python examples"
    return blocks[0]


@pytest.mark.slow  # two NatMU fits of 5 epochs on the session's digits checkpoints
def test_the_readme_python_example_trains_the_digits_natmu_command(digits_workdir):
    """The Python API block and `natmu-lightning fit ... natmu.yaml` are the same run: the same
    final metrics, to the bit, on one machine."""
    from natmu_lightning.callbacks.record import find_evaluator
    from natmu_lightning.cli import main

    main(["fit", *digits_args("natmu"), "--trainer.enable_progress_bar", "false"])
    [written] = (digits_workdir / "runs/digits/random10/natmu").glob("version_*/unlearning_metrics.json")
    command = json.loads(written.read_text())
    namespace: dict = {}
    exec(compile(readme_python_example(), "README.md", "exec"), namespace)
    python = find_evaluator(namespace["trainer"]).last_metrics
    keys = ("forget_acc", "remain_acc", "test_acc", "mia_entropy", "mia_svc_entropy", "kl_to_reference", "avg_gap")
    assert {k: python[k] for k in keys} == {k: command[k] for k in keys}
