"""Mixed-model scores: blup (lme4 ranef, REML/ML) and blup_hetvar (glmmTMB het-var model).

Truth used here:

* closed forms of the balanced one-way model (ANOVA moments computed independently in
  :mod:`micromacro_sim.models.reliability`) and statsmodels ``MixedLM`` fits;
* R output stored in ``tests/fixtures/mixed`` (``tools/make_mixed_fixtures.py`` writes the
  datasets, ``tools/r/mixed_fixtures.R`` the lme4 / glmmTMB / lm / sandwich numbers).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_data

from micromacro_sim.estimators import get_estimator
from micromacro_sim.generate.dataset import Dataset
from micromacro_sim.models.hetvar import WideLayout, hetvar_ml
from micromacro_sim.models.oneway import (
    _dneg2ll,
    _group_stats,
    _loglik,
    conditional_modes,
    oneway_closed_form,
    oneway_mixedlm,
    oneway_profile,
)
from micromacro_sim.models.reliability import anova

FIXTURES = Path(__file__).parent / "fixtures" / "mixed"
NAMES = ["row16", "high_icc", "unbalanced", "g50_low_icc"]
SE_KEYS = ["classical", "HC0", "HC1", "HC2", "HC3"]


def load(name: str) -> tuple[Dataset, dict]:
    frame = pd.read_csv(FIXTURES / f"{name}.csv")
    groups = frame.drop_duplicates("group")
    data = Dataset(
        group=frame["group"].to_numpy(), x=frame["x"].to_numpy(),
        y=groups["y"].to_numpy(), z=groups["z"].to_numpy(),
    )
    with open(FIXTURES / f"{name}.json") as fh:
        return data, json.load(fh)


# ------------------------------------------------------------------ balanced closed form
@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("params", [{}, {"icc": 0.5, "group_size": 5}, {"n_groups": 50}])
def test_closed_form_is_the_anova_identity_and_the_profile_optimum(reml, params):
    data = make_data(seed=3, **params)
    fit = oneway_closed_form(data, reml=reml)
    a = anova(data)
    G, n = data.n_groups, int(data.sizes[0])
    mse, msa = float(a.mse[0, 0]), float(a.msa[0, 0])
    between = msa if reml else msa * (G - 1) / G  # REML: SSA/(G-1); ML: SSA/G
    assert not fit.boundary
    np.testing.assert_allclose(fit.sigma2, mse, rtol=1e-12)
    np.testing.assert_allclose(fit.tau2, (between - mse) / n, rtol=1e-10)
    np.testing.assert_allclose(fit.mu, a.mu_x[0], rtol=1e-12, atol=1e-14)
    # It is the optimum: the profile deviance is stationary there, and the exact 1-D
    # search finds the same point.
    x_n, xbar, sse = _group_stats(data.x[:, 0], data)
    dev_slope = _dneg2ll(fit.tau2 / fit.sigma2, x_n, xbar, sse, reml)
    assert abs(dev_slope) < 1e-6 * data.n_persons
    prof = oneway_profile(data, reml=reml)
    np.testing.assert_allclose([prof.tau2, prof.sigma2], [fit.tau2, fit.sigma2], rtol=1e-9)
    np.testing.assert_allclose(prof.loglik, fit.loglik, rtol=1e-13)


@pytest.mark.parametrize("reml", [True, False])
def test_closed_form_equals_statsmodels_mixedlm(reml):
    data = make_data(seed=5)
    fit = oneway_closed_form(data, reml=reml)
    # MixedLM from the ANOVA start, lbfgs polished by bfgs (gtol 1e-10). Its stopping rule
    # leaves relative errors of order 1e-6 in tau2 (the likelihood is flat in tau2).
    sm = oneway_mixedlm(data, reml=reml)
    assert sm.converged
    np.testing.assert_allclose(sm.tau2, fit.tau2, rtol=1e-5)
    np.testing.assert_allclose(sm.sigma2, fit.sigma2, rtol=1e-6)
    np.testing.assert_allclose(sm.mu, fit.mu, rtol=1e-6, atol=1e-8)
    assert sm.loglik <= fit.loglik + 1e-9


def test_scores_are_the_shrunken_deviations():
    data = make_data(seed=7)
    res = get_estimator("blup").fit(data)
    assert res.ok
    e = res.extras
    n = int(data.sizes[0])
    lam = e["tau2"] / (e["tau2"] + e["sigma2"] / n)
    np.testing.assert_allclose(e["scores"], lam * (data.xbar[:, 0] - e["mu"]), rtol=1e-12)
    # In balanced data the scores are a linear function of xbar: the Z coefficient equals
    # the unadjusted one, the xi coefficient is the unadjusted one divided by lambda.
    un = get_estimator("unadjusted").fit(data)
    np.testing.assert_allclose(res.params[1], un.params[1], rtol=1e-10)
    np.testing.assert_allclose(res.params[2], un.params[2] / lam, rtol=1e-10)


def test_boundary_is_flagged():
    # Identical group means: MSA = 0 < MSE, so tau2 = 0 for REML and ML.
    rng = np.random.default_rng(0)
    G, n = 12, 4
    x = rng.standard_normal((G, n))
    x -= x.mean(axis=1, keepdims=True)
    data = Dataset(
        group=np.repeat(np.arange(G), n), x=x.ravel(), y=rng.standard_normal(G),
        z=rng.standard_normal(G),
    )
    for reml in (True, False):
        fit = oneway_closed_form(data, reml=reml)
        assert fit.boundary and fit.tau2 == 0.0
        N = G * n
        np.testing.assert_allclose(fit.sigma2, np.sum(x**2) / (N - 1 if reml else N))
        prof = oneway_profile(data, reml=reml)
        assert prof.boundary and prof.tau2 == 0.0
        sc = get_estimator("blup", reml=reml).scores(data)
        assert not sc.admissible and sc.reason == "zero variance (boundary)"
        assert np.all(sc.values == 0)
        res = get_estimator("blup", reml=reml).fit(data)
        assert not res.admissible and not res.ok
    sc = get_estimator("blup_hetvar").scores(data)
    assert not sc.admissible and "zero variance (boundary)" in sc.reason


def test_unbalanced_profile_equals_mixedlm():
    data = make_data(seed=11, group_size={"uniform": [3, 15]})
    for reml in (True, False):
        prof = oneway_profile(data, reml=reml)
        sm = oneway_mixedlm(data, reml=reml)
        scale = prof.tau2 + prof.sigma2
        assert abs(sm.tau2 - prof.tau2) < 1e-4 * scale
        assert sm.loglik <= prof.loglik + 1e-9
        res = get_estimator("blup", reml=reml).fit(data)
        assert res.ok and res.extras["mixedlm"] == "agrees"


def test_not_applicable_without_within_variation():
    data = Dataset(group=np.arange(5), x=np.arange(5.0), y=np.arange(5.0), z=np.ones(5))
    for name in ("blup", "blup_hetvar"):
        res = get_estimator(name).fit(data)
        assert res.status.value == "not_applicable"


# ------------------------------------------------------------------ het-var model
@pytest.mark.parametrize("params", [{}, {"group_size": {"uniform": [3, 15]}}, {"icc": 0.5}])
def test_hetvar_is_a_stationary_maximum(params):
    data = make_data(seed=2, **params)
    fit = hetvar_ml(data)
    assert fit.converged and not fit.boundary and fit.grad_max < 1e-6
    wide = WideLayout(data)
    # Central finite differences of the log-likelihood in (mu, log tau2, log s2_j): all
    # ~0 (FD error ~1e-6 with h = 1e-5 and |loglik| ~ 1e3).
    theta = np.concatenate([[fit.mu, np.log(fit.tau2)], np.log(fit.s2)])

    def ll(t):
        return wide.loglik(t[0], np.exp(t[1]), np.exp(t[2:]))

    h = 1e-5
    grad = [(ll(theta + h * e) - ll(theta - h * e)) / (2 * h) for e in np.eye(theta.size)]
    assert np.max(np.abs(grad)) < 1e-4
    # It nests the homoscedastic model: its maximum is at least the ML one.
    if data.balanced:
        assert fit.loglik >= oneway_closed_form(data, reml=False).loglik - 1e-9
    # Conditional modes: tau2 sum_j (x - mu)/s2_j / (1 + tau2 sum_j 1/s2_j).
    X, M = wide.X, wide.M
    u = fit.tau2 * ((X - fit.mu) * M / fit.s2).sum(1) / (1 + fit.tau2 * (M / fit.s2).sum(1))
    np.testing.assert_allclose(fit.modes, u, rtol=1e-12, atol=1e-14)


def test_hetvar_pieces_reduce_to_the_homoscedastic_model():
    # With every s2_j equal to the ML sigma2, the het-var likelihood and modes are those
    # of the one-way model (computed by separate code).
    data = make_data(seed=4)
    ml = oneway_closed_form(data, reml=False)
    u = conditional_modes(data.xbar[:, 0], data.sizes, ml.mu, ml.tau2, ml.sigma2)
    wide = WideLayout(data)
    _, _, modes = wide.score_info(ml.mu, ml.tau2, np.full(wide.X.shape[1], ml.sigma2))
    np.testing.assert_allclose(modes, u, rtol=1e-12)
    x_n, xbar, sse = _group_stats(data.x[:, 0], data)
    np.testing.assert_allclose(
        wide.loglik(ml.mu, ml.tau2, np.full(wide.X.shape[1], ml.sigma2)),
        _loglik(ml.mu, ml.tau2, ml.sigma2, x_n, xbar, sse, reml=False), rtol=1e-13,
    )


# ------------------------------------------------------------------ against R
def test_fixture_datasets_come_from_the_generator():
    from micromacro_sim.design.scenario import Scenario
    from micromacro_sim.generate.dgp import generate
    from micromacro_sim.generate.seeding import replication_rng

    sc = Scenario.from_params(dict(n_groups=100, group_size=10, icc=0.1, r_zxi=0.3))
    fresh = generate(sc, replication_rng(2020, sc, 0))
    data, _ = load("row16")
    np.testing.assert_allclose(data.x, fresh.x, rtol=1e-9)
    np.testing.assert_allclose(data.y, fresh.y, rtol=1e-9)


def _check_second_step(res, ref):
    np.testing.assert_allclose(res.params, ref["coef"], rtol=0, atol=1e-4)
    for key in SE_KEYS:
        np.testing.assert_allclose(res.bse[key], ref["se"][key], rtol=0, atol=1e-3)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("reml", [True, False])
def test_blup_matches_lme4(name, reml):
    # Measured agreement: variance components ~1e-7, modes ~1e-7, coefficients ~2e-8,
    # SEs ~6e-9 (lme4's optimizer, even with tight tolerances, is the limit).
    data, ref = load(name)
    r = ref["lmer_reml" if reml else "lmer_ml"]
    res = get_estimator("blup", reml=reml).fit(data)
    assert res.ok, res.reason
    e = res.extras
    np.testing.assert_allclose([e["tau2"], e["sigma2"], e["mu"]],
                               [r["tau2"], r["sigma2"], r["mu"]], rtol=0, atol=1e-4)
    np.testing.assert_allclose(e["scores"], r["ranef"], rtol=0, atol=1e-4)
    np.testing.assert_allclose(e["loglik"], r["loglik"], rtol=0, atol=1e-6)
    _check_second_step(res, r["lm"])
    # Our likelihood evaluated at lme4's estimates reproduces lme4's logLik.
    x_n, xbar, sse = _group_stats(data.x[:, 0], data)
    ll = _loglik(r["mu"], r["tau2"], r["sigma2"], x_n, xbar, sse, reml)
    np.testing.assert_allclose(ll, r["loglik"], rtol=0, atol=1e-8)


@pytest.mark.parametrize("name", NAMES)
def test_blup_hetvar_matches_glmmtmb(name):
    # glmmTMB stops slightly short of the optimum (its item and residual variances are
    # not separately identified, so its Hessian is singular and tightening nlminb's
    # tolerances does not move it): our log-likelihood is higher by 4e-10 to 7e-9.
    # Measured agreement: tau2 <= 1.7e-5, mu <= 8e-6, modes <= 1.4e-5, coefficients
    # <= 1.6e-6, SEs <= 3e-7. The position variances s2_j = item variance + residual are
    # the least determined parameters (positions seen by few groups in unbalanced data):
    # up to 2.7e-4 absolute, 1.4e-5 relative, so they are compared relatively.
    data, ref = load(name)
    r = ref["glmmtmb"]
    res = get_estimator("blup_hetvar").fit(data)
    assert res.ok, res.reason
    e = res.extras
    np.testing.assert_allclose([e["tau2"], e["mu"]], [r["tau2"], r["mu"]], rtol=0, atol=1e-4)
    np.testing.assert_allclose(e["s2"], r["s2"], rtol=1e-4)
    np.testing.assert_allclose(e["scores"], r["ranef"], rtol=0, atol=1e-4)
    assert e["loglik"] >= r["loglik"] - 1e-9
    assert e["loglik"] - r["loglik"] < 1e-6
    _check_second_step(res, r["lm"])
    # Our likelihood at glmmTMB's estimates reproduces glmmTMB's objective.
    wide = WideLayout(data)
    np.testing.assert_allclose(
        wide.loglik(r["mu"], r["tau2"], np.asarray(r["s2"])), r["loglik"], rtol=0, atol=1e-8
    )


@pytest.mark.parametrize("name", NAMES)
def test_second_step_plumbing_matches_lm(name):
    data, ref = load(name)
    res = get_estimator("unadjusted").fit(data)
    np.testing.assert_allclose(res.params, ref["unadjusted"]["coef"], rtol=1e-10)
    for key in SE_KEYS:
        np.testing.assert_allclose(res.bse[key], ref["unadjusted"]["se"][key], rtol=1e-9)


def test_boundary_fixture_matches_lme4_and_is_flagged():
    data, ref = load("boundary")
    for reml, key in ((True, "lmer_reml"), (False, "lmer_ml")):
        r = ref[key]
        assert r["singular"] and r["tau2"] == 0
        sc = get_estimator("blup", reml=reml).scores(data)
        assert not sc.admissible and sc.reason == "zero variance (boundary)"
        assert sc.extras["tau2"] == 0.0
        np.testing.assert_allclose(sc.extras["sigma2"], r["sigma2"], rtol=1e-6)
        np.testing.assert_allclose(sc.values, r["ranef"], atol=1e-12)
    # glmmTMB cannot reach tau2 = 0 (log-sd scale): it stops at ~1e-7 with modes ~1e-8 and
    # a second-step xi coefficient of ~8e6 -- exactly what the flag is there to catch.
    r = ref["glmmtmb"]
    assert r["tau2"] < 1e-5
    sc = get_estimator("blup_hetvar").scores(data)
    assert not sc.admissible and "zero variance (boundary)" in sc.reason
    np.testing.assert_allclose(sc.extras["s2"], r["s2"], rtol=1e-4)
    res = get_estimator("blup_hetvar").fit(data)
    assert not res.ok


def test_hetvar_stops_at_the_boundary_of_a_once_observed_member():
    """Absent members (Poisson sizes, 20% MCAR): a member id observed in one group only.
    With tau2 at 0 its variance runs to 0 and the likelihood is unbounded there; the fit
    stops on that boundary and is flagged, never an error (it was ``members_misaligned``
    before positions stopped needing a complete group)."""
    from micromacro_sim.core.status import Status
    from micromacro_sim.design.scenario import Scenario
    from micromacro_sim.generate.dgp import generate
    from micromacro_sim.generate.seeding import replication_rng

    sc = Scenario.from_params(dict(n_groups=30, group_size={"poisson": 8, "min": 2},
                                   icc=0.05, r_zxi=0.3, missing_mcar=0.2))
    data = generate(sc, replication_rng(9, sc, 100, 0))
    counts = np.bincount(data.position)
    assert counts.min() == 1 and data.n_positions > int(data.sizes.max())
    fit = hetvar_ml(data)
    assert fit.boundary and not fit.converged and fit.tau2 == 0.0
    res = get_estimator("blup_hetvar").fit(data)
    assert res.status is Status.FLAGGED and "boundary" in res.reason_code
