"""Z-conditional factor scores: the latent group mean predicted from xbar *and* Z, then OLS.

The numerical work is :func:`micromacro_sim.models.moments.zcond_scores` (and its batch
version); this module wires it to the two-step method.
"""

from __future__ import annotations

import numpy as np

from micromacro_sim.core.errors import NotApplicable
from micromacro_sim.core.results import BatchScores, Scores
from micromacro_sim.core.status import Reason, add_flags, flag, no_flags
from micromacro_sim.estimators.two_step import TwoStepEstimator
from micromacro_sim.generate.batch import Batch
from micromacro_sim.generate.dataset import Dataset
from micromacro_sim.models.moments import zcond_scores, zcond_scores_batch
from micromacro_sim.models.wide_sem_fiml import zcond_fiml

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

    Unbalanced groups and absent members: the positions with no member are missing
    cells and the measurement model is fitted by full-information ML
    (:func:`~micromacro_sim.models.wide_sem_fiml.zcond_fiml`, lavaan's
    ``missing = "fiml"``); the score uses each group's observed members, with weight
    ``W_g = psi_r / (psi_r + v / k_g)`` for k_g of them, and the mean of the position
    intercepts as the x-scale origin. Not applicable (``too_few_members``) when no group
    has two members.

    Inadmissible: psi_r <= 0 gives NaN scores with flag ``negative_variance``; a FIML fit
    that does not converge gives NaN scores flagged ``not_converged``.

    Fast engine (balanced): the same closed form vectorised over replications; Gamma
    from the normal equations (a replication with a singular Z cross-product, where the
    reference's least squares takes the minimum-norm solution, runs the reference).
    """

    name = "zcond_score"
    description = "Z-conditional regression factor scores (lv ~ Z), OLS"
    max_x = 1
    batch_designs = ("balanced", "unbalanced")
    uses_member_positions = False  # member positions from Batch.positional

    def check_applicable(self, data: Dataset) -> None:
        super().check_applicable(data)
        if not data.complete and int(data.sizes.max()) < 2:
            raise NotApplicable(Reason.TOO_FEW_MEMBERS, "needs a group with at least 2 members")

    def scores(self, data: Dataset) -> Scores:
        if not data.complete:
            b = self._fiml_scores(Batch.from_datasets([data]))
            return Scores(values=b.values[0], converged=bool(b.converged[0]),
                          admissible=bool(b.admissible[0]), flags=tuple(b.flags[0]))
        s = zcond_scores(data)
        extras = {"v": s.v, "psi_r": s.psi_r, "gamma": s.gamma, "psi": s.psi, "W": s.w}
        if s.negative:
            return Scores(values=s.values, admissible=False,
                          flags=(flag(Reason.NEGATIVE_VARIANCE),), extras=extras)
        return Scores(values=s.values, extras=extras)

    def _fiml_scores(self, batch: Batch) -> BatchScores:
        """FIML scores of the replications that are not complete (the others fall back)."""
        R, G = batch.y.shape
        values = np.full((R, G), np.nan)
        conv, adm = np.ones(R, dtype=bool), np.zeros(R, dtype=bool)
        flags = no_flags(R)
        fallback = batch.complete | (batch.sizes.max(axis=1) < 2)
        rows = np.flatnonzero(~fallback)
        if rows.size:
            x, mask, widths = batch.positional
            out = zcond_fiml(x[rows], mask[rows], widths[rows], batch.z[rows])
            values[rows], conv[rows] = out["values"], out["converged"]
            adm[rows] = out["converged"] & ~out["negative"]
            at = np.arange(R)
            add_flags(flags, np.isin(at, rows[~out["converged"]]), flag(Reason.NOT_CONVERGED))
            add_flags(flags, np.isin(at, rows[out["converged"] & out["negative"]]),
                      flag(Reason.NEGATIVE_VARIANCE))
        return BatchScores(values, conv, adm, flags, fallback=fallback)

    def scores_batch(self, batch: Batch) -> BatchScores:
        if not (batch.balanced and not batch.member_ids):
            return self._fiml_scores(batch)
        s = zcond_scores_batch(batch)
        R = batch.n_reps
        flags = no_flags(R)
        add_flags(flags, s.negative, flag(Reason.NEGATIVE_VARIANCE))
        return BatchScores(s.values, np.ones(R, bool), ~s.negative, flags,
                           fallback=s.fallback)
