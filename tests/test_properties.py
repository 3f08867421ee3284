"""Property-based tests of the generator and scenarios, and edge scenarios end to end."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from micromacro_sim.design.config import MethodSpec
from micromacro_sim.design.policy import Policy
from micromacro_sim.design.scenario import Scenario
from micromacro_sim.estimators import available
from micromacro_sim.generate.dgp import generate
from micromacro_sim.generate.seeding import replication_rng
from micromacro_sim.run.chunk import simulate_chunk

sizes = st.one_of(
    st.integers(1, 12),
    st.lists(st.integers(1, 12), min_size=1, max_size=5),
    st.tuples(st.integers(1, 6), st.integers(0, 6)).map(
        lambda t: {"uniform": [t[0], t[0] + t[1]]}),
)


@st.composite
def scenarios(draw):
    n_z = draw(st.integers(0, 3))
    r = draw(st.floats(-0.5, 0.5)) if n_z else 0.0
    params = {
        "n_groups": draw(st.integers(3, 40)),
        "group_size": draw(sizes),
        "icc": draw(st.floats(0.01, 0.99)),
        "r_zxi": [r] * n_z if n_z else [],
        "n_z": n_z,
        "r_zz": draw(st.floats(0.0, 0.4)) if n_z > 1 else 0.0,
        "beta_xi": draw(st.floats(-1, 1)),
        "var_xi": draw(st.floats(0.1, 4)),
    }
    return Scenario.from_params(params)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sc=scenarios(), seed=st.integers(0, 2**32 - 1), rep=st.integers(0, 10**6))
def test_generator_invariants(sc, seed, rep):
    d = generate(sc, replication_rng(seed, sc, rep))
    assert d.n_groups == sc.n_groups and d.n_z == sc.n_z
    assert d.n_persons == int(d.sizes.sum()) and d.sizes.min() >= sc.group_size.min_size
    assert np.all(np.diff(d.group) >= 0)
    assert np.all(np.isfinite(d.x)) and np.all(np.isfinite(d.y)) and np.all(np.isfinite(d.z))
    again = generate(sc, replication_rng(seed, sc, rep))
    assert np.array_equal(d.x, again.x) and np.array_equal(d.y, again.y)
    # the structural error has the configured variance scale: |eps| is not absurd
    eps = d.y - sc.beta0 - d.z @ np.asarray(sc.beta_z) - sc.beta_xi * d.xi[:, 0]
    assert np.all(np.abs(eps) < 10 * np.sqrt(sc.sigma2_eps))


@settings(max_examples=60, deadline=None)
@given(sc=scenarios())
def test_scenario_round_trip_and_derived_values(sc):
    again = Scenario.from_params(sc.to_params())
    assert again.key == sc.key and again == sc
    assert 0 < sc.reliability < 1 and 0 < sc.icc < 1
    assert sc.reliability >= sc.icc - 1e-12  # a mean of >= 1 member is at least as reliable
    np.linalg.cholesky(sc.correlation)


EDGE = [
    dict(n_groups=3, group_size=4, icc=0.3, r_zxi=0.3),
    dict(n_groups=20, group_size=1, icc=0.3, r_zxi=0.3),
    dict(n_groups=20, group_size=2, icc=0.3, r_zxi=0.3),
    dict(n_groups=20, group_size=5, icc=0.001, r_zxi=0.3),
    dict(n_groups=20, group_size=5, icc=0.999, r_zxi=0.3),
    dict(n_groups=20, group_size=5, icc=0.2, r_zxi=0.99),
    dict(n_groups=20, group_size={"uniform": [1, 3]}, icc=0.2, r_zxi=0.3),
]


@pytest.mark.parametrize("params", EDGE, ids=[str(i) for i in range(len(EDGE))])
def test_edge_scenarios_never_crash_nor_hide_nan(params):
    sc = Scenario.from_params(params)
    methods = tuple(MethodSpec(m, m) for m in available())
    est, ds = simulate_chunk(sc, range(6), methods, 5, Policy(mode="flag", gate="none"))
    est, ds = est.to_pandas(), ds.to_pandas()
    assert len(ds) == 6
    nan_rows = est[~np.isfinite(est["estimate"])]
    assert not nan_rows["admissible"].any(), "a missing estimate must be flagged"
    assert (nan_rows["reason"] != "").all(), "a flagged fit must say why"
    ok = est[est["admissible"] & est["converged"]]
    assert np.all(np.isfinite(ok["estimate"]))
