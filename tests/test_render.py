"""``python -m benchmarks.render``: RESULTS.md's rendered tables match their raw files, and a
changed number is caught."""

import re
import shutil

import pytest

from benchmarks import render


def test_every_rendered_table_matches_its_raw_files(capsys):
    assert render.main(["--check"]) == 0
    assert f"{len(render.TABLES)} of {len(render.TABLES)} rendered tables match" in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(render.TABLES))
def test_one_changed_number_fails_the_check(tmp_path, capsys, name):
    copy = tmp_path / "RESULTS.md"
    shutil.copy(render.RESULTS, copy)
    text = copy.read_text()
    block = next(m for m in render.BLOCK.finditer(text) if m["name"] == name)
    body = block["body"]
    number = re.search(r"\d+\.\d\d", body.split("\n", 2)[2])  # a figure below the header rows
    assert number is not None
    start = block.start("body") + len(body.split("\n", 2)[0]) + len(body.split("\n", 2)[1]) + 2 + number.start()
    changed = f"{float(number.group()) + 0.01:.2f}"
    copy.write_text(text[:start] + changed + text[start + len(number.group()) :])
    assert render.main(["--check", "--results", str(copy)]) == 1
    assert f"table {name!r} differs" in capsys.readouterr().out
    # rendering puts the raw file's number back
    assert render.main(["--results", str(copy)]) == 0
    assert copy.read_text() == text


def test_a_table_the_renderer_does_not_know_is_refused(tmp_path):
    copy = tmp_path / "RESULTS.md"
    copy.write_text("<!-- render: nowhere -->\n| a |\n<!-- /render -->\n")
    with pytest.raises(ValueError, match="'nowhere'"):
        render.main(["--check", "--results", str(copy)])


def test_every_figure_of_the_targets_at_a_glance_stands_in_a_rendered_table():
    """The targets table quotes the rendered tables (its own text is not rendered): each figure of
    its result column printed as the tables print them (two or more decimals; "within 0.1" is
    arithmetic, not a quote) must stand in one of them, so a re-rendered table that changes a
    figure makes this fail until the summary follows."""
    text = render.RESULTS.read_text()
    targets = text.split("### Targets at a glance\n", 1)[1].split("\n### ", 1)[0]
    results = [line.split(" | ", 1)[1] for line in targets.splitlines() if line.startswith("| ") and " | " in line]
    figure = r"(?<![\d.])\d+\.\d{2,}(?: ± \d+\.\d{2,})?(?![\d.])"  # a mean with its spread is one figure
    figures = {found for cell in results[1:] for found in re.findall(figure, cell)}
    rendered = "\n".join(match["body"] for match in render.BLOCK.finditer(text))
    assert figures, "no figure found in the targets table"
    assert sorted(f for f in figures if not re.search(rf"(?<![\d.]){re.escape(f)}(?![\d])", rendered)) == []


def test_every_table_outside_the_targets_summary_is_rendered():
    """A markdown table (its |---| row) outside a rendered block has no raw file behind it."""
    text = render.RESULTS.read_text()
    outside = render.BLOCK.sub("", text)
    outside = re.sub(r"### Targets at a glance\n.*?\n### ", "### ", outside, flags=re.DOTALL)
    unrendered = [line for line in outside.splitlines() if re.match(r"\|\s*:?-{3,}", line)]
    assert unrendered == []


def test_the_paper_table_shows_finished_rows_and_how_far_unfinished_runs_got():
    """``paper.json`` of a GPU session stopped by its time limit during the unlearning runs."""
    row = {"test_acc": 92.5, "remain_acc": 99.9, "forget_acc": 93.0, "mia_entropy": 80.25, "avg_gap": None}
    raw = {
        "paper_retrain": {"test_acc": 93.34, "remain_acc": 99.94, "forget_acc": 94.08, "mia_entropy": 83.88},
        "runs": {"retrain": {**row, "seconds": 201.4}, "natmu": {**row, "avg_gap": 1.5, "seconds": 30.2}},
        "stopped": {"signal": "SIGTERM", "running": {"ssd": {"seconds": 12.0, "epoch": None, "step": None}}},
    }
    lines = render.paper_table([raw]).splitlines()
    assert lines[2] == "| paper's Retrain (original CIFAR-10 files) | 93.34 | 99.94 | 94.08 | 83.88 | | |"
    assert lines[3] == "| retrain | 92.50 | 99.90 | 93.00 | 80.25 |  | 201 |"
    assert lines[4] == "| natmu | 92.50 | 99.90 | 93.00 | 80.25 | 1.50 | 30 |"
    assert lines[5] == "| ssd: unfinished (nothing logged) | | | | | | 12 |"
    raw["failed"], raw["stopped"] = {"running": {"ga": {"seconds": 9.6, "epoch": 2, "step": 700}}}, None
    assert render.paper_table([raw]).splitlines()[-1] == "| ga: unfinished (epoch 2, step 700) | | | | | | 10 |"


def test_the_gpu_fast_table_has_a_row_per_variant(tmp_path):
    """From a real ``benchmarks.gpu_fast --dry-run`` file, with one variant's failure added."""
    from benchmarks import gpu_fast

    raw = gpu_fast.main(["--dry-run", "--out", str(tmp_path), "--variants", "bf16-mixed"])
    raw["variants"]["32-true+compile"] = {"error": "BackendCompilerFailed: no triton"}
    lines = render.gpu_fast_table([raw]).splitlines()
    baseline, bf16 = raw["variants"]["32-true"], raw["variants"]["bf16-mixed"]
    assert lines[2] == (
        f"| {raw['device']} | `32-true` | {1000 * baseline['seconds_per_step']:.2f} | 1.00x "
        f"| {baseline['fit_seconds']:.1f} s |"
    )
    assert lines[3].startswith(f"| {raw['device']} | `bf16-mixed` | ") and f"{bf16['speedup']:.2f}x" in lines[3]
    assert lines[4] == f"| {raw['device']} | `32-true+compile` | failed: BackendCompilerFailed: no triton | | |"
