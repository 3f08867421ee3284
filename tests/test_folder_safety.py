"""A user's files are never lost, and a folder holds one design.

The rules live in micromacro_sim.run.ownership (what a run may delete, what is in the
way, one design per folder, the identity field that changed), micromacro_sim.run.verify
(unrecorded shards that are not the run's own are refused, never deleted),
micromacro_sim.run.paths (no output at the root or in system folders; no writer writes
over its inputs) and micromacro_sim.run.parts (which replications a part runs).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from micromacro_sim.cli.main import main
from micromacro_sim.core.errors import ConfigError, MicroMacroError
from micromacro_sim.run.configure import parse_config
from micromacro_sim.run.paths import check_not_input, check_output_dir
from micromacro_sim.run.runner import run
from micromacro_sim.run.storage import read_manifest, read_table

CFG = {
    "name": "safe", "seed": 11, "replications": 8, "n_jobs": 1,
    "methods": ["true", "unadjusted"],
    "fixed": {"n_groups": 15, "group_size": 4, "r_zxi": 0.3},
    "grid": {"icc": [0.1, 0.3]},
}


def _cfg(**kw):
    return parse_config({**CFG, **kw})


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.startswith(".lock")}


@pytest.mark.parametrize("planted", [".scratch/keep.txt", ".notes.txt.tmp",
                                     "estimates/scenario=abc/part-000000-000008.parquet",
                                     "datasets/mine.parquet", "scenarios.parquet"])
def test_a_folder_without_a_run_keeps_what_is_in_the_way(tmp_path, planted):
    out = tmp_path / "out"
    (out / planted).parent.mkdir(parents=True, exist_ok=True)
    (out / planted).write_bytes(b"a user's file")
    (out / "README.txt").write_text("mine")
    before = _files(out)
    with pytest.raises(ConfigError, match="^output: .*in the way"):
        run(_cfg(), run_dir=out, progress=False)
    assert _files(out) == before


def test_an_unrelated_file_does_not_block_a_run_and_survives_it(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "README.txt").write_text("mine")
    run(_cfg(), run_dir=out, progress=False)
    assert (out / "README.txt").read_text() == "mine"


def test_a_foreign_manifest_is_never_overwritten(tmp_path):
    out = tmp_path / "out"
    (out / "estimates").mkdir(parents=True)
    (out / "estimates" / "theirs.parquet").write_bytes(b"x")
    (out / "manifest.json").write_text(json.dumps({"format": "another tool"}))
    before = _files(out)
    for overwrite in (False, True):
        with pytest.raises(ConfigError, match="not written by this tool") as exc:
            run(_cfg(), run_dir=out, progress=False, overwrite=overwrite)
        assert "--overwrite" not in str(exc.value)
    assert _files(out) == before


def test_overwrite_deletes_only_what_the_ledger_records(tmp_path):
    out = tmp_path / "out"
    run(_cfg(), run_dir=out, progress=False)
    stray = out / "estimates" / "notes.parquet"
    stray.write_bytes(b"mine")
    (out / "README.txt").write_text("mine")
    before = _files(out)
    with pytest.raises(ConfigError, match="not in the ledger"):
        run(_cfg(seed=12), run_dir=out, progress=False, overwrite=True)
    assert _files(out) == before
    stray.unlink()
    run(_cfg(seed=12), run_dir=out, progress=False, overwrite=True)
    assert read_manifest(out)["seed"] == 12
    assert (out / "README.txt").read_text() == "mine"


def _shard(out: Path) -> Path:
    return sorted((out / "estimates").rglob("part-*.parquet"))[0]


def test_an_unrecorded_shard_of_another_run_is_refused_not_deleted(tmp_path):
    out = tmp_path / "out"
    run(_cfg(), run_dir=out, progress=False, max_tasks=1)
    shard = _shard(out)
    foreign = shard.with_name("part-000100-000108.parquet")
    pq.write_table(pa.table({"replication": list(range(100, 108))}), foreign)
    with pytest.raises(MicroMacroError, match="not in this run's ledger"):
        run(_cfg(), run_dir=out, progress=False)
    assert foreign.is_file()


def test_refusal_names_the_identity_field_that_changed(tmp_path):
    run(_cfg(), run_dir=tmp_path, progress=False)
    with pytest.raises(ConfigError, match=r"\(seed: 11 -> 12\)"):
        run(_cfg(seed=12), run_dir=tmp_path, progress=False)
    with pytest.raises(ConfigError, match=r"\(methods: "):
        run(_cfg(methods=["true"]), run_dir=tmp_path, progress=False)


def test_a_folder_holds_one_design(tmp_path):
    run(_cfg(), run_dir=tmp_path, progress=False)
    changed = {**CFG["fixed"], "group_size": 5}
    with pytest.raises(ConfigError, match=r"another design \(fixed\.group_size: 4 -> 5\)"):
        run(_cfg(fixed=changed), run_dir=tmp_path, progress=False)
    bigger = run(_cfg(grid={"icc": [0.1, 0.3, 0.5]}, replications=10), run_dir=tmp_path,
                 progress=False)  # extension by a cell and replications is one design
    assert bigger.replications_run == 2 * 2 + 10


@pytest.mark.parametrize("path", ["/", "/etc", "/usr/share/micromacro"])
def test_output_at_the_root_or_in_system_folders_is_refused(path):
    with pytest.raises(ConfigError, match="^output: "):
        check_output_dir(path)


def test_no_writer_writes_over_its_input(tmp_path):
    data = tmp_path / "teams.csv"
    data.write_text("x")
    link = tmp_path / "other-name.csv"
    os.symlink(data, link)
    with pytest.raises(ConfigError, match="is an input of this command"):
        check_not_input([link], [data])
    with pytest.raises(ConfigError, match="inside an input"):
        check_not_input([tmp_path / "sub" / "f.csv"], [tmp_path], inside=True)
    check_not_input([tmp_path / "new.csv"], [data])  # another file is fine


def test_report_export_and_summarize_never_write_into_the_run(tmp_path, capsys):
    out = tmp_path / "run"
    run(_cfg(), run_dir=out, progress=False)
    before = _files(out)
    shard_dir = str(out / "estimates")
    for argv in (["export", str(out), "--output", str(out / "manifest.json")],
                 ["export", str(out), "--output", str(out / "estimates" / "x.csv")],
                 ["report", str(out), "--no-plots", "--output", shard_dir],
                 ["summarize", str(out), "--output", shard_dir]):
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "input of this command" in err, (argv, err)
    assert _files(out) == before


def test_parts_cover_every_replication_whatever_their_chunk_sizes(tmp_path):
    whole = tmp_path / "whole"
    run(_cfg(replications=40), run_dir=whole, progress=False)
    parts = tmp_path / "parts"
    run(_cfg(replications=40, chunk_size=3), run_dir=parts, progress=False, part="1/2")
    run(_cfg(replications=40, chunk_size=7), run_dir=parts, progress=False, part="2/2")
    got = read_table(parts, "estimates").sort_values(
        ["scenario", "replication", "method", "term"]).reset_index(drop=True)
    want = read_table(whole, "estimates").sort_values(
        ["scenario", "replication", "method", "term"]).reset_index(drop=True)
    assert read_manifest(parts)["status"] == "complete"
    pd.testing.assert_frame_equal(got[want.columns].drop(columns="engine"),
                                  want.drop(columns="engine"))


def test_an_extension_marks_the_summary_stale(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**CFG, "output": str(tmp_path / "run")}))
    assert main(["run", str(cfg), "--quiet", "--summarize"]) == 0
    record = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert record["stale"] is False and set(record["replications"].values()) == {8}
    capsys.readouterr()
    assert main(["run", str(cfg), "--quiet", "--replications", "12"]) == 0
    assert "stale" in capsys.readouterr().err
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["stale"] is True
    capsys.readouterr()
    assert main(["status", str(tmp_path / "run")]) == 0
    assert "summary: stale (16 replications summarized" in capsys.readouterr().out
    assert main(["summarize", str(tmp_path / "run")]) == 0
    record = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert record["stale"] is False and set(record["replications"].values()) == {12}
    capsys.readouterr()
    assert main(["status", str(tmp_path / "run")]) == 0
    assert "summary: current (24 replications summarized" in capsys.readouterr().out


def test_parts_of_another_split_are_refused_until_the_array_finishes(tmp_path):
    run(_cfg(replications=40), run_dir=tmp_path, progress=False, part="1/2")
    with pytest.raises(ConfigError, match=r"^part: .*another split \(replications: 40 -> 80\)"):
        run(_cfg(replications=80), run_dir=tmp_path, progress=False, part="2/2")
    with pytest.raises(ConfigError, match=r"another split \(the number of parts: 2 -> 3\)"):
        run(_cfg(replications=40), run_dir=tmp_path, progress=False, part="2/3")
    run(_cfg(replications=40), run_dir=tmp_path, progress=False, part="2/2")
    assert read_manifest(tmp_path)["status"] == "complete"
    run(_cfg(replications=80), run_dir=tmp_path, progress=False, part="1/3")  # a new array


@pytest.mark.parametrize("cmd", ["plan", "power", "run"])
def test_planners_and_run_never_write_over_their_config(tmp_path, capsys, cmd):
    cfg = tmp_path / ("manifest.json" if cmd == "run" else "c.yaml")
    cfg.write_text(yaml.safe_dump({**CFG, "output": str(tmp_path)}))
    before = cfg.read_bytes()
    argv = {"plan": ["plan", str(cfg), "--pilot", "4", "--target-mcse", "bias=0.05",
                     "--output", str(cfg)],
            "power": ["power", str(cfg), "--solve", "n_groups", "--method", "true",
                      "--target", "power=0.8", "--range", "10:40", "--output", str(cfg)],
            "run": ["run", str(cfg), "--quiet"]}[cmd]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "input of this command" in err, err
    assert cfg.read_bytes() == before


def test_a_refused_report_leaves_no_folder_and_stale_figures_are_removed(tmp_path, capsys):
    out = tmp_path / "run"
    run(_cfg(), run_dir=out, progress=False)
    capsys.readouterr()
    assert main(["report", str(out), "--terms", "no_such_term"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (out / "report").exists()
    stale = out / "report" / ".figures-999999999"  # a pid that is not running
    stale.mkdir(parents=True)
    (stale / "x.png").write_bytes(b"png")
    assert main(["report", str(out), "--no-plots"]) == 0
    assert not stale.exists() and (out / "report" / "report.html").is_file()


def test_warnings_are_one_line_once(capsys):
    import warnings

    from micromacro_sim.cli.messages import one_line_warnings

    with one_line_warnings():
        for _ in range(3):
            warnings.warn("overflow encountered\n   in exp", RuntimeWarning, stacklevel=1)
    err = capsys.readouterr().err
    assert err == "warning: overflow encountered in exp\n"


def test_a_run_killed_before_its_first_manifest_can_be_resumed(tmp_path):
    """The lock is the first thing a run writes: what a killed run left beside it (its
    scenarios table, its reserve) is its own, not a user's."""
    import socket

    out = tmp_path / "out"
    out.mkdir()
    (out / ".lock").write_text(json.dumps({"pid": 999999999, "host": socket.gethostname(),
                                           "started": "2026-01-01T00:00:00+00:00"}))
    (out / "scenarios.parquet").write_bytes(b"cut short")
    (out / ".reserve").write_bytes(b"\0" * 16)
    res = run(_cfg(), run_dir=out, progress=False)
    assert res.replications_run == 16 and read_manifest(out)["status"] == "complete"
