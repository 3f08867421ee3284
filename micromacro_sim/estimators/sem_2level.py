"""Two-level SEM on the long data (any group sizes, p >= 1 x), by our own ML.

lavaan model (``cluster = group``)::

    level: 1
        x ~~ x
    level: 2
        y ~ z + x

x_ig = x^B_g + x^W_ig with Var(x^W) = sigma_w; at level 2 y and z are between-only and
y = b0 + b_z' z + b_xi x^B + e. lavaan (``fixed.x = TRUE``) treats z and the between part
of x as exogenous covariates: their means, variances and covariance are *fixed* at the
estimates of the unrestricted (saturated) two-level model, and the free parameters are
sigma_w, b0, b_z, b_xi and Var(e). Since the model is a reparametrization of the
saturated one, the estimates are those of the saturated two-level ML; we compute them
from the likelihood of (y_g, xbar_g) given z_g, which for a group of size n_g is
bivariate normal with mean B' [1, z_g] and covariance Omega + diag(0, sigma_w / n_g),
times the within-group part (n_g - 1 contrasts with variance sigma_w). The GLS
coefficients B are profiled out; (sigma_w, Omega) are optimized by BFGS from the ANOVA
moments. Standard errors follow lavaan's default for two-level models
(``information = "observed"``): the inverse Hessian of the log-likelihood in the free
parameters with the fixed ones held at their values.

Several x (``level: 1 / x1 ~~ x1 + x2; x2 ~~ x2 / level: 2 / y ~ z + x1 + x2``): the same
with u_g = (y_g, xbar_g) of length 1 + p, covariance Omega + blockdiag(0, Sigma_w / n_g) and
the pooled within scatter of x (N - G df) for Sigma_w (:func:`fit_two_level_multi`; BFGS
with the analytic gradient, then analytic Newton; reference path only). For one x it
reproduces :func:`fit_two_level`, which keeps its own code and the fast batch engine.

Reference: R ``lavaan::sem(model, data = long, cluster = "group")``.
"""

from __future__ import annotations

import numpy as np

from ..batch import Batch
from ..dataset import Dataset
from ..models.twolevel import fit_two_level, observed_information
from ..models.twolevel_batch import _BOUND_TOL, fit_batch_two_level
from ..models.twolevel_multi import fit_two_level_multi, observed_information_multi
from ..options import Option
from ..results import BatchResult, FitResult
from ..status import Reason, flag, no_flags
from .base import Estimator

__all__ = ["SEM2Level"]


class SEM2Level(Estimator):
    """Two-level SEM: latent between part of x, y and z between-only (any group sizes).

    One-step, p >= 1 x (each with its own latent group mean; full within and between
    covariance), any number of z. Terms: intercept, each z, each x. Model-based
    ("classical") SEs from the observed information, normal-based. One x uses
    :func:`fit_two_level` (and the fast batch engine), several x
    :func:`fit_two_level_multi` (reference path only; a batch holds a single x).

    Options
    -------
    fixed_x : bool
        True (default, lavaan's default): SEs hold the moments of z and of the between
        part of x fixed, which ignores the estimation error of Var(x^B) and so gives
        smaller SEs for b_xi than the single-step SEM. False: those moments are free
        parameters (lavaan ``fixed.x = FALSE``); the estimates are the same.

    A between variance at the zero bound (the unrestricted solution would need a negative
    one) is flagged "negative variance"; with several x, a singular between covariance of
    x^B given z whose variances are positive "not positive definite"; a large gradient at
    the end of the optimization "not converged".

    Reference: R ``lavaan::sem('level: 1 / x ~~ x / level: 2 / y ~ z + x',
    cluster = 'group')``; several x: ``level: 1 / x1 ~~ x1 + x2; x2 ~~ x2 / level: 2 /
    y ~ z + x1 + x2``.
    """

    name = "sem_2level"
    description = "two-level SEM on long data (ML, latent group mean of x)"
    options = {
        "fixed_x": Option(True, "bool", "SEs hold the moments of z and x^B fixed (lavaan's "
                                        "default information) or free them"),
    }
    max_x = None
    batch_designs = ("balanced", "unbalanced")  # a Batch holds one x; several x use fit()

    def _fit(self, data: Dataset) -> FitResult:
        if data.n_x > 1:
            return self._fit_multi(data)
        fit = fit_two_level(data)
        q = data.n_z
        params = np.concatenate([[fit.b0], fit.b_z, [fit.b_xi]])
        extras = {
            "sigma_w": fit.sigma_w, "sigma2_e": fit.sigma2_e, "var_xb": fit.s_xx,
            "cov_z_xb": fit.s_zx, "loglik": fit.loglik, "grad_max": fit.grad_max,
        }
        reasons = []
        if not fit.converged:
            reasons.append(Reason.NOT_CONVERGED)
        if fit.at_bound:
            reasons.append(Reason.NEGATIVE_VARIANCE)
        bse: dict[str, np.ndarray] = {}
        if not reasons:
            info = observed_information(data, fit, fixed_x=bool(self.params["fixed_x"]))
            try:
                cov = np.linalg.inv(info)
                var = np.diag(cov)
                if np.any(var <= 0) or not np.all(np.isfinite(var)):
                    raise np.linalg.LinAlgError("information not positive definite")
                idx = np.concatenate([[1], 2 + np.arange(q), [2 + q]])
                bse = {"classical": np.sqrt(var[idx])}
            except np.linalg.LinAlgError:
                reasons.append(Reason.NOT_POSITIVE_DEFINITE)
        return FitResult(
            method=self.label, terms=data.terms, params=params, bse=bse, df_resid=None,
            converged=fit.converged,
            admissible=not (set(reasons) - {Reason.NOT_CONVERGED}),
            flags=tuple(flag(r) for r in reasons), extras=extras,
        )

    def _fit_multi(self, data: Dataset) -> FitResult:
        """Several x: :func:`fit_two_level_multi`, SEs from
        :func:`observed_information_multi`. Collinear x within groups (a singular pooled
        within covariance) leave the likelihood unbounded: no estimates, "not positive
        definite"."""
        dev = data.x - np.repeat(data.xbar, data.sizes, axis=0)
        scatter = dev.T @ dev
        dw = np.sqrt(np.diag(scatter))
        if (not np.all(dw > 0)
                or np.linalg.eigvalsh(scatter / np.outer(dw, dw))[0] < _BOUND_TOL):
            return FitResult.failed(self.label, data.terms, flag(Reason.NOT_POSITIVE_DEFINITE))
        fit = fit_two_level_multi(data)
        q, p = data.n_z, data.n_x
        params = np.concatenate([[fit.b0], fit.b_z, fit.b_x])
        extras = {
            "sigma_w": fit.sigma_w, "sigma2_e": fit.sigma2_e, "var_xb": fit.s_xx,
            "cov_z_xb": fit.s_zx, "loglik": fit.loglik, "grad_max": fit.grad_max,
        }
        reasons = [] if fit.converged else [Reason.NOT_CONVERGED]
        if fit.reason:
            reasons.append(fit.reason)
        bse: dict[str, np.ndarray] = {}
        if not reasons:
            info = observed_information_multi(data, fit, fixed_x=bool(self.params["fixed_x"]))
            try:
                var = np.diag(np.linalg.inv(info))
                if np.any(var <= 0) or not np.all(np.isfinite(var)):
                    raise np.linalg.LinAlgError("information not positive definite")
                nw = p * (p + 1) // 2
                bse = {"classical": np.sqrt(var[nw : nw + 1 + q + p])}
            except np.linalg.LinAlgError:
                reasons.append(Reason.NOT_POSITIVE_DEFINITE)
        return FitResult(
            method=self.label, terms=data.terms, params=params, bse=bse, df_resid=None,
            converged=fit.converged,
            admissible=not (set(reasons) - {Reason.NOT_CONVERGED}),
            flags=tuple(flag(r) for r in reasons), extras=extras,
        )

    def _fit_batch(self, batch: Batch) -> BatchResult:
        """All replications at once (the batch kernel: closed form for
        balanced groups, batched Newton otherwise, analytic observed information); a
        replication near the zero bound, not converged or otherwise degenerate goes
        through :meth:`fit`, as does every replication with ``fixed_x=False``."""
        R, k = batch.n_reps, len(batch.terms)
        params = np.full((R, k), np.nan)
        se = np.full((R, k), np.nan)
        conv = np.ones(R, dtype=bool)
        adm = np.ones(R, dtype=bool)
        fallback = np.ones(R, dtype=bool)
        if self.params["fixed_x"]:
            p, s, ok = fit_batch_two_level(batch)
            params[ok], se[ok] = p[ok], s[ok]
            fallback = ~ok
        return self.one_step_result(batch, params, se, conv, adm, no_flags(R), fallback)
