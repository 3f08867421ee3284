"""Memory budget: batch sizes from the design, and results independent of them."""

from __future__ import annotations

import pandas as pd
import pytest

from micromacro_sim.cli.main import main
from micromacro_sim.core.errors import ConfigError
from micromacro_sim.design import budget
from micromacro_sim.design.scenario import Scenario
from micromacro_sim.run import chunk, memory, tasks
from micromacro_sim.run.configure import parse_config

BASE = {
    "name": "budget", "seed": 11, "replications": 7,
    "methods": ["true", "unadjusted", "blup", "blup_hetvar", "croon", "sem", "sam"],
    "admissibility": {"policy": "flag", "gate": "none"},
    "fixed": {"n_groups": 15, "group_size": 4, "r_zxi": 0.3, "icc": 0.2},
}


@pytest.mark.parametrize(("value", "expected"), [
    (512, 512 << 20), ("512", 512 << 20), ("2 GiB", 2 << 30), ("1.5g", 3 << 29),
    ("100MB", 100 << 20), (64.0, 64 << 20),
])
def test_parse_memory_budget(value, expected):
    assert budget.parse_memory_budget(value) == expected


@pytest.mark.parametrize("value", [0, -5, 10, "lots", "5 TB", True, None, [512], "nan"])
def test_bad_memory_budget_names_the_field(value):
    with pytest.raises(ConfigError, match=r"^memory_budget: expected a size"):
        budget.parse_memory_budget(value)


def test_batch_size_follows_design_methods_and_engine():
    cfg = parse_config(BASE)
    small = Scenario.from_params({"n_groups": 50, "group_size": 10, "icc": 0.1, "r_zxi": 0.3})
    wide = Scenario.from_params({"n_groups": 50, "group_size": 40, "icc": 0.1, "r_zxi": 0.3})
    big = Scenario.from_params({"n_groups": 500, "group_size": 50, "icc": 0.1, "r_zxi": 0.3})
    sizes = [memory.batch_size(sc, cfg.methods, "auto") for sc in (small, wide, big)]
    assert sizes[0] > sizes[1] > sizes[2] >= 1
    # the sem's derivative arrays grow as n^3: they dominate the wide design
    light = parse_config({**BASE, "methods": ["true", "unadjusted"]}).methods
    assert memory.batch_size(wide, light, "auto") > 5 * sizes[1]
    # one dataset at a time: only the data count
    assert memory.batch_size(wide, cfg.methods, "reference") > sizes[1]
    assert memory.batch_size(wide, cfg.methods, "auto", 2 * budget.DEFAULT_MEMORY_BUDGET) \
        > sizes[1]
    # a batch's estimated working set fits what the budget leaves to batches
    per = memory.replication_bytes(big, cfg.methods, "auto")
    assert sizes[2] * per <= budget.DEFAULT_MEMORY_BUDGET - budget.BYTES_AT_REST


def test_batch_ranges_cover_the_range_in_order():
    parts = memory.batch_ranges(range(5, 17), 5)
    assert [(p.start, p.stop) for p in parts] == [(5, 10), (10, 15), (15, 17)]
    assert memory.batch_ranges(range(3, 3), 4) == []


def test_results_do_not_depend_on_the_batch_size(monkeypatch):
    cfg = parse_config(BASE)
    sc = cfg.scenarios[0]
    args = (sc, range(2, 9), cfg.methods, cfg.seed, cfg.policy, cfg.engine)
    est1, ds1 = chunk.simulate_chunk(*args)
    calls = []

    def tiny(*a, **k):
        calls.append(a)
        return 3

    monkeypatch.setattr(chunk, "batch_size", tiny)
    est3, ds3 = chunk.simulate_chunk(*args)
    assert calls
    for new, old in ((est3, est1), (ds3, ds1)):
        pd.testing.assert_frame_equal(new.to_pandas(), old.to_pandas(), check_exact=True)
    assert est1.num_rows == 7 * sum(len(sc.terms) for _ in cfg.methods)


def test_memory_budget_is_an_execution_option(tmp_path):
    a = parse_config(BASE)
    b = parse_config({**BASE, "memory_budget": "1 GiB"})
    assert b.memory_budget == 1 << 30 and a.memory_budget is None
    assert a.result_hash == b.result_hash
    planned = tasks.plan_tasks(b, tmp_path)
    assert {t.memory_budget for t in planned} == {1 << 30}


def test_bad_budget_on_the_command_line_exits_2(tmp_path, capsys):
    import yaml

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(BASE))
    out = tmp_path / "out"
    rc = main(["run", str(cfg), "--output", str(out), "--memory-budget", "tiny", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: memory_budget:")
    assert not out.exists()
