"""The one-factor kernels: the free-loading CFA (per dataset and batched), the
equal-loading closed form shared by the single-step SEM and the BFI demonstration, and
the wide SEM (reference and batch side by side)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from micromacro_sim.core.status import Reason
from micromacro_sim.models import cfa_solver
from micromacro_sim.models.cfa import cfa_verdicts, fit_cfa, fit_cfa_batch
from micromacro_sim.models.cfa_equal import equal_loading_cfa, equal_loading_ml
from micromacro_sim.models.wide_sem import sem_batch, sem_closed_form, sem_se
from tests.conftest import make_data
from tests.fastcheck import make_batch

HARSH = dict(n_groups=50, group_size=5, icc=0.05, r_zxi=0.3)


def test_equal_loading_ml_is_the_same_arithmetic_per_dataset_and_batched():
    batch = make_batch(HARSH, reps=25)
    nu, xbar, v = equal_loading_ml(batch.x)
    for r in range(batch.n_reps):
        nu1, xbar1, v1 = equal_loading_ml(batch.x[r])
        np.testing.assert_array_equal(nu[r], nu1)
        np.testing.assert_array_equal(xbar[r], xbar1)
        assert v[r] == v1


def test_equal_loading_closed_form_is_the_ml_eigen_solution():
    """v and phi against the eigenvalues of S: l2 = (tr S - l1) / (n - 1), l1 = 1'S1 / n."""
    wide = make_data(seed=4).wide(0)
    G, n = wide.shape
    S = np.cov(wide, rowvar=False, bias=True)
    l1 = S.sum() / n
    l2 = (np.trace(S) - l1) / (n - 1)
    fit = equal_loading_cfa(wide)
    assert fit.residual_variance == pytest.approx(l2, rel=1e-12)
    assert fit.factor_variance == pytest.approx((l1 - l2) / n, rel=1e-10)
    assert not fit.flags
    # the scores are the regression scores phi 1' Sigma^-1 (x - nu)
    w = fit.factor_variance * np.linalg.solve(fit.implied_cov, np.ones(n))
    np.testing.assert_allclose(fit.scores(wide), (wide - fit.intercepts) @ w, atol=1e-12)


def test_equal_loading_boundary_is_flagged_with_a_code():
    rng = np.random.default_rng(3)
    wide = rng.normal(size=(30, 4))
    wide -= wide.mean(axis=1, keepdims=True)  # no between-group variance at all
    fit = equal_loading_cfa(wide)
    assert [f.code for f in fit.flags] == [Reason.NEGATIVE_VARIANCE]
    assert fit.factor_variance == 0.0
    assert np.all(np.isnan(fit.information()))
    S = np.cov(wide, rowvar=False, bias=True)
    assert fit.residual_variance == pytest.approx(np.trace(S) / 4, rel=1e-12)


def test_sem_measurement_part_is_the_equal_loading_kernel():
    data = make_data(seed=9)
    sol = sem_closed_form(data.wide(0), data.y, data.z)
    fit = equal_loading_cfa(data.wide(0))
    assert sol.v == fit.residual_variance
    assert sol.phi == pytest.approx(fit.factor_variance, rel=1e-12)
    np.testing.assert_array_equal(sol.nu, fit.intercepts)


def test_sem_batch_equals_reference_kernel():
    batch = make_batch(dict(n_groups=60, group_size=6, icc=0.2, r_zxi=0.3), reps=8)
    params, se, adm, flags = sem_batch(batch.x, batch.y, batch.z)
    for r, d in enumerate(batch.datasets):
        sol = sem_closed_form(d.wide(0), d.y, d.z)
        np.testing.assert_allclose(params[r], [sol.b0, *sol.b_z, sol.b_xi], atol=1e-12)
        assert adm[r] == (not sol.problems()) and flags[r] == sol.problems()
        if adm[r]:
            np.testing.assert_allclose(se[r], sem_se(sol, d.wide(0).shape[1], d.n_groups),
                                       rtol=1e-7)


def test_cfa_batch_is_the_per_dataset_fit_bitwise():
    batch = make_batch(HARSH, reps=30)
    fits = fit_cfa_batch(batch.x)
    for r in range(batch.n_reps):
        one = fit_cfa(batch.x[r])
        np.testing.assert_array_equal(fits.loadings[r], one.loadings)
        np.testing.assert_array_equal(fits.residual_variances[r], one.residual_variances)
        assert fits.factor_variance[r] == one.factor_variance and fits.fmin[r] == one.fmin
        assert (fits.converged[r], fits.admissible[r], fits.flags[r]) == (
            one.converged, one.admissible, one.flags)
    assert all(isinstance(f.code, Reason) for fl in fits.flags for f in fl)


def test_cfa_closed_form_derivatives_match_explicit_ones():
    """Gradient, expected information and Hessian of the CFA discrepancy (closed forms)
    against the explicit dSigma/dtheta and central differences of the gradient."""
    _derivatives = cfa_solver.derivatives
    _discrepancy = cfa_solver.discrepancy
    _sigma = cfa_solver.sigma

    rng = np.random.default_rng(1)
    n = 6
    theta = np.concatenate([rng.uniform(0.5, 1.5, n), rng.uniform(1, 2, n), [0.7]])[None]
    A0 = rng.normal(size=(50, n))
    S = (A0.T @ A0 / 50 + np.eye(n))[None]
    logdet_s = np.linalg.slogdet(S)[1]
    _, inv = _discrepancy(theta, S, logdet_s)
    grad, info, hess = _derivatives(theta, S, inv)
    lam, phi = theta[0, :n], theta[0, -1]
    deriv = np.zeros((2 * n + 1, n, n))
    for j in range(n):
        deriv[j, j, :] += phi * lam
        deriv[j, :, j] += phi * lam
        deriv[n + j, j, j] = 1.0
    deriv[-1] = np.outer(lam, lam)
    sigma = _sigma(theta)[0]
    D = inv[0] @ (sigma - S[0]) @ inv[0]
    m = np.einsum("ij,kjl->kil", inv[0], deriv)
    np.testing.assert_allclose(grad[0], np.einsum("ij,kji->k", D, deriv), rtol=1e-10,
                               atol=1e-12)
    np.testing.assert_allclose(info[0], np.einsum("aij,bji->ab", m, m), rtol=1e-10, atol=1e-12)
    h = 1e-6
    num = np.empty((2 * n + 1, 2 * n + 1))
    for a in range(2 * n + 1):
        tp, tm = theta.copy(), theta.copy()
        tp[0, a] += h
        tm[0, a] -= h
        gp = _derivatives(tp, S, _discrepancy(tp, S, logdet_s)[1])[0]
        gm = _derivatives(tm, S, _discrepancy(tm, S, logdet_s)[1])[0]
        num[a] = (gp - gm)[0] / (2 * h)
    np.testing.assert_allclose(hess[0], num, atol=1e-7)


# ------------------------------------------------------------------ lavaan's verdicts
LAVAAN = Path(__file__).parent / "fixtures" / "cfa_lavaan" / "clark2020_row16_first_draws.csv"

#: Every dataset where the lavaan_cfa gate and lavaan disagree, with the reason.
#: lavaan's nlminb, from its start (factor variance .05, FABIN 3 loadings), ends in a
#: negative-factor-variance local optimum (post.check fails); the positive-variance optimum
#: the gate judges is admissible (lower discrepancy in 101, 252, 300, 691, 775, 828, 924;
#: higher in 287, 502, 588, 708, where the kept global optimum is the inadmissible one).
LAVAAN_OTHER_BASIN = {101, 252, 287, 300, 502, 588, 691, 708, 775, 828, 924}
#: The marker's standardized loading is near the identification limit (.0015-.015):
#: lavaan converges in 74, 168, 457 where the information is singular to double precision
#: (flagged here), and fails its gradient check in 90 and 437 where it is not.
MARKER_EDGE = {74, 168, 457, 90, 437}


@pytest.fixture(scope="module")
def lavaan_fixture():
    import pandas as pd

    sys.path.insert(0, str(Path(__file__).parents[1] / "tools"))
    from make_cfa_lavaan_fixture import first_draws

    ref = pd.read_csv(LAVAAN)
    wide = first_draws(len(ref))
    np.testing.assert_allclose(wide.sum(axis=(1, 2)), ref["sum_x"], rtol=1e-9, atol=1e-8)
    return ref, fit_cfa_batch(wide)


def test_lavaan_cfa_gate_reproduces_lavaan_verdicts(lavaan_fixture):
    ref, fits = lavaan_fixture
    ours = cfa_verdicts(fits, "lavaan_cfa") == ""
    theirs = ref["accepted"].to_numpy(bool)
    assert theirs.sum() == 967  # lavaan rejects 33 of the 1000 first draws
    disagree = set(np.flatnonzero(ours != theirs).tolist())
    assert disagree == LAVAAN_OTHER_BASIN | MARKER_EDGE
    assert np.mean(ours == theirs) >= 0.984
    # where both accept and the kept global optimum is proper: the same optimum
    both = ours & theirs & fits.admissible
    np.testing.assert_allclose(fits.fmin[both], ref["fmin"][both], rtol=0, atol=2e-5)


def test_global_optimum_is_never_above_lavaans(lavaan_fixture):
    """Both starts, the lowest discrepancy kept: never higher than lavaan's solution."""
    ref, fits = lavaan_fixture
    conv = ref["converged"].to_numpy(bool) & fits.converged
    assert np.all(fits.fmin[conv] <= ref["fmin"][conv] + 1e-6)
    lower = [f for fl in fits.flags for f in fl if f.code == Reason.LOWER_INADMISSIBLE_OPTIMUM]
    assert lower  # hidden lower inadmissible optima are flagged, not dropped


def test_marker_threshold_is_singular_information():
    """A marker with zero loading: the covariance structure fits, the marker does not."""
    rng = np.random.default_rng(5)
    f = rng.normal(size=(200, 1))
    wide = f @ np.ones((1, 6)) + rng.normal(size=(200, 6))
    # member 1 uncorrelated with the others in the sample: its loading is exactly 0
    others = wide[:, 1:] - wide[:, 1:].mean(axis=0)
    u = rng.normal(size=200)
    u -= u.mean()
    wide[:, 0] = u - others @ np.linalg.lstsq(others, u, rcond=None)[0]
    fit = fit_cfa(wide)
    assert Reason.MARKER_NOT_IDENTIFIED in {fl.code for fl in fit.flags}
    assert not fit.admissible
    ok = fit_cfa(f @ np.ones((1, 6)) + rng.normal(size=(200, 6)))
    assert ok.ok and not ok.flags


# ------------------------------------------- lavaan on the unequal-loadings example cell
LOADINGS_LAVAAN = LAVAAN.parent / "loadings_unequal_first_draws.csv"
#: lavaan passes and our fit is ok but on another optimum, lower by more than 1e-9.
LOADINGS_LOWER_OPTIMUM = {570}
#: lavaan passes (it stops at an admissible optimum in the positive-factor-variance basin)
#: but our kept global optimum is lower and has a negative factor variance: not ok here.
LOADINGS_LOWER_INADMISSIBLE = {19, 36, 256, 342, 413, 435, 900}


def test_factor_score_cfa_matches_lavaan_on_the_unequal_loadings_cell():
    """configs/examples/loadings.yaml, loadings 1/.4 and residual multipliers 1/3, the 1000
    first draws: where lavaan converges and passes post.check and our fit is ok, the
    parameters and factor_score's xi are within 1e-4 of lavaan's (or ours is a lower
    optimum); our fits not ok are lavaan's failures plus the listed lower inadmissible
    optima."""
    import pandas as pd

    sys.path.insert(0, str(Path(__file__).parents[1] / "tools"))
    from make_loadings_lavaan_fixture import (
        first_draws,
        lavaan_params,
        param_diff,
        regression_scores,
    )

    ref = pd.read_csv(LOADINGS_LAVAAN)
    X = first_draws(len(ref))
    np.testing.assert_allclose(X.sum(axis=(1, 2)), ref["sum_x"], rtol=1e-9, atol=1e-8)
    passes = ref["accepted"].to_numpy(bool)
    assert (~passes).sum() == 29  # lavaan: 4 not converged, 25 more fail post.check
    # lavPredict(method = "regression") is the package's formula at lavaan's estimates
    assert ref["score_gap"][passes].max() < 1e-10

    fits = fit_cfa_batch(X)
    ok = fits.converged & fits.admissible & np.array([not fl for fl in fits.flags])
    lav = lavaan_params(ref)
    ours = dict(loadings=fits.loadings, residual_variances=fits.residual_variances,
                factor_variance=fits.factor_variance)
    dpar = param_diff(ours, lav)
    dxi = np.max(np.abs(fits.scores(X) - regression_scores(X, lav)), axis=1)
    with np.errstate(invalid="ignore"):
        lower = fits.fmin < ref["fmin"].to_numpy(float) - 1e-9

    # (a) the same solution as lavaan's, or a lower optimum (listed)
    both = passes & ok
    far = both & ~((dpar <= 1e-4) & (dxi <= 1e-4))
    assert set(np.flatnonzero(far & ~lower).tolist()) == set()
    assert set(np.flatnonzero(far).tolist()) == LOADINGS_LOWER_OPTIMUM
    # (b) not ok: where lavaan fails, or where our optimum is lower and inadmissible
    assert not np.any(ok[~passes])
    extra = np.flatnonzero(passes & ~ok)
    assert set(extra.tolist()) == LOADINGS_LOWER_INADMISSIBLE
    assert np.all(lower[extra]) and np.all(fits.factor_variance[extra] < 0)
    assert (~ok).sum() <= (~passes).sum() + len(LOADINGS_LOWER_INADMISSIBLE)
