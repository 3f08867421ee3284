"""Reproducibility of the runner: workers, chunking, interruption and resume."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from micromacro_sim.core.errors import ConfigError
from micromacro_sim.design.policy import Policy
from micromacro_sim.estimators import get_estimator
from micromacro_sim.estimators.admissibility import draw
from micromacro_sim.run.configure import parse_config
from micromacro_sim.run.runner import run
from micromacro_sim.run.storage import read_manifest, read_table

BASE = {
    "name": "t",
    "seed": 11,
    "replications": 12,
    "methods": ["true", "unadjusted"],
    "admissibility": {"policy": "flag", "gate": "none"},
    "fixed": {"n_groups": 20, "r_zxi": 0.3},
    "grid": {"icc": [0.1, 0.3], "group_size": [5, [2, 8]]},
}


def _cfg(**kw):
    return parse_config({**BASE, **kw})


def _estimates(path):
    df = read_table(path, "estimates")
    return df.drop(columns=[]).reset_index(drop=True)


def test_identical_for_workers_and_chunks(tmp_path):
    run(_cfg(n_jobs=1, chunk_size=12), run_dir=tmp_path / "a", progress=False)
    run(_cfg(n_jobs=2, chunk_size=5), run_dir=tmp_path / "b", progress=False)
    run(_cfg(n_jobs=2, chunk_size=1), run_dir=tmp_path / "c", progress=False)
    a, b, c = (_estimates(tmp_path / x) for x in "abc")
    assert len(a) == 4 * 12 * 2 * 3
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(a, c)
    da, db = read_table(tmp_path / "a", "datasets"), read_table(tmp_path / "b", "datasets")
    pd.testing.assert_frame_equal(da, db)


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path):
    full = tmp_path / "full"
    part = tmp_path / "part"
    run(_cfg(chunk_size=4), run_dir=full, progress=False)
    first = run(_cfg(chunk_size=4), run_dir=part, progress=False, max_tasks=5)
    assert first.tasks_run == 5
    assert read_manifest(part)["status"] == "partial"
    # a stray temporary file from a killed writer must be ignored
    stray = next((part / "estimates").iterdir()) / ".part-000099-000100.parquet.123.tmp"
    stray.write_bytes(b"garbage")
    # resume with a different chunk size: only missing replications run
    second = run(_cfg(chunk_size=3, n_jobs=2), run_dir=part, progress=False)
    assert second.replications_run == 4 * 12 - 5 * 4
    assert read_manifest(part)["status"] == "complete"
    pd.testing.assert_frame_equal(_estimates(full), _estimates(part))
    again = run(_cfg(chunk_size=4), run_dir=part, progress=False)
    assert again.tasks_run == 0


def test_changed_config_refuses_then_overwrites(tmp_path):
    run(_cfg(), run_dir=tmp_path, progress=False)
    with pytest.raises(ConfigError, match="^output:"):
        run(_cfg(seed=12), run_dir=tmp_path, progress=False)
    run(_cfg(seed=12), run_dir=tmp_path, progress=False, overwrite=True)
    assert read_manifest(tmp_path)["seed"] == 12


def test_added_cell_keeps_existing_results(tmp_path):
    run(_cfg(), run_dir=tmp_path / "a", progress=False)
    bigger = {**BASE["grid"], "icc": [0.1, 0.3, 0.5]}
    run(_cfg(grid=bigger), run_dir=tmp_path / "b", progress=False)
    a, b = _estimates(tmp_path / "a"), _estimates(tmp_path / "b")
    b_common = b[b["scenario"].isin(set(a["scenario"]))].reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b_common)


@pytest.mark.parametrize("engine", ["reference", "fast"])
def test_one_replication_regenerates_alone(tmp_path, engine):
    cfg = _cfg(engine=engine)
    run(cfg, run_dir=tmp_path, progress=False)
    df = _estimates(tmp_path)
    sc = cfg.scenarios[3]
    d = draw(sc, cfg.seed, 7, Policy(mode="flag", gate="none"))
    res = get_estimator("unadjusted").fit(d.data)
    rows = df[(df.scenario == sc.key) & (df.replication == 7) & (df.method == "unadjusted")]
    assert (rows["engine"] == engine).all()
    # the reference engine is this very fit; the fast one agrees to rounding error
    tol = 0 if engine == "reference" else 1e-12
    np.testing.assert_allclose(rows["estimate"].to_numpy(), res.params, rtol=0, atol=tol)
    np.testing.assert_allclose(rows["se_HC3"].to_numpy(), res.se("HC3"), rtol=0, atol=tol)
