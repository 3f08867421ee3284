"""Contract every registered estimator honours (runs over the whole registry).

The checks live in :mod:`micromacro_sim.estimators.contract`, which ``micromacro check-method`` also
runs on a user's estimator.
"""

from __future__ import annotations

import numpy as np
import pytest

from micromacro_sim.estimators import available, contract, registry
from micromacro_sim.estimators.base import Estimator

METHODS = available()


def test_registry_is_not_empty_and_names_match():
    assert {"true", "unadjusted"} <= set(METHODS)
    for name, cls in registry().items():
        assert cls.name == name and cls.description


@pytest.mark.parametrize("check", list(contract.CHECKS))
@pytest.mark.parametrize("name", METHODS)
def test_contract(name, check):
    contract.CHECKS[check](registry()[name])


class _Raises(Estimator):
    """Breaks the contract: the constructor takes any option, fit raises."""

    name = "broken"
    description = "broken on purpose"

    def __init__(self, label=None, **options):
        self.label = label or self.name
        self.params = {}

    def _fit(self, data):
        raise RuntimeError("boom")


def test_the_checks_can_fail():
    results = {r.check: r for r in contract.run_contract(_Raises)}
    assert not results["constructor"].passed
    assert "unknown option" in results["constructor"].detail
    assert not results["fits_row16"].passed
    assert "RuntimeError: boom" in results["fits_row16"].detail


def test_a_nan_estimate_is_never_admissible():
    from micromacro_sim.estimators import get_estimator

    data = contract.make_data(seed=3)
    res = get_estimator("unadjusted").fit(data)
    bad = res.__class__(**{**res.__dict__, "params": np.full_like(res.params, np.nan)})
    assert not bad.admissible
    contract.check_result(bad, data, "unadjusted")
