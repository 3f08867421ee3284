"""Local SAM on incomplete members: ``lavaan::sam(..., sam.method = "local", missing = "ml")``.

The wide layout has one row per group: the K member positions x_1..x_K (absent members
are missing cells), y and Z_1..Z_q (always observed). lavaan 0.6.14 then proceeds as
follows (``sam()``; the function names are lavaan's):

1. Data checks (``lav_data_full``): a column observed in a single row, or without
   variance, is an error; a pair of columns never observed together ("0% coverage") is a
   warning.
2. Saturated h1 moments of all columns by EM (``lav_mvnorm_missing_h1_estimate_moments``,
   :func:`~micromacro_sim.models.h1_em.em_moments`): ``FIT@h1$implied``.
3. Measurement step: FIML of the measurement model on the x columns alone, bounds
   0 <= v <= Var(x_1), 0 <= psi <= max_k Var(x_k) from the EM moments of the x columns
   alone (``lav_partable_add_bounds`` reads ``missing.h1``), see
   :mod:`~micromacro_sim.models.sam_fiml_mm`; the covariance of its estimates from the
   inverse information of that fit (``se = "standard"``).
4. Mapping matrix M = (L' T^-1 L)^-1 L' T^-1 = 1'/K on the x block (identity on y, Z);
   MSM = M COV M' with COV the h1 covariance of step 2, MTM = v/K in the lv cell;
   ``lav_matrix_symmetric_diff_smallest_root`` gives lambda = (MSM_lv|y,Z) / (v/K)
   (0 when v/K < sqrt(machine eps)); Var(eta) = MSM - MTM, or
   MSM - (lambda - 1/(G - 1)) MTM when lambda < 1 + 1/(G - 1) (``veta.force.pd``).
5. Structural step: the saturated regression y ~ Z + lv from Var(eta), as with complete
   data.
6. Two-step SEs from the joint model's information on the raw data
   (:mod:`~micromacro_sim.models.sam_fiml_joint`). lavaan's default under
   ``missing = "ml"`` is the *observed* information for both steps.

``information``: ``"expected"`` (default here) is lavaan's
``sam(..., missing = "ml", information = "expected")``; on complete data it reproduces
the complete-data method (:func:`~micromacro_sim.models.sam.sam_fit`) exactly.
``"observed"`` is lavaan's ``missing = "ml"`` default; on complete data its SEs differ
from the complete-data ones (by 1e-4 to 2e-4 relative in the tests; the point
estimates agree). With missing members the observed information of the joint model,
evaluated away from its optimum, can be far from the expected one in small or low-ICC
samples (NaN or several-fold SEs, in lavaan as here).

Intercept (not reported by lavaan, whose joint model keeps the start values for the
intercepts): b0 = mu_y - b_lv mean_k(mu_x_k) - b_z' mu_Z with the h1 (EM) means, the
analogue of the complete-data method's mean(y) - b' mean(lv, Z). Its SE by the delta
method, the means independent of the slopes: a' V_mu a + m' Var(b) m, with V_mu the
inverse of sum_g P_g' Sigma_O^-1 P_g at the joint model's covariance (Sigma / G on
complete data, as the complete-data method) and a = (-b_lv/K 1_K, 1, -b_z).
"""

from __future__ import annotations

import numpy as np

from micromacro_sim.core.status import Reason
from micromacro_sim.models.h1_em import EMMoments, em_moments, padded_inverse
from micromacro_sim.models.sam_fiml_joint import joint_model, twostep_vcov
from micromacro_sim.models.sam_fiml_lik import INFORMATION
from micromacro_sim.models.sam_fiml_mm import (
    Measurement,
    fit_measurement,
    measurement_information,
)
from micromacro_sim.models.wide_layout import layout_problem

__all__ = ["data_verdict", "sam_fit_missing"]

BOUNDS = ("standard", "none")


def data_verdict(x: np.ndarray, mask: np.ndarray, y: np.ndarray,
                 z: np.ndarray) -> tuple[Reason | None, str]:
    """lavaan's data checks: (reason, message) when lavaan refuses the data, else
    (None, warning text or "").

    lavaan stops when a column (a member position, y or a Z) has a single observation
    or no variance; the verdict is :attr:`Reason.SPARSE_POSITION` for a member position,
    :attr:`Reason.TOO_FEW_MEMBERS` for y or a Z. Zero coverage (two positions never
    observed in the same group) is only a warning in lavaan; it is returned as the
    message (see :func:`sam_fit_missing`).
    """
    problem = layout_problem(x, mask, min_positions=2)
    if problem is not None:
        return (problem[0], f"{problem[1]} (lavaan: some variables have only 1 observation "
                            "or no finite variance)")
    for c in (y, *z.T):
        if not np.ptp(c) > 0:
            return Reason.TOO_FEW_MEMBERS, "y or a Z has no variance"
    m = mask.astype(float)
    if np.any(m.T @ m == 0):
        return None, "two member positions are never observed in the same group"
    return None, ""


def _nan_result(K: int, q: int, reason: Reason, message: str) -> dict:
    nan = float("nan")
    k = q + 2
    return {"params": np.full(k, nan), "se": np.full(k, nan), "veta": np.full((k, k), nan),
            "lambda": nan, "adjusted": False, "v": nan, "psi_mm": nan,
            "psi_mm_unbounded": nan, "v_unbounded": nan, "bounded": False, "psi_y": nan,
            "vcov_struct": None, "nu": np.full(K, nan), "mu_h1": None, "sigma_h1": None,
            "em_iter": (0, 0), "reasons": (reason,),
            "reason": reason, "message": message, "estimable": False}


def _measurement(x: np.ndarray, mask: np.ndarray, bounds: str
                 ) -> tuple[Measurement, Measurement, EMMoments]:
    """Unbounded and (per ``bounds``) bounded FIML measurement fits, and the EM moments
    of the x columns alone (lavaan computes them for the measurement fit whatever the
    bounds, and warns about them)."""
    em_x = em_moments(x, mask)
    free = fit_measurement(x, mask, upper=None)
    if bounds == "none":
        return free, free, em_x
    upper = (float(em_x.sigma[0, 0]), float(np.max(np.diag(em_x.sigma))))
    inside = free.converged and 0 <= free.v <= upper[0] and 0 <= free.psi <= upper[1]
    if inside:
        return free, free, em_x
    return free, fit_measurement(x, mask, upper=upper, start=free), em_x


def _croon(sig: np.ndarray, K: int, v: float, G: int) -> tuple[np.ndarray, float, bool]:
    """Var(eta) of (lv, y, Z) from the h1 covariance of [x, y, Z] (lavaan's step 4)."""
    P = sig.shape[0]
    M = np.zeros((P - K + 1, P))
    M[0, :K] = 1.0 / K
    M[1:, K:] = np.eye(P - K)
    msm = M @ sig @ M.T
    mtm = v / K
    if not mtm >= np.sqrt(np.finfo(float).eps):
        lam = 0.0  # lavaan: every diagonal element of MTM is (near) zero
    else:
        rest = msm[1:, 1:]
        lam = float((msm[0, 0] - msm[0, 1:] @ np.linalg.solve(rest, msm[1:, 0])) / mtm)
    adjusted = bool(lam < 1 + 1 / (G - 1))
    veta = msm.copy()
    veta[0, 0] -= (lam - 1 / (G - 1)) * mtm if adjusted else mtm
    return veta, lam, adjusted


def _verdicts(free: Measurement, meas: Measurement, lam: float, coverage: str,
              ems: tuple[EMMoments, ...], se: np.ndarray) -> tuple[Reason, ...]:
    """Every verdict of a fit, most important first."""
    checks = (
        (Reason.NEGATIVE_VARIANCE, not (free.psi > 0 and meas.psi > 0)),
        (Reason.NOT_POSITIVE_DEFINITE, not lam > 1),
        (Reason.SAMPLE_COV_NOT_PD, bool(coverage) or any(e.near_singular for e in ems)),
        (Reason.NOT_CONVERGED, not (meas.converged and all(e.converged for e in ems))),
        (Reason.NON_FINITE, not np.all(np.isfinite(se))),
    )
    return tuple(reason for reason, hit in checks if hit)


def sam_fit_missing(x: np.ndarray, mask: np.ndarray, y: np.ndarray, z: np.ndarray, *,
                    bounds: str = "standard", information: str = "expected") -> dict:
    """Local SAM estimates and two-step SEs of y ~ Z + lv, lv ~~ Z with absent members.

    Parameters
    ----------
    x : ndarray (G, K)
        Member positions (any value where ``mask`` is False).
    mask : ndarray of bool (G, K)
        Observed members; every column observed in at least one group, K >= 2.
    y : ndarray (G,)
    z : ndarray (G, q), q >= 0
    bounds : {"standard", "none"}
        Measurement-step bounds as lavaan's ``sam()`` or none.
    information : {"expected", "observed"}
        Information of both steps' SEs (lavaan's ``missing = "ml"`` default is
        "observed"; "expected" reproduces the complete-data method on complete data).

    Returns
    -------
    dict
        The keys of :func:`~micromacro_sim.models.sam.sam_fit` (``params``
        (intercept, Z..., xi), ``se``, ``veta`` (lv, y, Z), ``lambda``, ``adjusted``,
        ``v``, ``psi_mm``, ``psi_mm_unbounded``, ``v_unbounded``, ``bounded``, ``psi_y``,
        ``vcov_struct``) and ``nu`` (intercepts), ``mu_h1``, ``sigma_h1`` (EM moments of
        [x, y, Z]), ``em_iter``, ``message``, ``estimable``, ``reasons`` (every verdict)
        and ``reason`` (the first, None when admissible): ``SPARSE_POSITION`` (or
        ``TOO_FEW_MEMBERS`` for a y or Z without variance) when lavaan refuses the
        data (NaN estimates, see :func:`data_verdict`);
        ``NEGATIVE_VARIANCE`` (unbounded or bounded factor variance <= 0, as the
        complete-data method); ``NOT_POSITIVE_DEFINITE`` (lambda <= 1);
        ``SAMPLE_COV_NOT_PD`` (zero coverage, or lavaan's EM warning of an eigenvalue
        below 1e-5); ``NOT_CONVERGED`` (lavaan's EM warning of the iteration limit, or
        the measurement step); ``NON_FINITE`` (a SE is not finite: the observed
        information can be indefinite, lavaan then reports NaN).
    """
    if bounds not in BOUNDS:
        raise ValueError(f"bounds: expected one of {BOUNDS}, got {bounds!r}")
    if information not in INFORMATION:
        raise ValueError(f"information: expected one of {INFORMATION}, got {information!r}")
    x, mask = np.asarray(x, dtype=float), np.asarray(mask, dtype=bool)
    y = np.asarray(y, dtype=float)
    z = np.asarray(z, dtype=float).reshape(len(y), -1)
    G, K = x.shape
    q = z.shape[1]
    if K < 2 or not mask.any(axis=0).all():
        raise ValueError("need K >= 2 member positions, each observed in some group")
    reason, message = data_verdict(x, mask, y, z)
    if reason is not None:
        return _nan_result(K, q, reason, message)
    data = np.column_stack([np.where(mask, x, 0.0), y, z])
    dmask = np.column_stack([mask, np.ones((G, 1 + q), bool)])
    em = em_moments(data, dmask)
    free, meas, em_x = _measurement(x, mask, bounds)
    veta, lam, adjusted = _croon(em.sigma, K, meas.v, G)
    idx = [0, *range(2, 2 + q)]  # (lv, Z)
    phi = veta[np.ix_(idx, idx)]
    coef = np.linalg.solve(phi, veta[idx, 1])  # (b_lv, b_z)
    psi_y = float(veta[1, 1] - coef @ phi @ coef)
    model = joint_model(K, meas.nu, meas.v, coef, psi_y, phi, float(y.mean()), z.mean(axis=0))
    _, info_mm = measurement_information(x[mask.any(axis=1)], mask[mask.any(axis=1)], meas,
                                         information=information)
    sigma11 = np.linalg.inv(info_mm)[: K + 1, : K + 1]  # (nu, v); psi rows dropped
    vcov = twostep_vcov(data, dmask, model, K, sigma11, information=information)
    with np.errstate(invalid="ignore"):  # the observed information may be indefinite
        b0, se = _intercept_and_se(em, model[1], dmask, coef, vcov, K)
    reasons = _verdicts(free, meas, lam, message, (em, em_x), se)
    n_cov = len(coef) + 1 + len(idx) * (len(idx) + 1) // 2
    return {
        "params": np.concatenate([[b0], coef[1:], coef[:1]]), "se": se, "veta": veta,
        "lambda": lam, "adjusted": adjusted, "v": meas.v, "psi_mm": meas.psi,
        "psi_mm_unbounded": free.psi, "v_unbounded": free.v,
        "bounded": bool(meas.active), "psi_y": psi_y, "vcov_struct": vcov[:n_cov, :n_cov],
        "nu": meas.nu, "mu_h1": em.mu, "sigma_h1": em.sigma, "em_iter": (em.n_iter, em_x.n_iter),
        "message": message, "estimable": True, "reasons": reasons,
        "reason": reasons[0] if reasons else None,
    }


def _intercept_and_se(em, sigma: np.ndarray, dmask: np.ndarray, coef: np.ndarray,
                      vcov: np.ndarray, K: int) -> tuple[float, np.ndarray]:
    """b0 = mu_y - b' (mean_k mu_x_k, mu_Z) from the h1 means, and the SEs of
    (intercept, Z..., lv)."""
    q = len(coef) - 1
    mu = em.mu
    means = np.concatenate([[mu[:K].mean()], mu[K + 1 :]])
    b0 = float(mu[K] - coef @ means)
    W, _ = padded_inverse(sigma, dmask)
    v_mu = np.linalg.inv(W.sum(axis=0))
    a = np.concatenate([np.full(K, -coef[0] / K), [1.0], -coef[1:]])
    vb = vcov[: q + 1, : q + 1]
    var_b0 = a @ v_mu @ a + means @ vb @ means
    order = [*range(1, q + 1), 0]
    return b0, np.concatenate([[np.sqrt(var_b0)], np.sqrt(np.diag(vb)[order])])
