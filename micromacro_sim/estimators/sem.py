"""Single-step SEM on the wide data: closed form on complete data, FIML otherwise (one x).

``lv =~ 1*x1 + ... + 1*xn`` with equal residual variances, ``lv ~~ z``, ``y ~ z + lv``
(meanstructure), fitted by ML. On complete balanced data: the closed form, its expected
information and the batch version of :mod:`micromacro_sim.models.wide_sem` (its
measurement part the equal-loading one-factor model of
:mod:`micromacro_sim.models.cfa_equal`). With unbalanced groups or absent members the
member positions with no member are missing cells, fitted by full-information ML with
the observed information (:mod:`micromacro_sim.models.wide_sem_fiml`).

Reference: R ``lavaan::sem(model, data = wide, meanstructure = TRUE)``, with
``missing = "fiml"`` when members are absent.
"""

from __future__ import annotations

import numpy as np

from micromacro_sim.core.errors import NotApplicable
from micromacro_sim.core.results import BatchResult, FitResult
from micromacro_sim.core.status import Reason, add_flags, flag, no_flags
from micromacro_sim.estimators.base import Estimator
from micromacro_sim.generate.batch import Batch
from micromacro_sim.generate.dataset import Dataset
from micromacro_sim.models.wide_sem import sem_batch, sem_closed_form, sem_se
from micromacro_sim.models.wide_sem_fiml import sem_fiml

#: Why the model is not identified on some data with absent members.
NOT_IDENTIFIED = "needs a group with at least 2 members"

__all__ = ["SEM"]


class SEM(Estimator):
    """Single-step SEM on the wide data (closed-form ML with lavaan's expected-information SE).

    One x, any number of z. Terms: intercept, each z, xi. The standard errors are
    model-based ("classical" only) and normal-based (``df_resid`` None): lavaan's
    defaults, the expected information on complete data and the observed information
    with FIML. When the solution is not an admissible ML solution (Var(lv), the residual
    variance of lv given z, or a residual variance is <= 0) its estimates are still
    recorded, flagged with reason "negative variance" and without standard errors; a FIML
    fit that does not converge is flagged "not converged". Not applicable (reason
    ``too_few_members``) when no group has two members: v and Var(lv) are then not
    separately identified.

    Reference: R ``lavaan::sem()`` with loadings ``1*``, residual variances ``v*``,
    ``lv ~~ z``, ``y ~ z + lv`` and ``meanstructure = TRUE``.
    """

    name = "sem"
    description = "single-step SEM on the wide data (ML: closed form; FIML with absent members)"
    max_x = 1
    batch_designs = ("balanced", "unbalanced")
    origin = "latent_mean"  # lavaan fixes the latent mean at 0
    uses_member_positions = False  # member positions from Batch.positional

    def check_applicable(self, data: Dataset) -> None:
        super().check_applicable(data)
        if not data.complete and int(data.sizes.max()) < 2:
            raise NotApplicable(Reason.TOO_FEW_MEMBERS, NOT_IDENTIFIED)

    def _fit_batch(self, batch: Batch) -> BatchResult:
        """Complete balanced batches: :meth:`_fit_closed_batch`; otherwise FIML for the
        replications with absent members or unequal groups (the complete ones, and those
        without a group of two, go through :meth:`fit`)."""
        if batch.balanced and not batch.member_ids:
            return self._fit_closed_batch(batch)
        R, k = batch.n_reps, len(batch.terms)
        params, se = np.full((R, k), np.nan), np.full((R, k), np.nan)
        flags = no_flags(R)
        conv, adm = np.ones(R, dtype=bool), np.zeros(R, dtype=bool)
        fallback = batch.complete | (batch.sizes.max(axis=1) < 2)
        rows = np.flatnonzero(~fallback)
        if rows.size:
            x, mask, widths = batch.positional
            out = sem_fiml(x[rows], mask[rows], widths[rows], batch.y[rows], batch.z[rows])
            params[rows], conv[rows] = out["params"], out["converged"]
            good = out["converged"] & out["proper"]
            adm[rows] = good
            se[rows[good]] = out["se"][good]
            add_flags(flags, np.isin(np.arange(R), rows[~out["converged"]]),
                      flag(Reason.NOT_CONVERGED))
            add_flags(flags, np.isin(np.arange(R), rows[out["converged"] & ~out["proper"]]),
                      flag(Reason.NEGATIVE_VARIANCE))
            bad = good & ~np.all(np.isfinite(out["se"]), axis=1)
            add_flags(flags, np.isin(np.arange(R), rows[bad]), flag(Reason.NON_FINITE))
            adm[rows[bad]] = False
        return self.one_step_result(batch, params, se, conv, adm, flags, fallback)

    def _fit_closed_batch(self, batch: Batch) -> BatchResult:
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
        if not data.complete:
            return self._fit_batch(Batch.from_datasets([data])).result(0)
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
