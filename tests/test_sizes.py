"""Size limits and YAML bounds, overlapping shards, and small command-line guarantees."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from micromacro_sim.cli.main import main
from micromacro_sim.core.errors import ConfigError
from micromacro_sim.design import limits
from micromacro_sim.run import capacity
from micromacro_sim.run.configure import load_config, parse_config
from micromacro_sim.run.runner import run
from micromacro_sim.run.storage import StorageError, overlapping_shards, read_table
from micromacro_sim.run.tasks import Task, plan_tasks

BASE = {
    "name": "sizes", "seed": 3, "replications": 12, "methods": ["true", "unadjusted"],
    "admissibility": {"policy": "flag", "gate": "none"},
    "fixed": {"n_groups": 20, "group_size": 5, "r_zxi": 0.3, "icc": 0.2},
}


def _yaml(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_document_larger_than_the_bound_is_refused(tmp_path):
    p = _yaml(tmp_path, yaml.safe_dump(BASE) + "#" * limits.MAX_YAML_BYTES)
    with pytest.raises(ConfigError, match=r"^config: .* larger than \d+ bytes"):
        load_config(p)


def test_alias_expansion_is_bounded_but_small_aliases_work(tmp_path):
    ok = yaml.safe_dump(BASE) + "description: &d text\n"
    assert load_config(_yaml(tmp_path, ok)).name == "sizes"
    bomb = yaml.safe_dump(BASE) + "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for i in range(1, 6):
        bomb += f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}" if i > 1 else "*a"] * 10) + "]\n"
    with pytest.raises(ConfigError, match=r"^config: .* expands to more than"):
        load_config(_yaml(tmp_path, bomb))


def test_key_given_twice_is_an_error_merge_keys_are_not(tmp_path):
    with pytest.raises(ConfigError, match=r"^replications: key given twice \(line \d+\)"):
        load_config(_yaml(tmp_path, yaml.safe_dump(BASE) + "replications: 5\n"))
    merged = yaml.safe_dump({k: v for k, v in BASE.items() if k != "fixed"})
    text = merged + "fixed:\n  <<: {n_groups: 20, group_size: 5}\n  r_zxi: 0.3\n  icc: 0.2\n"
    assert load_config(_yaml(tmp_path, text)).scenarios[0].n_groups == 20


def test_grid_cell_limit_and_force():
    grid = {"icc": [0.1, 0.2], "r_zxi": [0.1, 0.2, 0.3]}
    raw = {**BASE, "fixed": {"n_groups": 20, "group_size": 5}, "grid": grid}
    old = limits.MAX_CELLS
    try:
        limits.MAX_CELLS = 5
        with pytest.raises(ConfigError, match=r"^grid: 6 cells, more than 5"):
            parse_config(raw)
        assert len(parse_config(raw, force=True).scenarios) == 6
    finally:
        limits.MAX_CELLS = old


def test_task_limit_refuses_before_writing_and_force_insists(tmp_path, monkeypatch):
    cfg = parse_config({**BASE, "chunk_size": 1})
    monkeypatch.setattr(limits, "MAX_TASKS", 5)
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match=r"^replications: 12 x 1 scenario\(s\) in chunks of 1"
                                          r" is 12 tasks \(24 files\), more than 5"):
        run(cfg, run_dir=out, progress=False)
    assert not out.exists()
    assert run(cfg, run_dir=out, progress=False, force=True).tasks_run == 12


def test_memory_refusal_and_default_chunk_lowered(tmp_path, monkeypatch):
    per_rep = capacity.replication_bytes(parse_config(BASE).scenarios[0])
    monkeypatch.setattr(capacity, "available_memory",
                        lambda: limits.BYTES_PER_WORKER + 4 * per_rep)
    res = run(parse_config(BASE), run_dir=tmp_path / "a", progress=False)
    assert res.notes == ("chunk size lowered from 10 to 4 replications to fit memory",)
    assert res.tasks_run == 3
    with pytest.raises(ConfigError, match=r"^chunk_size: 6 replications per task need"):
        run(parse_config({**BASE, "chunk_size": 6}), run_dir=tmp_path / "b", progress=False)
    monkeypatch.setattr(capacity, "available_memory", lambda: limits.BYTES_PER_WORKER)
    with pytest.raises(ConfigError, match=r"^n_groups: one replication needs about"):
        run(parse_config(BASE), run_dir=tmp_path / "c", progress=False)
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()
    # the lowered chunk changes no number
    ref = run(parse_config({**BASE, "chunk_size": 12}), run_dir=tmp_path / "d",
              progress=False, force=True)
    assert ref.tasks_run == 1
    pd.testing.assert_frame_equal(read_table(tmp_path / "a", "estimates"),
                                  read_table(tmp_path / "d", "estimates"), check_exact=True)


def test_disk_refusal(tmp_path, monkeypatch):
    class Usage:
        free = 1000

    monkeypatch.setattr(capacity.shutil, "disk_usage", lambda p: Usage)
    with pytest.raises(ConfigError, match=r"^output: the run needs about .* of disk"):
        run(parse_config(BASE), run_dir=tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_tasks_are_frozen_objects(tmp_path):
    tasks = plan_tasks(parse_config({**BASE, "chunk_size": 5}), tmp_path)
    assert [(t.start, t.stop) for t in tasks] == [(0, 5), (5, 10), (10, 12)]
    assert isinstance(tasks[0], Task) and tasks[0].size == 5
    with pytest.raises(dataclasses.FrozenInstanceError):
        tasks[0].start = 1  # type: ignore[misc]


def _overlapping_folder(tmp_path):
    """A folder holding shards of two chunkings of one config (as two runs at once left
    it before the lock existed)."""
    a, b = tmp_path / "a", tmp_path / "b"
    run(parse_config({**BASE, "chunk_size": 4}), run_dir=a, progress=False)
    run(parse_config({**BASE, "chunk_size": 5}), run_dir=b, progress=False)
    ref = read_table(a, "estimates")
    for table in ("estimates", "datasets"):
        for f in (b / table).rglob("part-*.parquet"):
            (a / f.relative_to(b)).write_bytes(f.read_bytes())
    return a, ref


def test_overlapping_shards_are_counted_once_and_summarize_says_so(tmp_path, capsys):
    a, ref = _overlapping_folder(tmp_path)
    assert len(overlapping_shards(a)) > 0
    est = read_table(a, "estimates")
    pd.testing.assert_frame_equal(est, ref, check_exact=True)
    assert main(["summarize", str(a)]) == 0
    captured = capsys.readouterr()
    notes = [ln for ln in captured.err.splitlines() if ln.startswith("note:")]
    assert len(notes) == 1 and "de-duplicated by (scenario, replication, method, term)" in notes[0]
    assert "   12 " in captured.out or " 12 " in captured.out  # K = 12, not 24
    summary = pd.read_csv(a / "summary.csv")
    assert (summary["k"] == 12).all()


def test_overlapping_shards_that_disagree_are_refused(tmp_path):
    import pyarrow.parquet as pq

    a, _ref = _overlapping_folder(tmp_path)
    f = sorted((a / "estimates").rglob("part-000005-000010.parquet"))[0]
    t = pq.read_table(f).to_pandas()
    t.loc[0, "estimate"] += 1.0
    t.to_parquet(f, index=False)
    with pytest.raises(StorageError, match=r"^estimates: overlapping shards .* disagree"):
        read_table(a, "estimates")


def test_output_into_a_closed_pipe_exits_quietly(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**BASE, "grid": {"beta0": list(range(3000))}}))
    cmd = (f"{sys.executable} -m micromacro_sim.cli grid {cfg} | head -1")
    res = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True)
    assert res.stdout.count("\n") == 1
    assert res.stderr == "", res.stderr
    assert res.returncode == 141


def test_markdown_report_escapes_names(tmp_path):
    pytest.importorskip("scipy")
    from micromacro_sim.reporting.report import write_report

    name = "<img src=x onerror=alert(1)>*bold*_x_|"
    run(parse_config({**BASE, "name": name}), run_dir=tmp_path / "r", progress=False)
    text = write_report(tmp_path / "r", tmp_path / "md", fmt="md", plots=False).read_text()
    assert "<img" not in text
    assert "&lt;img src=x onerror=alert(1)&gt;\\*bold\\*\\_x\\_\\|" in text


def test_read_only_and_unwritable_outputs_are_refused(tmp_path):
    import os
    import shutil

    ro = tmp_path / "ro"
    ro.mkdir()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(BASE))
    cli = f"{sys.executable} -m micromacro_sim.cli run {cfg} --output {ro}/run --quiet"
    script = f"mount -t tmpfs -o ro,size=64k none {ro} || exit 90; {cli}"
    if shutil.which("unshare") is None:
        pytest.skip("no unshare")
    res = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    if res.returncode == 90:
        pytest.skip("cannot mount a tmpfs here")
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip() == (f"error: output: '{ro}/run' is on a read-only file system "
                                  f"('{ro}')")
    if os.geteuid() != 0:  # root writes through permission bits
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(ConfigError, match=r"^output: .* no permission"):
            run(parse_config(BASE), run_dir=locked / "run", progress=False)
