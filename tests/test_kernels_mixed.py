"""Mixed-model kernels: each batch kernel against its per-dataset reference, in one place.

* :mod:`micromacro_sim.models.oneway` / :mod:`~micromacro_sim.models.oneway_batch`
  (blup) and :mod:`~micromacro_sim.models.hetvar` / :mod:`~micromacro_sim.models.hetvar_batch`
  (blup_hetvar): replication by replication the batch kernel equals the reference (closed
  form / profile likelihood with Brent's root search; the per-dataset Fisher scoring), the
  batched derivatives equal finite differences of the reference deviance, and the methods'
  fast engine equals their reference engine (flags, reasons, estimates, SEs).
* Bitwise: a replication's numbers do not depend on which replications share its batch
  (chunk sizes 1, 7 and 1000, shuffled companions, companions of other widths, a singular
  companion, a balanced replication among unbalanced ones).

The reference kernels are themselves checked against lme4 / glmmTMB in ``test_mixed.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_data

from micromacro_sim.estimators import SE_TYPES, get_estimator
from micromacro_sim.generate.batch import Batch
from micromacro_sim.generate.dataset import Dataset
from micromacro_sim.models.hetvar import hetvar_ml
from micromacro_sim.models.hetvar_batch import _solve_steps, hetvar_ml_batch
from micromacro_sim.models.oneway import (
    PROFILE_GRID,
    _group_stats,
    _neg2ll,
    oneway_closed_form,
    oneway_profile,
)
from micromacro_sim.models.oneway_batch import (
    _batch_dneg2ll,
    _batch_stats,
    _grid_deviance,
    oneway_batch,
)
from tests.fastcheck import assert_same, make_batch

#: (scenario, replications). Low ICC with G=50, n=5 gives boundary (inadmissible) fits.
SCENARIOS = {
    "row16": (dict(n_groups=100, group_size=10, icc=0.1, r_zxi=0.3), 30),
    "low_icc_2z": (dict(n_groups=50, group_size=5, icc=0.05, r_zxi=0.0, n_z=2), 40),
    "unbalanced": (dict(n_groups=100, group_size={"uniform": [3, 15]}, icc=0.1, r_zxi=0.3), 20),
    "unbalanced_low_icc_2z": (
        dict(n_groups=50, group_size={"uniform": [2, 6]}, icc=0.05, r_zxi=0.0, n_z=2), 40
    ),
}


# ------------------------------------------------------------------ methods: fast = reference
@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_blup_fast_equals_reference(scenario, reml):
    params, reps = SCENARIOS[scenario]
    batch = make_batch(params, reps, root=31)
    est = get_estimator("blup", reml=reml, verify=False)
    fast, ref = est.fit_batch(batch, "fast"), est.fit_batch(batch, "reference")
    assert_same(fast, ref)
    if "low_icc" in scenario:  # the boundary verdict is exercised
        assert (~ref.admissible).sum() >= 3
        assert set(ref.reason[~ref.admissible]) == {
            "zero variance (boundary); rank-deficient second-step design (constant or "
            "collinear scores)"
        }


def test_blup_fast_skips_only_the_mixedlm_check():
    # With the default verify=True the reference also fits MixedLM; on these data it agrees
    # with the profile optimum, so the fast path's unchecked answer is the same.
    batch = make_batch(SCENARIOS["unbalanced"][0], 2, root=31)
    est = get_estimator("blup")
    assert_same(est.fit_batch(batch, "fast"), est.fit_batch(batch, "reference"))


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_blup_hetvar_fast_equals_reference(scenario):
    params, reps = SCENARIOS[scenario]
    batch = make_batch(params, min(reps, 25), root=31)
    est = get_estimator("blup_hetvar")
    fast, ref = est.fit_batch(batch, "fast"), est.fit_batch(batch, "reference")
    assert_same(fast, ref)
    if "low_icc" in scenario:
        assert (~ref.admissible).sum() >= 2


def test_edge_replications_in_one_batch():
    # One ordinary replication, one with every group of size 1 (not applicable), one with
    # identical group means (tau2 = 0 on the boundary), in one unbalanced batch.
    rng = np.random.default_rng(4)
    G = 12
    normal = make_data(seed=2, n_groups=G, group_size={"uniform": [2, 6]})
    single = Dataset(group=np.arange(G), x=rng.standard_normal(G), y=rng.standard_normal(G),
                     z=rng.standard_normal(G))
    sizes = np.tile([3, 5], G // 2)
    group = np.repeat(np.arange(G), sizes)
    x = rng.standard_normal(group.size)
    x -= (np.bincount(group, x) / sizes)[group]
    flat = Dataset(group=group, x=x, y=rng.standard_normal(G), z=rng.standard_normal(G))
    batch = Batch.from_datasets([normal, single, flat])
    assert not batch.balanced
    for name, opts in (("blup", {"reml": True, "verify": False}),
                       ("blup", {"reml": False, "verify": False}), ("blup_hetvar", {})):
        est = get_estimator(name, **opts)
        fast, ref = est.fit_batch(batch, "fast"), est.fit_batch(batch, "reference")
        assert_same(fast, ref)
        assert ref.status[1] == "not_applicable"
        assert ref.reason[2].startswith("zero variance (boundary)")


@pytest.mark.parametrize("reml", [True, False])
def test_batched_deviance_and_derivatives(reml):
    # Grid deviance from per-size sums and the first/second derivatives used by the
    # batched Newton step, against the reference deviance (and central differences of it).
    batch = make_batch(SCENARIOS["unbalanced_low_icc_2z"][0], 3, root=31)
    n, xbar, sse = _batch_stats(batch, np.arange(3))
    dev = _grid_deviance(n, xbar, sse, reml)
    for r, data in enumerate(batch.datasets):
        nn, xb, ss = _group_stats(data.x[:, 0], data)
        ref = np.array([_neg2ll(g, nn, xb, ss, reml) for g in PROFILE_GRID])
        np.testing.assert_allclose(dev[r], ref, rtol=1e-12)
    for g in (0.02, 0.3, 2.0):
        h = 1e-4 * g
        d1, d2 = _batch_dneg2ll(np.full(3, g), n, xbar, sse, reml, second=True)
        up, _ = _batch_dneg2ll(np.full(3, g + h), n, xbar, sse, reml)
        down, _ = _batch_dneg2ll(np.full(3, g - h), n, xbar, sse, reml)
        # d2 against central differences of d1 (truncation ~h^2 relative, rounding
        # ~1e-13 / h), d1 against central differences of the reference deviance (h = 1e-5 g:
        # rounding ~1e-13 |f| / h, ~1e-5 absolute).
        np.testing.assert_allclose(d2, (up - down) / (2 * h), rtol=1e-6)
        h = 1e-5 * g
        for r, data in enumerate(batch.datasets):
            nn, xb, ss = _group_stats(data.x[:, 0], data)
            f = [_neg2ll(g + k * h, nn, xb, ss, reml) for k in (-1, 1)]
            np.testing.assert_allclose(d1[r], (f[1] - f[0]) / (2 * h), rtol=1e-6, atol=1e-5)


# ------------------------------------------------------------------ kernels: batch = reference
@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_oneway_batch_equals_the_reference_kernels(scenario, reml):
    # Newton to 1e-12 relative in gamma against Brent to 1e-15: variances agree to ~1e-11.
    params, _ = SCENARIOS[scenario]
    batch = make_batch(params, 12, root=8)
    fit = oneway_batch(batch, reml=reml)
    for r, data in enumerate(batch.datasets):
        solve = oneway_closed_form if data.balanced else oneway_profile
        ref = solve(data, reml=reml)
        assert fit.boundary[r] == ref.boundary
        np.testing.assert_allclose([fit.mu[r], fit.tau2[r], fit.sigma2[r]],
                                   [ref.mu, ref.tau2, ref.sigma2], rtol=1e-9, atol=1e-13)
        lam = ref.tau2 * data.sizes / (ref.sigma2 + ref.tau2 * data.sizes)
        np.testing.assert_allclose(fit.modes[r], lam * (data.xbar[:, 0] - ref.mu),
                                   rtol=1e-9, atol=1e-13)
    assert not fit.fallback.any()


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_hetvar_batch_equals_the_reference_kernel(scenario):
    # The same Fisher scoring from sufficient statistics: verdicts identical, estimates of
    # converged interior fits to ~1e-10 (the optimum is found to a gradient of 1e-6 in
    # flat directions, so compare on the scale of the variances).
    params, _ = SCENARIOS[scenario]
    batch = make_batch(params, 10, root=8)
    fit = hetvar_ml_batch(batch)
    for r, data in enumerate(batch.datasets):
        ref = hetvar_ml(data)
        assert (fit.converged[r], fit.boundary[r]) == (ref.converged, ref.boundary)
        J = ref.s2.size
        assert np.all(np.isnan(fit.s2[r, J:]))
        if ref.converged and not ref.boundary:
            scale = ref.tau2 + ref.s2.mean()
            np.testing.assert_allclose(fit.tau2[r], ref.tau2, rtol=0, atol=1e-7 * scale)
            np.testing.assert_allclose(fit.s2[r, :J], ref.s2, rtol=0, atol=1e-7 * scale)
            np.testing.assert_allclose(fit.mu[r], ref.mu, rtol=0, atol=1e-7 * np.sqrt(scale))
            np.testing.assert_allclose(fit.modes[r], ref.modes, rtol=0, atol=1e-7)
            np.testing.assert_allclose(fit.loglik[r], ref.loglik, rtol=1e-12)


# ------------------------------------------------------------------ bitwise across batches
#: Designs of the batch-composition test: balanced with n >= 8 (pairwise sums), unbalanced
#: with largest group sizes that vary between replications (padding), unbalanced at low
#: ICC (boundary fits, rounding-sensitive iterations).
COMPOSITION = {
    "balanced": dict(n_groups=30, group_size=10, icc=0.1, r_zxi=0.3),
    "unbalanced_widths": dict(n_groups=8, group_size={"uniform": [2, 14]}, icc=0.1, r_zxi=0.3),
    "unbalanced_low_icc": dict(n_groups=30, group_size={"uniform": [2, 12]}, icc=0.03,
                               r_zxi=0.3),
    # absent members (member ids): blup on its batch path, blup_hetvar one at a time
    "absent_members": dict(n_groups=30, group_size={"poisson": 8, "min": 2}, icc=0.1,
                           r_zxi=0.3, missing_mcar=0.2),
}
METHODS = {"blup_reml": ("blup", {"reml": True, "verify": False}),
           "blup_ml": ("blup", {"reml": False, "verify": False}),
           "blup_hetvar": ("blup_hetvar", {})}
N_REPS = 14


def _fit_in_chunks(est, datasets: list[Dataset], order: np.ndarray, chunk: int) -> dict:
    """Raw columns of every replication fitted in batches of ``chunk`` taken in ``order``."""
    parts = [est.fit_batch(Batch.from_datasets([datasets[i] for i in order[a : a + chunk]]),
                           "fast") for a in range(0, order.size, chunk)]
    back = np.argsort(order)
    cols = {"params": np.concatenate([p.params for p in parts])[back],
            "converged": np.concatenate([p.converged for p in parts])[back],
            "admissible": np.concatenate([p.admissible for p in parts])[back],
            "reason": np.concatenate([np.asarray(p.reason, dtype=object) for p in parts])[back]}
    for t in SE_TYPES:
        cols[t] = np.concatenate([p.bse[t] for p in parts])[back]
    return cols


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("design", list(COMPOSITION))
def test_bitwise_equal_whatever_the_batch(design, method):
    from micromacro_sim.design.scenario import Scenario
    from micromacro_sim.generate.dgp import generate
    from micromacro_sim.generate.seeding import replication_rng

    sc = Scenario.from_params(COMPOSITION[design])
    datasets = [generate(sc, replication_rng(13, sc, r)) for r in range(N_REPS)]
    widths = {int(d.sizes.max()) for d in datasets}
    if design == "unbalanced_widths":
        assert len(widths) >= 3  # companions of other widths pad a replication
    name, opts = METHODS[method]
    est = get_estimator(name, **opts)
    order = np.arange(N_REPS)
    shuffled = np.random.default_rng(1).permutation(N_REPS)
    alone = _fit_in_chunks(est, datasets, order, 1)
    assert np.isfinite(alone["params"]).any()
    for chunk, how in ((7, order), (1000, order), (7, shuffled)):
        other = _fit_in_chunks(est, datasets, how, chunk)
        for col, vals in alone.items():
            if vals.dtype == object:
                assert list(vals) == list(other[col]), (col, chunk)
            else:
                assert np.array_equal(vals, other[col], equal_nan=True), (col, chunk)


def test_steps_do_not_depend_on_a_singular_companion():
    # A singular information matrix in the batch must not change the others' steps: they
    # are solved by the same LAPACK call as without it; only the singular one takes the
    # reference's least-squares step.
    rng = np.random.default_rng(3)
    k, n = 5, 4
    B = rng.standard_normal((k, n, n))
    info = B @ B.transpose(0, 2, 1) + n * np.eye(n)
    grad = rng.standard_normal((k, n))
    free = np.ones((k, n), dtype=bool)
    free[1, 0] = False
    clean = _solve_steps(info, grad, free)
    info_s = info.copy()
    info_s[3] = 0.0  # singular companion
    mixed = _solve_steps(info_s, grad, free)
    keep = [0, 1, 2, 4]
    assert np.array_equal(mixed[keep], clean[keep])
    np.testing.assert_array_equal(mixed[3], 0.0)  # lstsq of a zero matrix
    assert mixed[1, 0] == 0.0  # a fixed parameter does not move


def test_balanced_replication_in_an_unbalanced_batch():
    # Balanced or not is decided per replication, as the reference decides per dataset:
    # the closed form, bit for bit as in a balanced batch.
    bal = make_data(seed=21, n_groups=12, group_size=4, icc=0.4)
    unb = make_data(seed=22, n_groups=12, group_size={"uniform": [2, 9]}, icc=0.4)
    for reml in (True, False):
        est = get_estimator("blup", reml=reml, verify=False)
        mixed = est.scores_batch(Batch.from_datasets([unb, bal]))
        alone = est.scores_batch(Batch.from_datasets([bal]))
        assert np.all(np.isfinite(alone.values)) and alone.admissible[0]
        assert np.array_equal(mixed.values[1], alone.values[0])
        ref = oneway_closed_form(bal, reml=reml)
        fit = oneway_batch(Batch.from_datasets([unb, bal]), reml=reml)
        np.testing.assert_allclose([fit.tau2[1], fit.sigma2[1]], [ref.tau2, ref.sigma2],
                                   rtol=1e-12)
