"""Shared helpers of the fast-vs-reference equivalence tests (from the package's contract)."""

from __future__ import annotations

from micromacro_sim.estimators.contract import EST_TOL, SE_TOL, assert_same, make_batch

__all__ = ["EST_TOL", "SE_TOL", "assert_same", "make_batch"]
