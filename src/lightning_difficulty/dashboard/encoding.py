"""Compact binary encoding of table columns for the browser: a JSON header and typed arrays.

Layout: 4-byte little-endian header length ``L``, ``L`` bytes of UTF-8 JSON, padding to a multiple
of 8, then each column's little-endian buffer at the header's ``offset`` (8-byte aligned). Kinds:
``float`` (float32, NaN = missing), ``int`` (int32), ``bool`` (uint8) and ``category`` (int32 codes
into ``categories``, -1 = missing).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["decode_columns", "encode_columns"]

_INT32 = np.iinfo(np.int32)


def _column_array(values: pd.Series) -> tuple[str, np.ndarray, list[str] | None] | None:
    dtype = values.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "bool", values.fillna(False).to_numpy(dtype=np.uint8), None
    if pd.api.types.is_integer_dtype(dtype) and not values.isna().any():
        ints = values.to_numpy(dtype=np.int64)
        if ints.size == 0 or (ints.min() >= _INT32.min and ints.max() <= _INT32.max):
            return "int", ints.astype("<i4"), None
        return "float", ints.astype("<f4"), None
    if pd.api.types.is_numeric_dtype(dtype):
        return "float", values.to_numpy(dtype=np.float64, na_value=np.nan).astype("<f4"), None
    if (
        isinstance(dtype, pd.CategoricalDtype)
        or pd.api.types.is_string_dtype(dtype)
        or pd.api.types.is_object_dtype(dtype)
    ):
        text = values.astype("string")
        codes, uniques = pd.factorize(text, sort=True, use_na_sentinel=True)
        return "category", np.asarray(codes, dtype="<i4"), [str(u) for u in uniques]
    return None


def encode_columns(frame: pd.DataFrame, extra: Mapping[str, np.ndarray] | None = None) -> bytes:
    """Encode every column of ``frame`` the browser can use (plus ``extra`` float arrays) as bytes.

    Columns of other dtypes (lists, objects that are not text) are left out.

    Example::

        >>> payload = encode_columns(pd.DataFrame({"a": [1.5, np.nan], "b": ["x", "y"]}))
        >>> decoded = decode_columns(payload)
        >>> decoded["b"].tolist(), bool(np.isnan(decoded["a"][1]))
        (['x', 'y'], True)
    """
    n = len(frame)
    specs: list[dict[str, Any]] = []
    buffers: list[bytes] = []
    items: list[tuple[str, tuple[str, np.ndarray, list[str] | None] | None]] = [
        (str(name), _column_array(frame[name])) for name in frame.columns
    ]
    for name, arr in (extra or {}).items():
        flat = np.asarray(arr, dtype="<f4").reshape(-1)
        if flat.size != n:
            raise ValueError(f"Expected extra column {name!r} to have {n} values, but got {flat.size}.")
        items.append((name, ("float", flat, None)))
    offset = 0
    for name, encoded in items:
        if encoded is None:
            continue
        kind, arr, categories = encoded
        raw = np.ascontiguousarray(arr).tobytes()
        spec: dict[str, Any] = {"name": name, "kind": kind, "dtype": arr.dtype.name, "offset": offset}
        if categories is not None:
            spec["categories"] = categories
        specs.append(spec)
        padded = raw + b"\0" * (-len(raw) % 8)
        buffers.append(padded)
        offset += len(padded)
    header = json.dumps({"n": n, "columns": specs}, allow_nan=False).encode("utf-8")
    start = 4 + len(header)
    pad = -start % 8
    return len(header).to_bytes(4, "little") + header + b" " * pad + b"".join(buffers)


def decode_columns(payload: bytes) -> dict[str, np.ndarray]:
    """Decode :func:`encode_columns` output (categories become object arrays, missing = ``None``)."""
    length = int.from_bytes(payload[:4], "little")
    header = json.loads(payload[4 : 4 + length].decode("utf-8"))
    base = 4 + length + (-(4 + length) % 8)
    n = header["n"]
    out: dict[str, np.ndarray] = {}
    for spec in header["columns"]:
        dtype = np.dtype(spec["dtype"]).newbyteorder("<")
        start = base + spec["offset"]
        arr = np.frombuffer(payload, dtype=dtype, count=n, offset=start)
        if spec["kind"] == "category":
            cats = np.asarray([*spec["categories"], None], dtype=object)
            arr = cats[np.where(arr < 0, len(cats) - 1, arr)]
        out[spec["name"]] = arr
    return out
