"""Shared fixtures."""

from __future__ import annotations

import numpy as np
import pytest

from micromacro_sim.design.scenario import Scenario
from micromacro_sim.generate.dgp import generate
from micromacro_sim.generate.seeding import replication_rng


def make_data(seed: int = 1, **params):
    """One simulated dataset (defaults: CV row 16)."""
    base = dict(n_groups=100, group_size=10, icc=0.1, r_zxi=0.3)
    base.update(params)
    sc = Scenario.from_params(base)
    return generate(sc, replication_rng(seed, sc, 0))


@pytest.fixture
def row16():
    return make_data()


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
