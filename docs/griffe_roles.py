"""Griffe extension for the API pages: the docstrings' reStructuredText bits, rendered as Markdown.

mkdocstrings reads docstrings as Markdown, where two habits of these docstrings would show as written:

* cross-reference roles: ``:class:`~lightning_difficulty.data.IndexedDataset``` becomes ```IndexedDataset```
  (the ``~`` keeps the last name, as Sphinx does), ``:func:`build_index``` becomes ```build_index```;
* a line ending in ``::`` that opens an indented literal block: the block is already code in Markdown, so the
  line keeps one colon, and ``Example::`` becomes a bold "Example" (a plain ``Example:`` would be read as a
  Google-style section, whose text is not code).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|func|meth|attr|mod|data|exc|obj):`(~?)([^`]+)`")
_EXAMPLE = re.compile(r"^(\s*)Examples?::$", re.MULTILINE)
_LITERAL = re.compile(r"(\S)::$", re.MULTILINE)


def _as_code(match: re.Match[str]) -> str:
    target = match.group(2)
    return f"`{target.rsplit('.', 1)[-1] if match.group(1) else target}`"


class SphinxRoles(griffe.Extension):
    """Rewrites every docstring once griffe has loaded it."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            text = _ROLE.sub(_as_code, obj.docstring.value)
            text = _EXAMPLE.sub(r"\1**Example**", text)
            obj.docstring.value = _LITERAL.sub(r"\1:", text)
