"""The Python API of a simulation: ``micromacro_sim.simulate``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

import micromacro_sim as mm
from micromacro_sim.cli.main import main
from micromacro_sim.core.errors import ConfigError
from micromacro_sim.run.configure import parse_config
from micromacro_sim.run.storage import read_table
from micromacro_sim.summaries.summarize import summarize_run

RAW = {
    "name": "api",
    "seed": 5,
    "replications": 15,
    "methods": ["true", "unadjusted", "croon"],
    "admissibility": {"policy": "flag", "gate": "none"},
    "fixed": {"n_groups": 30, "group_size": 5, "r_zxi": 0.3},
    "grid": {"icc": [0.1, 0.3], "beta_xi": [0.0, 0.3]},
}


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    where = tmp_path_factory.mktemp("cli")
    cfg = where / "api.yaml"
    cfg.write_text(yaml.safe_dump(RAW, sort_keys=False))
    assert main(["run", str(cfg), "--output", str(where / "run"), "--quiet"]) == 0
    return where / "run"


def test_in_memory_equals_the_cli_run_and_cleans_up(cli_run):
    sim = mm.simulate(RAW)
    assert sim.in_memory
    pd.testing.assert_frame_equal(sim.estimates, read_table(cli_run, "estimates"))
    pd.testing.assert_frame_equal(sim.datasets, read_table(cli_run, "datasets"))
    ours = sim.summary()
    theirs = summarize_run(cli_run).performance
    pd.testing.assert_frame_equal(ours[list(theirs.columns)], theirs)
    where = sim.run_dir
    assert where.is_dir()
    sim.close()
    assert not where.exists()
    with pytest.raises(ConfigError, match="^simulation: closed"):
        sim.summary()


def test_summary_rows_carry_the_design_factors():
    with mm.simulate(parse_config(RAW), replications=4) as sim:
        s = sim.summary()
        assert sim.config.replications == 4
    cols = list(s.columns)
    assert cols.index("label") < cols.index("icc") < cols.index("beta_xi") < cols.index("method")
    assert set(s["icc"].round(6)) == {0.1, 0.3} and set(s["beta_xi"]) == {0.0, 0.3}
    assert len(s) == 4 * 3 * 3  # scenarios x methods x terms
    assert len(set(s["label"])) == 4
    assert list(sim.scenarios["scenario"]) == [sc.key for sc in sim.config.scenarios]


def test_a_path_with_an_output_folder_is_a_run_folder(tmp_path):
    cfg = tmp_path / "api.yaml"
    cfg.write_text(yaml.safe_dump(RAW, sort_keys=False))
    sim = mm.simulate(cfg, output=tmp_path / "run", replications=3)
    assert not sim.in_memory and (tmp_path / "run" / "manifest.json").is_file()
    more = mm.simulate(cfg, output=tmp_path / "run", replications=5)
    assert more.result.replications_run == 4 * 2
    assert len(more.datasets) == 4 * 5
    sim.close()  # a real folder is kept
    assert (tmp_path / "run").is_dir()


def test_bad_arguments_are_one_line():
    with pytest.raises(ConfigError, match="^colour: not a simulate"):
        mm.simulate(RAW, colour=1)
    with pytest.raises(ConfigError, match="^config: expected a path"):
        mm.simulate(42)
    with pytest.raises(ConfigError, match="^replications:"):
        mm.simulate(RAW, replications=0)
    assert not list(Path(".").glob("micromacro-api-*"))
