"""An ordinal study scores each method against its own estimand (issue: outputs that tell
the truth): the oracle on the latent scale, the methods working from x on the scale of x,
and unadjusted's mean against the group-mean regression's limit extended to ordinal x."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import micromacro_sim as mm
from micromacro_sim.design.estimands import estimands
from micromacro_sim.design.scenario import Scenario
from micromacro_sim.reproduce._verdicts import PCT_MARGIN, judge
from micromacro_sim.reproduce.cv2007 import LIMIT_MCSE

FIXED = {"n_groups": 300, "group_size": 5, "icc": 0.2, "r_zxi": 0.3, "beta_xi": 0.4}
CONFIG = {
    "name": "ordinal_estimands", "seed": 77, "replications": 150,
    "methods": ["true", "unadjusted", "croon", "sem", "sam", "factor_score"],
    "admissibility": {"policy": "flag", "gate": "none"},
    "fixed": FIXED, "grid": {"categories": [5], "thresholds": ["symmetric", "skewed"]},
}


@pytest.fixture(scope="module")
def study():
    sim = mm.simulate(CONFIG)
    yield sim
    sim.close()


def _row(perf: pd.DataFrame, key: str, method: str, term: str) -> pd.Series:
    hit = perf[(perf["scenario"] == key) & (perf["method"] == method) & (perf["term"] == term)]
    assert len(hit) == 1
    return hit.iloc[0]


def _scenarios() -> list[Scenario]:
    return [Scenario.from_params({**FIXED, "categories": 5, "thresholds": t})
            for t in ("symmetric", "skewed")]


def test_each_method_is_scored_against_its_own_scale(study):
    perf = study.summary_tables().performance
    for sc in _scenarios():
        est = estimands(sc)
        true_xi = _row(perf, sc.key, "true", "xi")
        assert (true_xi["theta"], true_xi["scale"]) == (0.4, "latent")
        assert abs(true_xi["bias"]) < 3.5 * true_xi["bias_mcse"]
        for method, scale, origin in (("unadjusted", "x", "x_zero"), ("croon", "x", "x_zero"),
                                      ("sem", "x", "latent_mean"), ("sam", "x", "x_zero"),
                                      ("factor_score", "marker", "score_mean")):
            slope = _row(perf, sc.key, method, "xi")
            assert slope["scale"] == scale
            assert slope["theta"] == est.value("xi", scale)
            icpt = _row(perf, sc.key, method, "intercept")
            assert icpt["origin"] == origin
            assert icpt["theta"] == est.value("intercept", scale, origin)
            assert icpt["theta_source"] == "quadrature"
        # the x-scale slope is per category step, far from the latent 0.4
        assert abs(est.value("xi", "x") - 0.4) > 0.1


def test_unadjusted_mean_agrees_with_the_extended_limit(study):
    perf = study.summary_tables().performance
    for sc in _scenarios():
        lim = sc.unadjusted_limit()
        for term in ("intercept", "z", "xi"):
            r = _row(perf, sc.key, "unadjusted", term)
            theta = float(r["theta"])
            limit_pct = 100 * (lim[term] / theta - 1)
            v = judge(float(r["pct_bias"]), float(r["pct_bias_mcse"]), limit_pct, 0.0,
                      PCT_MARGIN.value, z_crit=LIMIT_MCSE)
            assert v["verdict"] in ("agrees", "small difference"), (term, v, limit_pct)
        # the continuous-x limit (measurement factors ignored) is told apart
        old = Scenario.from_params(FIXED).unadjusted_limit()["xi"]
        r = _row(perf, sc.key, "unadjusted", "xi")
        theta = float(r["theta"])
        v = judge(float(r["pct_bias"]), float(r["pct_bias_mcse"]), 100 * (old / theta - 1),
                  0.0, PCT_MARGIN.value, z_crit=LIMIT_MCSE)
        assert v["verdict"] == "disagrees"


def test_export_carries_each_methods_estimand(study, tmp_path):
    from micromacro_sim.summaries.tidy import export_estimates

    path = export_estimates(study.run_dir, "csv", tmp_path / "e.csv")
    frame = pd.read_csv(path)
    sc = _scenarios()[0]
    sub = frame[(frame["scenario"] == sc.key) & (frame["term"] == "xi")]
    by_method = sub.groupby("method")["true_value"].unique()
    assert np.allclose(by_method["true"], [0.4])
    assert np.allclose(by_method["unadjusted"], [estimands(sc).value("xi", "x")])


def _crimson_levels(fig) -> set[float]:
    """The y values of the dashed true-value lines and segments of a figure."""
    from matplotlib.colors import to_rgba

    red = to_rgba("crimson")
    out = set()
    for ax in fig.axes:
        for line in ax.lines:
            if to_rgba(line.get_color()) == red:
                out.update(round(float(v), 9) for v in line.get_ydata())
        for coll in ax.collections:
            if coll.get_segments() if hasattr(coll, "get_segments") else False:
                if tuple(coll.get_colors()[0]) == red:
                    out.update(round(float(seg[0][1]), 9) for seg in coll.get_segments())
    return out


def test_figures_draw_each_methods_own_true_value(study, tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from micromacro_sim.reporting.figures.estimates import plot_estimate_strips
    from micromacro_sim.reporting.figures.spread import plot_estimates

    summary = study.summary_tables()
    est = study.estimates
    figs = []
    monkeypatch.setattr(plt, "close", lambda fig=None: figs.append(fig))
    sc = _scenarios()[0]
    e = estimands(sc)
    want = {round(0.4, 9), round(e.value("xi", "x"), 9)}
    plot_estimate_strips(est, summary, tmp_path / "strips.png", term="xi", cells=[sc.key])
    assert want <= _crimson_levels(figs[-1])
    truth = {(k, m): t for k, m, t in summary.performance.loc[
        summary.performance["term"] == "xi", ["scenario", "method", "theta"]].itertuples(
            index=False)}
    scen = study.scenarios[study.scenarios["scenario"] == sc.key]
    plot_estimates(est, scen, tmp_path / "box.png", term="xi", truth=truth)
    assert want <= _crimson_levels(figs[-1])
    plot_estimates(est, scen, tmp_path / "latent.png", term="xi")  # no truth: latent only
    assert _crimson_levels(figs[-1]) == {0.4}


def test_plan_and_adaptive_targets_use_each_methods_estimand(study):
    from micromacro_sim.design.adaptive import parse_adaptive
    from micromacro_sim.design.measures import parse_measure
    from micromacro_sim.estimators import method_estimands
    from micromacro_sim.planning.plan import plan_table
    from micromacro_sim.run.adaptive import assess

    est = study.estimates
    perf = study.summary_tables().performance
    table = plan_table(study.config, est, {parse_measure("bias", "t"): 0.01}, terms=["xi"])
    for method in ("true", "unadjusted", "factor_score"):
        for sc in _scenarios():
            plan_bias = table[(table["scenario"] == sc.key) & (table["method"] == method)]
            summ = _row(perf, sc.key, method, "xi")
            assert float(plan_bias["pilot_estimate"].iloc[0]) == pytest.approx(summ["bias"],
                                                                               abs=1e-12)
    # adaptive: the coverage target's MCSE depends on where the truth is
    sc = _scenarios()[0]
    adaptive = parse_adaptive({"target_mcse": {"cover": 0.01}, "min": 10, "max": 150})
    cell = est[(est["scenario"] == sc.key) & (est["method"] == "unadjusted")
               & (est["term"] == "xi")]
    scored = method_estimands(study.config.methods)
    right = assess(adaptive, sc, cell, 150, {}, scored)
    latent = assess(adaptive, sc, cell, 150, {}, {"unadjusted": ("latent", "latent_mean")})
    cover = _row(perf, sc.key, "unadjusted", "xi")["cover_classical"]
    assert right.mcse == pytest.approx(np.sqrt(cover * (1 - cover) / 150), rel=1e-9)
    assert right.needed != latent.needed


def test_consistent_methods_recover_the_x_scale_estimands_at_large_G():
    """croon and sem are consistent for the x-scale regression (the group mean's error is
    uncorrelated with T, whatever the categories): at G = 2000 they land on the
    quadrature's estimands, with each intercept at its own origin; the latent values
    they would be scored against before are many MCSEs away."""
    cfg = {"name": "ordinal_large_g", "seed": 91, "replications": 120,
           "methods": ["croon", "sem"], "admissibility": {"policy": "flag", "gate": "none"},
           "fixed": {"n_groups": 2000, "group_size": 6, "icc": 0.2, "r_zxi": 0.3,
                     "categories": 5},
           "grid": {"thresholds": ["symmetric", "skewed"]}}
    sim = mm.simulate(cfg)
    try:
        perf = sim.summary_tables().performance
    finally:
        sim.close()
    assert len(perf) == 12
    for _, r in perf.iterrows():
        assert abs(r["bias"]) < 3.5 * r["bias_mcse"], (r["method"], r["term"], r["bias"])
    xi = perf[perf["term"] == "xi"]
    assert (np.abs(xi["mean"] - 0.3) > 20 * xi["bias_mcse"]).all()
