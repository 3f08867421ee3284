"""Fleishman's power method and Vale & Maurelli's intermediate correlations."""

from __future__ import annotations

import numpy as np
import pytest

from micromacro_sim.core.errors import ConfigError
from micromacro_sim.design.fleishman import (
    FleishmanError,
    fleishman,
    intermediate_correlation,
    intermediate_matrix,
    kurtosis_bound,
    polynomial_moments,
)
from micromacro_sim.design.scenario import Scenario

ROW16 = dict(n_groups=100, group_size=10, icc=0.1, r_zxi=0.3)
PAIRS = [(0.0, 0.0), (0.5, 0.0), (1.0, 1.5), (2.0, 7.0), (-1.5, 4.0), (0.0, -1.0), (0.0, 25.0),
         (3.0, 20.0), (-0.75, 0.5), (1.5, 2.5)]


@pytest.mark.parametrize(("skew", "kurt"), PAIRS)
def test_polynomial_has_the_target_moments_exactly(skew, kurt):
    mean, var, s, k = polynomial_moments(fleishman(skew, kurt))
    assert abs(mean) < 1e-10 and abs(var - 1) < 1e-10
    assert abs(s - skew) < 1e-10 and abs(k - kurt) < 1e-10


def test_coefficients_match_fleishmans_table():
    # Fleishman (1978), Table 1: skew 2, kurtosis 7; skew 1, kurtosis 1.5
    f = fleishman(2.0, 7.0)
    assert (f.b, f.c, f.d) == pytest.approx((0.761585, 0.260022, 0.053072), abs=1e-6)
    g = fleishman(1.0, 1.5)
    assert (g.b, g.c, g.d) == pytest.approx((0.953077, 0.163194, 0.006597), abs=1e-6)
    assert f.a == -f.c


def test_normal_target_is_the_identity():
    f = fleishman(0.0, 0.0)
    u = np.random.default_rng(1).standard_normal(5)
    assert f.is_identity and f.apply(u) is u


@pytest.mark.parametrize(("skew", "kurt"), [(1.0, -0.5), (2.0, 4.0), (0.0, -1.3)])
def test_impossible_pairs_are_refused(skew, kurt):
    assert kurt < kurtosis_bound(skew)
    with pytest.raises(FleishmanError, match="impossible"):
        fleishman(skew, kurt)


@pytest.mark.parametrize("part", ["xi", "nu", "e"])
def test_impossible_pair_in_a_config_names_the_field_and_value(part):
    with pytest.raises(ConfigError) as err:
        Scenario.from_params({**ROW16, f"{part}_skew": 2.0, f"{part}_kurtosis": 1.0})
    msg = str(err.value)
    assert msg.startswith(f"{part}_kurtosis: 1.0 with {part}_skew 2.0") and "\n" not in msg


def test_large_sample_moments_of_one_variable():
    f = fleishman(1.5, 2.5)
    y = f.apply(np.random.default_rng(7).standard_normal((100, 20000)))
    c = y - y.mean(axis=1, keepdims=True)
    sd = np.sqrt((c**2).mean(axis=1))
    skew = (c**3).mean(axis=1) / sd**3
    kurt = (c**4).mean(axis=1) / sd**4 - 3
    for stat, target in ((y.mean(axis=1), 0.0), (y.var(axis=1), 1.0), (skew, 1.5),
                         (kurt, 2.5)):
        se = stat.std(ddof=1) / np.sqrt(len(stat))  # 100 independent batches
        assert abs(stat.mean() - target) < 4 * se


@pytest.mark.parametrize("r", [0.3, -0.5, 0.7])
def test_intermediate_correlation_gives_the_target(r):
    f1, f2 = fleishman(2.0, 7.0), fleishman(-1.0, 1.5)
    rho = intermediate_correlation(r, f1, f2)
    assert abs(rho) > abs(r) * 0.99  # the transformation weakens a correlation
    rng = np.random.default_rng(11)
    chol = np.linalg.cholesky(np.array([[1, rho], [rho, 1]]))
    u = rng.standard_normal((50, 20000, 2)) @ chol.T
    y1, y2 = f1.apply(u[..., 0]), f2.apply(u[..., 1])
    rs = np.array([np.corrcoef(a, b)[0, 1] for a, b in zip(y1, y2, strict=True)])
    assert abs(rs.mean() - r) < 4 * rs.std(ddof=1) / np.sqrt(len(rs))
    # a normal partner: r = rho (b + 3 d)
    g = fleishman(0.0, 0.0)
    assert intermediate_correlation(r, f1, g) * (f1.b + 3 * f1.d) == pytest.approx(r)


def test_intermediate_matrix_and_unreachable_correlation():
    f = fleishman(3.0, 20.0)
    m = intermediate_matrix(np.array([[1, 0.2], [0.2, 1]]), (f, f))
    assert m[0, 1] == m[1, 0] and m[0, 0] == 1
    with pytest.raises(FleishmanError):
        intermediate_correlation(-0.95, fleishman(3.0, 20.0), fleishman(3.0, 20.0))
