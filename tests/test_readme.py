"""The README and the docs pages work as printed: commands, files, modules, names, options and links exist.

Shell blocks (and ``$ `` lines of plain blocks) are checked word by word against the Makefile, the
virtual environment's ``bin`` folder, the files of the repository, ``lightning-difficulty``'s own parser and,
for ``pip install`` lines, the extras of ``pyproject.toml`` and the torch the Makefile pins. Python blocks must
compile and import only modules and names that exist. The README's Usage block must be
``examples/quickstart.py``'s marked part, exactly; the README stays within 200 lines and its links into
``docs/`` name pages and headings that exist. Each message quoted on the Troubleshooting page must still be
part of a string the package's source holds. (The strict ``mkdocs build`` of ``make test`` checks the links
between the pages; ``tests/test_wheel.py`` runs the Quickstart page's script.)
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import re
import shlex
import sys
import unicodedata
from pathlib import Path

import pytest
from packaging.requirements import InvalidRequirement, Requirement

from lightning_difficulty.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
PAGES = {path.name: path.read_text(encoding="utf-8") for path in sorted((ROOT / "docs").glob("*.md"))}
BIN = Path(sys.executable).parent
CHECKOUT = "/path/to/lightning-difficulty"  # how the README and the Install page write the checkout's path
_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _blocks(text: str, language: str) -> list[str]:
    return [body for lang, body in _BLOCK.findall(text) if lang == language]


def _shell_lines(text: str) -> list[str]:
    lines = [line for body in _blocks(text, "bash") + _blocks(text, "sh") for line in body.splitlines()]
    lines += [line[2:] for body in _blocks(text, "") for line in body.splitlines() if line.startswith("$ ")]
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


def _extras() -> set[str]:
    """The names under ``[project.optional-dependencies]`` of pyproject.toml (no tomllib before Python 3.11)."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    section = text.split("\n[project.optional-dependencies]\n", 1)[1].split("\n[", 1)[0]
    return set(re.findall(r"^([A-Za-z][\w-]*) = \[", section, flags=re.MULTILINE))


def _project_name() -> str:
    return re.findall(r'^name = "([^"]+)"', (ROOT / "pyproject.toml").read_text(encoding="utf-8"), re.MULTILINE)[0]


def _pinned_torch() -> str:
    """The torch version the Makefile installs first (the local CPU wheel)."""
    pins = set(re.findall(r"torch==([\w.+]+)", (ROOT / "Makefile").read_text(encoding="utf-8")))
    assert len(pins) == 1, f"the Makefile should pin one torch version, found {pins}"
    return pins.pop()


def _words(line: str) -> list[str]:
    """Shell words with the docs' ``[--option value]`` / ``[A | B]`` brackets of optional parts removed."""
    return [w.strip("[]") for w in shlex.split(line.replace(" | ", " ")) if w.strip("[]") not in ("", "...")]


def _problems(line: str, targets: set[str], cli: dict[str, set[str]], *, prefixed: bool) -> list[str]:
    """What does not work in one shell line; ``prefixed``: programs must be written ``.venv/bin/NAME``."""
    if line.startswith("pip "):
        return _pip_problems(shlex.split(line)[1:])
    words = _words(line)
    program, args = words[0], words[1:]
    if program == "make":
        return [f"make target {t!r} is not in the Makefile" for t in args if t not in targets]
    if prefixed and not program.startswith(".venv/bin/"):
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
    if args[:1] == ["-c"]:
        return _import_problems(ast.parse(args[1]))
    script = ROOT / args[0]
    if not script.is_file():
        return [f"no file {args[0]}"]
    source = script.read_text(encoding="utf-8")
    return [f"{args[0]} has no option {w}" for w in args[1:] if w.startswith("--") and f'"{w}"' not in source]


def _pip_problems(args: list[str]) -> list[str]:
    """``pip install`` of the checkout (with extras that exist), of the pinned torch, or of a direct reference."""
    if args[:1] != ["install"]:
        return [f"pip {' '.join(args)}: only `pip install` is shown"]
    problems: list[str] = []
    extras = _extras()
    words = iter(args[1:])
    for word in words:
        if word == "--index-url":
            url = next(words, "")
            if not url.startswith("https://"):
                problems.append(f"--index-url {url!r} is not an https URL")
            continue
        if word.startswith(CHECKOUT):
            asked = set(re.findall(r"\[([\w,]+)\]$", word)[0].split(",")) if word.endswith("]") else set()
            problems += [f"{word}: pyproject.toml has no extra {e!r}" for e in sorted(asked - extras)]
            continue
        try:
            requirement = Requirement(re.sub(r"<[^>]+>", "placeholder", word))  # e.g. git+<URL of this repository>
        except InvalidRequirement as err:
            problems.append(f"{word!r} is neither the checkout nor a requirement: {err}")
            continue
        if requirement.name == "torch":
            pinned = _pinned_torch()
            if str(requirement.specifier) not in ("", f"=={pinned}"):
                problems.append(f"{word}: the Makefile installs torch=={pinned}")
        elif requirement.name == _project_name():
            problems += [f"{word}: pyproject.toml has no extra {e!r}" for e in sorted(requirement.extras - extras)]
            if requirement.url is not None and not requirement.url.startswith("git+"):
                problems.append(f"{word}: a direct reference here is a git URL")
        else:
            problems.append(f"{word}: the docs install only torch and this package")
    return problems


def _check_shell(text: str, *, prefixed: bool) -> list[str]:
    targets, cli = _make_targets(), _cli_options()
    lines = _shell_lines(text)
    return [f"{line}: {problem}" for line in lines for problem in _problems(line, targets, cli, prefixed=prefixed)]


def test_every_readme_command_works_as_printed() -> None:
    lines = _shell_lines(README)
    assert "make demo" in lines and "make test" in lines  # the two commands
    assert any(line.startswith(".venv/bin/lightning-difficulty compare") for line in lines)
    assert any(line.startswith("pip install torch --index-url") for line in lines)  # the CPU-torch note
    assert "pip install torch==" + _pinned_torch() in README
    assert _check_shell(README, prefixed=True) == []


@pytest.mark.parametrize("page", sorted(name for name, text in PAGES.items() if _shell_lines(text)))
def test_every_docs_command_works_as_printed(page: str) -> None:
    # the pages also show commands for an activated environment, so a bare program name is fine there
    assert _check_shell(PAGES[page], prefixed=False) == []


def test_extras_are_read_from_pyproject() -> None:
    assert {"dev", "docs", "gpu", "examples"} <= _extras()
    assert _project_name() == "lightning-difficulty"


def test_the_checker_finds_broken_commands() -> None:
    broken = (
        "```bash\nmake nothing\n.venv/bin/lightning-difficulty compare A B --no-such-option\ntensorboard --logdir x\n"
        f'pip install "{CHECKOUT}[nonexistent]"\npip install torch==0.0.1\n.venv/bin/python examples/missing.py\n```\n'
    )
    found = _check_shell(broken, prefixed=True)
    assert len(found) == 6, found


def _import_problems(tree: ast.AST) -> list[str]:
    problems: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found = [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found = [(node.module, [alias.name for alias in node.names])]
        else:
            continue
        for module, names in found:
            if importlib.util.find_spec(module) is None:
                problems.append(f"no module {module!r}")
            elif module.split(".")[0] == "lightning_difficulty":
                loaded = importlib.import_module(module)
                missing = [n for n in names if not hasattr(loaded, n) and not importlib.util.find_spec(f"{module}.{n}")]
                problems += [f"{module} has no {n!r}" for n in missing]
    return problems


_PYTHON_BLOCKS = [("README.md", i) for i in range(len(_blocks(README, "python")))] + [
    (name, i) for name, text in PAGES.items() for i in range(len(_blocks(text, "python")))
]


@pytest.mark.parametrize(("document", "index"), _PYTHON_BLOCKS)
def test_every_python_block_compiles_and_imports_what_exists(document: str, index: int) -> None:
    text = README if document == "README.md" else PAGES[document]
    assert _import_problems(ast.parse(_blocks(text, "python")[index])) == []


def test_usage_is_the_quickstart_exactly() -> None:
    source = (ROOT / "examples" / "quickstart.py").read_text(encoding="utf-8")
    marked = re.search(r'# --- README "Usage" from here ---\n(.*?)# --- README "Usage" to here ---', source, re.DOTALL)
    assert marked is not None
    usage = README.split("\n## Usage\n", 1)[1].split("\n## ", 1)[0]
    shown = _BLOCK.search(usage)
    assert shown is not None and shown.group(1) == "python"
    assert shown.group(2) == marked.group(1)
    assert "x, y, _index = batch" in shown.group(2)  # the step's signature is visible


def test_the_readme_is_short_and_keeps_its_sections() -> None:
    assert len(README.splitlines()) <= 200
    headings = re.findall(r"^## (.+)$", README, flags=re.MULTILINE)
    for needed in ("Install", "The two commands", "Usage", "Where results go", "What is guaranteed"):
        assert needed in headings
    assert len(re.findall(r"^!\[", README, flags=re.MULTILINE)) == 1  # one figure


_SOURCE_ROOTS = r"(?:examples|benchmarks|docs|tests|src)/"
_PACKAGE_DIRS = r"(?:functional|pipeline|storage|callbacks|views|dashboard|runs|demo|resources)/"
_FILE = r"[\w./-]+\.(?:py|json|md|png|js|css|toml|yml|npz|npy)"  # `functional/knn.merge_neighbours` is no file


@pytest.mark.parametrize("document", ["README.md", *sorted(PAGES)])
def test_named_files_exist(document: str) -> None:
    text = README if document == "README.md" else PAGES[document]
    # backquoted repository paths, and package paths written from src/lightning_difficulty/
    paths = set(re.findall(rf"`({_SOURCE_ROOTS}{_FILE})`", text))
    paths |= {f"src/lightning_difficulty/{p}" for p in re.findall(rf"`({_PACKAGE_DIRS}{_FILE})`", text)}
    assert sorted(p for p in paths if not (ROOT / p).exists()) == []


def test_some_files_are_named_at_all() -> None:
    # the pattern above found something: it is not broken
    assert re.findall(rf"`({_SOURCE_ROOTS}{_FILE})`", README)
    assert re.findall(rf"`({_PACKAGE_DIRS}{_FILE})`", PAGES["scale.md"])


def _slug(heading: str) -> str:
    """A heading's anchor as Python-Markdown's toc writes it (markup dropped, then lowercase and dashes)."""
    text = re.sub(r"[`*]", "", heading)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def test_slug_matches_hand_computed_anchors() -> None:
    assert _slug("ImageNet-size scale (`benchmarks/scale.py`)") == "imagenet-size-scale-benchmarksscalepy"
    assert _slug("DDP, scale and the cost model") == "ddp-scale-and-the-cost-model"


def test_readme_links_into_the_docs_exist() -> None:
    links = re.findall(r"\]\((docs/[^)#\s]+)(?:#([^)\s]+))?\)", README)
    assert {link for link, _ in links} >= {"docs/install.md", "docs/quickstart.md", "docs/scores.md"}
    for link, anchor in links:
        target = ROOT / link
        assert target.is_file(), f"README links to {link}, which does not exist"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", target.read_text(encoding="utf-8"), flags=re.MULTILINE)
            assert anchor in {_slug(h) for h in headings}, f"{link} has no heading #{anchor}"
    pages = set(re.findall(r"^\s+- [^:]+: (\S+\.md)$", (ROOT / "mkdocs.yml").read_text(encoding="utf-8"), re.M))
    assert pages == set(PAGES)  # every page is in the site's navigation, and every entry is a page


def _source_strings() -> list[str]:
    """Every string literal of the package, f-strings as their literal parts (the values left out)."""
    found: list[str] = []
    for path in (ROOT / "src" / "lightning_difficulty").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.append(node.value)
    return found


def _quoted_messages(page: str) -> list[str]:
    """The code spans of every ``- Message:`` item of a page (an item may run onto the next line)."""
    items = re.findall(r"^- Message: (.*?)(?=^- |^$|^\*\*)", page, flags=re.MULTILINE | re.DOTALL)
    return [a or b for item in items for a, b in re.findall(r"``(.+?)``|`([^`]+)`", item.replace("\n", " "))]


def test_troubleshooting_quotes_what_the_package_says() -> None:
    messages = _quoted_messages(PAGES["troubleshooting.md"])
    assert len(messages) >= 30
    strings = _source_strings()
    assert [m for m in messages if not any(m in s for s in strings)] == []
