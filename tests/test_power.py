"""The sample-size solver against analytic power and a direct grid of runs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from micromacro_sim.cli.main import main
from micromacro_sim.design.measures import indicators
from micromacro_sim.design.scenario import Scenario
from micromacro_sim.planning.curve import fit_curve
from micromacro_sim.planning.power import solve_power
from micromacro_sim.run.chunk import simulate_chunk
from micromacro_sim.run.configure import parse_config

BETA, SIGMA2, RHO = 0.3, 0.35, 0.3
ROW16 = dict(name="power-test", seed=2024, replications=10,
             methods=["true", "unadjusted", "croon"],
             admissibility={"policy": "flag", "gate": "none"},
             fixed=dict(n_groups=40, group_size=10, icc=0.1, r_zxi=RHO, beta_xi=BETA,
                        sigma2_eps=SIGMA2))


def oracle_power(G: int, alpha: float = 0.05, nodes: int = 200) -> float:
    """Power of the t test of b_xi in OLS of y on [1, z, xi] with normal random regressors.

    Given the design, t is noncentral t with G - 3 df and noncentrality
    beta sqrt(SS(xi | 1, z)) / sigma, where SS(xi | 1, z) ~ (1 - rho^2) chi2(G - 2); the
    power averages the conditional power over that chi-square (Gauss-Legendre in its
    probability scale).
    """
    df = G - 3
    c = stats.t.ppf(1 - alpha / 2, df)
    x, w = np.polynomial.legendre.leggauss(nodes)
    ss = stats.chi2.ppf((x + 1) / 2, G - 2)
    ncp = BETA * np.sqrt((1 - RHO**2) * ss / SIGMA2)
    return float(np.sum(w / 2 * (stats.nct.sf(c, df, ncp) + stats.nct.cdf(-c, df, ncp))))


def test_oracle_power_formula_matches_simulation():
    """The analytic truth itself against the simulated oracle at G = 40 (SPEC: .81)."""
    sc = Scenario.from_params(ROW16["fixed"])
    cfg = parse_config(ROW16)
    est, _ = simulate_chunk(sc, range(3000), cfg.methods[:1], 99, cfg.policy)
    g = est.to_pandas().query("term == 'xi'")
    _, reject = indicators(g["estimate"], g["se"], g["df_resid"], BETA, 0.05)
    p = oracle_power(40)
    assert p == pytest.approx(0.81, abs=0.005)
    assert abs(reject.mean() - p) < 3 * math.sqrt(p * (1 - p) / reject.size)


def test_oracle_n_groups_within_its_interval():
    """The smallest G with analytic power >= .80 (40) lies in the solver's interval."""
    truth = next(G for G in range(10, 200) if oracle_power(G) >= 0.80)
    assert truth == 40
    (sol,) = solve_power(parse_config(ROW16), methods=["true"], target="power=0.80",
                         search_range="10:200", se_type="classical")  # the analytic t test
    assert sol.lo <= truth <= sol.hi
    assert sol.hi - sol.lo < 15
    est, mcse, reps = sol.confirmation
    assert abs(est - oracle_power(sol.answer)) < 3 * mcse
    assert sol.replications == sol.evaluations["reps"].sum() > reps
    assert sol.line() == f"n_groups = {sol.answer} [{sol.lo}, {sol.hi}]"


def test_same_config_and_seed_same_answer():
    kw = dict(methods=["unadjusted"], search_range="10:200", steps=4, block=50, confirm=0)
    a = solve_power(parse_config(ROW16), **kw)[0]
    b = solve_power(parse_config(ROW16), **kw)[0]
    pd.testing.assert_frame_equal(a.evaluations, b.evaluations)
    assert (a.answer, a.lo, a.hi) == (b.answer, b.lo, b.hi)
    c = solve_power(parse_config({**ROW16, "seed": 7}), **kw)[0]
    assert not a.evaluations["block_estimate"].equals(c.evaluations["block_estimate"])


def test_glm_recovers_a_known_curve():
    """Binomial counts drawn from logit p = -6 + 2 log x: the interval contains the
    smallest integer above the true root exp((logit .8 + 6) / 2)."""
    rng = np.random.default_rng(4)
    x = np.array([20, 25, 30, 35, 40, 50])
    n = np.full(x.size, 2000)
    p = 1 / (1 + np.exp(-(-6 + 2 * np.log(x))))
    s = rng.binomial(n, p)
    fit = fit_curve("rate", x, n, s, s)
    ans, lo, hi = fit.root(np.arange(10, 200), 0.8)
    root = math.exp((math.log(4) + 6) / 2)
    assert lo <= math.ceil(root) <= hi
    assert abs(ans - root) <= 2
    assert np.all(np.abs(fit.coef - [-6, 2]) < 3 * np.sqrt(np.diag(fit.cov)))


def test_bias_target_solves_group_size_against_the_large_g_limit():
    """|bias| of the group-mean regression shrinks with the members per group; at G = 300
    it is close to its large-G limit (SPEC section 5), whose root is the truth."""
    raw = {**ROW16, "methods": ["unadjusted"],
           "fixed": {**ROW16["fixed"], "n_groups": 300, "icc": 0.3}}
    truth = next(n for n in range(2, 80) if abs(Scenario.from_params(
        {**raw["fixed"], "group_size": n}).unadjusted_limit()["xi"] - BETA) <= 0.02)
    (sol,) = solve_power(parse_config(raw), solve="group_size", target="bias=0.02",
                         search_range="2:60", steps=7, confirm=0)
    assert sol.lo - 1 <= truth <= sol.hi + 1
    assert sol.line().startswith("group_size = ")


def _cfg_file(tmp_path, raw=ROW16):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_cli_last_line_table_and_figure(tmp_path, capsys):
    out = tmp_path / "power.csv"
    assert main(["power", _cfg_file(tmp_path), "--solve", "n_groups", "--method",
                 "unadjusted,croon", "--range", "10:150", "--steps", "4", "--confirm", "200",
                 "--output", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2].startswith("unadjusted needs G = ") and "croon needs G = " in lines[-2]
    assert lines[-1].startswith("n_groups = ") and lines[-1].endswith("(croon)")
    table = pd.read_csv(out)
    assert set(table["method"]) == {"unadjusted", "croon"}
    assert {"value", "stage", "reps", "pooled_estimate", "pooled_mcse", "fitted"} <= set(
        table.columns)
    assert (tmp_path / "power.png").stat().st_size > 1000


@pytest.mark.parametrize("args, message", [
    (["--target", "powr=0.8"], "target: expected power=P, cover=P or bias=B, got 'powr=0.8'"),
    (["--target", "power=1.5"], "target: power='1.5': expected a number in (0, 1)"),
    (["--target", "bias=-0.1"], "target: bias='-0.1': expected a number > 0"),
    (["--range", "5"], "range: expected LO:HI with integers LO < HI, got '5'"),
    (["--range", "50:20"], "range: expected LO:HI with 3 <= LO < HI, got 50:20"),
    (["--range", "1:20"], "range: expected LO:HI with 3 <= LO < HI, got 1:20"),
    (["--method", "crun"], "method: unknown method 'crun'"),
    (["--term", "eta"], "term: unknown term 'eta'"),
    (["--solve", "icc"], "solve: expected one of n_groups, group_size, got 'icc'"),
    (["--steps", "0"], "steps: expected an integer >= 1, got 0"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, args, message):
    out = tmp_path / "p.csv"
    base = ["power", _cfg_file(tmp_path), "--solve", "n_groups", "--output", str(out)]
    if "--solve" in args:
        base = base[:2] + base[4:]
    assert main([*base, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(f"error: {message}")
    assert not out.exists() and not (tmp_path / "p.png").exists()


def test_two_designs_are_refused(tmp_path, capsys):
    raw = {**ROW16, "grid": {"icc": [0.1, 0.3]}}
    raw["fixed"] = {k: v for k, v in ROW16["fixed"].items() if k != "icc"}
    assert main(["power", _cfg_file(tmp_path, raw), "--solve", "n_groups"]) == 2
    assert capsys.readouterr().err.startswith("error: grid: the config has 2 designs")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["unadjusted", "croon"])
def test_answers_agree_with_a_direct_grid(method):
    """Direct runs (another seed, 3000 replications each) at the interval's ends and the
    answer: power at the lower end is not above the target, at the upper end not below,
    and at the answer within 3 MCSE of it."""
    cfg = parse_config(ROW16)
    (sol,) = solve_power(cfg, methods=[method], search_range="10:300", se_type="classical")
    spec = next(m for m in cfg.methods if m.label == method)

    def direct(G: int) -> tuple[float, float]:
        sc = Scenario.from_params({**ROW16["fixed"], "n_groups": G})
        est, _ = simulate_chunk(sc, range(3000), (spec,), 4242, cfg.policy)
        g = est.to_pandas().query("term == 'xi' and status == 'ok'")
        _, r = indicators(g["estimate"], g["se"], g["df_resid"], BETA, 0.05)
        return r.mean(), math.sqrt(r.mean() * (1 - r.mean()) / r.size)

    (p_lo, se_lo), (p_ans, se_ans), (p_hi, se_hi) = (direct(g) for g in
                                                     (sol.lo, sol.answer, sol.hi))
    assert p_lo <= 0.80 + 3 * se_lo
    assert p_hi >= 0.80 - 3 * se_hi
    assert abs(p_ans - 0.80) < 3 * se_ans + 0.02
