"""Method ``tspa``: stage 1, the stage-2 kernel (derivatives, bits, large G), the estimator."""

from __future__ import annotations

import numpy as np
import pytest

from micromacro_sim.core.status import Reason
from micromacro_sim.design.scenario import Scenario
from micromacro_sim.estimators import get_estimator
from micromacro_sim.estimators.tspa import _verdicts
from micromacro_sim.generate.batch import Batch
from micromacro_sim.generate.dgp import generate
from micromacro_sim.models import tspa as T

UNBAL = {"n_groups": 40, "group_size": {"poisson": 10, "min": 2}, "icc": 0.2, "r_zxi": 0.3,
         "missing_mcar": 0.2}
Z2 = {"n_groups": 30, "group_size": {"uniform": [3, 30]}, "icc": 0.2, "n_z": 2,
      "r_zxi": [0.3, 0.1], "r_zz": 0.2}


def draw(params, seed):
    return generate(Scenario.from_params(params), np.random.default_rng(seed))


def stacked(datasets):
    st = [T.stage1(d.group, d.x[:, 0], d.n_groups) for d in datasets]
    return (np.stack([a.score for a in st]), np.stack([a.ev for a in st]),
            np.stack([d.z for d in datasets]), np.stack([d.y for d in datasets]))


def test_stage1_is_the_pooled_within_variance_over_n():
    data = draw(UNBAL, 1)
    st = T.stage1(data.group, data.x[:, 0], data.n_groups)
    groups = [data.x[data.group == g, 0] for g in range(data.n_groups)]
    ssw = sum(((v - v.mean()) ** 2).sum() for v in groups)
    s2w = ssw / (data.n_persons - data.n_groups)
    np.testing.assert_allclose(st.sigma2_w, s2w, rtol=1e-12)
    np.testing.assert_allclose(st.score, [v.mean() for v in groups], rtol=1e-12)
    np.testing.assert_allclose(st.ev, [s2w / len(v) for v in groups], rtol=1e-12)
    np.testing.assert_array_equal(st.sizes, data.sizes)


@pytest.mark.parametrize("params", [UNBAL, Z2])
def test_derivatives_match_finite_differences(params):
    s, ev, z, y = stacked([draw(params, r) for r in range(3)])
    d = T._Data.build(s, ev, z, y)
    th = T._start(d)
    g, H, _ = T._derivs(d, th)
    eps = 1e-6
    for j in range(th.shape[1]):
        up, dn = th.copy(), th.copy()
        up[:, j] += eps
        dn[:, j] -= eps
        np.testing.assert_allclose(g[:, j], (T.m2ll(d, up) - T.m2ll(d, dn)) / (2 * eps),
                                   atol=1e-5 * (1 + np.abs(g).max()))
        col = (T._derivs(d, up)[0] - T._derivs(d, dn)[0]) / (2 * eps)
        np.testing.assert_allclose(H[:, :, j], col, atol=1e-5 * (1 + np.abs(H).max()))


@pytest.mark.parametrize("params", [UNBAL, Z2])
def test_a_replication_is_bitwise_the_same_alone_or_in_a_batch(params):
    s, ev, z, y = stacked([draw(params, r) for r in range(7)])
    whole = T.fit_tspa(s, ev, z, y)
    assert whole.converged.all()
    for r in range(7):
        one = T.fit_tspa(s[r:r + 1], ev[r:r + 1], z[r:r + 1], y[r:r + 1])
        assert np.array_equal(one.params[0], whole.params[r])
        assert np.array_equal(one.se[0], whole.se[r], equal_nan=True)
        assert np.array_equal(one.theta[0], whole.theta[r])


def test_large_g_recovers_b_xi():
    params = {"n_groups": 5000, "group_size": {"poisson": 10, "min": 2}, "icc": 0.2,
              "r_zxi": 0.3, "missing_mcar": 0.2}
    sc = Scenario.from_params(params)
    res = get_estimator("tspa").fit(generate(sc, np.random.default_rng(5)))
    assert res.ok
    b_xi, se = res.params[-1], res.se("classical")[-1]
    assert abs(b_xi - sc.beta_xi[0]) < 4 * se
    assert se < 0.05


def test_estimator_fit_equals_kernel_and_batch():
    datasets = [draw(UNBAL, r) for r in range(4)]
    est = get_estimator("tspa")
    res = est.fit(datasets[0])
    fit = T.fit_tspa(*(a[:1] for a in stacked(datasets)))
    assert np.array_equal(res.params, fit.params[0])
    assert np.array_equal(res.se("classical"), fit.se[0])
    batch = est.fit_batch(Batch.from_datasets(datasets), "fast")
    assert batch.engine == "fast"
    assert np.array_equal(batch.params[0], res.params)


@pytest.mark.parametrize("inflate", [1.0, 50.0])
def test_negative_psi_is_flagged(inflate):
    data = draw({"n_groups": 20, "group_size": 3, "icc": 0.01, "r_zxi": 0.3}, 0)
    st = T.stage1(data.group, data.x[:, 0], data.n_groups)
    # error variances far larger than the spread of the scores: psi < 0 at the optimum
    fit = T.fit_tspa(st.score[None], inflate * st.ev[None], data.z[None], data.y[None])
    se, conv, adm, flags = _verdicts(fit)
    assert not adm[0] and np.all(np.isnan(se[0]))
    assert [f.code for f in flags[0]] == [Reason.NEGATIVE_VARIANCE]


def test_singletons_are_not_applicable():
    data = draw({"n_groups": 30, "group_size": 1, "icc": 0.3, "r_zxi": 0.3}, 0)
    res = get_estimator("tspa").fit(data)
    assert res.status.value == "not_applicable"


@pytest.mark.parametrize("params", [
    {"n_groups": 100, "group_size": 10, "icc": 0.1},
    {"n_groups": 20, "group_size": 5, "icc": 0.1, "n_z": 2, "r_zxi": [0.3, 0.1], "r_zz": 0.2},
])
def test_closed_form_is_the_newton_optimum_with_its_information(params):
    """Equal error variances (complete balanced data): the closed form is the exact ML,
    never a worse optimum than Newton's, and its covariance equals 2 inv(H) at it."""
    s, ev, z, y = stacked([draw({**params, "r_zxi": params.get("r_zxi", 0.3)}, seed)
                           for seed in range(60)])
    closed = T.fit_tspa(s, ev, z, y)
    newton = T.fit_tspa(s, ev, z, y, closed_form=False)
    assert np.array_equal(closed.proper, newton.proper)
    assert np.array_equal(closed.converged, newton.converged)
    both = closed.proper & closed.converged
    assert both.sum() >= 25 and np.all(closed.iterations[both] == 0)
    assert np.all(closed.m2ll[both] <= newton.m2ll[both] + 1e-10)
    # Newton stops at a decrement of 1e-11: its estimates are within 1e-5 SE of the ML
    np.testing.assert_array_less(np.abs(closed.params - newton.params)[both] / newton.se[both],
                                 1e-5)
    # where Newton starts at the ML (iteration 0) the two agree to rounding
    exact = both & (newton.iterations == 0)
    np.testing.assert_allclose(closed.params[exact], newton.params[exact], rtol=1e-10)
    np.testing.assert_allclose(closed.se[exact], newton.se[exact], rtol=1e-8)
