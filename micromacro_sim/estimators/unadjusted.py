"""Group means: OLS of y on [1, Z, xbar] (attenuated when reliability is low)."""

from __future__ import annotations

from micromacro_sim.core.results import BatchScores, Scores
from micromacro_sim.estimators.two_step import TwoStepEstimator
from micromacro_sim.generate.batch import Batch
from micromacro_sim.generate.dataset import Dataset


class Unadjusted(TwoStepEstimator):
    """Plain group means of x as the score (any number of x, any group sizes).

    Reference: R ``lm(y ~ z + xbar)``; HC SEs as ``sandwich::vcovHC``.
    """

    name = "unadjusted"
    description = "OLS on observed group means"
    max_x = None
    batch_designs = ("balanced", "unbalanced")
    uses_member_positions = False  # group means and sums only
    scores_local = True  # the jackknife downdates the OLS: nothing to refit

    def scores(self, data: Dataset) -> Scores:
        return Scores(values=data.xbar)

    def scores_batch(self, batch: Batch) -> BatchScores:
        return BatchScores.ok(batch.xbar)
