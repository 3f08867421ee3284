"""Arrow tables built from buffers equal pyarrow's own conversion, and need no pandas."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa

from micromacro_sim.run.arrow_columns import table_from_columns, table_from_rows


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
    code = ("import sys, numpy as np; from micromacro_sim.run.arrow_columns import "
            "table_from_columns as t; t({'a': np.arange(3.0), 'b': np.array(['x', 'y', 'x'],"
            " dtype=object), 'c': np.ones(3, bool)}); print('pandas' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_scenarios_rows_table_equals_pyarrow_from_pylist():
    rows = [{"a": None, "b": 1, "c": 1.5, "d": "x", "e": True, "f": None, "g": 2, "h": None},
            {"a": None, "b": None, "c": 2, "d": None, "e": None, "f": "é", "g": 2.5,
             "h": [1]}]
    ours, ref = table_from_rows(rows), pa.Table.from_pylist(rows)
    assert ours.schema.equals(ref.schema)
    assert ours.equals(ref)


def test_a_run_from_the_command_line_does_not_import_pandas(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("name: tiny\nseed: 1\nreplications: 3\nn_jobs: 1\nmethods: [unadjusted, croon]\n"
                   "admissibility: {policy: flag, gate: none}\n"
                   "fixed: {n_groups: 20, group_size: 5, icc: 0.2, r_zxi: 0.3}\n")
    code = ("import sys; from micromacro_sim.cli.main import main; "
            f"rc = main(['run', {str(cfg)!r}, '--output', {str(tmp_path / 'out')!r}]); "
            "print('PANDAS', 'pandas' in sys.modules, rc)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "PANDAS False 0" in out.stdout
