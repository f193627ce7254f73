"""The README's code blocks work as printed: commands, files, modules, names and CLI options exist.

Shell blocks (and ``$ `` lines of plain blocks) are checked word by word against the Makefile, the
virtual environment's ``bin`` folder, the files of the repository and ``lightning-difficulty``'s own
parser; Python blocks must compile and import only modules and names that exist. The Usage block must
be ``examples/quickstart.py``'s marked part, exactly.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import re
import shlex
import sys
from pathlib import Path

import pytest

from lightning_difficulty.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
BIN = Path(sys.executable).parent
_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _blocks(language: str) -> list[str]:
    return [body for lang, body in _BLOCK.findall(README) if lang == language]


def _shell_lines() -> list[str]:
    lines = [line for body in _blocks("bash") + _blocks("sh") for line in body.splitlines()]
    lines += [line[2:] for body in _blocks("") for line in body.splitlines() if line.startswith("$ ")]
    return [line.split(" #", 1)[0].strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Za-z][\w-]*):", text, flags=re.MULTILINE))


def _cli_options() -> dict[str, set[str]]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    options = {name: {o for a in command._actions for o in a.option_strings} for name, command in sub.choices.items()}
    options[""] = {o for a in parser._actions for o in a.option_strings}
    return options


def _words(line: str) -> list[str]:
    """Shell words with the README's ``[--option value]`` / ``[A | B]`` brackets of optional parts removed."""
    return [w.strip("[]") for w in shlex.split(line.replace(" | ", " ")) if w.strip("[]") not in ("", "...")]


def _problems(line: str, targets: set[str], cli: dict[str, set[str]]) -> list[str]:
    words = _words(line)
    program, args = words[0], words[1:]
    if program == "make":
        return [f"make target {t!r} is not in the Makefile" for t in args if t not in targets]
    if not program.startswith(".venv/bin/"):
        return [f"{program!r} is not found unless the environment is active: write .venv/bin/{program}"]
    name = program.removeprefix(".venv/bin/")
    if not (BIN / name).exists():
        return [f"{program} does not exist after set-up"]
    if name == "lightning-difficulty":
        command = args[0] if args and not args[0].startswith("-") else ""
        if command not in cli:
            return [f"lightning-difficulty has no command {command!r}"]
        return [
            f"`lightning-difficulty {command}` has no option {w}"
            for w in args
            if w.startswith("-") and w not in cli[command]
        ]
    if name == "python":
        return _python_problems(args)
    return []


def _python_problems(args: list[str]) -> list[str]:
    if args[:1] == ["-m"]:
        return [] if importlib.util.find_spec(args[1]) else [f"no module {args[1]!r}"]
    script = ROOT / args[0]
    if not script.is_file():
        return [f"no file {args[0]}"]
    source = script.read_text(encoding="utf-8")
    return [f"{args[0]} has no option {w}" for w in args[1:] if w.startswith("--") and f'"{w}"' not in source]


def test_every_shell_command_works_as_printed() -> None:
    lines = _shell_lines()
    assert any(line.startswith(".venv/bin/lightning-difficulty compare") for line in lines)
    targets, cli = _make_targets(), _cli_options()
    problems = [f"{line}: {problem}" for line in lines for problem in _problems(line, targets, cli)]
    assert problems == []


def _imports(tree: ast.AST) -> list[tuple[str, list[str]]]:
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, [alias.name for alias in node.names]))
    return found


@pytest.mark.parametrize("index", range(len(_blocks("python"))))
def test_every_python_block_compiles_and_imports_what_exists(index: int) -> None:
    tree = ast.parse(_blocks("python")[index])
    for module, names in _imports(tree):
        assert importlib.util.find_spec(module) is not None, f"no module {module!r}"
        if module.split(".")[0] == "lightning_difficulty":
            loaded = importlib.import_module(module)
            missing = [n for n in names if not hasattr(loaded, n) and importlib.util.find_spec(f"{module}.{n}") is None]
            assert missing == [], f"{module} has no {missing}"


def test_usage_is_the_quickstart_exactly() -> None:
    source = (ROOT / "examples" / "quickstart.py").read_text(encoding="utf-8")
    marked = re.search(r'# --- README "Usage" from here ---\n(.*?)# --- README "Usage" to here ---', source, re.DOTALL)
    assert marked is not None
    usage = README.split("\n## Usage\n", 1)[1].split("\n## ", 1)[0]
    shown = _BLOCK.search(usage)
    assert shown is not None and shown.group(1) == "python"
    assert shown.group(2) == marked.group(1)
    assert "x, y, _index = batch" in shown.group(2)  # the step's signature is visible


def test_the_readme_names_files_that_exist() -> None:
    # backquoted repository paths (examples/..., benchmarks/..., docs/..., tests/..., resources/...)
    paths = set(re.findall(r"`((?:examples|benchmarks|docs|tests)/[\w./-]+\.\w+)`", README))
    paths |= {f"src/lightning_difficulty/{p}" for p in re.findall(r"`(resources/[\w./-]+\.\w+)`", README)}
    assert paths, "no file reference found: the pattern is broken"
    assert sorted(p for p in paths if not (ROOT / p).exists()) == []
