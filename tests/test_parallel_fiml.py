"""Full-information ML of the parallel model (sem, zcond_score with absent members).

Independent truth: on complete balanced data the FIML optimum is the closed form of the
ML estimates (SPEC 3.1) and its observed information gives lavaan's expected-information
SEs (this model's between part is saturated); the analytic derivatives against complex-
step derivatives of the log-likelihood; the R cross-checks are tests/test_fiml_lavaan.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from micromacro_sim.design.scenario import Scenario
from micromacro_sim.estimators.sem import SEM
from micromacro_sim.estimators.zcond import ZConditionalScore
from micromacro_sim.generate.batch import Batch
from micromacro_sim.generate.dataset import Dataset
from micromacro_sim.generate.dgp import generate
from micromacro_sim.models.moments import zcond_scores
from micromacro_sim.models.parallel_fiml import (
    cross_hessian,
    gls,
    loglik_at,
    mean_score,
    prepare,
    residual_stats,
    score_at,
)
from micromacro_sim.models.wide_sem import sem_closed_form, sem_se
from micromacro_sim.models.wide_sem_fiml import sem_fiml, zcond_fiml


def _draw(seeds, **params):
    base = dict(n_groups=60, group_size=6, icc=0.2, r_zxi=0.3)
    sc = Scenario.from_params({**base, **params})
    return [generate(sc, np.random.default_rng(s)) for s in seeds]


@pytest.mark.parametrize("params", [{}, {"n_z": 2}, {"icc": 0.5, "n_groups": 40}])
def test_complete_data_reach_the_closed_form(params):
    ds = _draw(range(4), **params)
    b = Batch.from_datasets(ds)
    x, mask, widths = b.positional
    out = sem_fiml(x, mask, widths, b.y, b.z)
    zc = zcond_fiml(x, mask, widths, b.z)
    for r, d in enumerate(ds):
        sol = sem_closed_form(d.wide(0), d.y, d.z)
        if sol.problems():
            continue
        closed = np.concatenate([[sol.b0], sol.b_z, [sol.b_xi]])
        np.testing.assert_allclose(out["params"][r], closed, rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(out["se"][r], sem_se(sol, d.sizes[0], d.n_groups),
                                   rtol=1e-6)
        np.testing.assert_allclose(zc["values"][r], zcond_scores(d).values, rtol=1e-9,
                                   atol=1e-11)


def test_a_replication_gives_the_same_bits_in_any_stack():
    ds = _draw(range(6), missing_mcar=0.25) + _draw(range(6, 9),
                                                     group_size={"poisson": 6, "min": 2})
    full = Batch.from_datasets(ds)
    x, mask, widths = full.positional
    ref = sem_fiml(x, mask, widths, full.y, full.z)
    zref = zcond_fiml(x, mask, widths, full.z)
    for rows in ([3], [8, 3], [0, 3, 5, 7], list(range(len(ds)))[::-1]):
        b = Batch.from_datasets([ds[r] for r in rows])
        x, mask, widths = b.positional
        out = sem_fiml(x, mask, widths, b.y, b.z)
        zout = zcond_fiml(x, mask, widths, b.z)
        for i, r in enumerate(rows):
            for key in ("params", "se", "loglik"):
                assert np.array_equal(out[key][i], ref[key][r], equal_nan=True), (key, rows)
            assert np.array_equal(zout["values"][i], zref["values"][r], equal_nan=True)


@pytest.mark.parametrize("with_y", [True, False])
def test_analytic_derivatives_match_complex_steps(with_y):
    d = _draw([3], missing_mcar=0.3, n_z=2)[0]
    v, m = d.wide_positions(0)
    data = prepare(v[None], m[None], d.z[None], d.y[None] if with_y else None)
    s = np.array([[2.5, 0.4, 0.6, 0.3]]) if with_y else np.array([[2.5, 0.4]])
    mm, _ = gls(s, data)
    mm = mm + 0.05  # away from the GLS solution: the mean score is not zero there
    stats = residual_stats(mm, data)
    h = 1e-30
    for j in range(s.shape[1]):
        sc = s.astype(complex)
        sc[:, j] += 1j * h
        np.testing.assert_allclose(score_at(s, stats, data)[:, j],
                                   loglik_at(sc, stats, data).imag / h, rtol=1e-10)
        np.testing.assert_allclose(cross_hessian(mm, s, data)[:, :, j],
                                   mean_score(mm, sc, data).imag / h, rtol=1e-9, atol=1e-9)


def test_methods_route_complete_replications_to_the_closed_form():
    ds = _draw(range(30), missing_mcar=0.02, n_groups=20, group_size=3)
    b = Batch.from_datasets(ds)
    assert b.complete.any() and not b.complete.all()
    for est in (SEM(), ZConditionalScore()):
        res = est.fit_batch(b)
        for r in np.flatnonzero(b.complete):
            one = est.fit(ds[r])  # the closed form (zcond_score: OLS one dataset at a time)
            np.testing.assert_allclose(res.params[r], one.params, rtol=1e-13, atol=1e-15)
            assert "psi_r" in one.extras or "residual_phi" in one.extras  # closed form
        assert (res.status == "ok").mean() > 0.5


def test_no_group_of_two_is_not_identified():
    full = _draw([1], n_groups=30, group_size=3)[0]
    keep = np.arange(90) % 3 == np.repeat(np.arange(30) % 3, 3)  # one member per group
    d = Dataset(group=full.group[keep], x=full.x[keep], y=full.y, z=full.z,
                member=full.position[keep])
    assert not d.complete
    # every group of one member: v and Var(lv) are not separately identified
    for est in (SEM(), ZConditionalScore()):
        res = est.fit(d)
        assert res.status.value == "not_applicable"
        assert res.flags[0].code.value == "too_few_members"
