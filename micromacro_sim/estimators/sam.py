"""Local structural-after-measurement (SAM): factor-score regression with Croon's correction.

Devlieger, Mayer & Rosseel (2016) correct the moments of factor scores for their
measurement error (Croon's method); Rosseel & Loh's local SAM, lavaan's ``sam()``, is
the modern form of the same idea. lavaan 0.6.14 does not export ``fsr()`` (it is
internal only), so this method reproduces ``lavaan::sam(model, sam.method = "local")``
(default options) and is named ``sam``.
"""

from __future__ import annotations

from types import MappingProxyType

import numpy as np

from ..batch import Batch
from ..dataset import Dataset
from ..models.linalg import solve_batch
from ..models.moments import ml_moments, ml_moments_batch
from ..options import Option
from ..results import BatchResult, FitResult
from ..status import Reason, flag, no_flags
from .base import Estimator

__all__ = ["LocalSAM", "sam_fit", "sam_fit_batch"]


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

    from scipy.optimize import brentq, minimize_scalar  # lazy: reference path only

    def f(v: float) -> float:
        l1 = n * psi_of(v) + v
        return np.log(l1) + a / l1 + (n - 1) * (np.log(v) + b / v)

    def df(v: float) -> float:  # derivative of f; continuous (l1 = a at both kinks)
        l1 = n * psi_of(v) + v
        clipped = not 0 < (a - v) / n < psi_hi
        return (1 / l1 - a / l1**2) * clipped + (n - 1) * (1 / v - b / v**2)

    v_lo = 1e-12 * max(v_hi, 1.0)
    res = minimize_scalar(f, bounds=(v_lo, v_hi), method="bounded",
                          options={"xatol": 1e-13 * max(v_hi, 1.0)})
    v = float(res.x)
    # Polish: the bounded search stops at a relative step of about sqrt(eps) (1.5e-8),
    # which moves estimates by up to 1e-6; a root search on the derivative next to its
    # point reaches machine precision (or the bound the derivative points to).
    step = 1e-6 * v_hi
    left, right = max(v - step, v_lo), min(v + step, v_hi)
    if right == v_hi and df(v_hi) <= 0:
        v = v_hi
    elif left == v_lo and df(v_lo) >= 0:
        v = v_lo
    elif df(left) < 0 < df(right):
        v = brentq(df, left, right, xtol=1e-15 * v_hi, rtol=4 * np.finfo(float).eps)
    return psi_of(v), v


def bounded_measurement_batch(mm: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`bounded_measurement` of many replications in closed form.

    With b the unbounded v (the within mean square) and the bound psi <= max Var_ML(x_i)
    not reached for any v in the search interval, the profile -2 log-likelihood is
    (n - 1)(log v + b/v) + const for v <= a (psi = (a - v)/n >= 0) and
    n log v + (a + (n - 1) b)/v for v > a (psi clipped at 0). It is unimodal with its
    minimum at b when b <= a, at s = (a + (n - 1) b)/n (in (a, b)) otherwise; the
    bounded minimum is that point clipped to v <= Var_ML(x1).

    Returns
    -------
    psi, v : ndarray (R,)
    other : ndarray of bool (R,)
        Replications outside these cases (the psi bound reachable, or b not positive);
        their ``psi``, ``v`` are placeholders, to be computed by the reference.
    """
    n, a, b = mm["n"], mm["a"], mm["v"]
    v_hi = mm["var_items"][:, 0]
    psi_hi = np.max(mm["var_items"], axis=1)
    lo = 1e-12 * np.maximum(v_hi, 1.0)
    other = ~(b > lo) | ~(a - n * psi_hi <= lo) | ~(v_hi > lo)
    with np.errstate(divide="ignore", invalid="ignore"):
        free = (b > 0) & (b <= v_hi) & ((a - b) / n >= 0) & ((a - b) / n <= psi_hi)
        target = np.where(b <= a, b, (a + (n - 1) * b) / n)
        v = np.where(free, b, np.minimum(target, v_hi))
        psi = np.where(free, (a - b) / n, np.clip((a - v) / n, 0.0, psi_hi))
    return psi, v, other & ~free


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


def sam_fit_batch(batch: Batch, *, bounds: str = "standard") -> tuple[dict, np.ndarray]:
    """:func:`sam_fit` of every replication of a balanced one-x batch, vectorised.

    Same steps as :func:`sam_fit`; the measurement bounds in closed form
    (:func:`bounded_measurement_batch`) and the expected information from the exact
    derivatives of Sigma (the reference uses central differences, exact to about 1e-10
    for this polynomial Sigma).

    Returns
    -------
    out : dict
        ``params`` (R, k), ``se`` (R, k), ``lambda``, ``psi_mm``,
        ``psi_mm_unbounded``, ``v`` (R,).
    fallback : ndarray of bool (R,)
        Replications the closed forms do not cover or where a matrix is singular
        (the reference path raises or searches numerically there); their entries are
        placeholders.
    """
    if bounds not in ("standard", "none"):
        raise ValueError(f"bounds: expected 'standard' or 'none', got {bounds!r}")
    R, G, n = batch.x.shape
    q = batch.z.shape[2]
    k = q + 1
    if n < 2:  # the reference raises for every replication
        nan = np.full(R, np.nan)
        return ({"params": np.full((R, k + 1), np.nan), "se": np.full((R, k + 1), np.nan),
                 "lambda": nan, "psi_mm": nan, "psi_mm_unbounded": nan, "v": nan},
                np.ones(R, bool))
    mm = ml_moments_batch(batch)
    if bounds == "standard":
        psi_mm, v, fallback = bounded_measurement_batch(mm)
    else:
        psi_mm, v, fallback = mm["psi"], mm["v"], np.zeros(R, bool)
    xbar, z, y = mm["xbar"], batch.z, batch.y
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        obs = np.concatenate([xbar[:, :, None], y[:, :, None], z], axis=2)
        oc = obs - obs.mean(axis=1, keepdims=True)
        msm = np.einsum("rgi,rgj->rij", oc, oc) / G
        tmp, sing = solve_batch(msm[:, 1:, 1:], msm[:, 1:, 0])
        fallback |= sing
        cond = msm[:, 0, 0] - np.einsum("ri,ri->r", msm[:, 0, 1:], tmp)
        lam = cond / (v / n)
        adjusted = lam < 1 + 1 / (G - 1)
        veta = msm.copy()
        veta[:, 0, 0] -= np.where(adjusted, lam - 1 / (G - 1), 1.0) * v / n
        idx = [0, *range(2, 2 + q)]
        phi = veta[:, idx][:, :, idx]
        coef, sing = solve_batch(phi, veta[:, idx, 1])
        fallback |= sing
        psi_y = veta[:, 1, 1] - np.einsum("ri,rij,rj->r", coef, phi, coef)

        # expected information of the joint model, theta = (v, b (k), psi_y, vech(Phi))
        P = n + 1 + q
        A = np.zeros((R, P, k))
        A[:, :n, 0] = 1.0
        A[:, n, :] = coef
        A[:, n + 1 :, 1:] = np.eye(q)
        ap = A @ phi  # (R, P, k)
        S = ap @ A.transpose(0, 2, 1)
        S[:, np.arange(n), np.arange(n)] += v[:, None]
        S[:, n, n] += psi_y
        rows, cols = np.tril_indices(k)
        m = 2 + k + len(rows)
        dS = np.zeros((R, m, P, P))
        dS[:, 0, np.arange(n), np.arange(n)] = 1.0
        for j in range(k):
            dS[:, 1 + j, n, :] += ap[:, :, j]
            dS[:, 1 + j, :, n] += ap[:, :, j]
        dS[:, 1 + k, n, n] = 1.0
        for t, (i, j) in enumerate(zip(rows, cols, strict=True)):
            outer = A[:, :, i, None] * A[:, None, :, j]
            dS[:, 2 + k + t] = outer if i == j else outer + outer.transpose(0, 2, 1)
        Si, sing = solve_batch(S, np.broadcast_to(np.eye(P), S.shape))
        fallback |= sing
        D = (Si[:, None] @ dS).reshape(R, m, P * P)
        Dt = D.reshape(R, m, P, P).transpose(0, 1, 3, 2).reshape(R, m, P * P)
        info = 0.5 * D @ Dt.transpose(0, 2, 1)
        i22_inv, sing = solve_batch(info[:, 1:, 1:],
                                     np.broadcast_to(np.eye(m - 1), (R, m - 1, m - 1)))
        fallback |= sing
        g = np.einsum("rij,rj->ri", i22_inv, info[:, 1:, 0])
        s11 = 2 * v**2 / ((n - 1) * G)
        vcov = i22_inv / G + s11[:, None, None] * g[:, :, None] * g[:, None, :]
        vb = vcov[:, :k, :k]
        means = np.concatenate([mm["mu_x"][:, None], z.mean(axis=1)], axis=1)
        b0 = y.mean(axis=1) - np.einsum("ri,ri->r", coef, means)
        sig_m = np.empty((R, k + 1, k + 1))
        sig_m[:, 1:, 1:] = phi
        sig_m[:, 1, 1] += v / n
        pc = np.einsum("rij,rj->ri", phi, coef)
        sig_m[:, 0, 1:] = sig_m[:, 1:, 0] = pc
        sig_m[:, 0, 0] = np.einsum("ri,ri->r", coef, pc) + psi_y
        c = np.concatenate([np.ones((R, 1)), -coef], axis=1)
        var_b0 = (np.einsum("ri,rij,rj->r", c, sig_m, c) / G
                  + np.einsum("ri,rij,rj->r", means, vb, means))
        order = [*range(1, k), 0]
        params = np.concatenate([b0[:, None], coef[:, 1:], coef[:, :1]], axis=1)
        se = np.concatenate([np.sqrt(var_b0)[:, None],
                             np.sqrt(np.diagonal(vb, axis1=1, axis2=2)[:, order])], axis=1)
    out = {"params": params, "se": se, "lambda": lam, "psi_mm": psi_mm,
           "psi_mm_unbounded": mm["psi"], "v": v}
    return out, fallback


def _sam_flags(psi_mm_unbounded: float, psi_mm: float, lam: float) -> tuple:
    if psi_mm_unbounded <= 0 or psi_mm <= 0:
        return (flag(Reason.NEGATIVE_VARIANCE),)
    if lam <= 1:
        return (flag(Reason.NOT_POSITIVE_DEFINITE),)
    return ()


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

    Fast engine (balanced): :func:`sam_fit_batch`, all replications at once; the rare
    replications its closed forms do not cover (the factor-variance bound reachable, a
    singular matrix) run the reference fit.
    """

    name = "sam"
    description = "local SAM (Croon-corrected factor-score regression), two-step SEs"
    options = MappingProxyType({
        "bounds": Option("standard", "str", "measurement-step bounds as lavaan's sam() "
                         "('standard') or the unbounded ML closed form ('none')",
                         choices=("standard", "none")),
    })
    needs_balanced = True
    max_x = 1
    two_step = False
    batch_designs = ("balanced",)

    def _fit_batch(self, batch: Batch) -> BatchResult:
        out, fallback = sam_fit_batch(batch, bounds=self.params["bounds"])
        R, k = out["params"].shape
        flags = no_flags(R)
        for r, t in enumerate(zip(out["psi_mm_unbounded"], out["psi_mm"], out["lambda"],
                                  strict=True)):
            flags[r] = _sam_flags(*t)
        ok = np.array([not f for f in flags], dtype=bool)
        return self.one_step_result(batch, out["params"], out["se"], np.ones(R, bool), ok,
                                    flags, fallback)

    def _fit(self, data: Dataset) -> FitResult:
        r = sam_fit(data, bounds=self.params["bounds"])
        flags = _sam_flags(r["psi_mm_unbounded"], r["psi_mm"], r["lambda"])
        return FitResult(
            method=self.label, terms=data.terms, params=r["params"],
            bse={"classical": r["se"]}, df_resid=None, converged=True,
            admissible=not flags, flags=flags, two_step=False,
            extras={k: r[k] for k in ("veta", "lambda", "adjusted", "v", "psi_mm", "psi_y",
                                      "bounded", "v_unbounded", "psi_mm_unbounded")},
        )
