"""The estimands on the latent, x and marker scales, the reliability of a group mean and
the unadjusted regression's large-G limit, against closed forms and large simulations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from micromacro_sim.core.errors import ConfigError
from micromacro_sim.design import estimands as E
from micromacro_sim.design.fleishman import fleishman
from micromacro_sim.design.population import MemberModel
from micromacro_sim.design.scenario import Scenario
from micromacro_sim.estimators import registry
from micromacro_sim.generate.dgp import generate
from micromacro_sim.generate.ordinal import categorize, threshold_values

BASE = {"n_groups": 60, "group_size": 6, "icc": 0.2, "r_zxi": 0.3}


def scenario(**extra) -> Scenario:
    return Scenario.from_params({**BASE, **extra})


@pytest.mark.parametrize("extra", [
    {}, {"group_size": {"poisson": 8, "min": 2}}, {"n_z": 2, "beta_z": [0.2, -0.1]},
    {"n_x": 2, "beta_xi": [0.3, 0.1], "group_size": [4, 9]}, {"xi_skew": 1, "xi_kurtosis": 2},
])
def test_continuous_parallel_members_keep_the_coefficients(extra):
    sc = scenario(**extra)
    est = E.estimands(sc)
    assert est.source == "closed form"
    for term in sc.terms:
        for scale in E.SCALES:
            for origin in E.ORIGINS:
                assert est.value(term, scale, origin) == sc.true_params[term]
    old = sc.var_xi / (sc.var_xi + sc.sigma2_nu * sc.group_size.mean_inverse())
    assert sc.reliability == old
    closed, quad = sc.unadjusted_limit(), E.unadjusted_limit(sc)
    for term in sc.terms:  # the quadrature path reproduces the closed form
        assert quad[term] == pytest.approx(closed[term], rel=1e-10, abs=1e-12)


def test_loadings_rescale_the_slope_by_the_weighted_mean_loading():
    sc = scenario(loadings=[1.0, 0.4, 0.1], group_size=[3, 4])
    # half the groups have 3 members (weight 1/3 each), half 4 (1/4); position 3 loads 1
    lbar = 0.5 * (1 / 3 + 1 / 4) * (1.0 + 0.4 + 0.1) + 0.5 * 0.25 * 1.0
    est = E.estimands(sc)
    assert est.value("xi", "x") == pytest.approx(0.3 / lbar, rel=1e-14)
    assert est.value("xi", "marker") == 0.3
    assert est.value("xi", "latent") == 0.3
    assert est.value("z", "x") == 0.3


def _binary_slopes(sc: Scenario, t: float) -> tuple[float, float, float]:
    """Closed form of the x-scale projection for binary members (normal xi and nu)."""
    tau = math.sqrt(sc.var_xi)
    s = math.sqrt(sc.var_xi + sc.sigma2_nu)
    icc = sc.var_xi / s**2
    r, bz, bx = sc.r_zxi[0][0], sc.beta_z[0], sc.beta_xi[0]
    p = stats.norm.sf(t)
    joint = stats.multivariate_normal([0, 0], [[1, icc], [icc, 1]]).cdf([-t, -t])
    var_t = joint - p * p  # P(both members of a group answer 2) - P(2)^2
    cov_txi = tau**2 / s * stats.norm.pdf(t)
    cov_zt = r / tau * cov_txi
    cov = np.array([[1.0, cov_zt], [cov_zt, var_t]])
    cross = np.array([bz + bx * r * tau, bz * cov_zt + bx * cov_txi])
    az, at = np.linalg.solve(cov, cross)
    return az, at, 1 + p


@pytest.mark.parametrize("thresholds", ["symmetric", [0.7]])
def test_binary_members_against_the_bivariate_normal(thresholds):
    sc = scenario(categories=2, thresholds=thresholds, icc=0.3, r_zxi=0.4, beta_xi=0.5)
    t = float(threshold_values(sc.thresholds, 2)[0])
    az, at, mean = _binary_slopes(sc, t)
    est = E.estimands(sc)
    tol = 1e-10 if t == 0 else 1e-6  # scipy's bivariate normal cdf is accurate to ~1e-7
    assert est.source == "quadrature"
    assert est.value("xi", "x") == pytest.approx(at, rel=tol)
    assert est.value("z", "x") == pytest.approx(az, rel=tol)
    assert est.value("intercept", "x", "x_zero") == pytest.approx(0.3 - at * mean, rel=tol)
    assert est.value("intercept", "x", "latent_mean") == 0.3
    assert est.value("xi", "latent") == 0.5


@pytest.mark.parametrize("k", [3, 5, 7])
def test_symmetric_thresholds_put_the_mean_category_in_the_middle(k):
    sc = scenario(categories=k)
    est = E.estimands(sc)
    slope = est.value("xi", "x")
    assert est.value("intercept", "x", "x_zero") == pytest.approx(0.3 - slope * (k + 1) / 2,
                                                                  rel=1e-12)
    assert est.value("intercept", "x", "score_mean") == 0.3


@pytest.mark.parametrize("extra", [
    {"categories": 5}, {"categories": 4, "thresholds": "skewed", "loadings": [1, 0.5],
                        "member_variances": [1, 2]},
    {"categories": 3, "nu_skew": 1.0, "nu_kurtosis": 2.0},
])
def test_member_moments_against_simulated_members(extra):
    sc = scenario(**extra)
    mm = MemberModel(sc)
    v = np.array([-1.5, 0.0, 0.8])
    f, var = mm.moments(v)
    rng = np.random.default_rng(11)
    load, mvar, _ = mm.classes
    nu_poly = fleishman(sc.nu_skew, sc.nu_kurtosis)
    s = math.sqrt(sc.var_xi + sc.sigma2_nu)
    thr = threshold_values(sc.thresholds, sc.categories)
    n = 200_000
    for c in range(len(load)):
        for i, u in enumerate(mm.xi(v)):
            nu = nu_poly.apply(rng.standard_normal(n)) * math.sqrt(sc.sigma2_nu * mvar[c])
            x = categorize((load[c] * u + nu) / s, thr)
            se_mean = x.std() / math.sqrt(n)
            assert abs(x.mean() - f[c, i]) < 5 * se_mean
            assert abs(x.var() - var[c, i]) < 5 * x.var() * math.sqrt(2 / n) * 2


def _observed_mean_regression(sc: Scenario, seed: int) -> tuple[np.ndarray, np.ndarray]:
    d = generate(sc, np.random.default_rng(seed))
    G = sc.n_groups
    cnt = np.bincount(d.group, minlength=G)
    xb = np.stack([np.bincount(d.group, weights=d.x[:, k], minlength=G) / cnt
                   for k in range(d.x.shape[1])], axis=1)
    X = np.column_stack([np.ones(G), d.z, xb])
    coef = np.linalg.lstsq(X, d.y, rcond=None)[0]
    r = d.y - X @ coef
    se = np.sqrt(np.diag(r @ r / (G - X.shape[1]) * np.linalg.inv(X.T @ X)))
    return coef, se


@pytest.mark.parametrize("extra", [
    {"categories": 5, "missing_mar": {"on": "z", "rate": 0.3}},
    {"categories": 5, "loadings": [1, 0.4], "group_size": {"poisson": 6, "min": 2},
     "missing_mcar": 0.3},
    {"categories": 3, "xi_skew": -1.0, "xi_kurtosis": 2.0,
     "missing_mar": {"on": "xi", "rate": 0.3, "strength": 2.0}},
    {"categories": 4, "n_x": 2, "n_z": 2, "beta_xi": [0.3, 0.2], "beta_z": [0.1, 0.2]},
])
def test_unadjusted_limit_against_a_large_simulation(extra):
    sc = scenario(**{**extra, "n_groups": 200_000})
    lim = np.array(list(sc.unadjusted_limit().values()))
    coef, se = _observed_mean_regression(sc, 3)
    assert np.all(np.abs(coef - lim) < 4.5 * se), (coef, lim, se)
    # the estimand differs from the attenuated limit (the test can fail)
    est = E.estimands(sc)
    assert abs(est.value(sc.x_names[0], "x") - lim[sc.n_z + 1]) > 10 * se[sc.n_z + 1]


def test_reliability_accounts_for_categories_and_missing_members():
    plain = scenario()
    coarse = scenario(categories=2)
    missing = scenario(categories=2, missing_mcar=0.5)
    assert plain.reliability > coarse.reliability > missing.reliability
    # at a very large group size the observed mean is the true score
    assert scenario(categories=2, group_size=100_000).reliability == pytest.approx(1, abs=1e-4)


def test_several_constructs_with_unequal_loadings_have_no_limit():
    sc = scenario(n_x=2, beta_xi=[0.3, 0.1], loadings=[1, 0.5])
    assert E.unadjusted_limit(sc) is None


def test_every_registered_method_declares_a_known_estimand():
    for name, cls in registry().items():
        E.check_estimand(cls.scale, cls.origin, name)
    with pytest.raises(ConfigError, match="scale 'probit'"):
        E.check_estimand("probit", "x_zero", "m")
