"""sem_2level with several x (each with its own latent group mean) against lavaan.

The reference numbers in ``tests/fixtures/sem2level_multi/*.json`` come from lavaan 0.6-14,
written by ``tools/make_sem2level_multi_fixtures.py`` / ``tools/r/sem2level_multi_fixtures.R``
on the datasets stored beside them (p = 2 balanced with one z, p = 2 unbalanced with two z,
p = 3 unbalanced without z; the x have means near 0.5 and correlated within parts). The
model: ``level: 1 / x1 ~~ x1 + x2; x2 ~~ x2 / level: 2 / y ~ z + x1 + x2``, cluster = group.
Tolerances: estimates 1e-4, SEs 1e-3 (observed: 4e-5 and 7e-6 against ``fixed.x = FALSE``
for the default, 1.2e-5 and 3.5e-7 against lavaan's default for ``lavaan_fixed_x``); the
exception (lavaan's stopping rule on Var(x^B)) is explained where it occurs.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import micromacro_sim
from micromacro_sim.core.status import Reason
from micromacro_sim.estimators import get_estimator
from micromacro_sim.generate.dataset import Dataset
from micromacro_sim.models.twolevel import _z_loglik, fit_two_level
from micromacro_sim.models.twolevel_lavaan import joint_se, lavaan_h1_moments
from micromacro_sim.models.twolevel_multi import (
    conditional_multi,
    derivs_multi,
    fit_two_level_multi,
    prepare_multi,
    psi_multi,
    verdict_multi,
)

FIX = Path(__file__).parent / "fixtures" / "sem2level_multi"
NAMES = ["balanced_p2_z1", "unbalanced_p2_z2", "unbalanced_p3_z0"]


def load(name: str) -> tuple[Dataset, dict, pd.DataFrame]:
    xd = pd.read_csv(FIX / f"{name}_x.csv")
    gd = pd.read_csv(FIX / f"{name}_g.csv")
    xs = tuple(c for c in xd.columns if c != "group")
    zs = tuple(c for c in gd.columns if c not in ("group", "y"))
    data = Dataset(group=xd.group.to_numpy(), x=xd[list(xs)].to_numpy(), y=gd.y.to_numpy(),
                   z=gd[list(zs)].to_numpy().reshape(len(gd), len(zs)), x_names=xs,
                   z_names=zs)
    with open(FIX / f"{name}.json") as fh:
        ref = json.load(fh)
    return data, ref, xd.merge(gd, on="group")


def keys(data: Dataset) -> list[str]:
    return ["y~1@2", *(f"y~{z}@2" for z in data.z_names), *(f"y~{x}@2" for x in data.x_names)]


def sym(est: dict, a: str, b: str, level: int) -> float:
    return est.get(f"{a}~~{b}@{level}", est.get(f"{b}~~{a}@{level}"))


def lavaan_point(data: Dataset, est: dict, fit):
    """``fit`` with lavaan's estimates and fixed moments in place of ours."""
    xs, zs = data.x_names, data.z_names
    q, p = len(zs), len(xs)
    return replace(
        fit, b0=est["y~1@2"], b_z=np.array([est[f"y~{z}@2"] for z in zs]),
        b_x=np.array([est[f"y~{x}@2"] for x in xs]), sigma2_e=est["y~~y@2"],
        sigma_w=np.array([[sym(est, a, b, 1) for b in xs] for a in xs]),
        mu_z=np.array([est[f"{z}~1@2"] for z in zs]),
        s_zz=np.array([[sym(est, a, b, 2) for b in zs] for a in zs]).reshape(q, q),
        s_zx=np.array([[est[f"{z}~~{x}@2"] for x in xs] for z in zs]).reshape(q, p),
        s_xx=np.array([[sym(est, a, b, 2) for b in xs] for a in xs]),
        mu_x=np.array([est[f"{x}~1@2"] for x in xs]),
    )


@pytest.fixture(scope="module")
def fits() -> dict:
    out = {}
    for name in NAMES:
        data, ref, frame = load(name)
        out[name] = (data, ref, frame, fit_two_level_multi(data))
    return out


@pytest.mark.parametrize("name", NAMES)
def test_estimates_are_lavaans_ml(fits, name):
    # lavaan with fixed.x = FALSE fixes no moment: its estimates are the ML of the model
    data, ref, _, fit = fits[name]
    r = ref["sem_2level_free"]
    assert r["converged"] and r["post_check"]
    res = get_estimator("sem_2level").fit(data)
    assert res.ok and res.df_resid is None and set(res.bse) == {"classical"}
    assert res.terms == ("intercept", *data.z_names, *data.x_names)
    k = keys(data)
    np.testing.assert_allclose(res.params, [r["est"][t] for t in k], atol=1e-4)
    np.testing.assert_allclose(res.se(), [r["se"][t] for t in k], atol=1e-3)
    est, xs, zs = r["est"], data.x_names, data.z_names
    e = res.extras
    np.testing.assert_allclose(e["sigma_w"], [[sym(est, a, b, 1) for b in xs] for a in xs],
                               atol=1e-4)
    # Var(x^B): lavaan's stopping rule leaves up to 2.2e-4 here (balanced_p2_z1, where
    # the ML is closed form and ours is it to 1e-15); the likelihood check below shows
    # ours is the higher point
    np.testing.assert_allclose(e["var_xb"], [[sym(est, a, b, 2) for b in xs] for a in xs],
                               atol=3e-4)
    np.testing.assert_allclose(e["cov_z_xb"],
                               np.reshape([[est[f"{z}~~{x}@2"] for x in xs] for z in zs],
                                          (len(zs), len(xs))), atol=1e-4)
    assert e["sigma2_e"] == pytest.approx(est["y~~y@2"], abs=1e-4)
    np.testing.assert_allclose(fit.mu_x, [est[f"{x}~1@2"] for x in xs], atol=1e-4)
    assert fit.converged and fit.reason is None and fit.grad_max < 1e-8
    # lavaan's logl is that of the raw x, y and z: add z's likelihood, the constants and
    # the Jacobian of x -> (xbar, within contrasts); ours is higher by 1e-7 to 6e-7
    G, N, p, q = data.n_groups, data.n_persons, data.n_x, data.n_z
    ll = (fit.loglik + _z_loglik(data.z, fit.mu_z, fit.s_zz)
          - 0.5 * np.log(2 * np.pi) * (N * p + G * (1 + q)) - 0.5 * p * np.log(data.sizes).sum())
    assert r["logl"] - 1e-9 <= ll <= r["logl"] + 1e-5


@pytest.mark.parametrize("name", ["balanced_p2_z1"])
def test_balanced_closed_form(fits, name):
    # balanced groups: the ML is closed form (Sigma_w = within scatter / (G(n - 1)),
    # Var(x^B) = Cov(xbar) (denominator G) - Sigma_w / n, mean of x^B the grand mean)
    data, _, _, fit = fits[name]
    G, n = data.n_groups, int(data.sizes[0])
    dev = data.x - np.repeat(data.xbar, n, axis=0)
    sw = dev.T @ dev / (G * (n - 1))
    np.testing.assert_allclose(fit.sigma_w, sw, rtol=1e-10)
    np.testing.assert_allclose(fit.s_xx, np.cov(data.xbar.T, ddof=0) - sw / n, rtol=1e-8)
    np.testing.assert_allclose(fit.mu_x, data.x.mean(axis=0), rtol=1e-10)


@pytest.mark.parametrize("name", NAMES)
def test_lavaan_fixed_x_reproduces_lavaans_default(fits, name):
    # lavaan's default fixes the moments of z and x^B at its EM fit of the unrestricted
    # model (which splits the mean of x between the levels and stops at a 1e-4 gain);
    # lavaan_fixed_x reproduces that EM and the ML of the other parameters given it
    data, ref, _, fit = fits[name]
    r = ref["sem_2level"]
    assert r["converged"] and r["information"] == "observed"
    res = get_estimator("sem_2level", lavaan_fixed_x=True).fit(data)
    assert res.ok
    k = keys(data)
    np.testing.assert_allclose(res.params, [r["est"][t] for t in k], atol=1e-4)
    np.testing.assert_allclose(res.se(), [r["se"][t] for t in k], atol=1e-3)
    mom = lavaan_h1_moments(data)
    np.testing.assert_allclose(mom, lavaan_point(data, r["est"], fit).moments(), atol=1e-4)
    # the default (joint ML) is not lavaan's default: the intercept moves by b_x' (the
    # within part of the mean of x that lavaan's EM splits off)
    default = get_estimator("sem_2level").fit(data)
    assert np.max(np.abs(default.params - res.params)) > 1e-3


@pytest.mark.parametrize("name", ["row16", "high_icc", "g50_low_icc", "unbalanced"])
def test_one_x_general_path_equals_the_one_x_path(name):
    # the several-x code run on one x reproduces the one-x path (which has its own lavaan
    # tests in test_kernels_twolevel.py): estimates, and SEs (complex-step delta method
    # against the closed-form one), to rounding
    from tests.test_kernels_twolevel import load_one

    data, _ = load_one(name)
    one = get_estimator("sem_2level").fit(data)
    f1, f2 = fit_two_level(data), fit_two_level_multi(data)
    psi = psi_multi(*conditional_multi(f2.free(), data.n_z, 1, f2.moments()))
    se = joint_se(psi, derivs_multi(prepare_multi(data), psi)[2], 1, data.n_z)
    assert one.ok
    np.testing.assert_allclose(f2.free()[1:-1], one.params, rtol=0, atol=1e-10)
    np.testing.assert_allclose(se, one.se(), rtol=0, atol=1e-9)
    assert f2.loglik == pytest.approx(f1.loglik, abs=1e-9)
    assert f2.sigma_w[0, 0] == pytest.approx(f1.sigma_w, abs=1e-10)
    assert f2.s_xx[0, 0] == pytest.approx(f1.s_xx, abs=1e-10)


def test_one_x_boundary_verdicts_agree():
    from tests.test_kernels_twolevel import extreme

    for seed in (1, 2, 3, 7):  # 1, 2, 7: Var(x^B) at the zero bound
        data = extreme(seed)
        assert fit_two_level_multi(data).reason == fit_two_level(data).reason


def test_derivatives_match_finite_differences(fits):
    data = fits["unbalanced_p2_z2"][0]
    d = prepare_multi(data)
    fit = fits["unbalanced_p2_z2"][3]
    sw, om, B = conditional_multi(fit.free(), data.n_z, data.n_x, fit.moments())
    psi = psi_multi(sw, om, B)
    psi = psi + 0.05 * np.random.default_rng(0).uniform(0.5, 1, len(psi))  # off the optimum
    f, g, H = derivs_multi(d, psi)
    assert f == pytest.approx(derivs_multi(d, psi, hessian=False)[0])
    h = 1e-5
    e = np.eye(len(psi)) * h

    def grad(x: np.ndarray) -> np.ndarray:
        return derivs_multi(d, x, hessian=False)[1]

    def negll(x: np.ndarray) -> float:
        return derivs_multi(d, x, hessian=False)[0]

    gn = np.array([(negll(psi + e[i]) - negll(psi - e[i])) / (2 * h) for i in range(len(psi))])
    Hn = np.array([(grad(psi + e[i]) - grad(psi - e[i])) / (2 * h) for i in range(len(psi))])
    np.testing.assert_allclose(g, gn, rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(H, Hn, rtol=1e-5, atol=1e-3)


def _draw(seed: int, *, var_xi2: float, G: int = 50, n: int = 5) -> Dataset:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(G, 1))
    xi = 0.3 * z + rng.normal(size=(G, 2)) * np.sqrt([0.9, var_xi2])
    y = 0.3 + 0.3 * z[:, 0] + xi @ [0.3, 0.2] + rng.normal(0, 0.6, G)
    x = np.repeat(xi, n, axis=0) + rng.normal(0, np.sqrt(3), (G * n, 2))
    return Dataset(group=np.repeat(np.arange(G), n), x=x, y=y, z=z, x_names=("x1", "x2"))


def test_negative_variance_is_flagged():
    # x2 with a tiny between variance: Var(xbar_2) < within / n in some draws
    est = get_estimator("sem_2level")
    reasons = {}
    for seed in range(6):
        res = est.fit(_draw(seed, var_xi2=0.0))
        reasons[seed] = res.reason
        if res.reason:
            assert not res.admissible and np.all(np.isnan(res.se()))
            assert np.all(np.isfinite(res.params))
        else:
            assert res.ok
    assert "negative variance" in reasons.values()
    assert set(reasons.values()) <= {"", "negative variance"}


def test_verdicts():
    eye = np.eye(2)
    kw = dict(var_y=1.0, var_xbar=np.ones(2))
    assert verdict_multi(eye, 0.5, eye, **kw) is None
    assert verdict_multi(np.diag([1.0, 1e-6]), 0.5, eye, **kw) is Reason.NEGATIVE_VARIANCE
    assert verdict_multi(eye, 1e-6, eye, **kw) is Reason.NEGATIVE_VARIANCE
    assert verdict_multi(np.ones((2, 2)), 0.5, eye, **kw) is Reason.NOT_POSITIVE_DEFINITE
    assert verdict_multi(eye, 0.5, np.ones((2, 2)), **kw) is Reason.NOT_POSITIVE_DEFINITE


def test_collinear_x_is_flagged_not_raised():
    data = _draw(1, var_xi2=0.5)
    x = np.column_stack([data.x[:, 0], 2 * data.x[:, 0]])
    bad = Dataset(group=data.group, x=x, y=data.y, z=data.z, x_names=("a", "b"))
    res = get_estimator("sem_2level").fit(bad)
    assert not res.admissible and res.reason == "not positive definite"


def test_python_api_passes_several_x(fits):
    data, ref, frame, _ = fits["unbalanced_p2_z2"]
    res = micromacro_sim.fit(frame, group="group", x=["x1", "x2"], z=["z1", "z2"], y="y",
                             method="sem_2level")["sem_2level"]
    r = ref["sem_2level_free"]["est"]
    assert res.fit.ok and list(res.params.index) == ["intercept", "z1", "z2", "x1", "x2"]
    np.testing.assert_allclose(res.params.to_numpy(), [r[t] for t in keys(data)], atol=1e-4)
    direct = get_estimator("sem_2level").fit(data)
    np.testing.assert_allclose(res.bse.to_numpy(), direct.se(), rtol=0, atol=1e-12)


def test_batch_engine_still_holds_one_x():
    est = get_estimator("sem_2level")
    assert est.max_x is None and est.has_batch(True) and est.has_batch(False)
