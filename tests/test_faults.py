"""Fault tolerance drills: kills, damaged shards and manifests, a full disk; backends agree.

Every drill ends with every replication exactly once and tables bitwise equal to an
uninterrupted run.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from micromacro_sim.cli.main import main
from micromacro_sim.run.configure import parse_config
from micromacro_sim.run.runner import run
from micromacro_sim.run.storage import load_manifest, read_manifest, read_table
from micromacro_sim.summaries.summarize import summarize_run

CFG = {
    "name": "kill",
    "seed": 99,
    "replications": 60,
    "chunk_size": 2,
    "n_jobs": 2,
    "engine": "auto",
    "methods": ["true", "unadjusted", "croon"],
    "admissibility": {"policy": "flag", "gate": "none"},
    "fixed": {"n_groups": 40, "r_zxi": 0.3, "icc": 0.1},
    "grid": {"group_size": [5, {"uniform": [2, 9]}]},
}


KEYS = ["scenario", "replication", "method", "term"]


def _count_shards(path):
    return sum(1 for _ in (path / "estimates").rglob("part-*.parquet")) if path.exists() else 0


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run every drill must reproduce bitwise."""
    ref = tmp_path_factory.mktemp("reference")
    run(parse_config({**CFG, "n_jobs": 1}), run_dir=ref, progress=False)
    return read_table(ref, "estimates"), read_table(ref, "datasets")


def _assert_equals_reference(out, reference):
    est, ds = read_table(out, "estimates"), read_table(out, "datasets")
    assert not est.duplicated(KEYS).any()
    assert len(est) == 2 * CFG["replications"] * 3 * 3  # every replication exactly once
    pd.testing.assert_frame_equal(est, reference[0], check_exact=True)
    pd.testing.assert_frame_equal(ds, reference[1], check_exact=True)
    assert not (out / ".scratch").exists() and not (out / ".lock").exists()
    assert not list(out.rglob("*.tmp")) and not (out / ".reserve").exists()
    assert read_manifest(out)["status"] == "complete"
    assert not summarize_run(out).partial


def _start(cfg_path):
    return subprocess.Popen(
        [sys.executable, "-m", "micromacro_sim.cli", "run", str(cfg_path), "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True, text=True,
    )


def test_kills_at_several_moments_then_resume_equals_uninterrupted(tmp_path, reference):
    """Drill: SIGKILL as soon as the run holds its folder, SIGKILL mid-run, SIGTERM
    mid-run; each time the manifest tells the true state; a resume with another chunk
    size then equals the uninterrupted run bitwise."""
    cfg_path = tmp_path / "kill.yaml"
    out = tmp_path / "killed"
    cfg_path.write_text(yaml.safe_dump({**CFG, "output": str(out)}))
    total = 2 * CFG["replications"] // CFG["chunk_size"]
    moments = [("lock", signal.SIGKILL), (3, signal.SIGKILL), (10, signal.SIGTERM)]
    for when, sig in moments:
        base = _count_shards(out)  # shards of the earlier attempts: wait for new ones
        proc = _start(cfg_path)
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if (when == "lock" and (out / ".lock").exists()) or (
                    when != "lock" and _count_shards(out) >= base + when):
                break
            time.sleep(0.01)
        time.sleep(random.Random(7).uniform(0.0, 0.1))
        if sig == signal.SIGKILL:
            os.killpg(proc.pid, sig)  # the CLI and its workers, without warning
        else:
            os.kill(proc.pid, sig)  # the CLI alone: it stops its workers and records it
        err = proc.communicate()[1]
        assert _count_shards(out) < total, "the kill must land mid-run"
        manifest = read_manifest(out)  # None: killed before its first manifest
        assert manifest is None or manifest["status"] == "interrupted"
        if sig == signal.SIGTERM:
            assert proc.returncode == 130 and "Traceback" not in err, err
            stored = load_manifest(out)  # recorded in the file, not only inferred
            assert stored["status"] == "interrupted"
            assert stored["runs"][-1]["ended"] == "interrupted"
    assert summarize_run(out).partial
    run(parse_config({**CFG, "chunk_size": 7}), run_dir=out, progress=False)
    _assert_equals_reference(out, reference)


def _damage(path, how):
    data = bytearray(path.read_bytes())
    if how == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif how == "flip":
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    else:
        path.unlink()


def test_damaged_shards_are_reported_and_rerun(tmp_path, reference, capsys):
    """Drill: a truncated shard, a corrupt one (same size, other bytes) and a missing
    one; summarize refuses in one line; a resume reports each and reruns its task."""
    out = tmp_path / "run"
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump({**CFG, "n_jobs": 1, "output": str(out)}))
    assert main(["run", str(cfg_path), "--quiet"]) == 0
    parts = {t: sorted((out / t).rglob("part-*.parquet")) for t in ("estimates", "datasets")}
    _damage(parts["estimates"][4], "truncate")
    _damage(parts["datasets"][9], "flip")
    _damage(parts["datasets"][20], "remove")
    (out / ".scratch").mkdir()
    (parts["estimates"][0].parent / ".part-000000-000002.parquet.1.tmp").write_bytes(b"x")
    capsys.readouterr()
    assert main(["summarize", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is damaged" in err, err
    assert main(["run", str(cfg_path), "--quiet"]) == 0
    captured = capsys.readouterr()
    notes = [ln for ln in captured.err.splitlines() if ln.startswith("note: shard")]
    assert len(notes) == 3, captured.err
    assert "ran 3 task(s)" in captured.out
    _assert_equals_reference(out, reference)


def test_damaged_manifest_is_rebuilt_from_verified_shards(tmp_path, reference, capsys):
    out = tmp_path / "run"
    run(parse_config({**CFG, "n_jobs": 1}), run_dir=out, progress=False, max_tasks=40)
    text = (out / "manifest.json").read_text()
    (out / "manifest.json").write_text(text[: len(text) // 3])
    capsys.readouterr()
    res = run(parse_config({**CFG, "n_jobs": 1}), run_dir=out, progress=False)
    assert res.tasks_run == 20  # the 40 finished tasks are kept: their shards verify
    assert any(n.startswith("manifest:") and "damaged" in n for n in res.notes)
    _assert_equals_reference(out, reference)


def test_unrecorded_shards_are_verified_and_kept(tmp_path, reference):
    """A kill between writing a shard and recording it leaves shards the manifest does
    not list: they are read in full, checked, and kept."""
    out = tmp_path / "run"
    run(parse_config({**CFG, "n_jobs": 1}), run_dir=out, progress=False)
    manifest = load_manifest(out)
    manifest["shards"] = dict(list(manifest["shards"].items())[::2])
    manifest["status"] = "running"
    (out / "manifest.json").write_text(json.dumps(manifest))
    res = run(parse_config({**CFG, "n_jobs": 1}), run_dir=out, progress=False)
    assert res.tasks_run == 0 and not res.notes
    assert len(load_manifest(out)["shards"]) == 2 * 60
    _assert_equals_reference(out, reference)


def test_disk_full_gives_one_line_and_resume_completes(tmp_path, reference, capsys,
                                                       monkeypatch):
    """A write failing with ENOSPC (injected): one line, exit 2, the finished shards
    stay valid and recorded; a resume completes."""
    from micromacro_sim.run import storage

    real = storage.write_frame_atomic
    calls = {"n": 0}

    def failing(path, frame, metadata=None):
        calls["n"] += 1
        if calls["n"] > 25:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, frame, metadata)

    monkeypatch.setattr(storage, "write_frame_atomic", failing)
    out = tmp_path / "run"
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump({**CFG, "n_jobs": 1, "output": str(out)}))
    assert main(["run", str(cfg_path), "--quiet"]) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == (f"error: output: no space left on the device of "
                                    f"{str(out)!r}; finished shards are kept: free space "
                                    "and run again to resume")
    stored = load_manifest(out)
    assert stored["status"].startswith("failed: No space left")
    assert len(stored["shards"]) == 24  # 12 finished tasks, both shards recorded
    monkeypatch.setattr(storage, "write_frame_atomic", real)
    assert main(["run", str(cfg_path), "--quiet"]) == 0
    _assert_equals_reference(out, reference)


def _can_mount_tmpfs(where):
    probe = subprocess.run(["unshare", "-m", "sh", "-c",
                            f"mount -t tmpfs -o size=64k none {where}"],
                           capture_output=True)
    return probe.returncode == 0


def test_full_tmpfs_then_resume_after_freeing_space(tmp_path, reference):
    """Drill on a real full disk: a 512 KiB tmpfs (in a private mount namespace) fills
    mid-run; the run ends in one line; after the tmpfs grows, a resume completes."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if shutil.which("unshare") is None or not _can_mount_tmpfs(mnt):
        pytest.skip("cannot mount a tmpfs here")
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump({**CFG, "output": str(mnt / "run")}))
    cli = f"{shlex.quote(sys.executable)} -m micromacro_sim.cli run {cfg_path} --quiet"
    script = f"""
mount -t tmpfs -o size=512k none {mnt} || exit 90
{cli} --force 2> {tmp_path}/err1; echo $? > {tmp_path}/rc1
mount -o remount,size=64m {mnt}
{cli} 2> {tmp_path}/err2; echo $? > {tmp_path}/rc2
cp -a {mnt}/run {tmp_path}/copy
"""
    subprocess.run(["unshare", "-m", "sh", "-c", script], check=True, timeout=300,
                   env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    err1 = (tmp_path / "err1").read_text().strip()
    assert (tmp_path / "rc1").read_text().strip() == "2", err1
    assert len(err1.splitlines()) == 1 and "no space left" in err1, err1
    assert (tmp_path / "rc2").read_text().strip() == "0", (tmp_path / "err2").read_text()
    _assert_equals_reference(tmp_path / "copy", reference)


SMALL = {**CFG, "replications": 12, "chunk_size": 3, "engine": "auto",
         "methods": ["true", "unadjusted"]}


def test_local_backends_agree_bitwise(tmp_path):
    """Forked workers, loky workers, threads and one process: the same bits, and the
    forked run leaves no scratch folder."""
    cfg = {**SMALL, "methods": ["true", "unadjusted", "croon", "factor_score", "sem_2level"],
           "fixed": {"n_groups": 40, "r_zxi": 0.3, "group_size": 6},
           "grid": {"icc": [0.05, 0.2]}}
    frames = {}
    for backend in ("processes", "loky", "threading", "sequential"):
        out = tmp_path / backend
        run(parse_config({**cfg, "backend": backend}), run_dir=out, progress=False)
        frames[backend] = (read_table(out, "estimates"), read_table(out, "datasets"))
        assert not (out / ".scratch").exists()
    for backend in ("loky", "threading", "sequential"):
        for a, b in zip(frames["processes"], frames[backend], strict=True):
            pd.testing.assert_frame_equal(a, b, check_exact=True)


@pytest.mark.parametrize("backend", ["dask", "ray"])
def test_cluster_backends_match_loky(tmp_path, backend):
    pytest.importorskip("distributed" if backend == "dask" else "ray")
    run(parse_config({**SMALL, "backend": "loky"}), run_dir=tmp_path / "loky", progress=False)
    run(parse_config({**SMALL, "backend": backend}), run_dir=tmp_path / backend, progress=False)
    pd.testing.assert_frame_equal(read_table(tmp_path / "loky", "estimates"),
                                  read_table(tmp_path / backend, "estimates"))
    assert not (tmp_path / backend / ".scratch").exists()  # scratch is cleaned up


def test_missing_backend_package_names_the_extra(tmp_path, monkeypatch):
    from micromacro_sim.core.errors import ConfigError

    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ConfigError, match=r"^backend: .*pip install 'micromacro-sim\[dask\]'"):
        parse_config({**SMALL, "backend": "dask"})
