"""Croon & van Veldhoven adjusted means against an independent transcription of SPEC 3.1.

The reference below is written from the SPEC text with plain per-group loops and does
not use the package's ANOVA or matrix helpers. No R oracle exists for this method (the
R package MicroMacroMultilevel is wrong, SPEC section 7).
"""

from __future__ import annotations

import numpy as np
import pytest

from micromacro_sim.design.scenario import Scenario
from micromacro_sim.estimators import get_estimator
from micromacro_sim.generate.dataset import Dataset
from micromacro_sim.generate.dgp import generate


def reference_cv(group, x, z):
    """SPEC 3.1 steps 1-7, one group at a time. x (N, p), z (G, q). Returns (G, p)."""
    x = np.asarray(x, float).reshape(len(group), -1)
    z = np.asarray(z, float).reshape(group.max() + 1, -1)
    G, p, q, N = z.shape[0], x.shape[1], z.shape[1], x.shape[0]
    members = [[i for i in range(N) if group[i] == g] for g in range(G)]
    n = [len(m) for m in members]
    # 1
    mu_x = [sum(x[i, j] for i in range(N)) / N for j in range(p)]
    mu_z = [sum(z[g, k] for g in range(G)) / G for k in range(q)]
    xbar = [[sum(x[i, j] for i in members[g]) / n[g] for j in range(p)] for g in range(G)]
    # 2
    cols = [[z[g, k] for g in range(G)] for k in range(q)] + [
        [xbar[g][j] for g in range(G)] for j in range(p)
    ]
    means = [sum(c) / G for c in cols]
    V = np.zeros((q + p, q + p))
    for a in range(q + p):
        for b in range(q + p):
            V[a, b] = sum((cols[a][g] - means[a]) * (cols[b][g] - means[b])
                          for g in range(G)) / (G - 1)
    Vzz, Vzx = V[:q, :q], V[:q, q:]
    # 3, 4
    MSE = np.zeros((p, p))
    MSA = np.zeros((p, p))
    for g in range(G):
        for i in members[g]:
            d = np.array([x[i, j] - xbar[g][j] for j in range(p)])
            MSE += np.outer(d, d)
        d = np.array([xbar[g][j] - mu_x[j] for j in range(p)])
        MSA += n[g] * np.outer(d, d)
    MSE /= N - G
    MSA /= G - 1
    # 5
    n0 = (N - sum(ng**2 for ng in n) / N) / (G - 1)
    S = (MSA - MSE) / n0
    # 6
    R = S - Vzx.T @ np.linalg.inv(Vzz) @ Vzx if q else S
    out = np.zeros((G, p))
    I = np.eye(p)
    for g in range(G):
        P = np.linalg.inv(R + MSE / n[g]) @ R
        Q = np.linalg.inv(Vzz) @ Vzx @ (I - P) if q else np.zeros((0, p))
        row = (np.array(xbar[g]) @ P + np.array(mu_x) @ (I - P)
               + (z[g] - np.array(mu_z)) @ Q)
        out[g] = row
    return out, S, R, MSE


def _data(G, sizes, p, q, seed, *, icc=0.3):
    """Correlated Z and xi, members x = xi + noise; p x's, q Z's, given sizes."""
    rng = np.random.default_rng(seed)
    sizes = np.resize(np.asarray(sizes), G)
    k = p + q
    A = rng.normal(size=(k, k))
    cov = A @ A.T / k + np.eye(k)
    u = rng.multivariate_normal(np.zeros(k), cov, size=G)
    xi, z = u[:, :p], u[:, p:]
    nu_sd = np.sqrt((1 - icc) / icc)
    x = np.repeat(xi, sizes, axis=0) + nu_sd * rng.normal(size=(sizes.sum(), p))
    y = 0.3 + xi.sum(axis=1) * 0.3 + z.sum(axis=1) * 0.3 + rng.normal(size=G) * 0.6
    return Dataset(
        group=np.repeat(np.arange(G), sizes), x=x, y=y, z=z,
        x_names=tuple(f"x{j}" for j in range(p)), z_names=tuple(f"z{k}" for k in range(q)),
    )


CASES = [
    (G, sizes, p, q)
    for G, sizes in [(40, [6]), (37, [2, 5, 11, 3, 8])]
    for p in (1, 2)
    for q in (0, 1, 2)
]


@pytest.mark.parametrize("G,sizes,p,q", CASES)
def test_matches_loop_transcription(G, sizes, p, q):
    data = _data(G, sizes, p, q, seed=100 * p + 10 * q + G, icc=0.4)
    ref, S, R, MSE = reference_cv(np.asarray(data.group), data.x, data.z)
    res = get_estimator("croon").fit(data)
    assert res.ok, res.reason
    # Both are direct arithmetic on the same numbers: agreement to rounding error.
    np.testing.assert_allclose(res.extras["scores"], ref, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(res.extras["S_xixi"], S, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(res.extras["R"], R, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(res.extras["MSE"], MSE, rtol=1e-11)
    # second step is OLS of y on [1, Z, ref]
    X = np.column_stack([np.ones(G), data.z, ref])
    beta = np.linalg.lstsq(X, data.y, rcond=None)[0]
    np.testing.assert_allclose(res.params, beta, rtol=1e-9, atol=1e-12)
    assert res.two_step and set(res.bse) == {"classical", "HC0", "HC1", "HC2", "HC3"}


def test_single_x_weights_formula():
    """One x: W_g = R / (R + MSE/n_g), and the SPEC's scalar form of xtilde."""
    data = _data(30, [3, 9, 4], 1, 1, seed=7, icc=0.4)
    res = get_estimator("croon").fit(data)
    R, MSE = res.extras["R"][0, 0], res.extras["MSE"][0, 0]
    W = R / (R + MSE / data.sizes)
    np.testing.assert_allclose(res.extras["W"], W, rtol=1e-12)
    V = np.cov(data.z[:, 0], data.xbar[:, 0])
    mu = data.x.mean()
    xt = mu + W * (data.xbar[:, 0] - mu) + (1 - W) * V[0, 1] / V[0, 0] * (
        data.z[:, 0] - data.z[:, 0].mean())
    np.testing.assert_allclose(res.extras["scores"][:, 0], xt, rtol=1e-12)


def test_no_z_is_shrinkage_blup():
    data = _data(25, [4, 7], 1, 0, seed=3, icc=0.4)
    res = get_estimator("croon").fit(data)
    S, MSE = res.extras["S_xixi"][0, 0], res.extras["MSE"][0, 0]
    mu = data.x.mean()
    W = S / (S + MSE / data.sizes)
    np.testing.assert_allclose(res.extras["scores"][:, 0], mu + W * (data.xbar[:, 0] - mu),
                               rtol=1e-12)


@pytest.mark.parametrize("p,q", [(1, 0), (1, 1), (1, 2), (2, 1), (2, 2)])
def test_balanced_identity_moment_regression(p, q):
    """Balanced data: OLS on CV means == regression of y on (Z, xi) from moment estimates.

    Moments: Cov(Z, Z), Cov(Z, xbar), Cov(xbar, y), Cov(Z, y) with denominator G - 1,
    Var(xi) = Var(xbar) - MSE/n (MSE the pooled within variance).
    """
    G, n = 60, 8
    data = _data(G, [n], p, q, seed=11 + p + q, icc=0.4)
    res = get_estimator("croon").fit(data)
    assert res.ok
    xbar = data.xbar
    w = data.x - np.repeat(xbar, n, axis=0)
    mse = w.T @ w / (G * (n - 1))
    C = np.cov(np.column_stack([data.z, xbar, data.y]), rowvar=False)
    k = q + p
    Sig = C[:k, :k].copy()
    Sig[q:, q:] -= mse / n
    beta = np.linalg.solve(Sig, C[:k, k])
    means = np.concatenate([data.z.mean(axis=0), data.x.mean(axis=0)])
    b0 = data.y.mean() - means @ beta
    np.testing.assert_allclose(res.params, np.concatenate([[b0], beta]), rtol=1e-10,
                               atol=1e-10)


def test_inadmissible_s_xixi_negative():
    """ICC near 0, few groups: S_xixi < 0 is flagged, no estimates, nothing divided."""
    sc = Scenario.from_params(dict(n_groups=8, group_size=5, icc=0.01, r_zxi=0.3))
    found = None
    for seed in range(50):
        data = generate(sc, np.random.default_rng(seed))
        xbar = data.xbar[:, 0]
        msa = 5 * np.var(xbar, ddof=1)
        mse = np.sum((data.x[:, 0] - np.repeat(xbar, 5)) ** 2) / (data.n_persons - 8)
        if msa < mse:
            found = data
            break
    assert found is not None
    res = get_estimator("croon").fit(found)
    assert not res.admissible and res.reason == "S_xixi <= 0"
    assert np.all(np.isnan(res.params)) and not res.ok
    assert res.extras["S_xixi"][0, 0] < 0


def test_inadmissible_r_negative():
    """Z equal to xbar: R = S - V_xx = -MSE/n < 0 while S_xixi > 0."""
    base = _data(30, [6], 1, 1, seed=5, icc=0.5)
    data = Dataset(group=base.group, x=base.x, y=base.y, z=base.xbar.copy(),
                   x_names=base.x_names, z_names=base.z_names)
    res = get_estimator("croon").fit(data)
    assert res.extras["S_xixi"][0, 0] > 0
    assert not res.admissible and res.reason == "R <= 0"
    assert np.all(np.isnan(res.params))


def test_row16_recovers_xi_better_than_means():
    """Sanity on the SPEC row-16 DGP: across a few datasets the CV xi estimate is far less
    attenuated than the group-mean one (unadjusted limit: -50%)."""
    sc = Scenario.from_params(dict(n_groups=100, group_size=10, icc=0.1, r_zxi=0.3))
    cv, un = [], []
    for seed in range(40):
        d = generate(sc, np.random.default_rng(seed))
        r = get_estimator("croon").fit(d)
        if r.ok:
            cv.append(r.params[2])
        un.append(get_estimator("unadjusted").fit(d).params[2])
    assert np.median(cv) > 0.22 and np.mean(un) < 0.2
