"""Every subcommand on missing, truncated, foreign and read-only inputs and outputs.

Each refusal is one stderr line, exit status 2, and nothing written (the folder's files,
sizes and modification times unchanged). Read-only outputs are real: a read-only bind
mount in a private mount namespace (skipped where the machine cannot make one), never
chmod (the tests run as root, where permissions prove nothing).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from micromacro_sim.cli.main import main

CFG = {
    "name": "tiny", "seed": 7, "replications": 3, "n_jobs": 1,
    "methods": ["true", "unadjusted"],
    "fixed": {"n_groups": 20, "group_size": 4, "r_zxi": 0.3},
    "grid": {"icc": [0.2]},
}
DATA = "team,member,climate,tenure,performance\n" + "".join(
    f"{g},{m},{(g * 7 + m * 3) % 5 / 2},{g % 3},{g % 4 / 3}\n" for g in range(1, 9)
    for m in range(1, 4))


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_size if p.is_file() else 0, st.st_mtime_ns)
    return out


def _refused(argv: list[str], capsys, root: Path) -> str:
    """Run ``micromacro argv``; assert exit 2, one stderr line, nothing written in root."""
    before = _snapshot(root)
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, (argv, code, err)
    assert len(err.splitlines()) == 1 and err.startswith("error: "), (argv, err)
    assert _snapshot(root) == before, (argv, "wrote something")
    return err


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished run folder, copied by each test that damages it."""
    root = tmp_path_factory.mktemp("finished")
    cfg = root / "c.yaml"
    cfg.write_text(yaml.safe_dump(CFG))
    assert main(["run", str(cfg), "--output", str(root / "run"), "--quiet"]) == 0
    return root / "run"


def _damaged(finished: Path, where: Path, how: str) -> Path:
    """A copy of the finished run, damaged as ``how`` says."""
    run = where / "run"
    if how == "missing":
        return run
    shutil.copytree(finished, run)
    if how == "truncated manifest":
        text = (run / "manifest.json").read_bytes()
        (run / "manifest.json").write_bytes(text[: len(text) // 3])
    elif how == "truncated scenarios":
        data = (run / "scenarios.parquet").read_bytes()
        (run / "scenarios.parquet").write_bytes(data[: len(data) // 2])
    elif how == "missing scenarios":
        (run / "scenarios.parquet").unlink()
    elif how == "manifest types":
        m = json.loads((run / "manifest.json").read_text())
        m["replications"] = "three"
        (run / "manifest.json").write_text(json.dumps(m))
    elif how == "foreign":
        (run / "manifest.json").write_text(json.dumps({"name": "another tool", "files": []}))
    return run


RUN_READERS = [
    ["status"], ["summarize"], ["report", "--no-plots"], ["export"],
]
DAMAGE = ["missing", "truncated manifest", "truncated scenarios", "missing scenarios",
          "manifest types", "foreign"]


@pytest.mark.parametrize("how", DAMAGE)
@pytest.mark.parametrize("cmd", RUN_READERS, ids=lambda c: c[0])
def test_run_folder_readers_refuse_a_damaged_folder(cmd, how, finished, tmp_path, capsys):
    run = _damaged(finished, tmp_path, how)
    if cmd[0] == "status" and how in ("truncated scenarios", "missing scenarios"):
        # status reads the manifest and the shards; labels are optional
        assert main([cmd[0], str(run)]) == 0
        return
    err = _refused([cmd[0], str(run), *cmd[1:]], capsys, tmp_path)
    name = {"missing": "run", "truncated manifest": "manifest.json",
            "truncated scenarios": "scenarios.parquet", "missing scenarios": "scenarios.parquet",
            "manifest types": "manifest.json", "foreign": "manifest.json"}[how]
    assert name in err, err


def _inputs(where: Path) -> dict[str, Path]:
    """Missing, truncated and foreign versions of a config and a data table."""
    out = {"missing config": where / "absent.yaml", "missing data": where / "absent.csv"}
    text = yaml.safe_dump(CFG)
    out["truncated config"] = where / "cut.yaml"
    out["truncated config"].write_text(text[: text.index("grid")] + "grid: {icc: [0.2,")
    out["foreign config"] = where / "foreign.yaml"
    out["foreign config"].write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    out["truncated data"] = where / "cut.csv"
    out["truncated data"].write_text(DATA.splitlines()[0][:12])
    out["foreign data"] = where / "foreign.csv"
    out["foreign data"].write_bytes(b"PAR1\x00\x01\x02garbage\xff\xfe")
    return out


def _config_command(name: str, cfg: Path, where: Path) -> list[str]:
    return {
        "run": ["run", str(cfg), "--output", str(where / "out"), "--quiet"],
        "plan": ["plan", str(cfg), "--pilot", "4", "--target-mcse", "bias=0.05"],
        "power": ["power", str(cfg), "--solve", "n_groups", "--method", "true",
                  "--target", "power=0.8", "--range", "10:40"],
        "grid": ["grid", str(cfg)],
    }[name]


@pytest.mark.parametrize("kind", ["missing", "truncated", "foreign"])
@pytest.mark.parametrize("name", ["run", "plan", "power", "grid", "fit"])
def test_inputs_missing_truncated_or_foreign(name, kind, tmp_path, capsys):
    files = _inputs(tmp_path)
    if name == "fit":
        argv = ["fit", str(files[f"{kind} data"]), "--group", "team", "--member", "member",
                "--x", "climate", "--z", "tenure", "--y", "performance",
                "--output", str(tmp_path / "fit.csv")]
    else:
        argv = _config_command(name, files[f"{kind} config"], tmp_path)
    _refused(argv, capsys, tmp_path)


def test_run_into_a_foreign_folder_is_refused(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(CFG))
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"tool": "another"}))
    err = _refused(["run", str(cfg), "--output", str(out), "--quiet"], capsys, tmp_path)
    assert "manifest.json" in err and "not written by this tool" in err
    err = _refused(["run", str(cfg), "--output", str(out), "--quiet", "--overwrite"], capsys,
                   tmp_path)
    assert "manifest.json" in err


READ_ONLY_SCRIPT = r"""
import contextlib, io, json, sys
from micromacro_sim.cli.main import main
out = {}
for name, argv in json.loads(sys.argv[1]).items():
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    out[name] = [code, err.getvalue().strip()]
print(json.dumps(out))
"""


def test_writers_refuse_a_read_only_folder(finished, tmp_path):
    """run, summarize, report, export, fit, plan and power writing into a read-only bind
    mount: one line each, exit 2 (status, which only reads, still works)."""
    if shutil.which("unshare") is None:
        pytest.skip("no unshare")
    ro = tmp_path / "ro"
    shutil.copytree(finished, ro / "run")
    cfg = ro / "c.yaml"
    cfg.write_text(yaml.safe_dump(CFG))
    data = ro / "teams.csv"
    data.write_text(DATA)
    runs = {
        "run": ["run", str(cfg), "--output", str(ro / "new"), "--quiet"],
        "summarize": ["summarize", str(ro / "run")],
        "report": ["report", str(ro / "run"), "--no-plots"],
        "export": ["export", str(ro / "run")],
        "fit": ["fit", str(data), "--group", "team", "--member", "member", "--x", "climate",
                "--z", "tenure", "--y", "performance", "--output", str(ro / "fit.csv")],
        "plan": ["plan", str(cfg), "--pilot", "4", "--target-mcse", "bias=0.05",
                 "--output", str(ro / "plan.csv")],
        "power": ["power", str(cfg), "--solve", "n_groups", "--method", "true", "--target",
                  "power=0.8", "--range", "10:40", "--output", str(ro / "power.csv")],
        "status": ["status", str(ro / "run")],
    }
    before = _snapshot(ro)
    script = (f"mount --bind {ro} {ro} && mount -o remount,bind,ro {ro} || exit 90; "
              f"exec {sys.executable} -c '{READ_ONLY_SCRIPT}' '{json.dumps(runs)}'")
    res = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                         capture_output=True, text=True, timeout=300)
    if res.returncode == 90:
        pytest.skip("cannot make a read-only bind mount here")
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got.pop("status")[0] == 0
    for name, (code, err) in got.items():
        assert code == 2, (name, code, err)
        assert len(err.splitlines()) == 1 and err.startswith("error: "), (name, err)
        assert "read-only" in err, (name, err)
    assert _snapshot(ro) == before
