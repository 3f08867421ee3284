"""The latent covariate model's Gibbs sampler (method ``bayes``): its conditionals against
closed forms, recovery of the generating values, unbalanced data, the reproducibility
contract and convergence at the default settings. The cross-check against Stan is
tests/test_bayes_stan.py."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from micromacro_sim.design.scenario import Scenario
from micromacro_sim.generate.dgp import generate
from micromacro_sim.models import bayes_model as bm
from micromacro_sim.models.bayes_gibbs import (
    DEFAULT_CHAINS,
    DEFAULT_DRAWS,
    GibbsData,
    GibbsPriors,
    gibbs,
    gibbs_summary,
    param_names,
    posterior_summary,
)
from micromacro_sim.models.linalg import cholesky_small
from micromacro_sim.models.mcmc_diagnostics import rhat


def _data(seed: int, **params) -> GibbsData:
    base = dict(n_groups=40, group_size=10, icc=0.2, r_zxi=0.3)
    base.update(params)
    return GibbsData.from_dataset(generate(Scenario.from_params(base),
                                           np.random.default_rng(seed)))


def _seeds(k: int, root: int = 7) -> list[np.random.SeedSequence]:
    return np.random.SeedSequence(root).spawn(k)


def test_param_names() -> None:
    assert param_names(1) == ("b0", "b_z1", "b_xi", "tau2", "sigma2", "s2e", "gamma0",
                              "gamma_z1")
    assert param_names(2)[:4] == ("b0", "b_z1", "b_z2", "b_xi")
    assert param_names(2)[-3:] == ("gamma0", "gamma_z1", "gamma_z2")


def test_sufficient_statistics_from_long_data() -> None:
    rng = np.random.default_rng(0)
    group = np.repeat(np.arange(6), [1, 3, 2, 5, 1, 4])
    x = rng.normal(size=len(group))
    perm = rng.permutation(len(group))
    z, y = rng.normal(size=(6, 2)), rng.normal(size=6)
    d = GibbsData.from_long(group[perm], x[perm], z, y)
    np.testing.assert_array_equal(d.n[0], [1, 3, 2, 5, 1, 4])
    for g in range(6):
        assert d.xsum[0, g] == pytest.approx(x[group == g].sum())
    ssw = sum(((x[group == g] - x[group == g].mean()) ** 2).sum() for g in range(6))
    assert d.ssw[0] == pytest.approx(ssw)
    assert (d.n_reps, d.n_groups, d.q) == (1, 6, 2)
    with pytest.raises(ValueError, match="at least one"):
        GibbsData.from_long(group[group != 4], x[group != 4], z, y)


def test_tau2_prior_is_a_deterministic_function_of_the_data() -> None:
    d = GibbsData.stack([_data(1), _data(2)])
    for r in range(2):
        X = np.column_stack([np.ones(40), d.z[r]])
        xbar = d.xsum[r] / d.n[r]
        res = xbar - X @ np.linalg.lstsq(X, xbar, rcond=None)[0]
        assert d.tau2_guess()[r] == pytest.approx(res @ res / 38)
    pri = GibbsPriors()
    assert pri.tau2_shape == 1.0
    np.testing.assert_allclose(pri.tau2_scale(d), d.tau2_guess())
    np.testing.assert_allclose(GibbsPriors(tau2_df=4, tau2_guess_factor=2).tau2_scale(d),
                               4 * d.tau2_guess())
    np.testing.assert_allclose(GibbsPriors(tau2_guess=0.5).tau2_scale(d), [0.5, 0.5])


# ------------------------------------------------------------------ (b) the conditionals
def test_xi_conditional_is_the_joint_normal_conditional() -> None:
    """xi_g | (x_g1..x_gn, y_g) by conditioning the joint normal of (xi, x, y)."""
    n, m, tau2, sigma2, b0, b_xi, s2e = 4, 0.7, 0.8, 2.0, 0.3, 1.3, 0.4
    x, y = np.array([1.0, -0.5, 2.0, 0.3]), 1.1
    # (xi, x_1..x_n, y): xi ~ N(m, tau2), x_i = xi + nu_i, y = b0 + b_xi xi + e
    load = np.r_[1.0, np.ones(n), b_xi]
    cov = tau2 * np.outer(load, load) + np.diag(np.r_[0.0, np.full(n, sigma2), s2e])
    mean = np.r_[m, np.full(n, m), b0 + b_xi * m]
    k = cov[0, 1:] @ np.linalg.inv(cov[1:, 1:])
    want_mean = mean[0] + k @ (np.r_[x, y] - mean[1:])
    want_var = cov[0, 0] - k @ cov[1:, 0]
    got_mean, prec = bm.xi_moments(np.array([n]), np.array([x.sum()]), np.array([m]),
                                   np.array([y - b0]), tau2, sigma2, b_xi, s2e)
    assert got_mean[0] == pytest.approx(want_mean, rel=1e-12)
    assert 1 / prec[0] == pytest.approx(want_var, rel=1e-12)
    args = ([n], [x.sum()], [m], [y - b0], tau2, sigma2, b_xi, s2e)
    args = tuple(np.asarray(a, dtype=float) for a in args)
    draw = bm.draw_xi(*args, np.array([1.5]))
    assert draw[0] == pytest.approx(want_mean + 1.5 * np.sqrt(want_var), rel=1e-12)


def test_regression_conditional() -> None:
    rng = np.random.default_rng(4)
    X, v = rng.normal(size=(30, 3)), rng.normal(size=30)
    s2, V = 0.7, 5.0
    prec = X.T @ X / s2 + np.eye(3) / V
    cov = np.linalg.inv(prec)
    mean = cov @ X.T @ v / s2
    xtx, xtv = (X.T @ X)[None], (X.T @ v)[None]
    s2a = np.array([s2])
    m = bm.draw_regression(xtx, xtv, s2a, V, np.zeros((1, 3)))[0]
    np.testing.assert_allclose(m, mean, rtol=1e-10)
    F = np.stack([bm.draw_regression(xtx, xtv, s2a, V, np.eye(3)[[j]])[0] - m
                  for j in range(3)], axis=1)
    np.testing.assert_allclose(F @ F.T, cov, rtol=1e-10)
    L = cholesky_small(prec[None])[0]
    np.testing.assert_allclose(L, np.linalg.cholesky(prec), rtol=1e-12)


def test_inverse_gamma_conditional() -> None:
    rng = np.random.default_rng(5)
    shape, scale, m, ss = 1.0, 0.8, 30, 12.5
    g = rng.standard_gamma(shape + m / 2, size=20000)
    draws = bm.draw_inverse_gamma(scale, ss, g)
    ref = stats.invgamma(shape + m / 2, scale=scale + ss / 2)
    assert stats.kstest(draws, ref.cdf).pvalue > 0.01


def _bivariate(G: int, seed: int):
    """Parameters and data of a small model for the collapsed conditionals."""
    rng = np.random.default_rng(seed)
    W = np.column_stack([np.ones(G), rng.normal(size=G)])
    n = rng.integers(1, 6, size=G).astype(float)
    p = dict(tau2=0.6, sigma2=1.5, s2e=0.3, b_xi=0.9, gamma=np.array([0.2, 0.5]),
             b=np.array([0.1, -0.4]))
    xbar, y = rng.normal(size=G), rng.normal(size=G)
    S = np.zeros((G, 2, 2))
    S[:, 0, 0] = p["tau2"] + p["sigma2"] / n
    S[:, 0, 1] = S[:, 1, 0] = p["b_xi"] * p["tau2"]
    S[:, 1, 1] = p["b_xi"] ** 2 * p["tau2"] + p["s2e"]
    return W, n, xbar, y, p, S


def _gls(A: np.ndarray, o: np.ndarray, S: np.ndarray, V: float):
    """Posterior mean and covariance of beta in o_g = A_g beta + noise_g (noise N(0, S_g)),
    prior N(0, V I): the brute-force reference."""
    Si = np.linalg.inv(S)
    prec = np.einsum("gia,gij,gjb->ab", A, Si, A) + np.eye(A.shape[-1]) / V
    cov = np.linalg.inv(prec)
    return cov @ np.einsum("gia,gij,gj->a", A, Si, o), cov


def _from_weights(W: np.ndarray, w: np.ndarray, h: np.ndarray, V: float):
    prec = (W.T * w) @ W + np.eye(W.shape[1]) / V
    cov = np.linalg.inv(prec)
    return cov @ (W.T @ h), cov


def test_collapsed_gamma_conditional() -> None:
    G, V = 8, 50.0
    W, n, xbar, y, p, S = _bivariate(G, 6)
    A = np.stack([W, p["b_xi"] * W], axis=1)  # (G, 2, k): means of (xbar, y) in gamma
    o = np.column_stack([xbar, y - W @ p["b"]])
    want = _gls(A, o, S, V)
    w, h = bm.collapsed_gamma(xbar, y - W @ p["b"], p["sigma2"] / n, p["tau2"], p["b_xi"],
                              p["s2e"])
    for a, b in zip(_from_weights(W, w, h, V), want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10)


def test_collapsed_coefficient_conditional() -> None:
    G, V = 8, 50.0
    W, n, xbar, y, p, S = _bivariate(G, 7)
    m = W @ p["gamma"]
    A = np.stack([np.zeros_like(W), W], axis=1)  # (b0, b_z) enter the mean of y only
    o = np.column_stack([xbar - m, y - p["b_xi"] * m])
    want = _gls(A, o, S, V)
    w, t = bm.collapsed_coef(xbar, y, m, p["sigma2"] / n, p["tau2"], p["b_xi"], p["s2e"])
    for a, b in zip(_from_weights(W, w, w * t, V), want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10)


def test_ridge_target_is_the_marginal_posterior() -> None:
    G = 8
    W, n, xbar, y, p, _ = _bivariate(G, 8)
    pri = GibbsPriors(coef_var=10.0, s2e_shape=0.5, s2e_scale=0.2)
    tscale = np.array(0.9)
    pi = p["b"] + p["b_xi"] * p["gamma"]  # reduced form, held fixed by the move
    m = W @ p["gamma"]
    d1, d2 = xbar - m, y - W @ pi
    e2 = p["sigma2"] / n
    sq = (d1 * d1, -2 * d1 * d2, d2 * d2, e2 * d2 * d2)

    def direct(tau2, b_xi, s2e):
        b = np.r_[pi - b_xi * p["gamma"], b_xi]
        S = np.array([[[tau2 + e, b_xi * tau2], [b_xi * tau2, b_xi**2 * tau2 + s2e]]
                      for e in e2])
        ll = sum(stats.multivariate_normal(np.zeros(2), S[g]).logpdf([d1[g], d2[g]])
                 for g in range(G))
        lp = (stats.invgamma(pri.tau2_shape, scale=tscale).logpdf(tau2)
              + stats.invgamma(0.5, scale=0.2).logpdf(s2e)
              + stats.norm(0, np.sqrt(10.0)).logpdf(b).sum())
        return ll + lp + np.log(b_xi**2 * tau2 + s2e)

    def ours(tau2, b_xi, s2e):
        b = np.r_[pi - b_xi * p["gamma"], b_xi]
        return bm.ridge_log_target(np.array([tau2]), b, np.array([s2e]), sq, e2, pri, tscale)

    points = [(0.6, 0.9, 0.3), (1.4, 0.2, 0.05), (0.2, 2.5, 1.1)]
    base_d, base_o = direct(*points[0]), ours(*points[0])
    for pt in points[1:]:
        assert ours(*pt) - base_o == pytest.approx(direct(*pt) - base_d, rel=1e-10)
    assert ours(0.5, 1.0, -0.1) == -np.inf


# ------------------------------------------------------------------ (a) recovery
def test_posterior_recovers_the_generating_values_with_many_groups() -> None:
    d = _data(11, n_groups=5000, group_size=5, icc=0.2, beta_xi=0.5)
    draws = gibbs(d, chains=2, warmup=200, draws=300, seeds=_seeds(1))
    s = posterior_summary(draws, point="mean")
    truth = dict(b0=0.3, b_z1=0.3, b_xi=0.5, tau2=1 - 0.3**2, sigma2=4.0, s2e=0.35,
                 gamma0=0.0, gamma_z1=0.3)
    for j, name in enumerate(param_names(1)):
        z = (s["estimate"][0, j] - truth[name]) / s["sd"][0, j]
        assert abs(z) < 4, f"{name}: {s['estimate'][0, j]:.4f} vs {truth[name]}, z = {z:.2f}"
        assert s["rhat"][0, j] < 1.05


# ------------------------------------------------------------------ (c) unbalanced data
def test_unbalanced_groups_and_groups_of_one_member() -> None:
    rng = np.random.default_rng(12)
    G = 50
    sizes = np.r_[np.ones(20, int), rng.integers(1, 9, size=G - 20)]
    group = np.repeat(np.arange(G), sizes)
    z = rng.normal(size=(G, 1))
    xi = 0.4 * z[:, 0] + rng.normal(size=G)
    x = xi[group] + rng.normal(scale=2.0, size=len(group))
    y = 0.3 + 0.3 * z[:, 0] + 0.5 * xi + rng.normal(scale=0.6, size=G)
    d = GibbsData.from_long(group, x, z, y)
    missing = _data(13, n_groups=50, group_size={"poisson": 4, "min": 1}, missing_mcar=0.3)
    assert d.n.min() == 1 and missing.n.min() == 1
    for data in (d, missing):
        draws = gibbs(data, chains=2, warmup=300, draws=500, seeds=_seeds(1))
        assert np.isfinite(draws).all()
        assert (draws[..., 3:6] > 0).all()
        s = posterior_summary(draws)
        assert (s["rhat"][0, :3] < 1.05).all()
        assert (s["ess_bulk"][0, :3] > 100).all()


def test_all_groups_of_one_member_still_run() -> None:
    rng = np.random.default_rng(14)
    G = 30
    d = GibbsData.from_long(np.arange(G), rng.normal(size=G), rng.normal(size=(G, 1)),
                            rng.normal(size=G))
    assert d.ssw[0] == 0
    draws = gibbs(d, chains=2, warmup=100, draws=100, seeds=_seeds(1))
    assert np.isfinite(draws).all()


def test_no_group_covariates() -> None:
    rng = np.random.default_rng(15)
    G = 200
    group = np.repeat(np.arange(G), 10)
    xi = rng.normal(size=G)
    d = GibbsData.from_long(group, xi[group] + rng.normal(scale=2.0, size=10 * G),
                            np.zeros((G, 0)), 0.3 + 0.5 * xi + rng.normal(scale=0.6, size=G))
    s = posterior_summary(gibbs(d, warmup=200, draws=300, seeds=_seeds(1)))
    assert s["estimate"].shape == (1, len(param_names(0))) == (1, 6)
    assert abs(s["estimate"][0, 1] - 0.5) < 4 * s["sd"][0, 1]


# ------------------------------------------------------------------ (d) reproducibility
def test_a_replication_draws_the_same_alone_or_in_any_batch() -> None:
    sets = [_data(20 + r, group_size=[3, 12] if r % 2 else 8, icc=0.1 + 0.02 * r)
            for r in range(7)]
    batch = GibbsData.stack(sets)
    seeds = _seeds(7, root=99)
    settings = dict(chains=2, warmup=100, draws=60)
    together = gibbs(batch, seeds=seeds, **settings)
    chunked = gibbs(batch, seeds=seeds, max_batch=3, **settings)
    order = [4, 0, 6, 2, 5, 1, 3]
    shuffled = gibbs(batch.take(np.array(order)), seeds=[seeds[i] for i in order],
                     **settings)
    assert np.array_equal(together, chunked)
    for r in range(7):
        alone = gibbs(sets[r], seeds=[seeds[r]], **settings)
        assert np.array_equal(alone[0], together[r]), f"replication {r}"
        assert np.array_equal(alone[0], shuffled[order.index(r)]), f"replication {r}"


def test_a_longer_run_extends_a_shorter_one() -> None:
    d = _data(30)
    short = gibbs(d, chains=2, warmup=100, draws=70, seeds=_seeds(1))
    long = gibbs(d, chains=2, warmup=100, draws=130, seeds=_seeds(1))
    assert np.array_equal(short[0], long[0, :, :70])
    other = gibbs(d, chains=2, warmup=100, draws=70, seeds=_seeds(1, root=8))
    assert not np.array_equal(short, other)


# ------------------------------------------------------------------ (e) diagnostics
def test_rhat_flags_chains_that_did_not_mix() -> None:
    d = GibbsData.stack([_data(40, icc=0.3), _data(41, icc=0.3)])
    draws = gibbs(d, chains=2, warmup=200, draws=300, seeds=_seeds(2))
    mixed = posterior_summary(draws)["rhat"]
    assert (mixed[:, :3] < 1.01).all()
    # chains of two different posteriors, as if one chain were stuck elsewhere
    stuck = np.stack([draws[0, 0], draws[1, 0]])[None]
    assert (posterior_summary(stuck)["rhat"][0, :3] > 1.01).any()
    frozen = draws[0, :, :, 2].copy()
    frozen[1] = frozen[1, 0]  # the second chain never moves
    frozen[1] += np.linspace(0, 1e-9, frozen.shape[1])
    assert rhat(frozen) > 1.01


def test_default_settings_converge_at_g100() -> None:
    R = 12
    d = GibbsData.stack([_data(50 + r, n_groups=100, icc=0.1) for r in range(R)])
    s = gibbs_summary(d, seeds=_seeds(R), max_batch=6)
    assert s["rhat"].shape == (R, 8)
    assert (s["ess_bulk"][:, :3] >= 400).mean() >= 0.9
    assert (s["rhat"][:, :3] <= 1.01).mean() >= 0.9
    one = gibbs(d.take(slice(0, 1)), seeds=_seeds(R)[:1])
    assert one.shape == (1, DEFAULT_CHAINS, DEFAULT_DRAWS, 8)
    np.testing.assert_array_equal(posterior_summary(one)["estimate"][0], s["estimate"][0])


def test_bad_arguments() -> None:
    d = _data(60)
    with pytest.raises(ValueError, match="one seed"):
        gibbs(d, seeds=_seeds(2))
    with pytest.raises(ValueError, match="improper"):
        gibbs(d, GibbsPriors(s2e_shape=-21.0), seeds=_seeds(1), warmup=0, draws=1)
    with pytest.raises(ValueError):
        GibbsPriors(tau2_df=0)
    with pytest.raises(ValueError, match="G >= q \\+ 3"):
        GibbsData.from_long(np.arange(3), np.zeros(3), np.zeros((3, 1)), np.zeros(3))
