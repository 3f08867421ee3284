"""Contract every registered estimator honours (runs over the whole registry)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from micromacro_sim.estimators import SE_TYPES, FitResult, available, get_estimator, registry
from tests.conftest import make_data

METHODS = available()


def test_registry_is_not_empty_and_names_match():
    assert {"true", "unadjusted"} <= set(METHODS)
    for name, cls in registry().items():
        assert cls.name == name and cls.description


@pytest.mark.parametrize("name", METHODS)
def test_constructor_only_stores_options(name):
    cls = registry()[name]
    est = get_estimator(name)
    assert est.params == {k: o.default for k, o in cls.options.items()}
    with pytest.raises(ValueError, match="unknown option"):
        get_estimator(name, no_such_option=1)
    assert get_estimator(name, label="mine").label == "mine"


def _check_result(res: FitResult, data, label: str) -> None:
    assert isinstance(res, FitResult)
    assert res.method == label
    assert res.terms == data.terms
    assert res.params.shape == (len(data.terms),)
    assert set(res.bse) <= set(SE_TYPES)
    with pytest.raises(ValueError):
        res.params[0] = 1.0  # read-only
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.method = "other"  # type: ignore[misc]
    if res.ok:
        assert np.all(np.isfinite(res.params))
        se = res.se("classical")
        assert np.all(np.isfinite(se)) and np.all(se > 0)
        assert res.reason == "" or res.admissible  # a proper fit carries no failure reason
        if res.two_step:
            assert set(res.bse) == set(SE_TYPES) and res.df_resid is not None
        lo, hi = res.conf_int().T
        assert np.all(lo < res.params) and np.all(res.params < hi)
    else:
        assert res.reason, "a flagged fit must say why"


@pytest.mark.parametrize("name", METHODS)
def test_fit_on_row16(name):
    data = make_data(seed=3)
    est = get_estimator(name, label=f"{name}-label")
    res = est.fit(data)
    _check_result(res, data, f"{name}-label")
    assert res.ok, res.reason
    again = est.fit(data)
    assert np.array_equal(res.params, again.params, equal_nan=True)


@pytest.mark.parametrize("name", METHODS)
def test_unbalanced_data_fits_or_says_not_applicable(name):
    data = make_data(seed=4, group_size={"uniform": [3, 15]}, icc=0.2)
    res = get_estimator(name).fit(data)
    _check_result(res, data, name)
    if registry()[name].needs_balanced:
        assert res.status.value == "not_applicable"
    else:
        assert res.ok, res.reason


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize(
    "params",
    [
        dict(n_groups=5, group_size=2, icc=0.02, r_zxi=0.3),
        dict(n_groups=3, group_size=3, icc=0.5, r_zxi=0.9),
        dict(n_groups=30, group_size=1, icc=0.3, r_zxi=0.3),
    ],
    ids=["tiny-icc", "G3", "n1"],
)
def test_edge_data_never_raises(name, params):
    for seed in range(5):
        data = make_data(seed=seed, **params)
        _check_result(get_estimator(name).fit(data), data, name)
