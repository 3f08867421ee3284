"""Oracle: OLS of y on [1, Z, xi] with the true latent group means (simulation only)."""

from __future__ import annotations

from micromacro_sim.core.results import BatchScores, Scores
from micromacro_sim.estimators.two_step import TwoStepEstimator
from micromacro_sim.generate.batch import Batch
from micromacro_sim.generate.dataset import Dataset


class TrueScore(TwoStepEstimator):
    """The true xi as the score; the benchmark every method is measured against.

    Reference: R ``lm(y ~ z + xi)``.
    """

    name = "true"
    description = "OLS on the true latent group means (oracle, simulation only)"
    needs_truth = True
    max_x = None
    batch_designs = ("balanced", "unbalanced")
    scale = "latent"  # the true xi
    origin = "latent_mean"
    uses_member_positions = False  # group means and sums only
    scores_local = True  # the jackknife downdates the OLS: nothing to refit

    def scores(self, data: Dataset) -> Scores:
        return Scores(values=data.xi)

    def scores_batch(self, batch: Batch) -> BatchScores:
        return BatchScores.ok(batch.xi)
