"""Two-stage path analysis (2S-PA) with a per-group error variance (Lai & Hsiao, 2022).

Stage 1 scores each group by the mean of its observed members with its own error
variance, pooled within-group variance / n_g; stage 2 fits the structural model by ML with
that error variance as a known per-group quantity (an OpenMx definition variable). The
kernels are :mod:`micromacro_sim.models.tspa`; see ``docs/tspa.md``.
"""

from __future__ import annotations

import numpy as np

from micromacro_sim.core.errors import NotApplicable
from micromacro_sim.core.results import BatchResult, FitResult
from micromacro_sim.core.status import Reason, add_flags, flag, no_flags
from micromacro_sim.estimators.base import Estimator
from micromacro_sim.generate.batch import Batch
from micromacro_sim.generate.dataset import Dataset
from micromacro_sim.models.tspa import TSPAFit, fit_tspa, stage1, stage1_batch

__all__ = ["TSPA"]

#: Why the error variance of the scores is not estimable.
NO_WITHIN = "needs a group with at least 2 members (pooled within-group variance)"


def _verdicts(fit: TSPAFit) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """SEs (NaN unless admissible), converged, admissible and flags of every replication."""
    R = fit.params.shape[0]
    finite = np.all(np.isfinite(fit.params), axis=1)
    conv = fit.converged & finite
    improper = conv & ~fit.proper
    good = conv & fit.proper
    bad_se = good & ~np.all(np.isfinite(fit.se), axis=1)
    adm = good & ~bad_se
    flags = no_flags(R)
    add_flags(flags, ~conv, flag(Reason.NOT_CONVERGED))
    add_flags(flags, improper, flag(Reason.NEGATIVE_VARIANCE))
    add_flags(flags, bad_se, flag(Reason.NON_FINITE))
    se = np.where(adm[:, None], fit.se, np.nan)
    return se, conv, adm, flags


class TSPA(Estimator):
    """Two-stage path analysis: group means with per-group error variance, then ML.

    One x, any number of z. Stage 1: ``s_g`` = mean of the group's observed members,
    ``ev_g = sigma2_w / n_g`` (pooled within-group variance), the Bartlett factor score of
    the parallel one-factor model of the members and its error variance. Stage 2: ML of
    ``s_g = eta_g + u_g`` (``Var u_g = ev_g`` known), ``eta_g = a + gamma' z_g + zeta_g``,
    ``y_g = b0 + b_z' z_g + b_xi eta_g + e_g``, the likelihood of (s, y) given z, by
    batched Newton. Terms: intercept (where eta = 0, on the scale of x), each z, xi.
    Model-based ("classical") SEs from the observed information (OpenMx's), normal-based;
    the stage-1 error variances are treated as known.

    psi <= 0 or s2e <= 0 at the optimum is flagged ``negative_variance``, a fit that does not
    converge ``not_converged``, non-finite SEs ``non_finite``; flagged fits have no SEs.
    Not applicable (``too_few_members``) when no group has two members.

    Reference: Lai & Hsiao (2022), Psychological Methods 27(4), 568-588; R2spa
    ``tspa_mx_model()`` (OpenMx with definition variables).
    """

    name = "tspa"
    description = "two-stage path analysis (group means with per-group error variance, ML)"
    max_x = 1
    two_step = False
    default_se = "classical"
    scale = "x"
    origin = "x_zero"
    batch_designs = ("balanced", "unbalanced")
    uses_member_positions = False  # group means and within sums only

    def check_applicable(self, data: Dataset) -> None:
        super().check_applicable(data)
        if data.n_persons <= data.n_groups:
            raise NotApplicable(Reason.TOO_FEW_MEMBERS, NO_WITHIN)

    def _fit(self, data: Dataset) -> FitResult:
        st = stage1(data.group, data.x[:, 0], data.n_groups)
        fit = fit_tspa(st.score[None], st.ev[None], data.z[None], data.y[None])
        se, conv, adm, flags = _verdicts(fit)
        extras = {"psi": float(fit.psi[0]), "s2e": float(fit.s2e[0]),
                  "sigma2_w": st.sigma2_w, "m2ll": float(fit.m2ll[0]),
                  "loglik": -0.5 * float(fit.m2ll[0]),
                  "iterations": int(fit.iterations[0]), "ev": st.ev}
        bse = {"classical": se[0]} if adm[0] else {}
        return FitResult(
            method=self.label, terms=data.terms, params=fit.params[0], bse=bse,
            df_resid=None, converged=bool(conv[0]), admissible=bool(adm[0]),
            flags=tuple(flags[0]), extras=extras,
        )

    def _fit_batch(self, batch: Batch) -> BatchResult:
        """Stage 1 and stage 2 on every replication at once. Datasets
        without a group of two members go through :meth:`fit` (not applicable)."""
        R, k = batch.n_reps, len(batch.terms)
        params, se = np.full((R, k), np.nan), np.full((R, k), np.nan)
        conv, adm = np.ones(R, dtype=bool), np.zeros(R, dtype=bool)
        flags = no_flags(R)
        fallback = np.array([d.n_persons <= d.n_groups for d in batch.datasets], dtype=bool)
        rows = np.flatnonzero(~fallback)
        if rows.size:
            score, ev, _ = stage1_batch(batch.x[rows], batch.sizes[rows])
            fit = fit_tspa(score, ev, batch.z[rows], batch.y[rows])
            s, c, a, f = _verdicts(fit)
            params[rows], se[rows], conv[rows], adm[rows] = fit.params, s, c, a
            for i, r in enumerate(rows):
                flags[r] = f[i]
        return self.one_step_result(batch, params, se, conv, adm, flags, fallback)
