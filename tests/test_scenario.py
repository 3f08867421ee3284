"""Scenario validation, derived values and key stability."""

from __future__ import annotations

import numpy as np
import pytest

from micromacro_sim.errors import ConfigError
from micromacro_sim.scenario import GroupSizes, Scenario

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
