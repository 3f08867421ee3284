"""Single-step SEM on the wide data, in closed form (balanced groups, one x).

``lv =~ 1*x1 + ... + 1*xn`` with equal residual variances, ``lv ~~ z``, ``y ~ z + lv``
(meanstructure), fitted by ML. The closed form, its expected information and the batch
version are the kernel :mod:`micromacro_sim.models.wide_sem`; its measurement part is the
equal-loading one-factor model of :mod:`micromacro_sim.models.cfa_equal`.

Reference: R ``lavaan::sem(model, data = wide, meanstructure = TRUE)``.
"""

from __future__ import annotations

import numpy as np

from micromacro_sim.core.results import BatchResult, FitResult
from micromacro_sim.core.status import no_flags
from micromacro_sim.estimators.base import Estimator
from micromacro_sim.generate.batch import Batch
from micromacro_sim.generate.dataset import Dataset
from micromacro_sim.models.wide_sem import sem_batch, sem_closed_form, sem_se

__all__ = ["SEM"]


class SEM(Estimator):
    """Single-step SEM on the wide data (closed-form ML with lavaan's expected-information SE).

    Balanced groups, one x, any number of z. Terms: intercept, each z, xi. The standard
    errors are model-based ("classical" only) and normal-based (``df_resid`` None). When
    the closed form is not an admissible ML solution (Var(lv), the residual variance of
    lv given z, or a residual variance is <= 0) its estimates are still recorded, flagged
    with reason "negative variance" and without standard errors.

    Reference: R ``lavaan::sem()`` with loadings ``1*``, residual variances ``v*``,
    ``lv ~~ z``, ``y ~ z + lv`` and ``meanstructure = TRUE``.
    """

    name = "sem"
    description = "single-step SEM on the wide data (ML, closed form)"
    needs_balanced = True
    max_x = 1
    batch_designs = ("balanced",)

    def _fit_batch(self, batch: Batch) -> BatchResult:
        """All replications at once (:func:`sem_batch`); a replication whose moment
        matrices are singular, or with fewer than 2 members per group, goes through
        :meth:`fit` (which records the reference path's error)."""
        R, k = batch.n_reps, len(batch.terms)
        params = np.full((R, k), np.nan)
        se = np.full((R, k), np.nan)
        adm = np.zeros(R, dtype=bool)
        flags = no_flags(R)
        conv = np.ones(R, dtype=bool)
        fallback = np.ones(R, dtype=bool)
        if batch.x.shape[2] >= 2:
            fallback[:] = False
            try:
                with np.errstate(invalid="ignore"):
                    params, se, adm, flags = sem_batch(batch.x, batch.y, batch.z)
            except np.linalg.LinAlgError:
                fallback[:] = True
            else:
                bad = ~np.all(np.isfinite(params), axis=1) | (adm & ~np.all(np.isfinite(se),
                                                                          axis=1))
                fallback |= bad
                se[~adm] = np.nan
        return self.one_step_result(batch, params, se, conv, adm, flags, fallback)

    def _fit(self, data: Dataset) -> FitResult:
        wide = data.wide(0)
        G, n = wide.shape
        if n < 2:
            raise ValueError("the single-step SEM needs at least 2 members per group")
        sol = sem_closed_form(wide, data.y, data.z)
        params = np.concatenate([[sol.b0], sol.b_z, [sol.b_xi]])
        extras = {
            "v": sol.v, "phi": sol.phi, "cov_lv_z": sol.c, "sigma2": sol.sigma2,
            "residual_phi": sol.residual_phi,
        }
        problems = sol.problems()
        if problems:
            return FitResult(
                method=self.label, terms=data.terms, params=params, bse={}, df_resid=None,
                converged=True, admissible=False, flags=problems, extras=extras,
            )
        se = sem_se(sol, n, G)
        return FitResult(
            method=self.label, terms=data.terms, params=params, bse={"classical": se},
            df_resid=None, converged=True, admissible=True, extras=extras,
        )
