"""Local structural-after-measurement (SAM): factor-score regression with Croon's correction.

Devlieger, Mayer & Rosseel (2016) correct the moments of factor scores for their
measurement error (Croon's method); Rosseel & Loh's local SAM, lavaan's ``sam()``, is
the modern form of the same idea. lavaan 0.6.14 does not export ``fsr()`` (it is
internal only), so this method reproduces ``lavaan::sam(model, sam.method = "local")``
(default options) and is named ``sam``.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar

from ..dataset import Dataset
from .base import Estimator, FitResult

__all__ = ["LocalSAM", "ml_moments", "sam_fit"]


def ml_moments(data: Dataset) -> dict[str, np.ndarray | float]:
    """Unbounded ML of the equal-loading, equal-residual one-factor model (balanced data).

    Returns
    -------
    dict
        ``n`` members per group, ``v`` ML residual variance (the within variance of
        member-position-centred x over G(n-1)), ``psi`` ML factor variance
        ``Var_ML(xbar) - v/n``, ``mu_x`` grand mean, ``xbar`` (G,), ``a`` = 1'S1/n,
        ``var_items`` ML variances of the n member positions.
    """
    X = data.wide(0)
    G, n = X.shape
    if n < 2:
        raise ValueError("the measurement model needs at least 2 members per group")
    xc = X - X.mean(axis=0)
    xbar = X.mean(axis=1)
    tot = n * np.sum((xbar - xbar.mean()) ** 2) / G  # 1'S1/n with S the ML covariance
    v = (np.sum(xc**2) / G - tot) / (n - 1)
    return {"n": n, "v": float(v), "psi": float((tot - v) / n), "mu_x": float(xbar.mean()),
            "xbar": xbar, "a": float(tot), "var_items": np.sum(xc**2, axis=0) / G}


def bounded_measurement(mm: dict) -> tuple[float, float]:
    """ML (psi, v) under lavaan's ``bounds = "standard"`` (the default of ``sam()``'s
    measurement step).

    Bounds (lavaan 0.6.14 for this model): 0 <= v <= Var_ML(x1) (each residual variance
    is bounded by its indicator's variance; under the equality constraint lavaan keeps
    the bound of the first copy, so member position 1 decides) and
    0 <= psi <= max_i Var_ML(x_i). The -2 log-likelihood per group is, up to constants,
    log(l1) + a/l1 + (n - 1)(log v + b/v) with l1 = n psi + v; for fixed v it is
    minimised at l1 = a, so the profile over v uses psi(v) = clip((a - v)/n).
    """
    n, a, v_free = mm["n"], mm["a"], mm["v"]
    b = v_free  # the unbounded v is the within mean square
    v_hi = float(mm["var_items"][0])
    psi_hi = float(np.max(mm["var_items"]))

    def psi_of(v: float) -> float:
        return float(np.clip((a - v) / n, 0.0, psi_hi))

    if 0 < v_free <= v_hi and 0 <= (a - v_free) / n <= psi_hi:
        return (a - v_free) / n, v_free

    def f(v: float) -> float:
        l1 = n * psi_of(v) + v
        return np.log(l1) + a / l1 + (n - 1) * (np.log(v) + b / v)

    res = minimize_scalar(f, bounds=(1e-12 * max(v_hi, 1.0), v_hi), method="bounded",
                          options={"xatol": 1e-13 * max(v_hi, 1.0)})
    v = float(res.x)
    if v_hi - v < 1e-9 * v_hi:
        v = v_hi
    return psi_of(v), v


def _sigma(theta: np.ndarray, n: int, q: int) -> np.ndarray:
    """Model covariance of [x_1..x_n, y, Z_1..Z_q] of the joint SEM.

    theta = (v, b_lv, b_z (q), psi_y, vech(Phi)) with Phi the covariance of (lv, Z).
    """
    k = q + 1
    v, b = theta[0], theta[1 : 2 + q]
    psi_y = theta[2 + q]
    phi = np.zeros((k, k))
    phi[np.tril_indices(k)] = theta[3 + q :]
    phi = phi + np.tril(phi, -1).T
    A = np.zeros((n + 1 + q, k))
    A[:n, 0] = 1.0
    A[n, :] = b
    A[n + 1 :, 1:] = np.eye(q)
    S = A @ phi @ A.T
    S[np.arange(n), np.arange(n)] += v
    S[n, n] += psi_y
    return S


def _expected_information(theta: np.ndarray, n: int, q: int, h: float = 1e-5) -> np.ndarray:
    """Unit expected information of the covariance structure, 0.5 tr(S^-1 dS_a S^-1 dS_b).

    Derivatives by central differences: Sigma is a polynomial of degree <= 3 in theta,
    so the truncation error is O(h^2 * third derivative) ~ 1e-10.
    """
    Si = np.linalg.inv(_sigma(theta, n, q))
    m = len(theta)
    d = []
    for a in range(m):
        e = np.zeros(m)
        e[a] = h
        d.append(Si @ ((_sigma(theta + e, n, q) - _sigma(theta - e, n, q)) / (2 * h)))
    info = np.empty((m, m))
    for a in range(m):
        for b in range(a, m):
            info[a, b] = info[b, a] = 0.5 * np.sum(d[a] * d[b].T)
    return info


def sam_fit(data: Dataset, *, bounds: str = "standard") -> dict:
    """Local SAM estimates and two-step SEs for y ~ Z + lv, lv ~~ Z (balanced, one x).

    Returns
    -------
    dict
        ``params`` (intercept, Z..., xi), ``se``, ``veta`` (covariance of (lv, y, Z)),
        ``lambda`` (lavaan's smallest-root statistic), ``adjusted`` (VETA was shrunk
        toward positive definiteness), ``v``, ``psi_mm``, ``psi_y``.
    """
    mm = ml_moments(data)
    if bounds == "standard":
        psi_mm, v = bounded_measurement(mm)
    elif bounds == "none":
        psi_mm, v = mm["psi"], mm["v"]
    else:
        raise ValueError(f"bounds: expected 'standard' or 'none', got {bounds!r}")
    n, xbar = mm["n"], mm["xbar"]
    G, q = data.n_groups, data.n_z
    z, y = data.z, data.y
    # M (Bartlett / ML mapping) of the equal-loading block is 1'/n, so M S M' is the ML
    # covariance of (xbar, y, Z) and M Theta M' = v/n in the lv cell.
    obs = np.column_stack([xbar, y, z])
    msm = np.cov(obs, rowvar=False, ddof=0)
    mtm = np.zeros_like(msm)
    mtm[0, 0] = v / n
    # lavaan's veta.force.pd: smallest root of |MSM - lambda MTM| = 0.
    rest = msm[1:, 1:]
    cond = msm[0, 0] - msm[0, 1:] @ np.linalg.solve(rest, msm[1:, 0])
    lam = cond / (v / n)
    cutoff = 1 + 1 / (G - 1)
    adjusted = bool(lam < cutoff)
    veta = msm - (lam - 1 / (G - 1)) * mtm if adjusted else msm - mtm
    # saturated structural model: the regression from the corrected moments
    idx = [0, *range(2, 2 + q)]  # (lv, Z)
    phi = veta[np.ix_(idx, idx)]
    coef = np.linalg.solve(phi, veta[idx, 1])  # (b_lv, b_z)
    psi_y = float(veta[1, 1] - coef @ phi @ coef)
    b_lv, b_z = coef[0], coef[1:]

    # two-step SE (lavaan se = "twostep"): V = I22^-1 / N + I22^-1 I21 S11 I12 I22^-1,
    # expected information of the joint model at (v from step 1, structural estimates);
    # S11 = Var(v_hat) of the measurement model, 2 v^2 / ((n - 1) N).
    theta = np.concatenate([[v, b_lv], b_z, [psi_y], phi[np.tril_indices(q + 1)]])
    info = _expected_information(theta, n, q)
    i22 = info[1:, 1:]
    i21 = info[1:, :1]
    i22_inv = np.linalg.inv(i22)
    s11 = 2 * v**2 / ((n - 1) * G)
    vcov = i22_inv / G + i22_inv @ i21 * s11 @ i21.T @ i22_inv
    vb = vcov[: q + 1, : q + 1]  # (b_lv, b_z)
    # intercept b0 = mean(y) - b' mean(lv, Z): means are independent of the covariance
    # estimates under normality, so Var(b0) = c' Sigma_m c / N + m' Var(b) m.
    means = np.concatenate([[mm["mu_x"]], z.mean(axis=0)])
    b0 = float(y.mean() - coef @ means)
    sig_m = np.empty((q + 2, q + 2))  # model covariance of (y, lv-mean xbar, Z)
    sig_m[1:, 1:] = phi
    sig_m[1, 1] += v / n
    sig_m[0, 1:] = sig_m[1:, 0] = phi @ coef
    sig_m[0, 0] = coef @ phi @ coef + psi_y
    c = np.concatenate([[1.0], -coef])
    var_b0 = c @ sig_m @ c / G + means @ vb @ means
    order = [*range(1, q + 1), 0]  # (Z..., lv) in the result order
    params = np.concatenate([[b0], b_z, [b_lv]])
    se = np.concatenate([[np.sqrt(var_b0)], np.sqrt(np.diag(vb)[order])])
    return {
        "params": params, "se": se, "veta": veta, "lambda": float(lam), "adjusted": adjusted,
        "v": v, "psi_mm": psi_mm, "psi_mm_unbounded": mm["psi"],
        "v_unbounded": mm["v"], "bounded": bool(v != mm["v"]), "psi_y": psi_y, "vcov_struct": vcov,
    }


class LocalSAM(Estimator):
    """Local SAM / Croon-corrected factor-score regression (balanced data, one x).

    Measurement model: one factor with the members as indicators, loadings fixed to 1
    and one residual variance for all members (the CV/SEM measurement model), fitted by
    ML; it has a closed form (residual variance = within variance of member-position-
    centred x over G(n - 1)). lavaan's own default (``lv =~ x1 + ... + xn``: first
    loading 1, other loadings and residual variances free) is *not* used; the reference
    is ``lavaan::sam('lv =~ 1*x1 + ... ; x1 ~~ v*x1 ; ... ; y ~ z1 + ... + lv ;
    lv ~~ z1 ; ... ; z1 ~~ z2 ...', sam.method = "local")`` with all other options at
    their defaults (write the Z covariances out: lavaan otherwise fixes them at 0, which
    leaves the estimates unchanged but not the SEs).

    Option ``bounds``: ``"standard"`` (default, as lavaan's ``sam()``) fits the
    measurement step with lavaan's bounds, 0 <= v <= Var_ML(x1) and 0 <= psi <=
    max_i Var_ML(x_i) -- binding in low-ICC data, and dependent on which member is
    column 1; ``"none"`` uses the unbounded ML closed form (then the point estimates
    equal the full ML SEM's). ``extras["bounded"]`` records whether a bound was active.

    Steps (lavaan 0.6.14): mapping matrix M = (L' T^-1 L)^-1 L' T^-1 (Bartlett), which
    for this block is 1'/n; Var(eta) = M S M' - M Theta M' (Croon's correction:
    Var(xbar) - v/n, covariances with y and Z uncorrected); if lavaan's smallest-root
    statistic lambda is below 1 + 1/(G - 1), Var(eta) = M S M' - (lambda - 1/(G - 1))
    M Theta M' (``veta.force.pd``); then y ~ Z + lv from the corrected moments.

    Standard errors: lavaan's default ``se = "twostep"``, which adds the step-1
    (measurement) uncertainty to the structural information: V = I22^-1 / G +
    I22^-1 I21 Var(v_hat) I12 I22^-1 (expected information). They are normal-based
    (``df_resid=None``) and reported under ``"classical"``; no HC types. lavaan
    0.6.14 returns no intercept for local SAM; ours is mean(y) - b' mean(lv, Z) with
    a delta-method SE (means are independent of the covariance estimates under
    normality), not checked against lavaan.

    Inadmissible: ML factor variance <= 0 ("negative variance") or lambda <= 1
    (corrected Var(eta) not positive definite, "not positive definite"); estimates are
    still reported (lavaan's repaired Var(eta)) but flagged.
    """

    name = "sam"
    description = "local SAM (Croon-corrected factor-score regression), two-step SEs"
    options = MappingProxyType({"bounds": "standard"})
    needs_balanced = True
    max_x = 1
    two_step = False

    def __init__(self, *, label: str | None = None, **options: Any) -> None:
        super().__init__(label=label, **options)
        if self.params["bounds"] not in ("standard", "none"):
            raise ValueError(
                f"bounds: expected 'standard' or 'none', got {self.params['bounds']!r}"
            )

    def _fit(self, data: Dataset) -> FitResult:
        r = sam_fit(data, bounds=self.params["bounds"])
        reason = ""
        if r["psi_mm_unbounded"] <= 0 or r["psi_mm"] <= 0:
            reason = "negative variance"
        elif r["lambda"] <= 1:
            reason = "not positive definite"
        return FitResult(
            method=self.label, terms=data.terms, params=r["params"],
            bse={"classical": r["se"]}, df_resid=None, converged=True,
            admissible=not reason, reason=reason, two_step=False,
            extras={k: r[k] for k in ("veta", "lambda", "adjusted", "v", "psi_mm", "psi_y",
                                      "bounded", "v_unbounded", "psi_mm_unbounded")},
        )
