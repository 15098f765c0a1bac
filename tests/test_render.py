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
