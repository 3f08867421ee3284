"""The generator recovers the design's moments within sampling error."""

from __future__ import annotations

import numpy as np

from micromacro_sim.design.scenario import Scenario
from micromacro_sim.generate.dgp import generate
from micromacro_sim.generate.seeding import replication_rng
from micromacro_sim.models.reliability import anova

# 4 standard errors: a correct generator fails one of these checks with probability < 1e-4 each.
Z_CRIT = 4.0


def _big(**kw):
    params = dict(n_groups=40000, group_size=4, icc=0.2, r_zxi=[0.3, 0.1], n_z=2, r_zz=0.2,
                  beta_z=[0.3, -0.2], beta_xi=0.5)
    params.update(kw)
    params = {k: v for k, v in params.items() if v is not None}
    sc = Scenario.from_params(params)
    return sc, generate(sc, replication_rng(99, sc, 0))


def test_covariance_of_z_and_xi():
    sc, d = _big()
    u = np.column_stack([d.z, d.xi[:, 0]])
    G = d.n_groups
    emp = np.cov(u, rowvar=False)
    target = sc.covariance
    # Var of a sample covariance s_jk of normals: (s_jj s_kk + s_jk^2) / G
    se = np.sqrt((np.outer(np.diag(target), np.diag(target)) + target**2) / G)
    assert np.all(np.abs(emp - target) < Z_CRIT * se)


def test_icc_recovered_by_anova():
    sc, d = _big()
    a = anova(d)
    # delta-method SE of ICC(1) in balanced one-way ANOVA (Donner 1986)
    n, G, rho = 4, d.n_groups, sc.icc
    se = (1 - rho) * (1 + (n - 1) * rho) * np.sqrt(2 / (n * (n - 1) * G))
    assert abs(a.icc1[0] - sc.icc) < Z_CRIT * se


def test_structural_coefficients_recovered():
    sc, d = _big()
    X = np.column_stack([np.ones(d.n_groups), d.z, d.xi[:, 0]])
    beta, *_ = np.linalg.lstsq(X, d.y, rcond=None)
    resid = d.y - X @ beta
    s2 = resid @ resid / (d.n_groups - X.shape[1])
    se = np.sqrt(np.diag(s2 * np.linalg.inv(X.T @ X)))
    truth = np.array([sc.beta0, *sc.beta_z, *sc.beta_xi])
    assert np.all(np.abs(beta - truth) < Z_CRIT * se)
    # residual variance: Var(s2) = 2 sigma^4 / df
    assert abs(s2 - sc.sigma2_eps) < Z_CRIT * sc.sigma2_eps * np.sqrt(2 / (d.n_groups - 4))


def test_within_variance_and_unbalanced_sizes():
    sc, d = _big(group_size={"uniform": [2, 6]}, icc=None, sigma2_nu=4.0)
    assert d.sizes.min() == 2 and d.sizes.max() == 6
    a = anova(d)
    df = d.n_persons - d.n_groups
    assert abs(a.mse[0, 0] - 4.0) < Z_CRIT * 4.0 * np.sqrt(2 / df)
    # sizes uniform on 2..6: each has probability 1/5
    counts = np.bincount(d.sizes, minlength=7)[2:]
    p = 0.2
    assert np.all(np.abs(counts / d.n_groups - p) < Z_CRIT * np.sqrt(p * (1 - p) / d.n_groups))


def test_same_stream_same_data_and_streams_differ():
    sc = Scenario.from_params(dict(n_groups=10, group_size=3, icc=0.1, r_zxi=0.3))
    a = generate(sc, replication_rng(5, sc, 7))
    b = generate(sc, replication_rng(5, sc, 7))
    c = generate(sc, replication_rng(5, sc, 8))
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
    assert not np.array_equal(a.x, c.x)

