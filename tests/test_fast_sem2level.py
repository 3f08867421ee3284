"""Fast engine of sem_2level against the reference path, replication by replication.

The reference (``fit_two_level``: BFGS with the analytic gradient on the profile
likelihood, Newton polish) is itself checked against lavaan in ``test_kernels_twolevel.py``.
The fast path solves the same likelihood in closed form (balanced groups) or by batched
Newton (unbalanced); both take the joint-ML SEs from the same analytic Hessian, and
replications near the zero bound go through the reference. Both reach the optimum to
~1e-13, so the engine contract (estimates 1e-6, SEs 1e-5, identical flags and reasons) has
margin. The
derivatives of the batch are checked against finite differences of the reference
log-likelihood, which does not share their code.
"""

from __future__ import annotations

import numpy as np
import pytest

from micromacro_sim.estimators import get_estimator
from micromacro_sim.estimators.base import BatchResult
from micromacro_sim.generate.batch import Batch
from micromacro_sim.models.twolevel import _loglik_parts, prepare_data
from micromacro_sim.models.twolevel_batch import (
    _start_batch,
    batch_derivs,
    centre,
    fit_batch_two_level,
)
from micromacro_sim.models.twolevel_stats import balanced_centred_stats
from micromacro_sim.models.twolevel_stats import batch_stats as _batch_stats
from tests.fastcheck import assert_same, make_batch

#: (scenario, replications); low ICC with G=50, n=5 gives boundary (inadmissible) fits
SCENARIOS = {
    "row16": (dict(n_groups=100, group_size=10, icc=0.1, r_zxi=0.3), 10),
    "r0": (dict(n_groups=100, group_size=10, icc=0.1, r_zxi=0.0), 10),
    "low_icc": (dict(n_groups=50, group_size=5, icc=0.05, r_zxi=0.3), 20),
    "low_icc_2z": (dict(n_groups=50, group_size=5, icc=0.05, r_zxi=[0.3, 0.2], n_z=2), 20),
    "unbalanced": (dict(n_groups=100, group_size={"uniform": [3, 15]}, icc=0.1, r_zxi=0.3), 10),
    "unbalanced_low_icc_2z": (
        dict(n_groups=50, group_size={"uniform": [2, 6]}, icc=0.05, r_zxi=0.0, n_z=2), 15),
}




@pytest.fixture(scope="module")
def fits() -> dict[str, tuple[Batch, BatchResult, BatchResult]]:
    est = get_estimator("sem_2level")
    out = {}
    for name, (params, reps) in SCENARIOS.items():
        batch = make_batch(params, reps)
        out[name] = (batch, est.fit_batch(batch, "fast"), est.fit_batch(batch, "reference"))
    return out




@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_fast_equals_reference(fits, scenario):
    _, fast, ref = fits[scenario]
    assert_same(fast, ref)


def test_grid_exercises_verdicts_and_the_batch_path(fits):
    reasons = set()
    for name, (batch, fast, _) in fits.items():
        reasons.update(fast.reason)
        _, _, ok = fit_batch_two_level(batch)
        # the batch solution (not the per-replication fallback) covers the clean fits
        assert ok.sum() >= 0.5 * batch.n_reps, name
        assert np.all(fast.reason[ok] == "")
    assert {"", "negative variance"} <= reasons


def test_unbalanced_has_fast_path():
    assert get_estimator("sem_2level").has_batch(True)
    assert get_estimator("sem_2level").has_batch(False)


def test_lavaan_fixed_x_goes_through_the_reference():
    est = get_estimator("sem_2level", lavaan_fixed_x=True)
    batch = make_batch(SCENARIOS["row16"][0], 3)
    assert_same(est.fit_batch(batch, "fast"), est.fit_batch(batch, "reference"))


def _numeric_derivs(data, psi: np.ndarray, h: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
    """Gradient and Hessian of the reference negative log-likelihood by central
    differences of a central-difference gradient."""
    d = prepare_data(data)
    k = data.n_z + 1

    def f(p: np.ndarray) -> float:
        om = np.array([[p[1], p[2]], [p[2], p[3]]])
        B = np.column_stack([p[4 : 4 + k], p[4 + k :]])
        return -_loglik_parts(d, p[0], om, B)

    def grad(p: np.ndarray) -> np.ndarray:
        e = np.eye(len(p)) * h
        return np.array([(f(p + e[i]) - f(p - e[i])) / (2 * h) for i in range(len(p))])

    e = np.eye(len(psi)) * h
    H = np.array([(grad(psi + e[i]) - grad(psi - e[i])) / (2 * h) for i in range(len(psi))])
    return grad(psi), H


@pytest.mark.parametrize("scenario", ["unbalanced_low_icc_2z", "row16"])
def test_batch_derivatives_match_finite_differences(scenario):
    batch = make_batch(SCENARIOS[scenario][0], 2, root=3)
    s, _, _ = _batch_stats(batch)
    psi = _start_batch(s, clamp=True)
    psi[:, 3] *= 1.3  # away from the optimum, so the gradient is not ~0
    psi[:, 4:] += 0.05
    f, g, H = batch_derivs(s, psi)
    for r, data in enumerate(batch.datasets):
        d = prepare_data(data)
        k = data.n_z + 1
        om = np.array([[psi[r, 1], psi[r, 2]], [psi[r, 2], psi[r, 3]]])
        B = np.column_stack([psi[r, 4 : 4 + k], psi[r, 4 + k :]])
        assert f[r] == pytest.approx(-_loglik_parts(d, psi[r, 0], om, B), rel=1e-12)
        gn, Hn = _numeric_derivs(data, psi[r])
        np.testing.assert_allclose(g[r], gn, rtol=1e-6, atol=1e-5)
        np.testing.assert_allclose(H[r], Hn, rtol=1e-4, atol=1e-3)


def test_balanced_closed_form_is_a_stationary_point(fits):
    # the closed form (OLS + residual covariance minus diag(0, sigma_w / n)) zeroes the
    # analytic gradient of the full likelihood, and its Hessian is positive definite
    batch = fits["row16"][0]
    s, _, _ = _batch_stats(batch)
    psi = _start_batch(s)
    _, g, H = batch_derivs(s, psi)
    scale = np.sqrt(np.einsum("rii->ri", H))
    assert np.max(np.abs(g) / scale) < 1e-10
    assert np.all(np.linalg.eigvalsh(H) > 0)


@pytest.mark.parametrize("scenario", ["row16", "low_icc_2z"])
def test_balanced_stats_from_the_stacks_equal_the_per_dataset_ones_bitwise(scenario):
    """The balanced batch's statistics, built from the stacked arrays, are those of each
    centred dataset on its own, bit for bit, in any batch (a replication alone, or with
    other companions)."""
    batch = make_batch(SCENARIOS[scenario][0], 40, root=5)
    s, vy, vx, shift = balanced_centred_stats(batch)
    centred = [centre(d) for d in batch.datasets]
    ref, ref_vy, ref_vx = _batch_stats(batch, [c[0] for c in centred])
    for a, b in [(s.M, ref.M), (s.count, ref.count), (s.ssw, ref.ssw), (vy, ref_vy),
                 (vx, ref_vx), (shift, np.stack([c[1] for c in centred]))]:
        assert a.tobytes() == b.tobytes()
    for idx in ([7], [3, 29, 11], list(range(39, -1, -2))):
        part = Batch.from_datasets([batch.datasets[i] for i in idx])
        sp, vyp, _, shp = balanced_centred_stats(part)
        assert sp.M.tobytes() == s.M[idx].tobytes() and sp.ssw.tobytes() == s.ssw[idx].tobytes()
        assert vyp.tobytes() == vy[idx].tobytes() and shp.tobytes() == shift[idx].tobytes()
