"""What README.md and the user guide (``docs/``, ``configs/README.md``) quote still exists and parses.

Nothing here trains or runs a benchmark; the whole module takes seconds:

* every repository path quoted as code (``configs/...``, ``natmu_lightning/...``,
  ``benchmarks/...``, ``tests/...``, ``docs/...``, ``.ci/...``) exists; a path inside the
  wheel (``natmu_lightning/config_files/...``) is looked up in ``configs/``, where it is kept;
* every ``python -m MODULE`` and ``python benchmarks/x.py`` names a module or file that exists
  (found, not run), and every ``natmu-lightning-*`` command is a console script of ``setup.cfg``;
* every ``natmu-lightning fit|validate|test`` command parses: it is run in-process with
  ``--print_config`` appended, from the repository root, and must print a config and exit 0.
  Paths that are only strings at parse time (checkpoints such as ``PATH_TO_NATMU.ckpt`` or
  ``runs/.../last.ckpt``, a previous request's record folder) need not exist. A ``--config``
  file that an earlier documented step writes must: ``WRITTEN_BY_EARLIER_STEPS`` stands in
  for each one, and any other missing config fails;
* every YAML block is a config fragment the CLI accepts after the digits NatMU run, and every
  Python block compiles and imports only names that exist;
* README.md stays short, links only to pages that exist, and shows the test command
  ``.ci/run`` runs; ``mkdocs.yml``'s nav lists every page of ``docs/``.
"""

from __future__ import annotations

import ast
import configparser
import importlib
import importlib.util
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from natmu_lightning.cli import main

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
DOC_FILES = [README, *sorted(DOCS.glob("*.md")), ROOT / "configs" / "README.md"]
README_MAX_LINES = 150
CLI_SUBCOMMANDS = {"fit", "validate", "test", "predict"}
SHELL_LAUNCHERS = {"srun"}  # run the command that follows on each allocated node
REPO_PATH = re.compile(r"(?<![\w./-])((?:configs|natmu_lightning|benchmarks|tests|docs|\.ci)/[\w./-]*)")
PYTHON_MODULE = re.compile(r"\bpython -m ([\w.]+)")
PYTHON_SCRIPT = re.compile(r"\bpython ((?:benchmarks|natmu_lightning)/[\w/]+\.py)")
SHELL_SPAN = re.compile(r"(natmu-lightning[\w-]*|python) ")  # an inline span that is a whole command
CONSOLE_SCRIPT = re.compile(r"(?<![\w./-])(natmu-lightning(?:-[a-z]+)*)(?![\w./-])")

# Config fragments the documented commands read but an earlier documented step writes, each
# replaced by a stand-in with the same keys while the command is parsed.
WRITTEN_BY_EARLIER_STEPS = {
    # natmu-lightning-select-lr --out runs/select_lr: the keys natmu_lightning/lr_selection.py writes
    "runs/select_lr/selected_lr.yaml": "model:\n  init_args:\n    recipe:\n      lr: 0.03\n"
    "data:\n  natmu:\n    delta: -0.19\n",
}
# What a YAML block of the guide is composed after, to check that the CLI accepts it.
FRAGMENT_BASE = ["fit", "--config", "configs/digits/base.yaml", "--config", "configs/digits/natmu.yaml"]


@dataclass(frozen=True)
class CodeBlock:
    """A fenced code block of a Markdown file.

    Attributes:
        doc: the file, relative to the repository root.
        language: the fence's language tag (``bash``, ``yaml``, ...; empty when none).
        text: the block's contents.
    """

    doc: str
    language: str
    text: str


def _relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


def code_blocks(path: Path) -> list[CodeBlock]:
    """The fenced code blocks of the Markdown file ``path``."""
    return [
        CodeBlock(_relative(path), language, text)
        for language, text in re.findall(r"^```(\w*)\n(.*?)^```", path.read_text(), flags=re.M | re.S)
    ]


def inline_code(path: Path) -> list[str]:
    """The inline code spans of the Markdown file ``path`` (outside fenced blocks), each on one line."""
    prose = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.M | re.S)
    return [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", prose)]


def quoted_code() -> list[tuple[str, str]]:
    """Every piece of code the documents quote, blocks and spans, as ``(document, code)``."""
    quoted = []
    for path in DOC_FILES:
        quoted += [(block.doc, block.text) for block in code_blocks(path)]
        quoted += [(_relative(path), span) for span in inline_code(path)]
    return quoted


def quoted_shell() -> list[tuple[str, str]]:
    """The shell the documents quote, as ``(document, code)``: ``bash`` blocks, and inline spans
    that start with a command (``natmu-lightning ...``, ``python ...``)."""
    quoted = []
    for path in DOC_FILES:
        quoted += [(block.doc, block.text) for block in code_blocks(path) if block.language == "bash"]
        quoted += [(_relative(path), span) for span in inline_code(path) if SHELL_SPAN.match(span)]
    return quoted


def shell_commands(text: str) -> list[list[str]]:
    """The commands of a shell snippet as argument lists: continued lines joined, comments dropped,
    ``NAME="..."`` assignments expanded where ``$NAME`` is used, launchers (``srun``) dropped."""
    variables: dict[str, list[str]] = {}
    commands = []
    for line in text.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if len(words) == 1 and re.fullmatch(r"[A-Za-z_]\w*=.*", words[0]):
            name, value = words[0].split("=", 1)
            variables[name] = value.split()
            continue
        expanded: list[str] = []
        for word in words:
            if word.startswith("$"):
                assert word[1:] in variables, f"{word} is not set earlier in the snippet: {line}"
                expanded += variables[word[1:]]
            else:
                expanded.append(word)
        while expanded and expanded[0] in SHELL_LAUNCHERS:
            expanded = expanded[1:]
        if expanded:
            commands.append(expanded)
    return commands


def cli_commands() -> list[tuple[str, list[str]]]:
    """Every ``natmu-lightning <subcommand>`` (or ``python -m natmu_lightning <subcommand>``) command
    quoted in a ``bash`` block or an inline span, as ``(document, arguments after the program)``;
    a command quoted again (README.md and docs/index.md share one) is listed once."""
    found: list[tuple[str, list[str]]] = []
    for doc, code in quoted_shell():
        for words in shell_commands(code):
            if words[:3] == ["python", "-m", "natmu_lightning"]:
                words = ["natmu-lightning", *words[3:]]
            is_new = words[1:] not in [args for _, args in found]
            if len(words) > 1 and words[0] == "natmu-lightning" and words[1] in CLI_SUBCOMMANDS and is_new:
                found.append((doc, words[1:]))
    return found


def _in_repository(path: str) -> Path:
    """Where the repository keeps ``path`` (the wheel's ``natmu_lightning/config_files`` is ``configs``)."""
    return ROOT / re.sub(r"^natmu_lightning/config_files(?=/|$)", "configs", path).rstrip(".")


def _module_exists(name: str) -> bool:
    """Whether ``python -m name`` finds something to run: a module of this repository (a ``.py``
    file, or a package with ``__main__.py``) or an installed one."""
    if (ROOT / name.split(".")[0]).is_dir():
        path = ROOT.joinpath(*name.split("."))
        return path.with_suffix(".py").is_file() or (path / "__main__.py").is_file()
    return importlib.util.find_spec(name) is not None


def _console_scripts() -> dict[str, str]:
    """``setup.cfg``'s console scripts: command name -> ``module:function``."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    scripts = {}
    for line in config["options.entry_points"]["console_scripts"].strip().splitlines():
        name, target = line.split("=", 1)
        scripts[name.strip()] = target.strip()
    return scripts


CLI_COMMANDS = cli_commands()


def test_every_quoted_repository_path_exists() -> None:
    quoted = {(doc, path) for doc, code in quoted_code() for path in REPO_PATH.findall(code)}
    assert len(quoted) > 20
    missing = sorted(f"{doc}: {path}" for doc, path in quoted if not _in_repository(path).exists())
    assert not missing, missing


def test_every_quoted_python_module_and_script_exists() -> None:
    modules = {(doc, name) for doc, code in quoted_code() for name in PYTHON_MODULE.findall(code)}
    scripts = {(doc, path) for doc, code in quoted_code() for path in PYTHON_SCRIPT.findall(code)}
    assert {"benchmarks.quality", "natmu_lightning.quickstart", "pytest"} <= {name for _, name in modules}
    missing = sorted(f"{doc}: python -m {name}" for doc, name in modules if not _module_exists(name))
    missing += sorted(f"{doc}: python {path}" for doc, path in scripts if not (ROOT / path).is_file())
    assert not missing, missing


def test_every_quoted_console_script_is_installed_by_setup_cfg() -> None:
    scripts = _console_scripts()
    quoted = {(doc, name) for doc, code in quoted_code() for name in CONSOLE_SCRIPT.findall(code)}
    assert {"natmu-lightning", "natmu-lightning-quickstart"} <= {name for _, name in quoted}
    assert not sorted(f"{doc}: {name}" for doc, name in quoted if name not in scripts)
    for name, target in scripts.items():  # each names a function its module defines
        module, function = target.split(":")
        tree = ast.parse(ROOT.joinpath(*module.split(".")).with_suffix(".py").read_text())
        assert function in {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}, name


def test_the_guide_quotes_cli_commands() -> None:
    assert len(CLI_COMMANDS) >= 12
    assert {doc for doc, _ in CLI_COMMANDS} >= {"README.md", "docs/cli.md", "docs/repeated-requests.md"}
    assert ["fit", "--config", "configs/digits/base.yaml", "--config", "configs/digits/natmu.yaml"] in [
        args for _, args in CLI_COMMANDS
    ]


@pytest.mark.parametrize(
    "args", [args for _, args in CLI_COMMANDS], ids=[f"{doc}-{i}" for i, (doc, _) in enumerate(CLI_COMMANDS)]
)
def test_cli_command_parses(
    args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``natmu-lightning ARGS --print_config`` prints the composed config and exits 0."""
    args = list(args)
    for i, value in enumerate(args[:-1]):
        if value == "--config" and args[i + 1] in WRITTEN_BY_EARLIER_STEPS:
            stand_in = tmp_path / Path(args[i + 1]).name
            stand_in.write_text(WRITTEN_BY_EARLIER_STEPS[args[i + 1]])
            args[i + 1] = str(stand_in)
    monkeypatch.chdir(ROOT)  # the guide's commands run from the repository's root
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--print_config"])
    assert exit_info.value.code in (0, None), capsys.readouterr().err[-2000:]
    printed = yaml.safe_load(capsys.readouterr().out)
    assert {"trainer", "model", "data"} <= set(printed)


def test_yaml_blocks_are_config_fragments_the_cli_accepts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocks = [block for path in DOC_FILES for block in code_blocks(path) if block.language == "yaml"]
    assert blocks
    monkeypatch.chdir(ROOT)
    for i, block in enumerate(blocks):
        fragment = tmp_path / f"fragment{i}.yaml"
        fragment.write_text(block.text)
        expected = yaml.safe_load(block.text)
        with pytest.raises(SystemExit) as exit_info:
            main([*FRAGMENT_BASE, "--config", str(fragment), "--print_config"])
        assert exit_info.value.code in (0, None), (block.doc, capsys.readouterr().err[-2000:])
        printed = yaml.safe_load(capsys.readouterr().out)
        assert set(expected) <= set(printed), block.doc


def test_python_blocks_compile_and_import_what_exists() -> None:
    blocks = [block for path in DOC_FILES for block in code_blocks(path) if block.language == "python"]
    assert any(block.doc == "README.md" for block in blocks)
    for block in blocks:
        tree = ast.parse(block.text, filename=block.doc)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                module = importlib.import_module(node.module)
                missing = [alias.name for alias in node.names if not hasattr(module, alias.name)]
                assert not missing, (block.doc, node.module, missing)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    importlib.import_module(alias.name)


def test_readme_is_short() -> None:
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/"


def test_readme_shows_the_test_command_ci_runs() -> None:
    """``.ci/run`` runs "the test command, verbatim from README.md ("Run the tests")"."""
    after = README.read_text().split("Run the tests", 1)[1]
    command = after.split("```bash\n", 1)[1].split("```", 1)[0].strip()
    assert command == "python -m pytest"
    assert command in (ROOT / ".ci" / "run").read_text().splitlines()


def test_links_between_pages_resolve() -> None:
    """README links into ``docs/``; the pages link to each other (relative ``.md`` links)."""
    for path in DOC_FILES[:-1]:
        for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text()):
            if re.match(r"[a-z]+://", target) or target.startswith("#"):
                continue
            file = target.split("#", 1)[0]
            assert (path.parent / file).is_file(), f"{_relative(path)}: link to {target}"


def test_mkdocs_nav_lists_every_page() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())

    def pages(entries: list[object]) -> list[str]:
        found: list[str] = []
        for entry in entries:
            value = next(iter(entry.values())) if isinstance(entry, dict) else entry
            found += pages(value) if isinstance(value, list) else [str(value)]
        return found

    nav = pages(config["nav"])
    assert sorted(nav) == sorted(str(p.relative_to(DOCS)) for p in DOCS.glob("*.md"))
