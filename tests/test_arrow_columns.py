"""Arrow tables built from buffers equal pyarrow's own conversion, and need no pandas."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa

from micromacro_sim.arrow_columns import table_from_columns


def _reference(columns):
    return pa.table({k: pa.array(v.tolist() if v.dtype == object else v)
                     for k, v in columns.items()})


def test_same_table_as_pyarrow_array():
    rng = np.random.default_rng(5)
    f = rng.normal(size=9)
    f[[2, 5]] = np.nan
    cols = {
        "f": f, "i16": np.arange(9, dtype=np.int16), "i64": np.arange(9) * 10**12,
        "b": rng.random(9) < 0.5,
        "s": np.array(["ok", "flagged", "", "é ü", "ok", "x" * 40, "", "ok", "ß"], dtype=object),
        "strided": np.arange(18.0)[::2],
    }
    new, ref = table_from_columns(cols), _reference(cols)
    assert new.schema.equals(ref.schema)
    for name in cols:
        a, b = new[name].to_numpy(zero_copy_only=False), ref[name].to_numpy(zero_copy_only=False)
        assert new[name].null_count == ref[name].null_count == 0
        if a.dtype.kind == "f":
            assert a.view(np.int64).tolist() == b.view(np.int64).tolist()
        else:
            assert a.tolist() == b.tolist()


def test_empty_and_mixed_columns_fall_back_to_pyarrow():
    for cols in ({"e": np.array([], dtype=object), "n": np.array([], dtype=float)},
                 {"m": np.array(["a", None], dtype=object), "k": np.array([1, 2.5], object)}):
        new, ref = table_from_columns(cols), _reference(cols)
        assert new.equals(ref) and new.schema.equals(ref.schema)


def test_no_pandas_import():
    code = ("import sys, numpy as np; from micromacro_sim.arrow_columns import "
            "table_from_columns as t; t({'a': np.arange(3.0), 'b': np.array(['x', 'y', 'x'],"
            " dtype=object), 'c': np.ones(3, bool)}); print('pandas' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
