"""Find a run's difficulty folder when the user names the run folder above it (e.g. ``runs/demo``).

The report writes ``<run>/difficulty/`` (``scores.parquet``, ``records/``, ...); commands take that
difficulty folder. Given a folder above it, :func:`resolve_run_dir` looks a few levels down and uses the
one difficulty folder it finds; several are refused with the list, so a wrong one is never picked.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

__all__ = ["MAX_DEPTH", "resolve_run_dir"]

MAX_DEPTH = 4
"""How many folder levels below the named folder are searched for a difficulty folder."""

Holds = Literal["scores", "records"]
_WHAT = {
    "scores": "per-sample table (scores.parquet)",
    "records": "per-epoch records (records/<split>/manifest.json)",
}


def _holds(folder: Path, holds: Holds) -> bool:
    if holds == "scores":
        return (folder / "scores.parquet").is_file()
    records = folder / "records"
    return records.is_dir() and any(records.glob("*/manifest.json"))


def _found_below(root: Path, holds: Holds) -> list[Path]:
    """Folders at most :data:`MAX_DEPTH` levels below ``root`` that hold what is needed (hidden ones skipped)."""
    found = []
    for current, dirs, _files in os.walk(root):
        here = Path(current)
        if here != root and _holds(here, holds):
            found.append(here)
            dirs[:] = []  # a difficulty folder's own sub-folders (records/, subsets/, ...) are not runs
            continue
        depth = len(here.relative_to(root).parts)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if depth < MAX_DEPTH else []
    return sorted(found)


def resolve_run_dir(path: str | os.PathLike[str], *, holds: Holds = "scores", name: str = "RUN") -> tuple[Path, str]:
    """The difficulty folder meant by ``path``, and a note saying so when it is not ``path`` itself (else ``""``).

    ``path`` is used as it is when it holds what the command reads (``holds``: the table, or the records;
    a ``.parquet`` file counts for the table); otherwise the only folder below it that does. ``name`` is
    the argument's name in messages.

    Raises:
        FileNotFoundError: ``path`` does not exist, or neither it nor any folder below it holds a run.
        ValueError: several runs lie below ``path`` (they are listed: pass one of them).

    Example::

        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> (root / "demo" / "difficulty").mkdir(parents=True)
        >>> _ = (root / "demo" / "difficulty" / "scores.parquet").write_bytes(b"")
        >>> folder, note = resolve_run_dir(root / "demo")
        >>> folder == root / "demo" / "difficulty", note.startswith("RUN")
        (True, True)
    """
    given = Path(path)
    example = "e.g. runs/demo/difficulty"
    if not given.exists():
        raise FileNotFoundError(f"{name} {given} does not exist. Pass a run's difficulty folder ({example}).")
    if given.is_file():
        if holds == "scores" and given.suffix == ".parquet":
            return given, ""
        raise FileNotFoundError(f"{name} {given} is a file. Pass a run's difficulty folder ({example}).")
    if _holds(given, holds):
        return given, ""
    found = _found_below(given, holds)
    if len(found) == 1:
        return found[0], f"{name} {given} holds no {_WHAT[holds]} itself; using {found[0]}, the run inside it."
    if not found:
        raise FileNotFoundError(
            f"{name} {given} holds no {_WHAT[holds]}, nor does any folder up to {MAX_DEPTH} levels below it. Pass a "
            f"run's difficulty folder ({example})"
            + ("; a run made with ConfusionScore(record='none') has no records." if holds == "records" else ".")
        )
    shown = ", ".join(str(f) for f in found[:5]) + (", ..." if len(found) > 5 else "")
    raise ValueError(f"{name} {given} holds {len(found)} runs ({shown}): pass one of them.")
