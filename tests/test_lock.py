"""One run per folder: the lock file, stale locks, and two runs started into one folder."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from micromacro_sim.cli.main import main
from micromacro_sim.run.configure import parse_config
from micromacro_sim.run.lock import LOCK_NAME, RunLock, RunLocked, holder_alive, read_holder
from micromacro_sim.run.runner import run
from micromacro_sim.run.storage import read_manifest, read_table

CFG = {
    "name": "lock", "seed": 5, "replications": 40, "chunk_size": 2, "n_jobs": 1,
    "engine": "reference", "methods": ["true", "unadjusted", "croon"],
    "admissibility": {"policy": "flag", "gate": "none"},
    "fixed": {"n_groups": 30, "r_zxi": 0.3, "icc": 0.1, "group_size": 5},
}


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_lock(folder, **holder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LOCK_NAME).write_text(json.dumps(holder))


def test_lock_names_holder_and_is_removed(tmp_path):
    with RunLock(tmp_path) as lock:
        holder = read_holder(tmp_path)
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        assert holder_alive(tmp_path) and lock.taken_over is None
        with pytest.raises(RunLocked, match=r"^output: .* in use by another run \(pid "):
            RunLock(tmp_path).acquire()
    assert read_holder(tmp_path) is None
    assert not holder_alive(tmp_path)


def test_stale_lock_is_taken_over(tmp_path):
    pid = _dead_pid()
    _write_lock(tmp_path, pid=pid, host=socket.gethostname(), started="earlier")
    assert not holder_alive(tmp_path)
    with RunLock(tmp_path) as lock:
        assert lock.taken_over["pid"] == pid
        assert read_holder(tmp_path)["pid"] == os.getpid()


def test_recycled_pid_is_not_the_holder(tmp_path):
    # our own pid, but a different process start time: the holder is gone
    _write_lock(tmp_path, pid=os.getpid(), host=socket.gethostname(), tick="1")
    assert not holder_alive(tmp_path)


def test_lock_from_another_host_is_never_taken_over(tmp_path):
    _write_lock(tmp_path, pid=1, host="some-other-host", started="earlier")
    with pytest.raises(RunLocked, match="some-other-host"):
        RunLock(tmp_path).acquire()
    assert read_holder(tmp_path)["host"] == "some-other-host"


def test_live_lock_refuses_run_in_one_line_writing_nothing(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(CFG))
    out = tmp_path / "out"
    _write_lock(out, pid=os.getppid(), host=socket.gethostname(), started="now")
    rc = main(["run", str(cfg), "--output", str(out), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert err.startswith("error: output:") and "in use by another run" in err
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]


def test_stale_lock_run_says_so_and_records_the_killed_run(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**CFG, "replications": 4}))
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--output", str(out), "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["status"] = "running"
    del manifest["runs"][-1]["finished"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    _write_lock(out, pid=_dead_pid(), host=socket.gethostname(), started="earlier")
    assert read_manifest(out)["status"] == "interrupted"  # the true state, as read
    capsys.readouterr()
    assert main(["run", str(cfg), "--output", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "note: took over the lock of an earlier run that is no longer running" in err
    runs = read_manifest(out)["runs"]
    assert runs[-2]["ended"] == "killed" and runs[-1]["ended"] == "complete"
    assert not (out / LOCK_NAME).exists()


def test_two_concurrent_runs_into_one_folder(tmp_path, capsys):
    """Drill: the second run is refused while the first holds the folder; the result
    holds every replication exactly once, equal to a run alone."""
    cfg = {**CFG, "replications": 120}
    out = tmp_path / "shared"
    paths = []
    for chunk in (2, 3):  # different chunk sizes: overlapping ranges if both ran
        p = tmp_path / f"c{chunk}.yaml"
        p.write_text(yaml.safe_dump({**cfg, "chunk_size": chunk, "output": str(out)}))
        paths.append(p)
    first = subprocess.Popen([sys.executable, "-m", "micromacro_sim.cli", "run", str(paths[0]),
                              "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    deadline = time.time() + 60
    while not (out / "estimates").exists() and time.time() < deadline:
        time.sleep(0.01)
    rc = main(["run", str(paths[1]), "--quiet"])  # in this process: starts at once
    still_running = first.poll() is None
    err = capsys.readouterr().err.strip()
    assert first.wait() == 0, first.stderr.read()
    assert still_running, "the drill needs the first run to be running still"
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("error: output:") and "in use by another run" in err
    est = read_table(out, "estimates")
    assert not est.duplicated(["scenario", "replication", "method", "term"]).any()
    assert sorted(est["replication"].unique()) == list(range(cfg["replications"]))
    ref = tmp_path / "alone"
    run(parse_config(cfg), run_dir=ref, progress=False)
    pd.testing.assert_frame_equal(est, read_table(ref, "estimates"), check_exact=True)
