"""Arrow tables from numpy columns, without importing pandas.

``pyarrow.array`` asks pandas about every input it converts, which imports pandas (about
a third of a second) into a process that has no other use for it: the runner's workers
write shards from numpy arrays. This module builds the same arrays from their buffers:
numbers zero-copy, booleans bit-packed, strings (object arrays of ``str``) as offsets
and UTF-8 bytes, with a pass over the distinct values since the string columns repeat a few.
Anything else goes through ``pyarrow.array``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["table_from_columns", "table_from_rows"]

_NUMERIC = {
    np.dtype(np.float64): "float64", np.dtype(np.float32): "float32",
    np.dtype(np.int64): "int64", np.dtype(np.int32): "int32", np.dtype(np.int16): "int16",
    np.dtype(np.int8): "int8",
}


def _not_a_string() -> int:
    raise TypeError


def _strings(values: np.ndarray) -> Any:
    import pyarrow as pa

    index: dict[str, int] = {}
    try:
        inverse = np.fromiter((index.setdefault(v, len(index)) if type(v) is str else
                               _not_a_string() for v in values.tolist()),
                              dtype=np.int64, count=len(values))
    except TypeError:
        return None
    encoded = [u.encode("utf-8") for u in index]
    lengths = np.fromiter((len(e) for e in encoded), dtype=np.int64, count=len(encoded))
    offsets = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum(lengths[inverse], out=offsets[1:])
    if offsets[-1] >= 2**31:
        return None
    data = b"".join([encoded[i] for i in inverse.tolist()])
    return pa.Array.from_buffers(pa.string(), len(values),
                                 [None, pa.py_buffer(offsets.astype(np.int32)),
                                  pa.py_buffer(data)])


def _array(values: np.ndarray) -> Any:
    """One column as a pyarrow array (the type ``pyarrow.array`` would give)."""
    import pyarrow as pa

    values = np.ascontiguousarray(values)
    if values.ndim == 1 and len(values):
        name = _NUMERIC.get(values.dtype)
        if name is not None:
            return pa.Array.from_buffers(getattr(pa, name)(), len(values),
                                         [None, pa.py_buffer(values)])
        if values.dtype == np.bool_:
            bits = np.packbits(values, bitorder="little")
            return pa.Array.from_buffers(pa.bool_(), len(values), [None, pa.py_buffer(bits)])
        if values.dtype == object:
            out = _strings(values)
            if out is not None:
                return out
    if values.dtype == object:
        return pa.array(values.tolist())
    return pa.array(values)


def table_from_columns(columns: dict[str, np.ndarray]) -> Any:
    """A ``pyarrow.Table`` from numpy columns (object arrays hold strings)."""
    import pyarrow as pa

    return pa.Table.from_arrays([_array(v) for v in columns.values()], names=list(columns))


def _with_nulls(values: list[Any]) -> Any:
    """A column of Python scalars with ``None`` as null, typed as ``pyarrow`` infers it
    (null, bool, int64, float64 or string); None for anything else."""
    import pyarrow as pa

    valid = np.array([v is not None for v in values], dtype=bool)
    kinds = {type(v) for v in values if v is not None}
    n, nulls = len(values), int((~valid).sum())
    if not kinds:
        return pa.nulls(n)
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little")) if nulls else None
    if kinds == {bool}:
        data = np.packbits(np.array([bool(v) for v in values]), bitorder="little")
        return pa.Array.from_buffers(pa.bool_(), n, [bitmap, pa.py_buffer(data)], nulls)
    if kinds <= {int, float} and all(abs(v) < 2**63 for v in values if type(v) is int):
        dtype, typ = (np.int64, pa.int64()) if kinds == {int} else (np.float64, pa.float64())
        data = np.array([0 if v is None else v for v in values], dtype=dtype)
        return pa.Array.from_buffers(typ, n, [bitmap, pa.py_buffer(data)], nulls)
    if kinds == {str}:
        strings = _strings(np.array(["" if v is None else v for v in values], dtype=object))
        if strings is not None:
            return pa.Array.from_buffers(pa.string(), n, [bitmap, *strings.buffers()[1:]],
                                         nulls)
    return None


def table_from_rows(rows: list[dict[str, Any]]) -> Any:
    """``pyarrow.Table.from_pylist(rows)`` for rows of Python scalars, without pandas.

    Every row has the same keys. Columns of None, bool, int, float (ints widened as
    pyarrow does) or str are built from buffers; any other column goes through
    ``pyarrow.array``.
    """
    import pyarrow as pa

    names = list(rows[0]) if rows else []
    arrays = []
    for name in names:
        values = [row[name] for row in rows]
        arr = _with_nulls(values)
        arrays.append(pa.array(values) if arr is None else arr)
    return pa.Table.from_arrays(arrays, names=names)
