"""Croon & van Veldhoven (2007) adjusted group means, then OLS (SPEC section 3.1).

The numerical work is :mod:`micromacro_sim.models.croon`; this module wires it to the
two-step method.
"""

from __future__ import annotations

import numpy as np

from micromacro_sim.core.results import BatchScores, Scores
from micromacro_sim.core.status import Reason, add_flags, flag, no_flags
from micromacro_sim.estimators.two_step import TwoStepEstimator
from micromacro_sim.generate.batch import Batch
from micromacro_sim.generate.dataset import Dataset
from micromacro_sim.models.croon import cv_adjustment, cv_adjustment_batch

__all__ = ["Croon"]


class Croon(TwoStepEstimator):
    """Croon & van Veldhoven adjusted group means as the score, then OLS.

    First step exactly as SPEC section 3.1 (ANOVA moments from
    :func:`micromacro_sim.models.reliability.anova`; covariances of [Z, xbar] with
    denominator G - 1; per-group weights P_g = (R + MSE/n_g)^-1 R). Works for any
    number of x, any number of Z (including none: the adjustment is then the plain
    shrinkage BLUP mu_x + W_g (xbar_g - mu_x)) and any group sizes.

    Second step: OLS of y on [1, Z, xtilde] with classical and HC0-HC3 standard
    errors. CV's own "corrected" standard error is the HC2 sandwich
    (``result.se("HC2")``). All SEs treat the adjusted means as known (first-step
    uncertainty is ignored).

    An inadmissible first step (S_xixi or R = S_xixi - V_xZ V_ZZ^-1 V_Zx not
    positive definite) is never divided through: the result has no estimates,
    ``admissible=False`` and flag ``S_xixi_nonpositive`` or ``R_nonpositive``.

    Extras of a fit: ``S_xixi``, ``R``, ``MSE``, ``MSA`` (p, p), ``n0``, ``mu_x`` (p,),
    ``W`` (the weights P_g: (G,) for one x, else (G, p, p); NaN when inadmissible).

    Reference: Croon & van Veldhoven (2007), Psychological Methods 12(1), 45-57. The
    R package MicroMacroMultilevel does not implement this algorithm correctly and is
    not a reference.
    """

    name = "croon"
    description = "Croon & van Veldhoven adjusted group means, OLS (CV's SE: HC2)"
    default_se = "HC2"  # Croon & van Veldhoven's corrected SE is the HC2 sandwich
    max_x = None
    batch_designs = ("balanced", "unbalanced")
    uses_member_positions = False  # group means and sums only

    def scores(self, data: Dataset) -> Scores:
        a = cv_adjustment(data)
        extras = {"S_xixi": a.s_xixi, "R": a.r, "MSE": a.mse, "MSA": a.msa, "n0": a.n0,
                  "mu_x": a.mu_x, "W": a.w}
        if a.reason is not None:
            return Scores(values=a.values, admissible=False, flags=(flag(a.reason),),
                          extras=extras)
        return Scores(values=a.values, extras=extras)

    def scores_batch(self, batch: Batch) -> BatchScores:
        a = cv_adjustment_batch(batch)
        R = batch.n_reps
        flags = no_flags(R)
        add_flags(flags, a.s_nonpositive, flag(Reason.S_XIXI_NONPOSITIVE))
        add_flags(flags, a.r_nonpositive, flag(Reason.R_NONPOSITIVE))
        ok = ~a.s_nonpositive & ~a.r_nonpositive
        return BatchScores(values=a.values, converged=np.ones(R, bool), admissible=ok,
                           flags=flags, fallback=a.fallback)
