"""Extending a run folder and filling it by parts (cluster arrays): bit-identical rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from micromacro_sim.cli.main import main
from micromacro_sim.core.errors import ConfigError
from micromacro_sim.run.configure import parse_config
from micromacro_sim.run.folder import folder_progress
from micromacro_sim.run.lock import RunLock, RunLocked, part_lock_name
from micromacro_sim.run.parts import Part, chunk_owners, part_grain
from micromacro_sim.run.runner import run
from micromacro_sim.run.storage import read_manifest, read_table
from micromacro_sim.run.tasks import plan_tasks

ROOT = Path(__file__).resolve().parent.parent
BASE = {
    "name": "t",
    "seed": 11,
    "replications": 24,
    "methods": ["true", "unadjusted"],
    "admissibility": {"policy": "flag", "gate": "none"},
    "fixed": {"n_groups": 20, "r_zxi": 0.3},
    "grid": {"icc": [0.1, 0.3], "group_size": [5, [2, 8]]},
}


def _cfg(**kw):
    return parse_config({**BASE, **kw})


def _same(a: Path, b: Path) -> None:
    for table in ("estimates", "datasets"):
        x, y = read_table(a, table), read_table(b, table)
        assert len(x) > 0
        pd.testing.assert_frame_equal(x, y)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    where = tmp_path_factory.mktemp("fresh")
    run(_cfg(chunk_size=7), run_dir=where, progress=False)
    return where


def test_extended_replications_equal_a_fresh_run(tmp_path, fresh):
    first = run(_cfg(replications=10, chunk_size=4), run_dir=tmp_path, progress=False)
    assert first.replications_run == 4 * 10
    second = run(_cfg(chunk_size=5), run_dir=tmp_path, progress=False)
    assert second.replications_run == 4 * 14  # only the new replications ran
    assert read_manifest(tmp_path)["status"] == "complete"
    _same(fresh, tmp_path)


def test_added_cell_in_the_same_folder_runs_only_that_cell(tmp_path):
    run(_cfg(), run_dir=tmp_path, progress=False)
    grid = {**BASE["grid"], "icc": [0.1, 0.3, 0.5]}
    res = run(_cfg(grid=grid), run_dir=tmp_path, progress=False)
    assert res.replications_run == 2 * 24
    run(_cfg(grid=grid), run_dir=tmp_path / "fresh", progress=False)
    _same(tmp_path / "fresh", tmp_path)


def test_changed_methods_refuse_to_mix(tmp_path):
    run(_cfg(), run_dir=tmp_path, progress=False)
    with pytest.raises(ConfigError, match="^output: .* different config"):
        run(_cfg(methods=["unadjusted"]), run_dir=tmp_path, progress=False)


def test_parts_split_every_chunk_once():
    cfg = _cfg()
    grain = part_grain(cfg, 4)
    owners = chunk_owners(cfg, grain, 4)
    assert sorted(set(owners.values())) == [1, 2, 3, 4]
    ranges = [(t.scenario.key, t.start, t.stop)
              for i in range(1, 5) for t in plan_tasks(cfg, Path("/nonexistent"), 3,
                                                       Part(i, 4))]
    assert len(ranges) == len(set(ranges))
    covered = sorted((k, r) for k, a, b in ranges for r in range(a, b))
    assert covered == sorted((sc.key, r) for sc in cfg.scenarios for r in range(24))


def test_four_sequential_parts_equal_one_run(tmp_path, fresh):
    for i in (3, 1, 4, 2):
        res = run(_cfg(), run_dir=tmp_path, progress=False, part=f"{i}/4")
        assert res.tasks_run > 0
        status = read_manifest(tmp_path)["status"]
        assert status == ("complete" if i == 2 else "partial")
    _same(fresh, tmp_path)
    manifest, rows = folder_progress(tmp_path)
    assert [r.done for r in rows] == [24] * 4 and len(manifest["runs"]) == 4
    # the merged ledger records every shard of every part
    assert len(manifest["shards"]) == 2 * len(list((tmp_path / "estimates").rglob("*.parquet")))
    again = run(_cfg(), run_dir=tmp_path, progress=False)  # a whole run finds nothing to do
    assert again.tasks_run == 0


def test_four_concurrent_part_processes_equal_one_run(tmp_path, fresh):
    cfg_file = tmp_path / "t.yaml"
    cfg_file.write_text(yaml.safe_dump({**BASE, "chunk_size": 3}))
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-m", "micromacro_sim.cli", "run", str(cfg_file),
                               "--output", str(out), "--quiet", "--part", f"{i}/4"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for i in range(1, 5)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()
    _same(fresh, out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and len(manifest["runs"]) == 4
    assert not list(out.glob(".lock*")) and not (out / ".manifest.lock").exists()


def test_a_whole_run_and_a_part_exclude_each_other(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    with RunLock(tmp_path, name=part_lock_name(1, 4)), pytest.raises(RunLocked,
                                                                      match="in use"):
        run(_cfg(), run_dir=tmp_path, progress=False)
    with RunLock(tmp_path), pytest.raises(RunLocked):
        run(_cfg(), run_dir=tmp_path, progress=False, part="2/4")
    with RunLock(tmp_path, name=part_lock_name(1, 3)), pytest.raises(RunLocked):
        run(_cfg(), run_dir=tmp_path, progress=False, part="2/4")  # another split


@pytest.mark.parametrize("bad", ["0/4", "5/4", "a/b", "3"])
def test_bad_part_is_one_line(tmp_path, capsys, bad):
    cfg_file = tmp_path / "t.yaml"
    cfg_file.write_text(yaml.safe_dump(BASE))
    rc = main(["run", str(cfg_file), "--output", str(tmp_path / "o"), "--part", bad])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: part:") and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_part_with_overwrite_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="^part:"):
        run(_cfg(), run_dir=tmp_path, progress=False, part="1/2", overwrite=True)


def test_status_lists_finished_and_missing(tmp_path, capsys):
    run(_cfg(chunk_size=4), run_dir=tmp_path, progress=False, max_tasks=3)
    assert main(["status", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "12 of 96 replications" in out and "partial" in out
    assert "12-23" in out and "G=20 n=5 ICC=0.1 r=0.3" in out
    assert main(["status", str(tmp_path / "none")]) == 2
