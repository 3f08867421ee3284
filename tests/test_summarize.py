"""Performance measures and their Monte Carlo SEs against independent truth.

Each MCSE formula is checked by repeating a small simulation experiment many times:
the spread of a measure across experiments is the true Monte Carlo SE, which the
formula's average must match. Tolerances come from the sampling error of those
comparisons (with E experiments, the SD of a SD estimate is about SD / sqrt(2(E-1))).
"""

from __future__ import annotations

import numpy as np
import pytest

from micromacro_sim.summaries.summarize import performance

E = 2000  # experiments
K = 200  # replications per experiment
REL_TOL = 4 / np.sqrt(2 * (E - 1))  # 4 SEs of a relative SD comparison (about 6%)


@pytest.fixture(scope="module")
def experiments():
    rng = np.random.default_rng(2024)
    theta = 0.3
    # estimates ~ N(theta + .02, .05^2); SE estimates scattered around .05
    est = theta + 0.02 + 0.05 * rng.standard_normal((E, K))
    se = 0.05 * np.sqrt(rng.chisquare(60, (E, K)) / 60)
    rows = [performance(est[e], theta, {"classical": se[e]}, np.full(K, 60.0)) for e in range(E)]
    return theta, est, se, rows


@pytest.mark.parametrize(
    ("measure", "mcse"),
    [
        ("bias", "bias_mcse"),
        ("empse", "empse_mcse"),
        ("mse", "mse_mcse"),
        ("modse_classical", "modse_classical_mcse"),
        ("cover_classical", "cover_classical_mcse"),
        ("relerr_classical", "relerr_classical_mcse"),
    ],
)
def test_mcse_matches_spread_across_experiments(experiments, measure, mcse):
    *_, rows = experiments
    values = np.array([r[measure] for r in rows])
    claimed = np.array([r[mcse] for r in rows])
    actual = values.std(ddof=1)
    assert claimed.mean() == pytest.approx(actual, rel=REL_TOL)


def test_point_measures_against_definitions(experiments):
    theta, est, se, rows = experiments
    r = rows[0]
    x = est[0]
    assert r["bias"] == pytest.approx(x.mean() - theta)
    assert r["pct_bias"] == pytest.approx(100 * (x.mean() / theta - 1))
    assert r["rmse"] == pytest.approx(np.sqrt(np.mean((x - theta) ** 2)))
    assert r["median"] == pytest.approx(np.median(x))
    # est - theta ~ N(.4 se0, se0^2) and se ~ se0 sqrt(chi2_60 / 60), independent, so
    # (est - theta) / se is noncentral t with 60 df and noncentrality .4: coverage is exact
    from scipy import stats

    crit = stats.t.ppf(0.975, 60)
    expected = stats.nct.cdf(crit, 60, 0.4) - stats.nct.cdf(-crit, 60, 0.4)
    cover = np.mean([row["cover_classical"] for row in rows])
    assert cover == pytest.approx(expected, abs=4 * np.sqrt(expected * (1 - expected) / (E * K)))


def test_zero_truth_gives_bias_not_percent():
    r = performance(np.array([0.1, -0.1, 0.05]), 0.0)
    assert np.isnan(r["pct_bias"]) and r["bias"] == pytest.approx(0.05 / 3)


def test_rejection_rate_is_type_one_error_under_null():
    rng = np.random.default_rng(7)
    k = 20000
    est = rng.standard_normal(k)
    r = performance(est, 0.0, {"classical": np.ones(k)})
    assert r["reject_classical"] == pytest.approx(0.05, abs=4 * r["reject_classical_mcse"])
    assert r["cover_classical"] == pytest.approx(0.95, abs=4 * r["cover_classical_mcse"])
