"""One dataset through the two-level kernels: estimates, SEs and reason codes.

The joint ML (lavaan ``fixed.x = FALSE``; the default) or lavaan's default solution
(``fixed.x = TRUE``: :mod:`.twolevel_lavaan`), for p >= 1 x; one x uses
:mod:`.twolevel` (the partner of the batch kernel), several x :mod:`.twolevel_multi`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from micromacro_sim.core.status import Reason
from micromacro_sim.generate.dataset import Dataset
from micromacro_sim.models.twolevel import fit_two_level, joint_se_one, prepare_data
from micromacro_sim.models.twolevel_batch import BOUND_TOL
from micromacro_sim.models.twolevel_lavaan import (
    conditional_objective,
    fit_fixed_x,
    joint_se,
    lavaan_h1_moments,
    regression_start,
)
from micromacro_sim.models.twolevel_multi import (
    conditional_multi,
    derivs_multi,
    fit_two_level_multi,
    prepare_multi,
    psi_multi,
    unvech,
    verdict_multi,
)

__all__ = ["TwoLevelEstimate", "estimate"]


@dataclass(frozen=True)
class TwoLevelEstimate:
    """Estimates (b0, b_z, b_x), their SEs (None when withheld), whether the optimizer
    converged, the reason codes (empty for a clean fit) and the other parameters."""

    params: np.ndarray
    se: np.ndarray | None
    converged: bool
    reasons: tuple[Reason, ...]
    extras: dict = field(default_factory=dict)


def _within_singular(data: Dataset) -> bool:
    """Collinear x within groups (a singular pooled within covariance)."""
    dev = data.x - np.repeat(data.xbar, data.sizes, axis=0)
    scatter = dev.T @ dev
    dw = np.sqrt(np.diag(scatter))
    return bool(not np.all(dw > 0)
                or np.linalg.eigvalsh(scatter / np.outer(dw, dw))[0] < BOUND_TOL)


def _joint(data: Dataset) -> tuple[np.ndarray, np.ndarray | None, bool, Reason | None, dict]:
    """The joint ML and its SEs."""
    if data.n_x == 1:
        fit = fit_two_level(data)
        params = np.concatenate([[fit.b0], fit.b_z, [fit.b_xi]])
        se = None if (fit.reason or not fit.converged) else joint_se_one(prepare_data(data), fit)
    else:
        fit = fit_two_level_multi(data)
        params = np.concatenate([[fit.b0], fit.b_z, fit.b_x])
        se = None
        if not (fit.reason or not fit.converged):
            d, q, p = prepare_multi(data), data.n_z, data.n_x
            psi = psi_multi(*conditional_multi(fit.free(), q, p, fit.moments()))
            se = joint_se(psi, derivs_multi(d, psi)[2], p, q)
    extras = {"sigma_w": fit.sigma_w, "sigma2_e": fit.sigma2_e, "var_xb": fit.s_xx,
              "cov_z_xb": fit.s_zx, "loglik": fit.loglik, "grad_max": fit.grad_max}
    return params, se, fit.converged, fit.reason, extras | {"_fit": fit}


def _lavaan(data: Dataset, fit) -> tuple[np.ndarray, np.ndarray | None, bool, Reason | None,
                                         dict]:
    """lavaan's default: moments fixed at its EM H1 fit, the rest by ML given them."""
    q, p = data.n_z, data.n_x
    nw = p * (p + 1) // 2
    moments = lavaan_h1_moments(data)
    d = prepare_multi(data)
    var = np.var(np.column_stack([data.y, data.xbar]), axis=0)

    def verdict(theta: np.ndarray) -> Reason | None:
        sw, om, _ = conditional_multi(theta, q, p, moments)
        return verdict_multi(om[1:, 1:], float(theta[-1]), sw, var_y=float(var[0]),
                              var_xbar=var[1:])

    theta, conv, H = fit_fixed_x(d, moments, fit.free())
    reason = verdict(theta)
    if not conv or reason is not None:
        # the joint ML may sit on a bound the conditional ML is off: restart from the
        # interior regression start and keep whichever converged lower on the objective
        alt, alt_conv, alt_H = fit_fixed_x(d, moments, regression_start(data))
        f_alt = conditional_objective(d, moments, alt)
        if alt_conv and np.isfinite(f_alt) and (
                not conv or f_alt < conditional_objective(d, moments, theta)):
            theta, conv, H, reason = alt, alt_conv, alt_H, verdict(alt)
    sw = conditional_multi(theta, q, p, moments)[0]
    s2e = float(theta[-1])
    se = None
    if conv and reason is None:
        with np.errstate(all="ignore"):
            try:
                v = np.diag(np.linalg.inv(H))[nw : nw + 1 + q + p]
            except np.linalg.LinAlgError:
                v = np.full(1 + q + p, np.nan)
        se = np.sqrt(v) if np.all(np.isfinite(v) & (v > 0)) else None
    i = q + q * (q + 1) // 2
    extras = {"sigma_w": sw if p > 1 else float(sw[0, 0]), "sigma2_e": s2e,
              "var_xb": (unvech(moments[i + q * p : i + q * p + nw], p) if p > 1
                         else float(moments[i + q * p])),
              "cov_z_xb": moments[i : i + q * p].reshape(q, p)}
    return theta[nw : nw + 1 + q + p], se, conv, reason, extras


def estimate(data: Dataset, *, lavaan_fixed_x: bool = False) -> TwoLevelEstimate:
    """Fit the two-level model to one dataset.

    Reasons: ``NOT_POSITIVE_DEFINITE`` for collinear x within groups (no estimates), or a
    singular information / between covariance; ``NEGATIVE_VARIANCE`` at the zero bound;
    ``NOT_CONVERGED`` when the optimizer did not reach its (scale-free) criterion. SEs
    are given only for a clean fit.
    """
    k = 1 + data.n_z + data.n_x
    if data.n_x > 1 and _within_singular(data):
        return TwoLevelEstimate(np.full(k, np.nan), None, False,
                                (Reason.NOT_POSITIVE_DEFINITE,))
    with np.errstate(all="ignore"):
        params, se, conv, reason, extras = _joint(data)
        fit = extras.pop("_fit")
        if lavaan_fixed_x:
            params, se, conv, reason, extras = _lavaan(data, fit)
    reasons = [] if conv else [Reason.NOT_CONVERGED]
    if reason is not None:
        reasons.append(reason)
    elif conv and se is None:
        reasons.append(Reason.NOT_POSITIVE_DEFINITE)
    if not np.all(np.isfinite(params)) and Reason.NOT_CONVERGED not in reasons:
        reasons.insert(0, Reason.NOT_CONVERGED)
    return TwoLevelEstimate(params, se if not reasons else None, conv, tuple(reasons), extras)
