"""Command-line behaviour: bad input fails in one line with status 2 and writes nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from micromacro_sim.cli.main import main

GOOD = {
    "name": "t",
    "seed": 1,
    "replications": 3,
    "methods": ["true", "unadjusted"],
    "admissibility": {"policy": "flag", "gate": "none"},
    "fixed": {"n_groups": 10, "group_size": 4, "r_zxi": 0.3, "icc": 0.2},
}

BAD = [
    ({"colour": "red"}, "colour"),
    ({"seed": "x"}, "seed"),
    ({"replications": 0}, "replications"),
    ({"n_jobs": 0}, "n_jobs"),
    ({"methods": ["true", "magic"]}, "methods"),
    ({"methods": []}, "methods"),
    ({"fixed": {**GOOD["fixed"], "icc": 1.5}}, "icc"),
    ({"fixed": {**GOOD["fixed"], "r_zxi": -1}}, "r_zxi"),
    ({"fixed": {**GOOD["fixed"], "n_groups": 2}}, "n_groups"),
    ({"fixed": {**GOOD["fixed"], "group_size": 0}}, "group_size"),
    ({"fixed": {**GOOD["fixed"], "n_z": 2, "r_zxi": [0.9, 0.9], "r_zz": -0.5}}, "r_zxi"),
    ({"grid": {"n_groups": 50}}, "grid.n_groups"),
    ({"grid": {"icc": [0.1]}}, "grid.icc"),
    ({"admissibility": {"policy": "retry"}}, "admissibility.policy"),
    ({"methods": [{"blup": {"reml": True, "colour": 1}}]}, "methods.blup"),
]


def _write(tmp_path: Path, cfg) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(cfg) if not isinstance(cfg, str) else cfg)
    return p


@pytest.mark.parametrize(("change", "field"), BAD)
def test_bad_config_one_line_exit_2_nothing_written(tmp_path, capsys, change, field):
    out = tmp_path / "out"
    cfg = {**GOOD, **change, "output": str(out)}
    rc = main(["run", str(_write(tmp_path, cfg)), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1
    assert err.startswith(f"error: {field}"), err
    assert not out.exists()


@pytest.mark.parametrize(("change", "suggestion"), [
    ({"methods": ["true", "unadjustd"]}, "did you mean 'unadjusted'?"),
    ({"fixed": {**{k: v for k, v in GOOD["fixed"].items() if k != "group_size"},
                "group_sise": 4}}, "did you mean 'group_size'?"),
    ({"replicatoins": 3}, "did you mean 'replications'?"),
    ({"admissibility": {"polcy": "flag"}}, "did you mean 'policy'?"),
])
def test_misspelled_names_get_a_suggestion_in_the_same_line(tmp_path, capsys, change,
                                                             suggestion):
    out = tmp_path / "out"
    rc = main(["run", str(_write(tmp_path, {**GOOD, **change, "output": str(out)})),
               "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.endswith(suggestion), err
    assert not out.exists()
    # nothing close: no guess
    rc = main(["run", str(_write(tmp_path, {**GOOD, "methods": ["zzz"], "output": str(out)})),
               "--quiet"])
    assert rc == 2 and "did you mean" not in capsys.readouterr().err


def test_version_and_a_complete_run_says_so(tmp_path, capsys):
    from micromacro_sim import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"micromacro-sim {__version__}\n"
    path = _write(tmp_path, {**GOOD, "output": str(tmp_path / "out")})
    assert main(["run", str(path), "--quiet"]) == 0
    assert "; ran " in capsys.readouterr().out.replace("\n", " ")
    assert main(["run", str(path), "--quiet"]) == 0
    text = capsys.readouterr().out.replace("\n", " ")
    assert "already complete, nothing to run" in text and "ran 0" not in text


def test_yaml_syntax_error(tmp_path, capsys):
    rc = main(["run", str(_write(tmp_path, "seed: [1, 2\nname: x\n"))])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: config: YAML syntax error") and "line" in err


def test_missing_file(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_run_and_summarize_end_to_end(tmp_path):
    out = tmp_path / "run"
    cfg = _write(tmp_path, {**GOOD, "output": str(out)})
    proc = subprocess.run([sys.executable, "-m", "micromacro_sim.cli", "run", str(cfg),
                           "--quiet", "--summarize"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "unadjusted" in proc.stdout
    for name in ("summary.csv", "summary.parquet", "flags.csv", "reliability.csv",
                 "manifest.json", "scenarios.parquet"):
        assert (out / name).is_file()
    proc = subprocess.run([sys.executable, "-m", "micromacro_sim.cli", "summarize",
                           str(tmp_path / "missing")], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("error: RUN_DIR")
