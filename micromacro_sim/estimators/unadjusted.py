"""Group means: OLS of y on [1, Z, xbar] (attenuated when reliability is low)."""

from __future__ import annotations

from ..batch import Batch
from ..dataset import Dataset
from ..results import BatchScores, Scores
from .base import TwoStepEstimator


class Unadjusted(TwoStepEstimator):
    """Plain group means of x as the score (any number of x, any group sizes).

    Reference: R ``lm(y ~ z + xbar)``; HC SEs as ``sandwich::vcovHC``.
    """

    name = "unadjusted"
    description = "OLS on observed group means"
    max_x = None
    batch_designs = ("balanced", "unbalanced")

    def scores(self, data: Dataset) -> Scores:
        return Scores(values=data.xbar)

    def scores_batch(self, batch: Batch) -> BatchScores:
        return BatchScores.ok(batch.xbar)
