"""sem_2level under a shift of location: centred fits moved back to the data's location.

The model is location-invariant: shifting x by c_x, z by c_z and y by c_y leaves the slopes,
the variance components and their SEs as they are and moves the intercept to
b0 + c_y - c'b (c = (c_z, c_x)) with variance t' V t, t = (1, -c), V the covariance of the
unshifted estimates. The kernels fit the centred data and move the intercept back
(``centre`` / ``uncentre`` of ``models.twolevel_batch``) in the batch path and the
per-dataset path alike, so x with a mean of 1e7 and an SD of 1 fits as well as x itself.

``lavaan_fixed_x`` reproduces lavaan's default, whose EM for the fixed moments starts at
the zero of the data: it is invariant to shifts of y and z, not of x (lavaan's fixed mean
of x^B is n/(n + 1) of the grand mean for balanced groups, wherever x's zero lies).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import micromacro_sim
from micromacro_sim.api.userdata import prepare
from micromacro_sim.design.scenario import Scenario
from micromacro_sim.estimators import get_estimator
from micromacro_sim.generate.batch import Batch
from micromacro_sim.generate.dataset import Dataset
from micromacro_sim.generate.dgp import generate
from micromacro_sim.models.twolevel_batch import centre, fit_batch_two_level, uncentre
from micromacro_sim.models.twolevel_lavaan import lavaan_h1_moments
from micromacro_sim.models.twolevel_solve import TwoLevelEstimate, estimate
from tests.fastcheck import make_batch

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "example_teams.csv"
SHIFTS = (1e3, 1e6, 1e7)
REL = 1e-6
COLUMNS = dict(group="team", member="member", x="climate", z="tenure", y="performance")

#: one x and one z (balanced, Clark's row 16 at G = 50), one x and two z (unbalanced),
#: two x and two z (unbalanced; the several-x kernels)
DESIGNS = {
    "row16": dict(n_groups=50, group_size=10, icc=0.1, r_zxi=0.3),
    "unbalanced_z2": dict(n_groups=60, group_size={"uniform": [2, 12]}, icc=0.15, n_z=2,
                          r_zxi=[0.3, 0.2], beta_z=[0.3, 0.1]),
    "x2_z2": dict(n_groups=60, group_size={"uniform": [3, 9]}, icc=0.3, n_x=2, n_z=2,
                  r_zxi=[[0.3, 0.2], [0.1, 0.0]], beta_xi=[0.3, 0.2], beta_z=[0.3, 0.1],
                  r_xixi=0.3),
}


def example() -> Dataset:
    return prepare(pd.read_csv(EXAMPLE), **COLUMNS).data


def drawn(design: str, r: int = 0) -> Dataset:
    return generate(Scenario.from_params(DESIGNS[design]), np.random.default_rng([11, r]))


def shifted(data: Dataset, *, x: float = 0.0, z: float = 0.0, y: float = 0.0) -> Dataset:
    return Dataset(group=data.group, x=data.x + x, y=data.y + y, z=data.z + z,
                   x_names=data.x_names, z_names=data.z_names)


def moved(base: TwoLevelEstimate, data: Dataset, *, x: float = 0.0, z: float = 0.0,
          y: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The estimates and SEs of ``base`` moved to data shifted by (x, z, y): the intercept
    by c_y - c'b, its variance t' V t with the full covariance V of ``base``."""
    c = np.concatenate([np.full(data.n_z, z), np.full(data.n_x, x)])
    params = base.params.copy()
    params[0] += y - c @ base.params[1:]
    t = np.concatenate([[1.0], -c])
    se = base.se.copy()
    se[0] = np.sqrt(t @ base.cov @ t)
    return params, se


def assert_moved(res: TwoLevelEstimate, base: TwoLevelEstimate, data: Dataset,
                 **shift: float) -> None:
    assert res.reasons == () and res.se is not None, res.reasons
    params, se = moved(base, data, **shift)
    np.testing.assert_allclose(res.params, params, rtol=REL, atol=0)
    np.testing.assert_allclose(res.se, se, rtol=REL, atol=0)


@pytest.mark.parametrize("lav", [False, True])
def test_example_from_the_issue(lav):
    # x at 1e6 and 1e7 made the joint ML not converged (SE NaN); now every shift is the
    # unshifted fit with the intercept moved (lavaan_fixed_x: shifts of z and y)
    frame = pd.read_csv(EXAMPLE)
    spec = {"m": {"method": "sem_2level", "lavaan_fixed_x": lav}}
    column = "tenure" if lav else "climate"
    base = estimate(example(), lavaan_fixed_x=lav)
    assert base.reasons == ()
    for s in (0.0, *SHIFTS):
        d = frame.copy()
        d[column] += s
        out = micromacro_sim.fit(d, method=spec, **COLUMNS).to_frame()
        assert list(out.status) == ["ok"] * 3 and not any(out.reason_code), (s, out)
        want, se = moved(base, example(), **({"z": s} if lav else {"x": s}))
        np.testing.assert_allclose(out.estimate, want, rtol=REL, atol=0)
        np.testing.assert_allclose(out.se, se, rtol=REL, atol=0)


@pytest.mark.parametrize("design", list(DESIGNS))
def test_generated_shifts_of_x_z_and_y(design):
    for r in range(2):
        data = drawn(design, r)
        base = estimate(data)
        assert base.reasons == ()
        for s in SHIFTS:
            for what in ("x", "z", "y"):
                assert_moved(estimate(shifted(data, **{what: s})), base, data, **{what: s})
        assert_moved(estimate(shifted(data, x=1e6, z=-1e7, y=1e6)), base, data, x=1e6,
                     z=-1e7, y=1e6)


@pytest.mark.parametrize("design", ["row16", "x2_z2"])
def test_lavaan_fixed_x_shifts_of_z_and_y(design):
    data = drawn(design)
    base = estimate(data, lavaan_fixed_x=True)
    assert base.reasons == ()
    for s in SHIFTS:
        assert_moved(estimate(shifted(data, z=s, y=-s), lavaan_fixed_x=True), base, data,
                     z=s, y=-s)


def test_lavaan_em_starts_at_the_datas_own_zero():
    # lavaan's EM puts n/(n + 1) of the grand mean of x in the between mean (balanced
    # groups), wherever the zero of x lies: the fixed moments move with a shift of x
    # by n/(n + 1) of it, and the centred fit keeps lavaan's start (origin)
    data = drawn("row16")
    n = int(data.sizes[0])
    for s in (0.0, 0.5, 1e3):
        moments = lavaan_h1_moments(shifted(data, x=s))
        assert moments[-1] == pytest.approx(n / (n + 1) * (data.x.mean() + s), rel=1e-9)
        c, shift = centre(shifted(data, x=s))
        np.testing.assert_allclose(lavaan_h1_moments(c, -shift) + [shift[1], 0, 0, 0, shift[2]],
                                   moments, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(np.delete(moments, [0, 4]),
                                   np.delete(lavaan_h1_moments(data), [0, 4]), rtol=1e-8)


def test_uncentre_is_the_full_covariance_transform():
    rng = np.random.default_rng(3)
    R, k = 4, 4
    params = rng.normal(size=(R, k))
    A = rng.normal(size=(R, k, k))
    cov = A @ A.transpose(0, 2, 1)
    shift = rng.normal(size=(R, k)) * [1e6, 1, 1e3, 1e7]
    out, vo = uncentre(params, cov, shift)
    for r in range(R):
        c = shift[r, 1:]
        T = np.eye(k)
        T[0, 1:] = -c
        assert out[r, 0] == pytest.approx(params[r, 0] + shift[r, 0] - c @ params[r, 1:])
        np.testing.assert_array_equal(out[r, 1:], params[r, 1:])
        np.testing.assert_allclose(vo[r], T @ cov[r] @ T.T, rtol=1e-12)


def _shifted_batch(params: dict, reps: int, s: float) -> Batch:
    return Batch.from_datasets([shifted(d, x=s, z=-s, y=s)
                                for d in make_batch(params, reps).datasets])


def _assert_close(fast, ref) -> None:
    assert list(fast.reason) == list(ref.reason)
    np.testing.assert_array_equal(np.isnan(fast.params), np.isnan(ref.params))
    np.testing.assert_allclose(fast.params, ref.params, rtol=REL, atol=1e-9)
    se_f, se_r = fast.bse["classical"], ref.bse["classical"]
    np.testing.assert_array_equal(np.isnan(se_f), np.isnan(se_r))
    np.testing.assert_allclose(se_f, se_r, rtol=REL, atol=1e-9)


@pytest.mark.parametrize("design", ["row16", "unbalanced_z2"])
@pytest.mark.parametrize("s", [0.0, 1e6, 1e7])
def test_batch_equals_reference_when_shifted(design, s):
    batch = _shifted_batch(DESIGNS[design], 8, s)
    _, _, ok = fit_batch_two_level(batch)
    assert ok.sum() >= 6  # the batch solution itself, not the per-dataset fallback
    est = get_estimator("sem_2level")
    fast, ref = est.fit_batch(batch, "fast"), est.fit_batch(batch, "reference")
    _assert_close(fast, ref)
    assert np.all(fast.reason[ok] == "")


@pytest.mark.parametrize("design", ["row16", "unbalanced_z2"])
@pytest.mark.parametrize("s", [0.0, 1e7])
def test_replication_alone_or_in_a_batch_gives_the_same_bits(design, s):
    datasets = _shifted_batch(DESIGNS[design], 9, s).datasets
    est = get_estimator("sem_2level")
    out = {}
    for chunk in (1, 4, 9):
        parts = [est.fit_batch(Batch.from_datasets(datasets[i : i + chunk]), "fast")
                 for i in range(0, len(datasets), chunk)]
        out[chunk] = (np.concatenate([p.params for p in parts]),
                      np.concatenate([p.bse["classical"] for p in parts]),
                      sum((list(p.reason) for p in parts), []))
    for chunk in (1, 4):
        assert np.array_equal(out[chunk][0], out[9][0], equal_nan=True)
        assert np.array_equal(out[chunk][1], out[9][1], equal_nan=True)
        assert out[chunk][2] == out[9][2]
