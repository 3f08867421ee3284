"""Random intercept with a residual variance per member position, then OLS.

The seed study fitted glmmTMB's ``x ~ (1 | group) + diag(0 + item | group)`` with
``item`` the member position within the group (a factor): ``x_gj = mu + u_g + e_gj`` with
``u_g ~ N(0, tau2)`` and ``e_gj ~ N(0, s2_j)``, fitted by ML (glmmTMB's default) with
Fisher scoring (kernels :mod:`micromacro_sim.models.hetvar` and
:mod:`micromacro_sim.models.hetvar_batch`). The score is the conditional mode of the
intercept, the deviation from mu, as glmmTMB's ``ranef()`` reports it. Groups of any size
are allowed (positions 0..n_g-1), and so are absent members (with member ids a group holds
any set of positions). A variance at 0 is flagged inadmissible ("zero variance
(boundary)"); a gradient above the tolerance at the end is flagged "not converged".

Fast engine (:meth:`BlupHetVar.scores_batch`): the same Fisher scoring on all replications
at once, each replication stopping on its own; replications with member ids are fitted on
their positional layouts (:attr:`~micromacro_sim.generate.batch.Batch.positional`,
:mod:`micromacro_sim.models.hetvar_masked`), so batches with absent members take the fast
engine too.

Reference: R ``glmmTMB::glmmTMB(x ~ (1 | group) + diag(0 + item | group))``,
``ranef(fit)$cond$group[, "(Intercept)"]``.
"""

from __future__ import annotations

import numpy as np

from micromacro_sim.core.errors import NotApplicable
from micromacro_sim.core.results import BatchScores, Scores
from micromacro_sim.core.status import Reason, add_flags, flag, no_flags
from micromacro_sim.estimators.two_step import TwoStepEstimator
from micromacro_sim.generate.batch import Batch
from micromacro_sim.generate.dataset import Dataset
from micromacro_sim.models.hetvar import HetVarFit, hetvar_ml
from micromacro_sim.models.hetvar_batch import HetVarBatch, hetvar_ml_batch

__all__ = ["BlupHetVar", "HetVarBatch", "HetVarFit", "hetvar_ml", "hetvar_ml_batch"]

#: Reason of a replication the model cannot be fitted to.
NOT_APPLICABLE = "needs at least 3 groups and some groups with 2+ members"


class BlupHetVar(TwoStepEstimator):
    """Conditional modes of a random intercept with per-position residual variances.

    Reference: R ``glmmTMB(x ~ (1 | group) + diag(0 + item | group))`` (ML), ``ranef()``;
    the second step as ``lm(y ~ z + score)`` with ``sandwich::vcovHC`` SEs.
    """

    name = "blup_hetvar"
    description = "OLS on random-intercept modes with a residual variance per member position"
    batch_designs = ("balanced", "unbalanced")
    origin = "score_mean"  # conditional modes: deviations from the fitted mean
    uses_member_positions = False  # member positions from Batch.positional

    def check_applicable(self, data: Dataset) -> None:
        super().check_applicable(data)
        if data.n_groups < 3 or int(data.sizes.max()) < 2:
            raise NotApplicable(Reason.TOO_FEW_MEMBERS, NOT_APPLICABLE)

    def scores(self, data: Dataset) -> Scores:
        fit = hetvar_ml(data)
        flags = (flag(Reason.BOUNDARY),) if fit.boundary else ()
        if not fit.converged:
            flags += (flag(Reason.NOT_CONVERGED),)
        return Scores(
            values=fit.modes,
            converged=fit.converged,
            admissible=not fit.boundary,
            flags=flags,
            extras={
                "tau2": fit.tau2,
                "s2": fit.s2,
                "mu": fit.mu,
                "loglik": fit.loglik,
                "iterations": fit.iterations,
                "grad_max": fit.grad_max,
            },
        )

    def scores_batch(self, batch: Batch) -> BatchScores:
        """Scores of every replication at once (fast engine, :func:`hetvar_ml_batch`)."""
        values = np.full(batch.y.shape, np.nan)
        ok = (batch.sizes.max(axis=1) >= 2) & (batch.n_groups >= 3)
        converged = np.zeros(ok.size, dtype=bool)
        admissible = np.zeros(ok.size, dtype=bool)
        flags = no_flags(ok.size)
        add_flags(flags, ~ok, flag(Reason.TOO_FEW_MEMBERS, NOT_APPLICABLE))
        reps = np.flatnonzero(ok)
        if reps.size:
            fit = hetvar_ml_batch(batch, reps=reps)
            values[reps] = fit.modes
            converged[reps] = fit.converged
            admissible[reps] = ~fit.boundary
            for bad, reason in ((fit.boundary, Reason.BOUNDARY),
                                (~fit.converged, Reason.NOT_CONVERGED)):
                rows = np.zeros(ok.size, dtype=bool)
                rows[reps[bad]] = True
                add_flags(flags, rows, flag(reason))
        return BatchScores(values=values, converged=converged, admissible=admissible,
                           flags=flags)
