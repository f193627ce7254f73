"""The package's runtime dependencies are declared exactly: every third-party import of ``src`` is in
``pyproject.toml``'s ``dependencies``, and every declared dependency is imported."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imported_top_levels() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "src" / "lightning_difficulty").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {name for name in found if name not in sys.stdlib_module_names and name not in ("lightning_difficulty",)}


def test_every_third_party_import_is_declared_and_nothing_else() -> None:
    declared = {
        _normalise(re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0])
        for spec in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    }
    distributions = packages_distributions()
    imported: dict[str, set[str]] = {}
    for module in _imported_top_levels():
        names = {_normalise(d) for d in distributions.get(module, [])}
        assert names, f"{module} is imported by the package but no installed distribution provides it"
        imported[module] = names
    undeclared = {m: n for m, n in imported.items() if not n & declared}
    assert not undeclared, f"imported but not declared in pyproject dependencies: {undeclared}"
    used = set().union(*imported.values())
    assert declared <= used, f"declared but never imported: {sorted(declared - used)}"
