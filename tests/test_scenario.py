"""Scenario validation, derived values and key stability."""

from __future__ import annotations

import numpy as np
import pytest

from micromacro_sim.core.errors import ConfigError
from micromacro_sim.design.fields import FIELDS, Integer, PerZ, Real, field, term_column, true_value
from micromacro_sim.design.scenario import GroupSizes, Scenario

ROW16 = dict(n_groups=100, group_size=10, icc=0.1, r_zxi=0.3)


def test_derived_values_match_spec():
    sc = Scenario.from_params(ROW16)
    assert sc.sigma2_nu == pytest.approx(9.0)
    assert sc.reliability == pytest.approx(1 / (1 + 9 / 10))  # .526
    reliable = Scenario.from_params(dict(n_groups=100, group_size=10, sigma2_nu=1, r_zxi=0.3))
    assert reliable.reliability == pytest.approx(10 / 11)  # .909
    assert reliable.icc == pytest.approx(0.5)


def test_unadjusted_limit_matches_spec_formula():
    sc = Scenario.from_params(ROW16)
    lam, rho, b = sc.reliability, 0.3, 0.3
    lim = sc.unadjusted_limit()
    assert lim["xi"] == pytest.approx(b * lam * (1 - rho**2) / (1 - lam * rho**2))
    assert lim["z"] == pytest.approx(b + b * rho * (1 - lam) / (1 - lam * rho**2))
    assert 100 * (lim["xi"] / b - 1) == pytest.approx(-49.7, abs=0.05)
    assert 100 * (lim["z"] / b - 1) == pytest.approx(14.9, abs=0.05)


def test_key_ignores_explicit_defaults_and_depends_on_values():
    a = Scenario.from_params(ROW16)
    b = Scenario.from_params({**ROW16, "beta_xi": 0.3, "n_z": 1, "var_xi": 1.0})
    c = Scenario.from_params({**ROW16, "beta_xi": 0.0})
    d = Scenario.from_params({**ROW16, "n_groups": 50})
    assert a.key == b.key
    assert len({a.key, c.key, d.key}) == 3
    assert len(a.key) == 16 and len(a.key_words) == 4


def test_group_sizes_forms():
    assert GroupSizes.parse(10).balanced
    assert GroupSizes.parse([7, 7]).balanced
    lst = GroupSizes.parse([5, 30])
    assert list(lst.draw(5, np.random.default_rng(0))) == [5, 30, 5, 30, 5]
    uni = GroupSizes.parse({"uniform": [3, 6]})
    sizes = uni.draw(1000, np.random.default_rng(0))
    assert sizes.min() == 3 and sizes.max() == 6
    assert uni.mean_inverse() == pytest.approx((1 / 3 + 1 / 4 + 1 / 5 + 1 / 6) / 4)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({**ROW16, "icc": 1.0}, "icc"),
        ({**ROW16, "icc": 0}, "icc"),
        ({**ROW16, "sigma2_nu": 9}, "icc"),
        ({**ROW16, "r_zxi": 1.0}, "r_zxi"),
        ({**ROW16, "n_groups": 2}, "n_groups"),
        ({**ROW16, "group_size": 0}, "group_size"),
        ({**ROW16, "group_size": {"uniform": [5, 2]}}, "group_size.uniform"),
        ({**ROW16, "n_z": 2, "r_zxi": 0.8, "r_zz": -0.5}, "r_zxi"),
        ({**ROW16, "colour": 1}, "colour"),
        ({**ROW16, "n_groups": "100"}, "n_groups"),
        ({**ROW16, "sigma2_eps": -1}, "sigma2_eps"),
    ],
)
def test_invalid_parameters_name_the_field(params, field):
    with pytest.raises(ConfigError) as err:
        Scenario.from_params(params)
    assert str(err.value).startswith(field + ":")


# ---------------------------------------------------------------------------- field table
def _numeric_fields():
    return [f for f in FIELDS if isinstance(f.kind, (Real, PerZ, Integer))]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")],
                         ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("name", [f.name for f in _numeric_fields()])
def test_every_numeric_field_refuses_non_finite_values(name, bad):
    base = {**ROW16, "n_z": 2, "r_zxi": [0.3, 0.2]}
    if name == "sigma2_nu":
        base.pop("icc")
    with pytest.raises(ConfigError) as err:
        Scenario.from_params({**base, name: bad})
    msg = str(err.value)
    assert msg.startswith(f"{name}:") and repr(bad) in msg and "\n" not in msg


@pytest.mark.parametrize("name", [f.name for f in FIELDS if isinstance(f.kind, PerZ)])
def test_per_z_fields_refuse_a_non_finite_element(name):
    with pytest.raises(ConfigError, match=rf"^{name}: .*got inf in \[0\.3, inf\]"):
        Scenario.from_params({**ROW16, "n_z": 2, "r_zxi": [0.3, 0.2], name: [0.3, float("inf")]})


@pytest.mark.parametrize("icc", [1e-320, 5e-324, 1e-101])
def test_an_icc_whose_sigma2_nu_is_not_finite_is_refused(icc):
    with pytest.raises(ConfigError, match=rf"^icc: {icc!r} gives sigma2_nu = "):
        Scenario.from_params({**ROW16, "icc": icc})
    assert Scenario.from_params({**ROW16, "icc": 1e-90}).sigma2_nu == pytest.approx(1e90)


def test_ranges_are_checked_at_both_ends():
    for f in _numeric_fields():
        kind = f.kind.item if isinstance(f.kind, PerZ) else f.kind
        if not isinstance(kind, Real):
            continue
        assert kind.contains(kind.lo) is not kind.lo_open
        assert kind.contains(kind.hi) is not kind.hi_open
        assert not kind.contains(float("nan"))
    assert field("sigma2_eps").kind.contains(0.0) and not field("var_xi").kind.contains(0.0)


def test_every_field_has_a_one_line_doc_and_a_scenario_attribute():
    sc = Scenario.from_params(ROW16)
    for f in FIELDS:
        assert f.doc and "\n" not in f.doc, f.name
        assert hasattr(sc, f.attribute), f.name
        assert f.name in Scenario.__doc__
    assert sorted(f.name for f in FIELDS) == _known_from_error()


def _known_from_error() -> list[str]:
    with pytest.raises(ConfigError) as err:
        Scenario.from_params({**ROW16, "colour": 1})
    return str(err.value).split("known: ")[1].rstrip(")").split(", ")


def test_describe_and_true_values_come_from_the_table():
    sc = Scenario.from_params({**ROW16, "n_z": 2, "r_zxi": [0.3, 0.1], "beta_z": [0.2, 0.0],
                               "beta0": 1.5, "beta_xi": -0.25})
    row = sc.describe()
    assert list(row)[:5] == ["scenario", "label", "n_groups", "group_size", "balanced"]
    assert list(row)[-4:] == ["r_z1xi", "beta_z1", "r_z2xi", "beta_z2"]
    assert sc.true_params == {"intercept": 1.5, "z1": 0.2, "z2": 0.0, "xi": -0.25}
    assert {t: true_value(row, t) for t in sc.terms} == sc.true_params
    assert term_column("z2", 2) == "beta_z2" and term_column("z", 1) == "beta_z"
    with pytest.raises(KeyError):
        term_column("sigma2", 1)
    assert sc.label() == "G=100 n=10 ICC=0.1 r=0.3,0.1 q=2 b0=1.5 bz=0.2,0 bxi=-0.25"
    assert Scenario.from_params(ROW16).label() == "G=100 n=10 ICC=0.1 r=0.3"


def test_to_params_keeps_the_given_form_and_round_trips():
    by_icc = Scenario.from_params(ROW16)
    nu_params = {k: v for k, v in ROW16.items() if k != "icc"}
    by_nu = Scenario.from_params({**nu_params, "sigma2_nu": by_icc.sigma2_nu})
    assert "icc" in by_icc.to_params() and "sigma2_nu" not in by_icc.to_params()
    assert "sigma2_nu" in by_nu.to_params() and "icc" not in by_nu.to_params()
    assert by_icc == by_nu and by_icc.key != by_nu.key  # equal values, given differently
    for sc in (by_icc, by_nu):
        assert Scenario.from_params(sc.to_params()).key == sc.key


@pytest.mark.parametrize(("name", "value"), [("beta0", 10**400), ("beta_z", [0.3, -(10**400)]),
                                             ("sigma2_nu", 10**400)])
def test_integers_too_large_for_a_float_are_refused(name, value):
    params = {**ROW16, "n_z": 2, "r_zxi": [0.3, 0.2], name: value}
    if name == "sigma2_nu":
        params.pop("icc")
    with pytest.raises(ConfigError, match=rf"^{name}: expected (a )?finite"):
        Scenario.from_params(params)
