"""Fast engine of croon, zcond_score and sam against their reference fits, replication by
replication.

The reference path fits one dataset at a time (statsmodels OLS for the second step;
scipy's bounded search for lavaan's measurement bounds; central-difference information
for the SAM standard errors); the fast path computes closed forms over all replications
at once. Tolerances (estimates 1e-6, SEs 1e-5) are the engine contract; the observed
differences are about 1e-9 or less: summation order (rounding of 1e-15 relative,
amplified by the near-zero S_xixi, R or psi of low-ICC samples) and, for sam, exact
derivatives against central differences (truncation error about 1e-10). Flags and
reasons must be identical. The grid is chosen so that every inadmissible verdict occurs.
"""

from __future__ import annotations

import numpy as np
import pytest

from micromacro_sim.batch import Batch
from micromacro_sim.dataset import Dataset
from micromacro_sim.estimators import get_estimator
from tests.fastcheck import assert_same, make_batch

SCENARIOS = {
    "row16": dict(n_groups=100, group_size=10, icc=0.1, r_zxi=0.3),
    "r0": dict(n_groups=100, group_size=10, icc=0.1, r_zxi=0.0),
    "low_icc": dict(n_groups=50, group_size=5, icc=0.05, r_zxi=0.3),
    "low_icc_2z": dict(n_groups=50, group_size=5, icc=0.05, r_zxi=[0.3, 0.2], n_z=2),
    "no_z": dict(n_groups=50, group_size=5, icc=0.05, r_zxi=0.3, n_z=0),
    "unbalanced": dict(n_groups=50, group_size=[3, 12], icc=0.05, r_zxi=0.3),
    "unbalanced_2z": dict(n_groups=60, group_size={"uniform": [2, 20]}, icc=0.05,
                          r_zxi=[0.3, 0.0], n_z=2),
}
METHODS = [("croon", {}), ("zcond_score", {}), ("sam", {}), ("sam", {"bounds": "none"})]




@pytest.fixture(scope="module")
def batches() -> dict[str, Batch]:
    return {name: make_batch(p) for name, p in SCENARIOS.items()}




@pytest.mark.parametrize("scenario", list(SCENARIOS))
@pytest.mark.parametrize(("method", "options"), METHODS)
def test_fast_equals_reference(batches, scenario, method, options):
    batch = batches[scenario]
    est = get_estimator(method, **options)
    if not est.has_batch(batch.balanced):
        assert method != "croon"  # croon has both designs
        with pytest.raises(ValueError, match="no fast implementation"):
            est.fit_batch(batch, "fast")
        return
    assert_same(est.fit_batch(batch, "fast"), est.fit_batch(batch, "reference"))


def test_grid_exercises_every_verdict(batches):
    """The comparison above is only as good as its coverage: every reason must occur."""
    seen = {}
    for method, options in METHODS:
        est = get_estimator(method, **options)
        for batch in batches.values():
            if est.has_batch(batch.balanced):
                res = est.fit_batch(batch, "fast")
                seen.setdefault(method, set()).update(res.reason)
                # inadmissible croon/zcond first steps have no estimates, sam keeps them
                bad = ~res.admissible
                if bad.any():
                    assert np.all(np.isnan(res.params[bad])) == (method != "sam")
    assert seen["croon"] == {"", "S_xixi <= 0", "R <= 0"}
    assert seen["zcond_score"] == {"", "negative variance"}
    assert seen["sam"] == {"", "negative variance", "not positive definite"}


def test_sam_bounds_bind_and_match(batches):
    """lavaan's bound v <= Var_ML(x1) binds often at low ICC; the fast closed form for
    the bounded optimum then differs from the unbounded fit and equals the reference's
    numerical search."""
    batch = batches["row16"]
    std = get_estimator("sam").fit_batch(batch, "fast")
    free = get_estimator("sam", bounds="none").fit_batch(batch, "fast")
    differs = np.any(np.abs(std.params - free.params) > 1e-8, axis=1)
    assert 0 < differs.sum() < batch.n_reps


def _replace(d: Dataset, **fields) -> Dataset:
    base = dict(group=d.group, x=d.x, y=d.y, z=d.z, xi=d.xi, z_names=d.z_names)
    return Dataset(**{**base, **fields})


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")
def test_degenerate_replications_fall_back_to_reference():
    """A constant Z (singular V_ZZ: croon and sam raise in the reference, zcond's least
    squares takes the minimum-norm solution) and x constant within groups (v = 0) in a
    batch of ordinary replications: the fast result must splice in exactly the
    reference's outcome for them."""
    good = make_batch(SCENARIOS["row16"], reps=4).datasets
    d0 = good[0]
    const_z = _replace(good[1], z=np.ones_like(d0.z))
    no_within = _replace(good[2], x=np.repeat(good[2].xbar[:, 0], good[2].sizes))
    batch = Batch.from_datasets([d0, const_z, no_within, good[3]])
    for method, options in METHODS:
        est = get_estimator(method, **options)
        fast, ref = est.fit_batch(batch, "fast"), est.fit_batch(batch, "reference")
        assert_same(fast, ref)
        assert fast.reason[0] == "" and fast.reason[3] == ""
        if method != "zcond_score":
            assert fast.reason[1].startswith("error: LinAlgError")
            assert not fast.converged[1]
    unbalanced = make_batch(SCENARIOS["unbalanced"], reps=3).datasets
    batch = Batch.from_datasets([unbalanced[0], _replace(unbalanced[1], z=np.zeros_like(
        unbalanced[1].z)), unbalanced[2]])
    est = get_estimator("croon")
    assert_same(est.fit_batch(batch, "fast"), est.fit_batch(batch, "reference"))
