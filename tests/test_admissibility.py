"""The redraw policy: batched gate evaluation gives exactly the per-replication draws."""

from __future__ import annotations

import numpy as np
import pytest

from micromacro_sim.design.policy import Policy
from micromacro_sim.design.scenario import Scenario
from micromacro_sim.estimators import admissibility
from micromacro_sim.estimators.admissibility import Gate, draw, draw_many
from micromacro_sim.generate.dgp import generate


def _check(data):  # fails for about half the datasets
    return "mean too high" if data.x.mean() > 0 else ""


def _check_batch(x):
    return np.where(x.reshape(len(x), -1).mean(axis=1) > 0, "mean too high", "")


@pytest.fixture
def toy_gate(monkeypatch):
    monkeypatch.setitem(admissibility.GATES, "toy", Gate(_check, True, _check_batch))


@pytest.mark.parametrize(("mode", "max_redraws"), [("redraw", 100), ("redraw", 1), ("flag", 5)])
def test_batched_gate_equals_per_replication(toy_gate, mode, max_redraws):
    sc = Scenario.from_params(dict(n_groups=10, group_size=3, icc=0.2, r_zxi=0.3))
    policy = Policy(mode=mode, gate="toy", max_redraws=max_redraws)
    many = draw_many(sc, 4, range(5, 45), policy)
    one = [draw(sc, 4, r, policy) for r in range(5, 45)]
    assert [d.redraws for d in many] == [d.redraws for d in one]
    assert [d.gate_reason for d in many] == [d.gate_reason for d in one]
    for a, b in zip(many, one, strict=True):
        assert np.array_equal(a.data.x, b.data.x) and np.array_equal(a.data.y, b.data.y)
    redraws = np.array([d.redraws for d in many])
    if mode == "flag":
        assert redraws.max() == 0 and any(d.gate_reason for d in many)
    elif max_redraws == 1:
        assert redraws.max() == 1 and any(d.gate_reason for d in many)  # some still failing
    else:
        assert redraws.max() > 1 and not any(d.gate_reason for d in many)


def test_cfa_gates_run_on_unbalanced_cells_and_refuse_too_few_members():
    from micromacro_sim.core.errors import ConfigError

    sc = Scenario.from_params(dict(n_groups=10, group_size=[3, 5], icc=0.2, r_zxi=0.3))
    Policy(gate="cfa").check_scenarios((sc,))  # full-information ML on the positions
    two = Scenario.from_params(dict(n_groups=10, group_size=2, icc=0.2, r_zxi=0.3))
    with pytest.raises(ConfigError, match="^admissibility.gate: 'cfa' needs group_size >= 3"):
        Policy(gate="cfa").check_scenarios((two,))


def test_cfa_gate_on_absent_members_is_the_fiml_fit():
    from micromacro_sim.estimators.admissibility import gate_reason
    from micromacro_sim.models.cfa import cfa_verdicts
    from micromacro_sim.models.cfa_fiml import fit_cfa_fiml_batch

    sc = Scenario.from_params(dict(n_groups=60, group_size=6, icc=0.1, r_zxi=0.3,
                                   missing_mcar=0.2))
    seen = set()
    for seed in range(12):
        d = generate(sc, np.random.default_rng(seed))
        values, mask = d.wide_positions(0)
        fits = fit_cfa_fiml_batch(np.where(mask, values, 0.0)[None], mask[None])
        for gate in ("cfa", "lavaan_cfa"):
            got = gate_reason(Policy(mode="flag", gate=gate), d)
            assert got == cfa_verdicts(fits, gate)[0]
            seen.add(bool(got))
    assert seen == {True, False}  # some pass, some fail at ICC .1
    # a position observed in one group: the CFA is not identified, the gate fails
    sc = Scenario.from_params(dict(n_groups=30, group_size={"poisson": 8, "min": 2}, icc=0.2,
                                   r_zxi=0.3))
    for seed in range(40):
        d = generate(sc, np.random.default_rng(seed))
        if (d.wide_positions(0)[1].sum(axis=0) < 2).any():
            assert "observed in 1 group" in gate_reason(Policy(gate="cfa"), d)
            break
    else:
        raise AssertionError("no dataset with a position observed once")
