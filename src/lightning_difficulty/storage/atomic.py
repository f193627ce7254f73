"""Atomic file writes: a crash never leaves a half-written output behind.

Files are created with mode ``0o666`` minus the process umask (``0644`` under the usual ``022``), like
the files Lightning and ``open()`` create, so a TensorBoard service or a teammate can read them.
``tempfile.mkstemp`` is not used: it always creates ``0600`` files.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one step.

    Example::

        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
        >>> with atomic_path(target) as tmp:
        ...     _ = tmp.write_text("done")
        >>> target.read_text()
        'done'
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_file_beside(target)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def _new_file_beside(target: Path) -> Path:
    """Create a new, empty, uniquely named hidden file beside ``target`` whose mode respects the umask."""
    for _ in range(100):
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the kernel applies the umask
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"Could not create a temporary file beside {target}: 100 random names were all taken.")


def write_atomic(path: str | os.PathLike[str], writer: Callable[[Path], Any]) -> Path:
    """Call ``writer(tmp_path)`` and move the result to ``path`` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def write_json(path: str | os.PathLike[str], payload: Any) -> Path:
    """Write JSON atomically (NaN written as null, numpy scalars converted)."""
    text = json.dumps(_jsonable(payload), indent=2, sort_keys=False, allow_nan=False)
    return write_atomic(path, lambda tmp: tmp.write_text(text + "\n"))


def write_npy(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Write a ``.npy`` file atomically."""

    def _write(tmp: Path) -> None:
        with tmp.open("wb") as fh:
            np.save(fh, array)

    return write_atomic(path, _write)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value
