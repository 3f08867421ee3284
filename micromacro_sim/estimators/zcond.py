"""Z-conditional factor scores: the latent group mean predicted from xbar *and* Z, then OLS.

The numerical work is :func:`micromacro_sim.models.moments.zcond_scores` (and its batch
version); this module wires it to the two-step method.
"""

from __future__ import annotations

import numpy as np

from micromacro_sim.core.results import BatchScores, Scores
from micromacro_sim.core.status import Reason, add_flags, flag, no_flags
from micromacro_sim.estimators.base import TwoStepEstimator
from micromacro_sim.generate.batch import Batch
from micromacro_sim.generate.dataset import Dataset
from micromacro_sim.models.moments import zcond_scores, zcond_scores_batch

__all__ = ["ZConditionalScore"]


class ZConditionalScore(TwoStepEstimator):
    """Regression factor scores of a measurement model in which the latent is regressed on Z.

    First step: the SEM measurement model of the CV design (members as indicators,
    loadings fixed to 1, one residual variance v) extended with ``lv ~ Z``, fitted by
    ML (closed form in balanced data: v is the within variance of member-position-
    centred x over G(n - 1); Gamma is the OLS slope of xbar on Z; the residual factor
    variance is psi_r = Var_ML(xbar | Z) - v/n). The score is the regression
    (posterior-mean) factor score given the members' x and Z:

        score_g = m_g + W (xbar_g - m_g),  m_g = mu_x + Gamma'(Z_g - mean Z),
        W = psi_r / (psi_r + v/n).

    Second step: OLS of y on [1, Z, score] with all SE types (first-step uncertainty
    ignored). Scores equal ``lavPredict()`` of ``lavaan::sem('lv =~ 1*x1 + ...;
    x1 ~~ v*x1; ...; lv ~ z')`` up to an additive constant (lavaan fixes the latent
    intercept at 0), so slopes agree exactly and the intercept is on the x scale.

    How it differs from ``croon``: the same predictor (the CV adjustment is the BLUP of
    xi given xbar and Z), but with ML moments (denominator G, position-centred within
    variance) instead of ANOVA moments (denominator G - 1, MSE over N - G, n0), and
    balanced data only. Consequence: in balanced data its xi coefficient equals the ML
    SEM's point estimate exactly (and the local SAM's), while croon's differs by the
    moment definitions. Plain factor scores (``lv`` not regressed on Z) shrink toward
    the grand mean instead of toward Gamma'Z and leave Z's coefficient biased.

    Inadmissible: psi_r <= 0 gives NaN scores with flag ``negative_variance``.

    Fast engine (balanced): the same closed form vectorised over replications; Gamma
    from the normal equations (a replication with a singular Z cross-product, where the
    reference's least squares takes the minimum-norm solution, runs the reference).
    """

    name = "zcond_score"
    description = "Z-conditional regression factor scores (lv ~ Z), OLS"
    needs_balanced = True
    max_x = 1
    batch_designs = ("balanced",)

    def scores(self, data: Dataset) -> Scores:
        s = zcond_scores(data)
        extras = {"v": s.v, "psi_r": s.psi_r, "gamma": s.gamma, "psi": s.psi, "W": s.w}
        if s.negative:
            return Scores(values=s.values, admissible=False,
                          flags=(flag(Reason.NEGATIVE_VARIANCE),), extras=extras)
        return Scores(values=s.values, extras=extras)

    def scores_batch(self, batch: Batch) -> BatchScores:
        s = zcond_scores_batch(batch)
        R = batch.n_reps
        flags = no_flags(R)
        add_flags(flags, s.negative, flag(Reason.NEGATIVE_VARIANCE))
        return BatchScores(s.values, np.ones(R, bool), ~s.negative, flags,
                           fallback=s.fallback)
