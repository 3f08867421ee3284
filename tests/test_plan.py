"""Replications for a target MCSE: ``plan`` against the analytic requirements."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from micromacro_sim.cli.main import main
from micromacro_sim.core.errors import ConfigError
from micromacro_sim.design.measures import parse_measure, replications_needed, wilson
from micromacro_sim.planning.plan import parse_targets, pilot_estimates, plan, plan_table
from micromacro_sim.run.configure import parse_config

G = 100
SIGMA2 = 0.35
RHO = 0.3
RAW = dict(name="plan-test", seed=11, replications=50, methods=["true"],
           admissibility={"policy": "flag", "gate": "none"},
           fixed=dict(n_groups=G, group_size=5, icc=0.2, r_zxi=RHO, sigma2_eps=SIGMA2))
PILOT = 600


@pytest.fixture(scope="module")
def pilot():
    cfg = parse_config(RAW)
    return cfg, pilot_estimates(cfg, PILOT)


def _row(table: pd.DataFrame, measure: str, term: str = "xi") -> pd.Series:
    return table[(table["measure"] == measure) & (table["term"] == term)].iloc[0]


def test_coverage_plan_is_the_analytic_1900(pilot):
    """The oracle's t interval covers exactly .95: .95 x .05 / .005^2 = 1900 lies in the
    pilot's interval, and the point value is the pilot's own p (1 - p) / MCSE^2."""
    cfg, est = pilot
    # the exact .95 is the classical t interval's (a bare name: the default, HC3 for true)
    table = plan_table(cfg, est, parse_targets("cover=0.005", se_type="classical"))
    row = _row(table, "cover_classical")
    g = est[(est["term"] == "xi") & (est["status"] == "ok")]
    crit = stats.t.ppf(0.975, g["df_resid"])
    p = np.mean(np.abs(g["estimate"] - 0.3) <= crit * g["se"])
    assert row["pilot_estimate"] == pytest.approx(p)
    assert row["reps_needed"] == math.ceil(p * (1 - p) / 0.005**2 - 1e-9)
    assert row["reps_lo"] <= 1900 <= row["reps_hi"]
    se_n = abs(1 - 2 * 0.95) / 0.005**2 * math.sqrt(0.95 * 0.05 / PILOT)  # delta method
    assert abs(row["reps_needed"] - 1900) < 4 * se_n


def test_worst_case_rates_are_10000(pilot):
    cfg, est = pilot
    table = plan_table(cfg, est, parse_targets("cover=0.005,power=0.005"), worst_case=True)
    assert (table["reps_needed"] == 10000).all()
    assert (table["reps_lo"] == table["reps_hi"]).all()


def test_bias_plan_follows_the_empirical_se(pilot):
    """n = S^2 / MCSE^2 with S the pilot's empirical SD; the oracle's true Var(b_xi) with
    normal regressors is sigma2 / ((1 - rho^2) (G - 4)), inside the chi-square interval."""
    cfg, est = pilot
    table = plan_table(cfg, est, parse_targets({"bias": 0.005, "empse": 0.002}))
    row = _row(table, "bias")
    g = est[(est["term"] == "xi") & (est["status"] == "ok")]
    s2 = float(np.var(g["estimate"], ddof=1))
    assert row["reps_needed"] == math.ceil(s2 / 0.005**2 - 1e-9)
    truth = SIGMA2 / ((1 - RHO**2) * (G - 4)) / 0.005**2
    assert row["reps_lo"] <= truth <= row["reps_hi"]
    emp = _row(table, "empse")
    assert emp["reps_needed"] == math.ceil(1 + s2 / (2 * 0.002**2) - 1e-9)
    assert emp["reps_lo"] <= 1 + truth * 0.005**2 / (2 * 0.002**2) <= emp["reps_hi"]


def test_binding_row_is_the_largest(pilot):
    cfg, est = pilot
    table = plan_table(cfg, est, parse_targets("bias=0.005,cover=0.005,mse=0.0005,modelse=1e-4"))
    assert table["binding"].sum() == 1
    assert table.loc[table["binding"], "reps_needed"].iloc[0] == table["reps_needed"].max()
    assert set(table["measure"]) == {"bias", "cover", "mse", "modelse"}


def test_mse_and_modelse_intervals_cover_a_large_sample():
    """The fourth-moment intervals contain the requirement computed from a sample 50 times
    larger (independent draws of a skewed variable)."""
    rng = np.random.default_rng(3)
    big = rng.standard_normal(100_000) * 0.2 + 0.1
    small = big[:2000]
    se = np.abs(rng.standard_normal(100_000)) * 0.05 + 0.1
    m_mse, m_mod = parse_measure("mse", "t"), parse_measure("modse", "t")
    truth_mse = replications_needed(m_mse, big, se, np.full(big.size, 50.0), 0.0, 0.001)
    truth_mod = replications_needed(m_mod, big, se, np.full(big.size, 50.0), 0.0, 0.001)
    got_mse = replications_needed(m_mse, small, se[:2000], np.full(2000, 50.0), 0.0, 0.001)
    got_mod = replications_needed(m_mod, small, se[:2000], np.full(2000, 50.0), 0.0, 0.001)
    assert got_mse.lo <= truth_mse.n <= got_mse.hi
    assert got_mod.lo <= truth_mod.n <= got_mod.hi
    assert got_mse.lo < got_mse.n < got_mse.hi < 2 * got_mse.lo


def test_wilson_matches_the_score_formula():
    lo, hi = wilson(95, 100)
    # the Wilson bounds solve |p_hat - p| = z sqrt(p (1 - p) / n)
    z = stats.norm.ppf(0.975)
    for p in (lo, hi):
        assert abs(0.95 - p) == pytest.approx(z * math.sqrt(p * (1 - p) / 100), rel=1e-9)


def test_api_plan_and_cli_table(tmp_path):
    raw = {**RAW, "fixed": {**RAW["fixed"], "n_groups": 30}}
    res = plan(parse_config(raw), pilot=50, target_mcse={"bias": 0.01}, terms=["xi"])
    assert list(res.table["term"].unique()) == ["xi"]
    assert res.recommended == res.table["reps_needed"].max()
    cfg = tmp_path / "c.yaml"
    import yaml

    cfg.write_text(yaml.safe_dump(raw))
    out = tmp_path / "plan.csv"
    assert main(["plan", str(cfg), "--pilot", "50", "--target-mcse", "bias=0.01,cover=0.01",
                 "--term", "xi", "--output", str(out)]) == 0
    table = pd.read_csv(out)
    assert {"label", "method", "term", "measure", "pilot_estimate", "reps_needed", "reps_lo",
            "reps_hi"} <= set(table.columns)
    assert len(table) == 2


@pytest.mark.parametrize("args, field", [
    (["--target-mcse", "bais=0.005"], "target-mcse: unknown measure 'bais'"),
    (["--target-mcse", "bias=-1"], "target-mcse: bias='-1'"),
    (["--target-mcse", "cover=0.7"], "target-mcse: cover='0.7'"),
    (["--target-mcse", "bias"], "target-mcse: expected measure=value"),
    (["--pilot", "3"], "pilot: expected an integer >= 10, got 3"),
    (["--term", "eta"], "term: unknown term 'eta'"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, args, field):
    import yaml

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(RAW))
    out = tmp_path / "plan.csv"
    assert main(["plan", str(cfg), *args, "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(f"error: {field}")
    assert not out.exists()


def test_parse_targets_rejects_unknown_se_suffix():
    with pytest.raises(ConfigError, match="unknown measure 'bias_HC3'"):
        parse_targets("bias_HC3=0.01")
    assert parse_measure("cover_HC3", "f").se_type == "HC3"
