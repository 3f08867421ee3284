"""Fast engine of blup and blup_hetvar: replication by replication equal to the reference.

Truth here is the reference path (one dataset at a time: closed form / profile
likelihood with Brent's root search for blup, the per-dataset Fisher scoring for
blup_hetvar), itself checked against lme4 / glmmTMB in ``test_mixed.py``; plus finite
differences of the reference deviance for the batched derivatives.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_data

from micromacro_sim.batch import Batch
from micromacro_sim.dataset import Dataset
from micromacro_sim.estimators import get_estimator
from micromacro_sim.models.oneway import PROFILE_GRID, _group_stats, _neg2ll
from micromacro_sim.models.oneway_batch import _batch_dneg2ll, _batch_stats, _grid_deviance
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
