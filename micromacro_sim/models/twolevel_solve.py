"""One dataset through the two-level kernels: estimates, SEs and reason codes.

The joint ML (lavaan ``fixed.x = FALSE``; the default) or lavaan's default solution
(``fixed.x = TRUE``: :mod:`.twolevel_lavaan`), for p >= 1 x; one x uses
:mod:`.twolevel` (the partner of the batch kernel), several x :mod:`.twolevel_multi`.
The data are fitted centred and the estimates moved back to their own location
(:func:`~.twolevel_batch.centre`, :func:`~.twolevel_batch.uncentre`), as in the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from micromacro_sim.core.status import Reason
from micromacro_sim.generate.dataset import Dataset
from micromacro_sim.models.twolevel import TwoLevelFit, fit_two_level, joint_cov_one, prepare_data
from micromacro_sim.models.twolevel_batch import BOUND_TOL, centre, standard_errors, uncentre
from micromacro_sim.models.twolevel_lavaan import (
    conditional_objective,
    fit_fixed_x,
    joint_cov,
    lavaan_h1_moments,
    regression_start,
)
from micromacro_sim.models.twolevel_multi import (
    TwoLevelFitMulti,
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
    converged, the reason codes (empty for a clean fit), the other parameters and the
    covariance of the estimates (None when the SEs are withheld)."""

    params: np.ndarray
    se: np.ndarray | None
    converged: bool
    reasons: tuple[Reason, ...]
    extras: dict = field(default_factory=dict)
    cov: np.ndarray | None = None


#: What :func:`_joint` and :func:`_lavaan` return: estimates and their covariance (None
#: when withheld) in the coordinates of the data they fit, convergence, the reason code
#: and the other parameters.
_Solution = tuple[np.ndarray, np.ndarray | None, bool, Reason | None, dict]


def _within_singular(data: Dataset) -> bool:
    """Collinear x within groups (a singular pooled within covariance)."""
    dev = data.x - np.repeat(data.xbar, data.sizes, axis=0)
    scatter = dev.T @ dev
    dw = np.sqrt(np.diag(scatter))
    return bool(not np.all(dw > 0)
                or np.linalg.eigvalsh(scatter / np.outer(dw, dw))[0] < BOUND_TOL)


def _joint(data: Dataset) -> _Solution:
    """The joint ML and the covariance of (b0, b_z, b_x)."""
    if data.n_x == 1:
        fit = fit_two_level(data)
        params = np.concatenate([[fit.b0], fit.b_z, [fit.b_xi]])
    else:
        fit = fit_two_level_multi(data)
        params = np.concatenate([[fit.b0], fit.b_z, fit.b_x])
    cov = None
    if not (fit.reason or not fit.converged):
        if data.n_x == 1:
            cov = joint_cov_one(prepare_data(data), fit)
        else:
            d, q, p = prepare_multi(data), data.n_z, data.n_x
            psi = psi_multi(*conditional_multi(fit.free(), q, p, fit.moments()))
            cov = joint_cov(psi, derivs_multi(d, psi)[2], p, q)
    extras = {"sigma_w": fit.sigma_w, "sigma2_e": fit.sigma2_e, "var_xb": fit.s_xx,
              "cov_z_xb": fit.s_zx, "loglik": fit.loglik, "grad_max": fit.grad_max}
    return params, cov, fit.converged, fit.reason, extras | {"_fit": fit}


def _lavaan(data: Dataset, fit: TwoLevelFit | TwoLevelFitMulti, origin: np.ndarray
            ) -> _Solution:
    """lavaan's default: moments fixed at its EM H1 fit, the rest by ML given them.

    ``origin`` is where the zero of the data as given lies in ``data`` (centred): lavaan's
    EM starts there (:func:`~.twolevel_lavaan.lavaan_h1_moments`).
    """
    q, p = data.n_z, data.n_x
    nw = p * (p + 1) // 2
    moments = lavaan_h1_moments(data, origin)
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
    cov = None
    if conv and reason is None:
        b = slice(nw, nw + 1 + q + p)
        with np.errstate(all="ignore"):
            try:
                cov = np.linalg.inv(H)[b, b]
            except np.linalg.LinAlgError:
                cov = None
    i = q + q * (q + 1) // 2
    extras = {"sigma_w": sw if p > 1 else float(sw[0, 0]), "sigma2_e": s2e,
              "var_xb": (unvech(moments[i + q * p : i + q * p + nw], p) if p > 1
                         else float(moments[i + q * p])),
              "cov_z_xb": moments[i : i + q * p].reshape(q, p)}
    return theta[nw : nw + 1 + q + p], cov, conv, reason, extras


def estimate(data: Dataset, *, lavaan_fixed_x: bool = False) -> TwoLevelEstimate:
    """Fit the two-level model to one dataset.

    The fit is made to the centred data (:func:`~.twolevel_batch.centre`) and moved back
    to the data's own location (:func:`~.twolevel_batch.uncentre`: the intercept and its
    variance by the full covariance of the estimates); with ``lavaan_fixed_x`` lavaan's
    EM starts at the data's own zero, as lavaan's does.

    Reasons: ``NOT_POSITIVE_DEFINITE`` for collinear x within groups (no estimates), or a
    singular information / between covariance; ``NEGATIVE_VARIANCE`` at the zero bound;
    ``NOT_CONVERGED`` when the optimizer did not reach its (scale-free) criterion. SEs
    are given only for a clean fit.
    """
    k = 1 + data.n_z + data.n_x
    centred, shift = centre(data)
    if data.n_x > 1 and _within_singular(centred):
        return TwoLevelEstimate(np.full(k, np.nan), None, False,
                                (Reason.NOT_POSITIVE_DEFINITE,))
    with np.errstate(all="ignore"):
        params, cov, conv, reason, extras = _joint(centred)
        fit = extras.pop("_fit")
        if lavaan_fixed_x:
            params, cov, conv, reason, extras = _lavaan(centred, fit, -shift)
        params, cov = (a[0] for a in uncentre(
            params[None], np.full((1, k, k), np.nan) if cov is None else cov[None],
            shift[None]))
    se = standard_errors(cov)
    se = se if np.all(np.isfinite(se)) else None
    reasons = [] if conv else [Reason.NOT_CONVERGED]
    if reason is not None:
        reasons.append(reason)
    elif conv and se is None:
        reasons.append(Reason.NOT_POSITIVE_DEFINITE)
    if not np.all(np.isfinite(params)) and Reason.NOT_CONVERGED not in reasons:
        reasons.insert(0, Reason.NOT_CONVERGED)
    withheld = bool(reasons) or se is None
    return TwoLevelEstimate(params, None if withheld else se, conv, tuple(reasons), extras,
                            None if withheld else cov)
