"""Two-level SEM on the long data (any group sizes, p >= 1 x): options and wiring.

x_ig = x^B_g + x^W_ig with Var(x^W) = Sigma_w; at level 2 y and z are between-only and
y = b0 + b_z' z + b_x' x^B + e. The model is fitted by ML from the likelihood of
(y_g, xbar_g) given z_g (normal, covariance Omega + blockdiag(0, Sigma_w / n_g)) times
the within-group part; the kernels are :mod:`micromacro_sim.models.twolevel` (one x, with
its batch partner :mod:`~micromacro_sim.models.twolevel_batch`),
:mod:`~micromacro_sim.models.twolevel_multi` (several x) and
:mod:`~micromacro_sim.models.twolevel_lavaan` (lavaan's default and the joint SEs). Both
engines fit the data centred (x at its grand mean, y and z at their means) and move the
intercept and its SE back to the data's location with the full covariance of the
estimates, so a variable far from 0 relative to its spread fits as well as it does at 0.
"""

from __future__ import annotations

import numpy as np

from micromacro_sim.core.options import Option
from micromacro_sim.core.results import BatchResult, FitResult
from micromacro_sim.core.status import Reason, flag, no_flags
from micromacro_sim.estimators.base import Estimator
from micromacro_sim.generate.batch import Batch
from micromacro_sim.generate.dataset import Dataset
from micromacro_sim.models.twolevel_batch import fit_batch_two_level
from micromacro_sim.models.twolevel_solve import estimate

__all__ = ["SEM2Level"]


class SEM2Level(Estimator):
    """Two-level SEM: latent between part of x, y and z between-only (any group sizes).

    One-step, p >= 1 x (each with its own latent group mean; full within and between
    covariance), any number of z. Terms: intercept, each z, each x. Model-based
    ("classical") SEs from the observed information, normal-based.

    Options
    -------
    lavaan_fixed_x : bool
        False (default): the joint ML in estimates and SEs (lavaan ``fixed.x = FALSE``).
        True: lavaan's default (``fixed.x = TRUE``), for comparison with lavaan output:
        the moments of z and of the latent group mean are fixed at lavaan's EM fit of the
        unrestricted model (which splits the mean of x between the levels and stops early),
        the other parameters are the ML given them, and the SEs hold those moments fixed.
        Its estimates differ from the joint ML (up to 2.4e-2 at G = 25) and its SEs are too
        small: coverage of the nominal 95% interval for xi at Clark's row 16 (G = 100,
        n = 10, sigma2_nu = 9, r_zxi = .3; 1000 replications) is .953 (MCSE .007) by
        default and .909 (.009) with this option; at G = 50, .966 (.006) and .938 (.008).
        Like lavaan's, these estimates depend on where the zero of x lies: the EM starts
        at zero means and gives the between mean of x n/(n + 1) of the grand mean
        (balanced groups), so shifting x by c moves that fixed mean by less than c and
        changes every estimate (a mean of x far from 0 relative to its spread leaves the
        fit not converged or on a bound); shifts of y and z move only the intercept, as
        any shift does by default.

    A between variance at the zero bound is flagged ``negative_variance``; a singular
    between or within covariance (or information) ``not_positive_definite``; an optimizer
    short of its scale-free criterion (the analytic gradient of the profile deviance per
    person) ``not_converged``. Flagged fits have no SEs; NaN estimates are inadmissible.
    The fast path (one x, joint ML) solves every replication at once and hands those near
    the zero bound or not converged to :meth:`fit`; ``lavaan_fixed_x`` runs per dataset.

    Reference: R ``lavaan::sem('level: 1 / x ~~ x / level: 2 / y ~ z + x',
    cluster = 'group', fixed.x = FALSE)``; several x: ``level: 1 / x1 ~~ x1 + x2;
    x2 ~~ x2 / level: 2 / y ~ z + x1 + x2``.
    """

    name = "sem_2level"
    description = "two-level SEM on long data (ML, latent group mean of x)"
    options = {
        "lavaan_fixed_x": Option(False, "bool", "reproduce lavaan's default fixed.x = TRUE "
                                                "(estimates and SEs) instead of the joint ML"),
    }
    max_x = None
    batch_designs = ("balanced", "unbalanced")  # a Batch holds one x; several x use fit()
    uses_member_positions = False  # group means and within sums only

    def _fit(self, data: Dataset) -> FitResult:
        est = estimate(data, lavaan_fixed_x=bool(self.params["lavaan_fixed_x"]))
        bse = {} if est.se is None else {"classical": est.se}
        admissible = not (set(est.reasons) - {Reason.NOT_CONVERGED})
        return FitResult(
            method=self.label, terms=data.terms, params=est.params, bse=bse, df_resid=None,
            converged=est.converged, admissible=admissible and bool(np.all(np.isfinite(
                est.params))), flags=tuple(flag(r) for r in est.reasons), extras=est.extras,
        )

    def _fit_batch(self, batch: Batch) -> BatchResult:
        """All replications at once (the batch kernel: closed form for balanced groups,
        batched Newton otherwise, analytic information); a replication near the zero bound,
        not converged or otherwise degenerate goes through :meth:`fit`, as does every
        replication with ``lavaan_fixed_x``."""
        R, k = batch.n_reps, len(batch.terms)
        params = np.full((R, k), np.nan)
        se = np.full((R, k), np.nan)
        fallback = np.ones(R, dtype=bool)
        if not self.params["lavaan_fixed_x"]:
            p, s, ok = fit_batch_two_level(batch)
            params[ok], se[ok] = p[ok], s[ok]
            fallback = ~ok
        return self.one_step_result(batch, params, se, np.ones(R, dtype=bool),
                                    np.ones(R, dtype=bool), no_flags(R), fallback)
