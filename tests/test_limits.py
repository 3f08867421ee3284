"""Unadjusted regression against its analytic large-sample limits (SPEC section 5)."""

from __future__ import annotations

import pytest

from micromacro_sim.run.configure import parse_config
from micromacro_sim.run.runner import run
from micromacro_sim.summaries.summarize import summarize_run

CELLS = [
    {"n_groups": 100, "group_size": 10, "icc": 0.1, "r_zxi": 0.3},  # CV row 16
    {"n_groups": 50, "group_size": 40, "icc": 0.2, "r_zxi": 0.3},
]


@pytest.mark.parametrize("cell", CELLS, ids=["row16", "G50-n40-icc.2"])
def test_unadjusted_percent_bias_within_3_mcse_of_limit(tmp_path, cell):
    cfg = parse_config({
        "name": "limits", "seed": 314, "replications": 600, "n_jobs": 2,
        "methods": ["unadjusted"], "admissibility": {"policy": "flag", "gate": "none"},
        "fixed": cell,
    })
    run(cfg, run_dir=tmp_path, progress=False)
    perf = summarize_run(tmp_path).performance.set_index("term")
    limit = cfg.scenarios[0].unadjusted_limit()
    for term in ("z", "xi"):
        row = perf.loc[term]
        target = 100 * (limit[term] / row["theta"] - 1)
        assert abs(row["pct_bias"] - target) < 3 * row["pct_bias_mcse"], (term, row["pct_bias"],
                                                                          target)
