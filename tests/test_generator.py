"""Every generator factor produces its target moments (large samples, tolerances from MC SEs)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm

from micromacro_sim.design.scenario import Scenario
from micromacro_sim.generate.dgp import generate
from micromacro_sim.generate.seeding import replication_rng

Z_CRIT = 4.0  # a correct generator fails one check with probability < 1e-4
BASE = dict(n_groups=40000, group_size=4, icc=0.2, r_zxi=0.3)


def _draw(seed: int = 3, **kw):
    sc = Scenario.from_params({**BASE, **kw})
    return sc, generate(sc, replication_rng(seed, sc, 0))


def _same_stream(seed: int, **kw):
    """A dataset drawn from one fixed stream, whatever the scenario (and so its key)."""
    sc = Scenario.from_params({**BASE, **kw})
    return generate(sc, np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(1, 2))))


def _batched(values: np.ndarray, stat, batches: int = 50) -> tuple[float, float]:
    """A statistic's mean over independent batches and its standard error."""
    s = np.array([stat(b) for b in np.array_split(values, batches)])
    return float(s.mean()), float(s.std(ddof=1) / np.sqrt(batches))


def _skew(v):
    c = v - v.mean()
    return (c**3).mean() / (c**2).mean() ** 1.5


def _kurt(v):
    c = v - v.mean()
    return (c**4).mean() / (c**2).mean() ** 2 - 3


def _close(values, stat, target):
    m, se = _batched(values, stat)
    assert abs(m - target) < Z_CRIT * se, (m, target, se)


# ---------------------------------------------------------------------------- constructs
def test_several_constructs_have_the_target_covariance_and_coefficients():
    r = [[0.3, 0.1], [0.0, -0.2]]
    sc, d = _draw(n_x=2, n_z=2, r_zxi=r, r_xixi=0.4, r_zz=0.1, beta_xi=[0.5, -0.25])
    assert d.x.shape == (d.n_persons, 2) and d.x_names == ("x1", "x2")
    assert sc.terms == ("intercept", "z1", "z2", "x1", "x2")
    u = np.column_stack([d.z, d.xi])
    emp, target, G = np.cov(u, rowvar=False), sc.covariance, d.n_groups
    se = np.sqrt((np.outer(np.diag(target), np.diag(target)) + target**2) / G)
    assert np.all(np.abs(emp - target) < Z_CRIT * se)
    assert target[0, 2] == 0.3 and target[1, 3] == -0.2 and target[2, 3] == 0.4
    X = np.column_stack([np.ones(G), u])
    beta, *_ = np.linalg.lstsq(X, d.y, rcond=None)
    resid = d.y - X @ beta
    cov = resid @ resid / (G - 5) * np.linalg.inv(X.T @ X)
    truth = np.array([0.3, 0.3, 0.3, 0.5, -0.25])
    assert np.all(np.abs(beta - truth) < Z_CRIT * np.sqrt(np.diag(cov)))
    assert sc.true_params == dict(zip(sc.terms, truth.tolist(), strict=True))
    # every member measures every construct; member deviations independent across constructs
    nu = d.x - np.repeat(d.xi, d.sizes, axis=0)
    wcov = np.cov(nu, rowvar=False)
    n = len(nu)
    assert abs(wcov[0, 0] - sc.sigma2_nu) < Z_CRIT * sc.sigma2_nu * np.sqrt(2 / n)
    assert abs(wcov[0, 1]) < Z_CRIT * sc.sigma2_nu / np.sqrt(n)


def test_second_construct_keeps_the_first_constructs_stream():
    one = _same_stream(5, group_size=3, n_groups=50)
    two = _same_stream(5, group_size=3, n_groups=50, n_x=2, r_zxi=[[0.3, 0.0]])
    assert np.allclose(one.xi[:, 0], two.xi[:, 0], rtol=0, atol=1e-12)
    assert np.array_equal(one.z, two.z)
    assert np.allclose(one.x[:, 0], two.x[:, 0], rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------- non-normal
def test_non_normal_latent_means_keep_their_correlation_with_z():
    sc, d = _draw(n_groups=200000, xi_skew=2.0, xi_kurtosis=7.0, r_zxi=0.5, var_xi=2.0)
    xi = d.xi[:, 0]
    _close(xi, np.var, 2.0)
    _close(xi, _skew, 2.0)
    _close(xi, _kurt, 7.0)
    _close(np.column_stack([d.z[:, 0], xi]), lambda b: np.corrcoef(b.T)[0, 1], 0.5)
    assert np.all(np.abs(d.z.mean(axis=0)) < Z_CRIT / np.sqrt(d.n_groups))


def test_non_normal_member_deviations_and_errors():
    sc, d = _draw(nu_skew=-1.0, nu_kurtosis=3.0, e_skew=1.5, e_kurtosis=4.0)
    nu = (d.x - np.repeat(d.xi, d.sizes, axis=0))[:, 0]
    _close(nu, np.var, sc.sigma2_nu)
    _close(nu, _skew, -1.0)
    _close(nu, _kurt, 3.0)
    e = d.y - sc.beta0 - d.z @ np.asarray(sc.beta_z) - d.xi @ np.asarray(sc.beta_xi)
    _close(e, np.var, sc.sigma2_eps)
    _close(e, _skew, 1.5)
    _close(e, _kurt, 4.0)


# ---------------------------------------------------------------------------- ordinal
@pytest.mark.parametrize("thresholds", ["symmetric", "skewed", [-1.0, 0.0, 0.5, 2.0]])
def test_ordinal_members_have_the_category_probabilities(thresholds):
    sc, d = _draw(categories=5, thresholds=thresholds)
    x = d.x[:, 0]
    assert set(np.unique(x)) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    t = (norm.ppf(np.arange(1, 5) / 5) if thresholds == "symmetric"
         else norm.ppf(np.cumsum([1, 2, 3, 4]) / 15) if thresholds == "skewed" else thresholds)
    p = np.diff(np.concatenate([[0.0], norm.cdf(t), [1.0]]))  # latent response N(0, 1)
    if thresholds == "skewed":
        assert np.allclose(p, np.arange(1, 6) / 15)
    # members of a group share xi: the SE of a proportion comes from the group means
    ind = (x[:, None] == np.arange(1, 6)).reshape(d.n_groups, 4, 5).mean(axis=1)
    se = ind.std(axis=0, ddof=1) / np.sqrt(d.n_groups)
    assert np.all(np.abs(ind.mean(axis=0) - p) < Z_CRIT * se)


# ---------------------------------------------------------------------------- loadings
def test_loadings_and_member_variances_per_position():
    sc, d = _draw(group_size=5, loadings=[1.0, 0.5, 1.5], member_variances=[1.0, 2.0])
    wide = d.x[:, 0].reshape(d.n_groups, 5)
    xi = d.xi[:, 0]
    load, mvar = np.resize([1.0, 0.5, 1.5], 5), np.resize([1.0, 2.0], 5)
    G = d.n_groups
    for i in range(5):
        slope = np.cov(wide[:, i], xi)[0, 1] / np.var(xi, ddof=1)
        resid_var = mvar[i] * sc.sigma2_nu
        assert abs(slope - load[i]) < Z_CRIT * np.sqrt(resid_var / (G * sc.var_xi))
        nu = wide[:, i] - load[i] * xi
        assert abs(nu.var() - resid_var) < Z_CRIT * resid_var * np.sqrt(2 / G)


# ---------------------------------------------------------------------------- missing
def test_mcar_members_keep_their_ids_and_every_group_a_member():
    sc, d = _draw(group_size=6, missing_mcar=0.3)
    assert not sc.balanced and d.member is not None
    full = 6 * d.n_groups
    rate = 1 - d.n_persons / full
    # at most one restored member per group: P(all 6 missing) = .3^6 (tiny)
    frac = 1 - d.sizes / 6
    assert abs(rate - 0.3) < Z_CRIT * frac.std(ddof=1) / np.sqrt(d.n_groups) + 0.3**6
    assert d.sizes.min() >= 1 and d.member.max() == 5
    assert np.all(np.diff(d.member)[np.diff(d.group) == 0] > 0)  # ascending ids in a group
    assert np.array_equal(d.to_frame()["member"].to_numpy(), d.member)


def test_a_group_whose_members_all_go_missing_keeps_one_member():
    sc, d = _draw(group_size=2, missing_mcar=0.9)
    assert d.sizes.min() == 1 and d.n_groups == 40000
    # size 1: exactly one observed (2 * .1 * .9) or none observed and one kept (.81)
    p1 = 2 * 0.1 * 0.9 + 0.81
    share = np.mean(d.sizes == 1)
    assert abs(share - p1) < Z_CRIT * np.sqrt(p1 * (1 - p1) / d.n_groups)
    assert set(np.unique(d.member)) == {0, 1}  # the kept member is either one


@pytest.mark.parametrize("on", ["z", "xi"])
def test_mar_selection_has_the_target_rate_and_slope(on):
    kw = {"xi_skew": 1.0, "xi_kurtosis": 2.0} if on == "xi" else {}
    sc, d = _draw(group_size=8, missing_mar={"on": on, "rate": 0.15, "strength": 1.0}, **kw)
    frac = 1 - d.sizes / 8
    se = frac.std(ddof=1) / np.sqrt(d.n_groups)
    assert abs(frac.mean() - 0.15) < Z_CRIT * se
    w = d.z[:, 0] if on == "z" else d.xi[:, 0] / np.sqrt(sc.var_xi)
    assert np.corrcoef(w, frac)[0, 1] > 0.2  # higher w, more missing members


def test_missing_members_never_change_the_other_draws():
    full = _same_stream(9, n_groups=100)
    part = _same_stream(9, n_groups=100, missing_mcar=0.25)
    assert np.array_equal(full.y, part.y) and np.array_equal(full.xi, part.xi)
    rows = np.repeat(np.arange(100), 4) * 4 + np.concatenate([np.arange(4)] * 100)
    kept = np.flatnonzero(np.isin(rows, part.group * 4 + part.member))
    assert np.array_equal(full.x[kept], part.x)


# ---------------------------------------------------------------------------- e_het
def test_error_variance_by_z_has_the_ratio_and_the_average():
    sc, d = _draw(n_groups=200000, e_het={"by": "z", "ratio": 9.0})
    e = d.y - sc.beta0 - d.z @ np.asarray(sc.beta_z) - d.xi @ np.asarray(sc.beta_xi)
    _close(e, np.var, sc.sigma2_eps)  # E[Var(e)] stays sigma2_eps
    # log Var(e | z) is linear in z, ratio 9 between z = -2.576 and z = 2.576
    gamma = np.log(9.0) / (2 * norm.ppf(0.995))
    X = np.column_stack([np.ones(d.n_groups), d.z[:, 0]])
    b, *_ = np.linalg.lstsq(X, np.log(e**2), rcond=None)
    resid = np.log(e**2) - X @ b
    se = np.sqrt(resid.var() / (d.n_groups * d.z[:, 0].var()))
    assert abs(b[1] - gamma) < Z_CRIT * se


def test_error_variance_by_group_size_has_the_ratio():
    sc, d = _draw(group_size=[5, 30], e_het={"by": "group_size", "ratio": 4.0})
    e = d.y - sc.beta0 - d.z @ np.asarray(sc.beta_z) - d.xi @ np.asarray(sc.beta_xi)
    small, large = e[d.sizes == 5], e[d.sizes == 30]
    log_ratio = np.log(large.var() / small.var())
    se = np.sqrt(2 / len(small) + 2 / len(large))
    assert abs(log_ratio - np.log(4.0)) < Z_CRIT * se
    assert abs(e.var() - sc.sigma2_eps) < Z_CRIT * np.sqrt(
        (2 * small.var() ** 2 + 2 * large.var() ** 2) / (2 * len(small)))


# ---------------------------------------------------------------------------- sizes
def test_poisson_and_choice_group_sizes():
    _, d = _draw(group_size={"poisson": 6.5, "min": 2})
    n = d.sizes
    assert n.min() >= 2
    assert abs(n.mean() - 6.5) < Z_CRIT * np.sqrt(4.5 / len(n))  # Var = mean - min
    assert abs(n.var() - 4.5) < Z_CRIT * np.sqrt((2 * 4.5**2 + 4.5) / len(n))
    _, d = _draw(group_size={"choice": [3, 10, 20], "p": [0.5, 0.3, 0.2]})
    for size, p in ((3, 0.5), (10, 0.3), (20, 0.2)):
        share = np.mean(d.sizes == size)
        assert abs(share - p) < Z_CRIT * np.sqrt(p * (1 - p) / d.n_groups)
