"""The moment-correction kernels (CV adjustment, local SAM, Z-conditional scores): batch
against reference, and batch composition.

Kernel level: each batch kernel of :mod:`micromacro_sim.models.croon`,
:mod:`micromacro_sim.models.sam` and :mod:`micromacro_sim.models.moments` against its
per-dataset reference. Method level: the fast engine of croon, zcond_score and sam
against their reference fits, replication by replication.

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

from micromacro_sim.core.status import Reason
from micromacro_sim.estimators import SE_TYPES, get_estimator
from micromacro_sim.generate.batch import Batch
from micromacro_sim.generate.dataset import Dataset
from micromacro_sim.generate.padding import member_sums
from micromacro_sim.models.croon import cv_adjustment, cv_adjustment_batch
from micromacro_sim.models.linalg import quad_form
from micromacro_sim.models.moments import (
    ml_moments,
    ml_moments_batch,
    zcond_scores,
    zcond_scores_batch,
)
from micromacro_sim.models.sam import sam_fit, sam_fit_batch
from tests.fastcheck import EST_TOL, SE_TOL, assert_same, make_batch

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
            if batch.balanced:  # the closed forms' verdicts (FIML: test_fiml_lavaan.py)
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


# ---- kernel level: batch against reference ---------------------------------------------


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_cv_adjustment_batch_equals_reference(batches, scenario):
    batch = batches[scenario]
    fast = cv_adjustment_batch(batch)
    assert not fast.fallback.any()
    for r, d in enumerate(batch.datasets):
        ref = cv_adjustment(d)
        assert fast.s_nonpositive[r] == (ref.reason is Reason.S_XIXI_NONPOSITIVE)
        assert fast.r_nonpositive[r] == (ref.reason is Reason.R_NONPOSITIVE)
        np.testing.assert_allclose(fast.values[r], ref.values[:, 0], rtol=0, atol=1e-9)


@pytest.mark.parametrize("scenario", [s for s in SCENARIOS if "unbalanced" not in s])
def test_ml_moments_and_zcond_batch_equal_reference(batches, scenario):
    batch = batches[scenario]
    mm, zc = ml_moments_batch(batch), zcond_scores_batch(batch)
    assert not zc.fallback.any()
    for r, d in enumerate(batch.datasets):
        one, ref = ml_moments(d), zcond_scores(d)
        for key in ("v", "psi", "mu_x", "a"):
            assert mm[key][r] == pytest.approx(one[key], rel=1e-12, abs=1e-14), key
        np.testing.assert_allclose(mm["var_items"][r], one["var_items"], rtol=1e-12)
        assert zc.negative[r] == ref.negative
        np.testing.assert_allclose(zc.values[r], ref.values, rtol=0, atol=1e-9)


@pytest.mark.parametrize("scenario", ["row16", "low_icc", "low_icc_2z", "no_z"])
@pytest.mark.parametrize("bounds", ["standard", "none"])
def test_sam_fit_batch_equals_reference(batches, scenario, bounds):
    batch = batches[scenario]
    out, fallback = sam_fit_batch(batch, bounds=bounds)
    for r in np.flatnonzero(~fallback):
        ref = sam_fit(batch.datasets[r], bounds=bounds)
        np.testing.assert_allclose(out["params"][r], ref["params"], rtol=0, atol=EST_TOL)
        np.testing.assert_allclose(out["se"][r], ref["se"], rtol=0, atol=SE_TOL)
        for key in ("lambda", "psi_mm", "psi_mm_unbounded", "v"):
            assert out[key][r] == pytest.approx(ref[key], rel=1e-9, abs=1e-12), key


def test_member_sums_ignore_padding():
    """Group sums over exactly the members: equal to a balanced stack's sums, whatever
    width the groups are padded to (a plain sum over the padded axis is not)."""
    rng = np.random.default_rng(4)
    sizes = rng.integers(2, 30, size=(6, 9))
    m = int(sizes.max())
    narrow = np.zeros((6, 9, m))
    for (r, g), s in np.ndenumerate(sizes):
        narrow[r, g, :s] = rng.normal(size=s)
    wide = np.concatenate([narrow, np.zeros((6, 9, 13))], axis=2)
    sums = member_sums(narrow, sizes)
    np.testing.assert_array_equal(member_sums(wide, sizes), sums)
    for (r, g), s in np.ndenumerate(sizes):
        assert sums[r, g] == narrow[r, g, :s].sum()
    assert not np.array_equal(narrow.sum(axis=2), wide.sum(axis=2))


def test_quad_form_is_row_major_accumulation():
    rng = np.random.default_rng(5)
    a, m, b = rng.normal(size=(7, 3)), rng.normal(size=(7, 3, 3)), rng.normal(size=(7, 3))
    want = np.array([sum(a[r, i] * m[r, i, j] * b[r, j] for i in range(3) for j in range(3))
                     for r in range(7)])
    np.testing.assert_array_equal(quad_form(a, m, b), want)
    np.testing.assert_array_equal(quad_form(a[:1], m[:1], b[:1]), want[:1])


# ---- batch composition: a replication's numbers do not depend on its companions --------

COMPOSITION = {
    "balanced_q0": dict(n_groups=30, group_size=9, icc=0.1, r_zxi=0.0, n_z=0),
    "balanced_q1": dict(n_groups=30, group_size=4, icc=0.1, r_zxi=0.3),
    "balanced_q2": dict(n_groups=30, group_size=9, icc=0.1, r_zxi=[0.3, 0.1], n_z=2),
    "unbalanced_q0": dict(n_groups=12, group_size={"uniform": [2, 30]}, icc=0.2, r_zxi=0.0,
                          n_z=0),
    "unbalanced_q1": dict(n_groups=12, group_size={"uniform": [2, 30]}, icc=0.2, r_zxi=0.3),
    "unbalanced_q2": dict(n_groups=12, group_size={"uniform": [2, 30]}, icc=0.2,
                          r_zxi=[0.3, 0.1], n_z=2),
}
COMPOSED = ["croon", "sam", "zcond_score", "unadjusted", "true"]


@pytest.fixture(scope="module")
def composition_data() -> dict[str, tuple]:
    return {name: make_batch(p, reps=30, root=11).datasets for name, p in COMPOSITION.items()}


def _in_chunks(est, datasets, chunk):
    parts = [est.fit_batch(Batch.from_datasets(datasets[i : i + chunk]), "fast")
             for i in range(0, len(datasets), chunk)]
    return (np.concatenate([p.params for p in parts]),
            {t: np.concatenate([p.bse[t] for p in parts]) for t in SE_TYPES},
            [f for p in parts for f in p.flags])


@pytest.mark.parametrize("scenario", list(COMPOSITION))
@pytest.mark.parametrize("method", COMPOSED)
def test_bitwise_equal_across_chunk_sizes(composition_data, scenario, method):
    """Chunk sizes 1, 7 and 1000 give bitwise the same estimates, SEs and flags (in the
    unbalanced designs the chunks pad to different widths)."""
    datasets = composition_data[scenario]
    est = get_estimator(method)
    if not est.has_batch(datasets[0].balanced):
        pytest.skip(f"{method} has no batch path for this design")
    params, bse, flags = _in_chunks(est, datasets, 1)
    assert np.isfinite(params).any()
    for chunk in (7, 1000):
        p, b, f = _in_chunks(est, datasets, chunk)
        assert np.array_equal(p, params, equal_nan=True), chunk
        for t in SE_TYPES:
            assert np.array_equal(b[t], bse[t], equal_nan=True), (chunk, t)
        assert f == flags
