"""Fault tolerance: SIGKILL mid-run then resume; partial summaries; backends agree."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from micromacro_sim.config import parse_config
from micromacro_sim.runner import run
from micromacro_sim.storage import read_manifest, read_table
from micromacro_sim.summarize import summarize_run

CFG = {
    "name": "kill",
    "seed": 99,
    "replications": 60,
    "chunk_size": 2,
    "n_jobs": 2,
    "engine": "reference",
    "methods": ["true", "unadjusted", "croon"],
    "admissibility": {"policy": "flag", "gate": "none"},
    "fixed": {"n_groups": 40, "r_zxi": 0.3, "icc": 0.1},
    "grid": {"group_size": [5, {"uniform": [2, 9]}]},
}


def _count_shards(path):
    return sum(1 for _ in (path / "estimates").rglob("part-*.parquet")) if path.exists() else 0


def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    cfg_path = tmp_path / "kill.yaml"
    out = tmp_path / "killed"
    cfg_path.write_text(yaml.safe_dump({**CFG, "output": str(out)}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "micromacro_sim.cli", "run", str(cfg_path), "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.time() + 120
    while _count_shards(out) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(random.Random(7).uniform(0.0, 0.3))
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its workers, without warning
    proc.wait()
    total = 2 * CFG["replications"] // CFG["chunk_size"]
    done_at_kill = _count_shards(out)
    assert 0 < done_at_kill < total, "the kill must land mid-run"
    assert read_manifest(out)["status"] == "interrupted"  # no live process holds it
    partial = summarize_run(out)
    assert partial.partial

    run(parse_config({**CFG, "chunk_size": 7}), run_dir=out, progress=False)
    ref = tmp_path / "clean"
    run(parse_config({**CFG, "n_jobs": 1}), run_dir=ref, progress=False)
    a, b = read_table(out, "estimates"), read_table(ref, "estimates")
    keys = ["scenario", "replication", "method", "term"]
    assert not a.duplicated(keys).any()
    assert len(a) == 2 * CFG["replications"] * 3 * 3
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(read_table(out, "datasets"), read_table(ref, "datasets"))
    assert not summarize_run(out).partial


SMALL = {**CFG, "replications": 12, "chunk_size": 3, "engine": "auto",
         "methods": ["true", "unadjusted"]}


@pytest.mark.parametrize("backend", ["dask", "ray"])
def test_cluster_backends_match_loky(tmp_path, backend):
    pytest.importorskip("distributed" if backend == "dask" else "ray")
    run(parse_config({**SMALL, "backend": "loky"}), run_dir=tmp_path / "loky", progress=False)
    run(parse_config({**SMALL, "backend": backend}), run_dir=tmp_path / backend, progress=False)
    pd.testing.assert_frame_equal(read_table(tmp_path / "loky", "estimates"),
                                  read_table(tmp_path / backend, "estimates"))
    assert not (tmp_path / backend / ".scratch").exists()  # scratch is cleaned up


def test_missing_backend_package_names_the_extra(tmp_path, monkeypatch):
    from micromacro_sim.errors import ConfigError

    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ConfigError, match=r"^backend: .*pip install 'micromacro-sim\[dask\]'"):
        parse_config({**SMALL, "backend": "dask"})
