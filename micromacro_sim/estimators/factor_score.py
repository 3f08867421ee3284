"""Factor scores from a one-factor CFA on the wide G x n matrix (members as indicators).

The CFA is the kernel :mod:`micromacro_sim.models.cfa` (lavaan's default identification,
unbounded ML, same verdicts per dataset and batched). On the fast engine the fits come
from the chunk's :class:`~micromacro_sim.models.cfa.CFAMemo` when the runner passed one
(the redraw gate has then already fitted the same datasets).

Reference: R ``lavaan::cfa('lv =~ x1 + ... + xn', meanstructure=TRUE)``,
``lavPredict(fit, method=...)``, then ``lm(y ~ z + fs)``.
"""

from __future__ import annotations

import numpy as np

from micromacro_sim.core.options import Option
from micromacro_sim.core.results import BatchScores, Scores
from micromacro_sim.estimators.base import TwoStepEstimator
from micromacro_sim.generate.batch import Batch
from micromacro_sim.generate.dataset import Dataset
from micromacro_sim.models.cfa import fit_cfa, fit_cfa_batch

__all__ = ["FactorScore"]


class FactorScore(TwoStepEstimator):
    """Factor scores of a free-loading one-factor CFA as the group score.

    Options
    -------
    scores : {"regression", "bartlett"}
        lavaan ``lavPredict`` method (default "regression", as Clark).

    Balanced data and one x only (the members are the indicators of the wide matrix).
    Reference: R ``lavaan::cfa('lv =~ x1 + ... + xn', meanstructure=TRUE)``,
    ``lavPredict(fit, method=...)``, then ``lm(y ~ z + fs)``.
    """

    name = "factor_score"
    description = "OLS on factor scores of a one-factor CFA (members as indicators)"
    options = {
        "scores": Option("regression", "str", "lavPredict method",
                         choices=("regression", "bartlett")),
    }
    needs_balanced = True
    max_x = 1
    batch_designs = ("balanced",)

    def scores(self, data: Dataset) -> Scores:
        wide = data.wide(0)
        fit = fit_cfa(wide)
        extras = {
            "loadings": fit.loadings,
            "residual_variances": fit.residual_variances,
            "factor_variance": fit.factor_variance,
        }
        if not np.isfinite(fit.factor_variance):
            return Scores(
                values=np.full(data.n_groups, np.nan), converged=False, admissible=False,
                flags=fit.flags, extras=extras,
            )
        values = fit.scores(wide, method=self.params["scores"])
        return Scores(
            values=values, converged=fit.converged, admissible=fit.admissible,
            flags=fit.flags, extras=extras,
        )

    def scores_batch(self, batch: Batch) -> BatchScores:
        R, _, n = batch.x.shape
        if n < 3:  # the reference path records its error for every replication
            return BatchScores.ok(np.full(batch.y.shape, np.nan), fallback=np.ones(R, bool))
        fits = fit_cfa_batch(batch.x, batch.memo)
        values = fits.scores(batch.x, method=self.params["scores"])
        return BatchScores(values, fits.converged.copy(), fits.admissible.copy(),
                           fits.flags.copy())
