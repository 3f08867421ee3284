"""Local structural-after-measurement (SAM) of the equal-loading one-factor model.

One dataset (:func:`sam_fit`) and a balanced one-x batch (:func:`sam_fit_batch`) side by
side, each in three steps: the measurement step under lavaan's bounds
(:func:`bounded_measurement`, numerical; :func:`bounded_measurement_batch`, closed form),
Croon's corrected moments with lavaan's ``veta.force.pd`` repair and the saturated
structural regression, then lavaan's two-step standard errors from the expected
information of the joint model (central differences in the reference, exact derivatives
in the batch). Reference: ``lavaan::sam(..., sam.method = "local")``, lavaan 0.6.14.
"""

from __future__ import annotations

import numpy as np

from micromacro_sim.core.status import Reason
from micromacro_sim.generate.batch import Batch
from micromacro_sim.generate.dataset import Dataset
from micromacro_sim.models.linalg import quad_form, solve_batch
from micromacro_sim.models.moments import ml_moments, ml_moments_batch
from micromacro_sim.models.sam_info import expected_information, expected_information_batch

__all__ = ["bounded_measurement", "bounded_measurement_batch", "sam_fit", "sam_fit_batch",
           "sam_reason", "sam_reasons_batch"]

BOUNDS = ("standard", "none")


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


def sam_reason(psi_mm_unbounded: float, psi_mm: float, lam: float) -> Reason | None:
    """Verdict of one fit: a non-positive ML factor variance, or lambda <= 1 (the
    corrected Var(eta) not positive definite); None when admissible."""
    if psi_mm_unbounded <= 0 or psi_mm <= 0:
        return Reason.NEGATIVE_VARIANCE
    if lam <= 1:
        return Reason.NOT_POSITIVE_DEFINITE
    return None


def sam_reasons_batch(out: dict) -> tuple[np.ndarray, np.ndarray]:
    """:func:`sam_reason` of a batch: masks (negative_variance, not_positive_definite)."""
    negative = (out["psi_mm_unbounded"] <= 0) | (out["psi_mm"] <= 0)
    not_pd = ~negative & (out["lambda"] <= 1)
    return negative, not_pd


def _measurement(mm: dict, bounds: str) -> tuple[float, float]:
    if bounds == "standard":
        return bounded_measurement(mm)
    if bounds == "none":
        return mm["psi"], mm["v"]
    raise ValueError(f"bounds: expected one of {BOUNDS}, got {bounds!r}")


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
    psi_mm, v = _measurement(mm, bounds)
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
    means = np.concatenate([[mm["mu_x"]], z.mean(axis=0)])
    b0, se, vcov = _twostep(v, coef, psi_y, phi, means, y, n, G)
    params = np.concatenate([[b0], coef[1:], coef[:1]])
    return {
        "params": params, "se": se, "veta": veta, "lambda": float(lam), "adjusted": adjusted,
        "v": v, "psi_mm": psi_mm, "psi_mm_unbounded": mm["psi"],
        "v_unbounded": mm["v"], "bounded": bool(v != mm["v"]), "psi_y": psi_y, "vcov_struct": vcov,
    }


def _twostep(v: float, coef: np.ndarray, psi_y: float, phi: np.ndarray, means: np.ndarray,
             y: np.ndarray, n: int, G: int) -> tuple[float, np.ndarray, np.ndarray]:
    """Intercept, SEs (intercept, Z..., lv) and the structural vcov of one fit.

    lavaan's ``se = "twostep"``: V = I22^-1 / N + I22^-1 I21 S11 I12 I22^-1 from the
    expected information of the joint model at (v from step 1, structural estimates),
    S11 = Var(v_hat) = 2 v^2 / ((n - 1) N). Intercept b0 = mean(y) - b' mean(lv, Z):
    the means are independent of the covariance estimates under normality, so
    Var(b0) = c' Sigma_m c / N + m' Var(b) m.
    """
    q = len(coef) - 1
    b_lv, b_z = coef[0], coef[1:]
    theta = np.concatenate([[v, b_lv], b_z, [psi_y], phi[np.tril_indices(q + 1)]])
    info = expected_information(theta, n, q)
    i22 = info[1:, 1:]
    i21 = info[1:, :1]
    i22_inv = np.linalg.inv(i22)
    s11 = 2 * v**2 / ((n - 1) * G)
    vcov = i22_inv / G + i22_inv @ i21 * s11 @ i21.T @ i22_inv
    vb = vcov[: q + 1, : q + 1]  # (b_lv, b_z)
    b0 = float(y.mean() - coef @ means)
    sig_m = np.empty((q + 2, q + 2))  # model covariance of (y, lv-mean xbar, Z)
    sig_m[1:, 1:] = phi
    sig_m[1, 1] += v / n
    sig_m[0, 1:] = sig_m[1:, 0] = phi @ coef
    sig_m[0, 0] = coef @ phi @ coef + psi_y
    c = np.concatenate([[1.0], -coef])
    var_b0 = c @ sig_m @ c / G + means @ vb @ means
    order = [*range(1, q + 1), 0]  # (Z..., lv) in the result order
    se = np.concatenate([[np.sqrt(var_b0)], np.sqrt(np.diag(vb)[order])])
    return b0, se, vcov


def _corrected_batch(mm: dict, v: np.ndarray, batch: Batch) -> tuple[np.ndarray, ...]:
    """lambda, the structural (b_lv, b_z), psi_y and Phi of every replication, and the
    replications with a singular matrix."""
    R, G, n = batch.x.shape
    q = batch.z.shape[2]
    xbar, z, y = mm["xbar"], batch.z, batch.y
    obs = np.concatenate([xbar[:, :, None], y[:, :, None], z], axis=2)
    oc = obs - obs.mean(axis=1, keepdims=True)
    msm = np.einsum("rgi,rgj->rij", oc, oc) / G
    tmp, singular = solve_batch(msm[:, 1:, 1:], msm[:, 1:, 0])
    cond = msm[:, 0, 0] - np.einsum("ri,ri->r", msm[:, 0, 1:], tmp)
    lam = cond / (v / n)
    adjusted = lam < 1 + 1 / (G - 1)
    veta = msm.copy()
    veta[:, 0, 0] -= np.where(adjusted, lam - 1 / (G - 1), 1.0) * v / n
    idx = [0, *range(2, 2 + q)]
    phi = veta[:, idx][:, :, idx]
    coef, sing = solve_batch(phi, veta[:, idx, 1])
    psi_y = veta[:, 1, 1] - quad_form(coef, phi, coef)
    return lam, coef, psi_y, phi, singular | sing


def _twostep_batch(mm: dict, v: np.ndarray, coef: np.ndarray, psi_y: np.ndarray,
                   phi: np.ndarray, batch: Batch) -> tuple[np.ndarray, ...]:
    """:func:`_twostep` of every replication: intercept, SEs and the singular ones."""
    R, G, n = batch.x.shape
    k = coef.shape[1]
    info, singular = expected_information_batch(v, coef, psi_y, phi, n)
    m = info.shape[1]
    i22_inv, sing = solve_batch(info[:, 1:, 1:],
                                np.broadcast_to(np.eye(m - 1), (R, m - 1, m - 1)))
    g = np.einsum("rij,rj->ri", i22_inv, info[:, 1:, 0])
    s11 = 2 * v**2 / ((n - 1) * G)
    vcov = i22_inv / G + s11[:, None, None] * g[:, :, None] * g[:, None, :]
    vb = vcov[:, :k, :k]
    means = np.concatenate([mm["mu_x"][:, None], batch.z.mean(axis=1)], axis=1)
    b0 = batch.y.mean(axis=1) - np.einsum("ri,ri->r", coef, means)
    sig_m = np.empty((R, k + 1, k + 1))
    sig_m[:, 1:, 1:] = phi
    sig_m[:, 1, 1] += v / n
    pc = np.einsum("rij,rj->ri", phi, coef)
    sig_m[:, 0, 1:] = sig_m[:, 1:, 0] = pc
    sig_m[:, 0, 0] = np.einsum("ri,ri->r", coef, pc) + psi_y
    c = np.concatenate([np.ones((R, 1)), -coef], axis=1)
    var_b0 = quad_form(c, sig_m, c) / G + quad_form(means, vb, means)
    order = [*range(1, k), 0]
    se = np.concatenate([np.sqrt(var_b0)[:, None],
                         np.sqrt(np.diagonal(vb, axis1=1, axis2=2)[:, order])], axis=1)
    return b0, se, singular | sing


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
    if bounds not in BOUNDS:
        raise ValueError(f"bounds: expected one of {BOUNDS}, got {bounds!r}")
    R, G, n = batch.x.shape
    k = batch.z.shape[2] + 1
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
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        lam, coef, psi_y, phi, singular = _corrected_batch(mm, v, batch)
        b0, se, singular_se = _twostep_batch(mm, v, coef, psi_y, phi, batch)
    params = np.concatenate([b0[:, None], coef[:, 1:], coef[:, :1]], axis=1)
    out = {"params": params, "se": se, "lambda": lam, "psi_mm": psi_mm,
           "psi_mm_unbounded": mm["psi"], "v": v}
    return out, fallback | singular | singular_se
