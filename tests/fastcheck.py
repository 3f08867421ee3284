"""Shared helpers of the fast-vs-reference equivalence tests."""

from __future__ import annotations

import numpy as np

from micromacro_sim.batch import Batch
from micromacro_sim.dgp import generate
from micromacro_sim.estimators import SE_TYPES
from micromacro_sim.estimators.base import BatchResult
from micromacro_sim.scenario import Scenario
from micromacro_sim.seeding import replication_rng

#: Fast and reference paths solve the same equations to about 1e-12; the issue's contract is
#: estimates within 1e-6 and SEs within 1e-5 (absolute), identical verdicts.
EST_TOL, SE_TOL = 1e-6, 1e-5


def make_batch(params: dict, reps: int = 40, root: int = 7) -> Batch:
    """``reps`` replications of a scenario, as the runner would draw them (no gate)."""
    sc = Scenario.from_params(params)
    return Batch.from_datasets([generate(sc, replication_rng(root, sc, r)) for r in range(reps)])


def assert_same(fast: BatchResult, ref: BatchResult) -> None:
    """Replication by replication: identical flags, reasons and df; estimates and SEs within
    tolerance, with NaN in the same places."""
    assert fast.engine == "fast" and ref.engine == "reference"
    assert fast.terms == ref.terms and fast.two_step == ref.two_step
    assert list(fast.reason) == list(ref.reason)
    np.testing.assert_array_equal(fast.converged, ref.converged)
    np.testing.assert_array_equal(fast.admissible, ref.admissible)
    np.testing.assert_array_equal(fast.df_resid, ref.df_resid)  # NaN == NaN here
    np.testing.assert_allclose(fast.params, ref.params, rtol=0, atol=EST_TOL)
    for t in SE_TYPES:
        np.testing.assert_allclose(fast.bse[t], ref.bse[t], rtol=0, atol=SE_TOL, err_msg=t)
