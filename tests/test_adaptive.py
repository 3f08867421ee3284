"""Adaptive replications: every target reported met holds, the rule depends on the data
only (n_jobs, backend, chunk size, resume), and tighter targets extend the same streams."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml

from micromacro_sim.cli.main import main
from micromacro_sim.core.errors import ConfigError
from micromacro_sim.run.configure import parse_config
from micromacro_sim.run.runner import run
from micromacro_sim.run.storage import read_table
from micromacro_sim.summaries.summarize import summarize_run

LOOSE = {"bias": 0.03, "cover": 0.02}
TIGHT = {"bias": 0.02, "cover": 0.015}


def _config(targets=LOOSE, low=40, high=1500, block=30, **extra):
    raw = {
        "name": "adaptive", "seed": 11, "methods": ["true", "unadjusted"],
        "replications": {"target_mcse": dict(targets), "min": low, "max": high,
                         "block": block},
        "admissibility": {"policy": "flag", "gate": "none"},
        "fixed": {"n_groups": 20, "group_size": 5, "r_zxi": 0.3},
        "grid": {"icc": [0.1, 0.3]},
        **extra,
    }
    return parse_config(raw)


def _cells(folder):
    return json.loads((folder / "manifest.json").read_text())["adaptive"]["cells"]


def _used(folder):
    """Each cell's estimates rows of the replications its rule used."""
    cells = _cells(folder)
    est = read_table(folder, "estimates", list(cells))
    n = est["scenario"].map({k: c["replications"] for k, c in cells.items()})
    return est[est["replication"] < n].reset_index(drop=True)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    folder = tmp_path_factory.mktemp("adaptive") / "fresh"
    run(_config(), run_dir=folder, progress=False)
    return folder


def test_reported_targets_hold(fresh):
    cells = _cells(fresh)
    assert all(c["finished"] for c in cells.values())
    summary = summarize_run(fresh)
    assert not summary.partial
    est = _used(fresh)
    for key, cell in cells.items():
        n = cell["replications"]
        assert 40 <= n <= 1500 and (n - 40) % 30 == 0 or n == 1500
        assert cell["met"], cell
        assert est[est["scenario"] == key]["replication"].nunique() == n
        perf = summary.performance[summary.performance["scenario"] == key]
        assert (perf["n_reps"] == n).all()
        # the summaries' MCSEs, and the MCSE of the bias computed here from the estimates
        assert (perf["bias_mcse"] <= LOOSE["bias"]).all()
        # a bare "cover" target uses each method's default SE type (HC3 here)
        assert (perf["cover_mcse"] <= LOOSE["cover"]).all()
        for _, g in est[(est["scenario"] == key) & (est["status"] == "ok")].groupby(
                ["method", "term"]):
            x = g["estimate"].to_numpy()
            assert x.std(ddof=1) / math.sqrt(x.size) <= LOOSE["bias"]
    row = summary.datasets.set_index("scenario")
    assert row["target_met"].all() and row["target_finished"].all()
    assert (row["binding_mcse"] <= row["binding_target"]).all()
    # at least one cell needed more than its first block (the rule did something)
    assert max(c["replications"] for c in cells.values()) > 40


def test_target_not_reached_is_reported(tmp_path):
    folder = tmp_path / "short"
    run(_config(TIGHT, low=40, high=70, block=30), run_dir=folder, progress=False)
    cells = _cells(folder)
    assert all(c["replications"] == 70 and not c["met"] and c["finished"]
               for c in cells.values())
    assert all(c["mcse"] > c["target"] for c in cells.values())
    summary = summarize_run(folder)
    assert not summary.datasets["target_met"].any()
    assert not summary.partial


@pytest.mark.parametrize("opts", [{"n_jobs": 2, "backend": "threading", "chunk_size": 25},
                                  {"chunk_size": 1000}])
def test_independent_of_execution(fresh, tmp_path, opts):
    folder = tmp_path / "other"
    run(_config(**opts), run_dir=folder, progress=False)
    assert _cells(folder) == _cells(fresh)
    pd.testing.assert_frame_equal(_used(folder), _used(fresh), check_exact=True)
    pd.testing.assert_frame_equal(summarize_run(folder).performance,
                                  summarize_run(fresh).performance, check_exact=True)


def test_resume_after_interruption(fresh, tmp_path):
    folder = tmp_path / "resumed"
    first = run(_config(chunk_size=20), run_dir=folder, progress=False, max_tasks=3)
    assert first.tasks_run == 3
    assert summarize_run(folder).partial
    assert not all(c["finished"] for c in _cells(folder).values())
    run(_config(chunk_size=20), run_dir=folder, progress=False)
    assert _cells(folder) == _cells(fresh)
    pd.testing.assert_frame_equal(_used(folder), _used(fresh), check_exact=True)


def test_tighter_targets_extend_the_streams(fresh, tmp_path):
    extended = tmp_path / "extended"
    run(_config(), run_dir=extended, progress=False)
    res = run(_config(TIGHT), run_dir=extended, progress=False)
    tight = tmp_path / "tight"
    run(_config(TIGHT), run_dir=tight, progress=False)
    assert _cells(extended) == _cells(tight)
    assert all(c["met"] for c in _cells(tight).values())
    # only the missing replications ran
    loose_total = sum(c["replications"] for c in _cells(fresh).values())
    assert res.replications_run == sum(c["replications"] for c in _cells(tight).values()) \
        - loose_total
    assert res.replications_run > 0
    pd.testing.assert_frame_equal(_used(extended), _used(tight), check_exact=True)
    # back to the loose targets: the first replications only, as a fresh loose run
    again = run(_config(), run_dir=extended, progress=False)
    assert again.replications_run == 0
    assert _cells(extended) == _cells(fresh)
    pd.testing.assert_frame_equal(summarize_run(extended).performance,
                                  summarize_run(fresh).performance, check_exact=True)


def test_fixed_replications_drop_the_adaptive_record(fresh, tmp_path):
    folder = tmp_path / "fixed"
    run(_config(), run_dir=folder, progress=False)
    raw = dict(_config().raw, replications=50)
    run(parse_config(raw), run_dir=folder, progress=False)
    assert "adaptive" not in json.loads((folder / "manifest.json").read_text())
    assert (summarize_run(folder).datasets["n_reps"] >= 50).all()


@pytest.mark.parametrize("value, field", [
    ({"min": 10}, "replications.target_mcse"),
    ({"target_mcse": {"bais": 0.1}}, "replications.target_mcse"),
    ({"target_mcse": {"bias": -1}}, "replications.target_mcse.bias"),
    ({"target_mcse": {"bias": True}}, "replications.target_mcse.bias"),
    ({"target_mcse": {"cover": 0.5}}, "replications.target_mcse.cover"),
    ({"target_mcse": {"bias": 0.1}, "min": 5}, "replications.min"),
    ({"target_mcse": {"bias": 0.1}, "min": 300, "max": 200}, "replications.max"),
    ({"target_mcse": {"bias": 0.1}, "block": 0}, "replications.block"),
    ({"target_mcse": {"bias": 0.1}, "block": 2.5}, "replications.block"),
    ({"target_mcse": {"bias": 0.1}, "step": 5}, "replications.step"),
    ({"target_mcse": {"power": 0.01, "reject": 0.02}}, "replications.target_mcse.reject"),
    ("many", "replications"),
])
def test_bad_adaptive_config(value, field):
    raw = dict(_config().raw, replications=value)
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    msg = str(err.value)
    assert msg.startswith(field + ":") and "\n" not in msg


def test_cli_refuses_bad_config_and_parts(tmp_path, capsys):
    raw = dict(_config().raw, replications={"target_mcse": {"bias": 0}})
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["run", str(path), "--output", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "replications.target_mcse.bias" in err[0]
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(_config().raw))
    assert main(["run", str(good), "--output", str(tmp_path / "out"), "--part", "1/2"]) == 2
    assert not (tmp_path / "out").exists()


def test_next_count_on_the_grid():
    from micromacro_sim.run.adaptive import CellOutcome, next_count

    ad = _config(low=40, high=1500, block=30).adaptive
    step = [next_count(ad, CellOutcome(40, False, "", 1.0, 0.5, need))
            for need in (0, 41, 70, 71, 10_000, np.inf)]
    assert step == [70, 70, 70, 100, 1500, 1500]
