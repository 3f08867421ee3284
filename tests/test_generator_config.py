"""Generator factors in configs: parsing, errors, keys, true values, member ids, routing."""

from __future__ import annotations

import numpy as np
import pytest

from micromacro_sim.core.errors import ConfigError, NotApplicable
from micromacro_sim.core.status import Reason
from micromacro_sim.design.fields import GENERATOR_FIELDS, true_value
from micromacro_sim.design.policy import Policy
from micromacro_sim.design.scenario import Scenario
from micromacro_sim.estimators import registry
from micromacro_sim.estimators.admissibility import draw
from micromacro_sim.generate.batch import Batch
from micromacro_sim.generate.dataset import Dataset

ROW16 = dict(n_groups=100, group_size=10, icc=0.1, r_zxi=0.3)
NONE = Policy(mode="flag", gate="none")


@pytest.mark.parametrize(("params", "field"), [
    ({"n_x": 0}, "n_x"),
    ({"n_x": 2, "r_zxi": [[0.3]]}, "r_zxi"),
    ({"n_x": 2, "r_zxi": [[0.3, float("inf")]]}, "r_zxi"),
    ({"n_x": 2, "beta_xi": [0.3, 0.2, 0.1]}, "beta_xi"),
    ({"n_x": 3, "r_xixi": -0.6}, "r_zxi"),
    ({"xi_skew": 2.0, "xi_kurtosis": 7.0, "r_zxi": 0.95}, "xi_skew"),
    ({"thresholds": "skewed"}, "thresholds"),
    ({"categories": 4, "thresholds": [0.0, 1.0]}, "thresholds"),
    ({"categories": 3, "thresholds": [1.0, 0.0]}, "thresholds"),
    ({"categories": 1}, "categories"),
    ({"loadings": []}, "loadings"),
    ({"member_variances": [1.0, 0.0]}, "member_variances"),
    ({"missing_mcar": 1.0}, "missing_mcar"),
    ({"missing_mar": {"on": "w", "rate": 0.1}}, "missing_mar.on"),
    ({"missing_mar": {"on": "z"}}, "missing_mar.rate"),
    ({"missing_mar": {"on": "z", "rate": 0.1, "slope": 1}}, "missing_mar.slope"),
    ({"missing_mar": {"on": "z", "rate": 0.1}, "n_z": 0}, "missing_mar.on"),
    ({"e_het": {"by": "group_size", "ratio": 2.0}}, "e_het.by"),
    ({"e_het": {"by": "z", "ratio": 0.0}}, "e_het.ratio"),
    ({"group_size": {"poisson": 3, "min": 3}}, "group_size.poisson"),
    ({"group_size": {"choice": [3, 5], "p": [0.5, 0.6]}}, "group_size.p"),
    ({"group_size": {"choice": [3, 0]}}, "group_size.choice"),
])
def test_bad_factor_values_name_the_field(params, field):
    with pytest.raises(ConfigError) as err:
        Scenario.from_params({**ROW16, **params})
    assert str(err.value).startswith(field + ":") and "\n" not in str(err.value)


def test_defaults_keep_the_key_and_one_construct_forms_are_unchanged():
    base = Scenario.from_params(ROW16)
    defaults = {f.name: f.default for f in GENERATOR_FIELDS if f.default is not None}
    assert Scenario.from_params({**ROW16, **defaults}).key == base.key
    assert Scenario.from_params({**ROW16, "r_zxi": [[0.3]], "beta_xi": [0.3]}).key == base.key
    assert base.to_params()["r_zxi"] == 0.3 and base.label() == "G=100 n=10 ICC=0.1 r=0.3"
    keys = {Scenario.from_params({**ROW16, k: v}).key for k, v in [
        ("n_x", 2), ("xi_skew", 0.5), ("categories", 5), ("loadings", [1, 0.5]),
        ("missing_mcar", 0.1), ("e_het", {"by": "z", "ratio": 3}),
        ("group_size", {"poisson": 10, "min": 2})]}
    assert len(keys) == 7 and base.key not in keys


def test_true_values_of_several_constructs_come_from_the_table():
    sc = Scenario.from_params({**ROW16, "n_x": 3, "beta_xi": [0.1, 0.2, 0.3], "n_z": 2,
                               "r_zxi": [[0.1, 0.2, 0.0], [0.0, 0.1, 0.2]]})
    row = sc.describe()
    assert [true_value(row, t) for t in ("x1", "x2", "x3")] == [0.1, 0.2, 0.3]
    assert row["r_z2x3"] == 0.2 and row["beta_x2"] == 0.2 and "beta_xi" not in row
    assert sc.to_params()["r_zxi"] == [[0.1, 0.2, 0.0], [0.0, 0.1, 0.2]]
    assert true_value({**Scenario.from_params(ROW16).describe(), "n_x": None}, "xi") == 0.3


def test_missing_members_run_the_cfa_gate_by_full_information_ml():
    sc = Scenario.from_params({**ROW16, "missing_mcar": 0.1})
    Policy().check_scenarios((sc,))  # accepted: the gate fits the CFA by FIML
    kept = [draw(sc, 5, r, Policy()) for r in range(6)]  # redraw while the CFA fails
    assert all(not k.data.complete and k.gate_reason == "" for k in kept)


def test_member_ids_give_positions_and_misaligned_groups_are_not_applicable():
    base = dict(y=np.zeros(2), z=np.zeros((2, 1)), x=np.arange(4.0))
    d = Dataset(group=np.array([0, 0, 1, 1]), member=np.array([0, 2, 1, 2]), **base)
    assert d.balanced and not d.members_aligned
    with pytest.raises(NotApplicable) as err:
        d.wide(0)  # the wide matrix needs the same members in every group
    assert err.value.flag.code is Reason.MEMBERS_MISALIGNED
    # positions need no complete group: ids 0, 1, 2 are positions 0, 1, 2 (width 3)
    assert list(d.position) == [0, 2, 1, 2] and d.n_positions == 3
    gaps = Dataset(group=np.array([0, 0, 0, 1, 1]), member=np.array([0, 1, 3, 0, 3]),
                   y=np.zeros(2), z=np.zeros((2, 1)), x=np.arange(5.0))
    assert list(gaps.position) == [0, 1, 2, 0, 2]  # ids 0, 1, 3 present: positions 0, 1, 2
    ok = Dataset(group=np.array([0, 0, 1, 1]), member=np.array([0, 2, 0, 2]), **base)
    assert ok.members_aligned and list(ok.position) == [0, 1, 0, 1]
    assert ok.wide(0).tolist() == [[0.0, 1.0], [2.0, 3.0]]
    lone = Dataset(group=np.array([0, 1]), member=np.array([0, 1]), y=np.zeros(2),
                   z=np.zeros((2, 1)), x=np.arange(2.0))
    assert list(lone.position) == [0, 1] and lone.n_positions == 2  # no group has both
    plain = Dataset(group=np.array([0, 0, 0, 1]), y=np.zeros(2), z=np.zeros((2, 1)),
                    x=np.arange(4.0))
    assert list(plain.position) == [0, 1, 2, 0] and plain.n_positions == 3


def _fit_all(sc, engine="auto"):
    data = [draw(sc, 4, r, NONE).data for r in range(3)]
    batch = Batch.from_datasets(data)
    return batch, {name: cls().fit_batch(batch, engine) for name, cls in registry().items()}


def test_several_constructs_take_the_reference_path_and_others_are_not_applicable():
    sc = Scenario.from_params(dict(n_groups=40, group_size=5, icc=0.3, r_zxi=0.2, n_x=2))
    batch, res = _fit_all(sc, engine="fast")
    assert batch.reference_only
    for name, r in res.items():
        cls = registry()[name]
        assert r.terms == ("intercept", "z", "x1", "x2")
        if cls.max_x is None:
            assert np.isfinite(r.params).all() and r.engine == "reference", name
        else:
            assert set(r.reason_code) == {Reason.TOO_MANY_X.value}, name
    # several x: same numbers as one dataset at a time
    one = registry()["croon"]().fit(batch.datasets[1])
    assert np.array_equal(res["croon"].params[1], one.params)


def test_missing_members_reach_every_method_as_observed_members():
    sc = Scenario.from_params(dict(n_groups=40, group_size=6, icc=0.3, r_zxi=0.2,
                                   missing_mcar=0.2))
    batch, res = _fit_all(sc)
    assert batch.member_ids and not batch.reference_only and not batch.balanced
    assert batch.datasets[0].n_persons < 240
    for name in ("unadjusted", "croon", "blup", "blup_hetvar", "true", "sem_2level"):
        assert np.isfinite(res[name].params).all(), name
    # every method takes its batch path, with the numbers of one dataset at a time; the
    # wide-format methods see each absent member as a missing cell at its position (FIML)
    for name in ("unadjusted", "croon", "blup", "blup_hetvar", "true", "sem_2level", "sem",
                 "zcond_score", "factor_score", "sam"):
        assert res[name].engine == "fast", name
        assert Reason.NEEDS_BALANCED.value not in set(res[name].reason_code), name
        one = registry()[name]().fit(batch.datasets[2])
        np.testing.assert_allclose(res[name].params[2], one.params, rtol=1e-8, atol=1e-10)
    for name in ("sem", "zcond_score", "factor_score", "sam"):
        assert (res[name].status == "ok").mean() > 0.5, name
