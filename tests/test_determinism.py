"""Every method's estimates are bitwise identical whatever the chunking or worker count.

The fast engine fits a whole chunk at once; each replication's arithmetic must not depend
on which other replications share its chunk (convergence is per replication, batched
linear algebra works matrix by matrix). The redraw gate is on, so redraws are covered.
"""

from __future__ import annotations

import pandas as pd
import pytest

from micromacro_sim.estimators import available
from micromacro_sim.run.configure import parse_config
from micromacro_sim.run.runner import run
from micromacro_sim.run.storage import read_table

CFG = {
    "name": "det",
    "seed": 5,
    "replications": 24,
    "methods": [m for m in available()],
    "admissibility": {"policy": "redraw", "gate": "cfa", "max_redraws": 20},
    "fixed": {"n_groups": 30, "group_size": 5, "r_zxi": 0.3},
    "grid": {"icc": [0.05, 0.2]},
}


def test_bitwise_equal_across_chunks_and_workers(tmp_path):
    # the reference engine fits one dataset at a time, so chunking cannot touch it; the
    # fast engine is the one at risk
    engine = "auto"
    runs = {}
    for label, extra in {"one": {"chunk_size": 24, "n_jobs": 1},
                         "small": {"chunk_size": 5, "n_jobs": 1},
                         "odd": {"chunk_size": 7, "n_jobs": 2, "backend": "threading"}}.items():
        run(parse_config({**CFG, "engine": engine, **extra}), run_dir=tmp_path / label,
            progress=False)
        runs[label] = (read_table(tmp_path / label, "estimates"),
                       read_table(tmp_path / label, "datasets"))
    for label in ("small", "odd"):
        pd.testing.assert_frame_equal(runs["one"][0], runs[label][0], check_exact=True)
        pd.testing.assert_frame_equal(runs["one"][1], runs[label][1], check_exact=True)
    est = runs["one"][0]
    assert set(est["method"]) == set(available())
    assert (est[est["method"] == "sem"]["engine"] == "fast").all()


UNBALANCED = {
    "name": "det-u",
    "seed": 9,
    "replications": 14,
    "methods": [m for m in available()],
    "admissibility": {"policy": "flag", "gate": "none"},
    "fixed": {"n_groups": 24, "r_zxi": 0.3, "icc": 0.15},
    "grid": {"group_size": [6, {"uniform": [2, 11]}, [3, 9]]},
}

EXECUTIONS = {
    "c1": {"chunk_size": 1, "n_jobs": 1, "backend": "sequential"},
    "c7-loky2": {"chunk_size": 7, "n_jobs": 2, "backend": "loky"},
    "c1000-thread2": {"chunk_size": 1000, "n_jobs": 2, "backend": "threading"},
}


def _tables(cfg: dict, tmp_path, label: str):
    run(parse_config(cfg), run_dir=tmp_path / label, progress=False)
    est = read_table(tmp_path / label, "estimates")
    return est.sort_values(["scenario", "replication", "method", "term"],
                           kind="stable").reset_index(drop=True)


def _assert_bitwise(a: pd.DataFrame, b: pd.DataFrame) -> None:
    import numpy as np

    for col in a.columns:
        x, y = a[col].to_numpy(), b[col].to_numpy()
        if x.dtype.kind == "f":
            assert np.array_equal(x, y, equal_nan=True), col
        else:
            assert (x == y).all(), col


def test_every_method_bitwise_equal_on_balanced_and_unbalanced(tmp_path):
    """Chunk sizes 1 / 7 / 1000, one or two workers, sequential / loky / threading."""
    ref = None
    for label, extra in EXECUTIONS.items():
        est = _tables({**UNBALANCED, **extra}, tmp_path, label)
        if ref is None:
            ref = est
            assert set(est["method"]) == set(available())
            assert "fast" in set(est["engine"])  # every method has a batch path here
        else:
            _assert_bitwise(ref, est)


def test_dask_backend_bitwise_equal(tmp_path):
    pytest.importorskip("distributed")
    small = {**UNBALANCED, "replications": 6,
             "grid": {"group_size": [6, {"uniform": [2, 11]}]}}
    a = _tables({**small, "chunk_size": 6, "n_jobs": 1, "backend": "sequential"}, tmp_path, "s")
    b = _tables({**small, "chunk_size": 2, "n_jobs": 2, "backend": "dask"}, tmp_path, "d")
    _assert_bitwise(a, b)
