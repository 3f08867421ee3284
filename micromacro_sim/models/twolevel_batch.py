"""Two-level ML with one x: the batch version (all replications at once).

Sufficient statistics pooled per group-size class, closed-form derivatives of the full
likelihood, batched Newton; its per-dataset partner is :mod:`.twolevel`.
"""

from __future__ import annotations

import numpy as np

from micromacro_sim.generate.batch import Batch
from micromacro_sim.models.linalg import solve_batch
from micromacro_sim.models.twolevel_stats import (
    BatchStats,
    balanced_centred_stats,
    batch_stats,
    centre,
    class_stats,
    rowdot,
    standard_errors,
    uncentre,
)

__all__ = ["BOUND_TOL", "BatchStats", "batch_derivs", "centre", "class_stats",
           "fit_batch_two_level", "joint_cov_batch", "newton_batch", "standard_errors",
           "uncentre"]

#: Relative size below which a variance counts as having hit the zero bound.
BOUND_TOL = 1e-4

#: The fast path hands a replication to the reference fit when a between variance is
#: within this relative distance of the zero bound (ten times the bound tolerance), so
#: verdicts near the bound are the reference's.
_FAST_MARGIN = 10 * BOUND_TOL


def _csum(a: np.ndarray) -> np.ndarray:
    """Sum over axis 1 (the size classes) in a fixed order, whatever the batch size."""
    out = a[:, 0].copy()
    for c in range(1, a.shape[1]):
        out = out + a[:, c]
    return out


def _tr(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """tr(A B) of trailing 2 x 2 blocks, written out (no reduction order to vary)."""
    return (A[..., 0, 0] * B[..., 0, 0] + A[..., 0, 1] * B[..., 1, 0]
            + A[..., 1, 0] * B[..., 0, 1] + A[..., 1, 1] * B[..., 1, 1])


def _subset(s: BatchStats, idx: np.ndarray) -> BatchStats:
    return BatchStats(s.count[idx], s.inv_n[idx], s.M[idx], s.ssw[idx], s.n_within[idx],
                       s.n_groups)


def _residual_moments(s: BatchStats, B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per class sum of r r' (R, C, 2, 2) and of x r' (R, C, k, 2), r = u - B' x."""
    Muu, Mux, Mxx = s.M[..., :2, :2], s.M[..., :2, 2:], s.M[..., 2:, 2:]
    Bc = B[:, None]  # (R, 1, k, 2)
    P = Mux.swapaxes(-1, -2) - Mxx @ Bc
    Q = Muu - Mux @ Bc - (Mux @ Bc).swapaxes(-1, -2) + Bc.swapaxes(-1, -2) @ Mxx @ Bc
    return Q, P


def batch_derivs(s: BatchStats, psi: np.ndarray) -> tuple[np.ndarray, ...]:
    """Negative log-likelihood, gradient and Hessian (closed forms) for every replication.

    ``psi`` (R, 4 + 2k) holds sigma_w, Omega_yy, Omega_yx, Omega_xx, then the columns of
    B (y, then xbar). The likelihood is :func:`_loglik_parts`: the within part plus, per
    group, a bivariate normal with covariance Sigma_g = Omega + diag(0, sigma_w / n_g),
    which is linear in the covariance parameters; the derivatives are the textbook ones
    of a normal model (d W = -W dSigma W, W = Sigma_g^-1), summed per size class with
    Q = sum r r', P = sum x r' (e.g. sum_g r' W S_i W S_j W r = tr(W S_i W S_j W Q)).
    The log-likelihood is NaN outside the reference's parameter space (sigma_w > 0,
    Omega positive definite).
    """
    R, C = s.count.shape
    k = s.M.shape[-1] - 2
    sw, o00, o01, o11 = (psi[:, i, None] for i in range(4))
    B = np.stack([psi[:, 4 : 4 + k], psi[:, 4 + k :]], axis=2)  # (R, k, 2)
    d = o11 + sw * s.inv_n
    det = np.where(s.count > 0, o00 * d - o01**2, 1.0)
    bad = ((psi[:, 0] <= 0) | np.any(det <= 0, axis=1) | (psi[:, 3] <= 0)
           | (psi[:, 1] * psi[:, 3] <= psi[:, 2] ** 2))  # Omega not positive definite
    with np.errstate(divide="ignore", invalid="ignore"):
        W = np.empty((R, C, 2, 2))
        W[..., 0, 0] = d / det
        W[..., 0, 1] = W[..., 1, 0] = -o01 / det
        W[..., 1, 1] = o00 / det
        Q, P = _residual_moments(s, B)
        swv = psi[:, 0]
        negll = 0.5 * (s.n_within * np.log(swv) + s.ssw / swv) + 0.5 * (
            _csum(s.count * np.log(det)) + _csum(_tr(W, Q)))
        # dSigma / d(sigma_w, O_yy, O_yx, O_xx), shape (4, R, C, 2, 2)
        S = np.zeros((4, R, C, 2, 2))
        S[0, ..., 1, 1] = s.inv_n
        S[1, ..., 0, 0] = 1.0
        S[2, ..., 0, 1] = S[2, ..., 1, 0] = 1.0
        S[3, ..., 1, 1] = 1.0
        A = W @ S  # W S_j
        AW = A @ W  # W S_j W
        WQ = W @ Q
        WQW = WQ @ W
        Pk = P @ W  # sum_g x v'
        grad = np.empty((R, 4 + 2 * k))
        hess = np.empty((R, 4 + 2 * k, 4 + 2 * k))
        # every reduction over classes and 2 x 2 blocks is written out (_csum, _tr), so
        # a replication's numbers do not depend on the batch it shares
        for j in range(4):
            grad[:, j] = 0.5 * _csum(s.count * (A[j, ..., 0, 0] + A[j, ..., 1, 1])
                                     - _tr(S[j], WQW))
            for i in range(4):
                hess[:, i, j] = 0.5 * _csum(-s.count * _tr(A[i], A[j])
                                            + 2 * _tr(A[i] @ A[j], WQ))
            hbp = _csum(P @ AW[j])  # (R, k, 2): [k, b]
            hess[:, 4:, j] = hbp.swapaxes(1, 2).reshape(R, 2 * k)
            hess[:, j, 4:] = hess[:, 4:, j]
        grad[:, 0] += 0.5 * (s.n_within / swv - s.ssw / swv**2)
        grad[:, 4:] = -_csum(Pk).swapaxes(1, 2).reshape(R, 2 * k)
        hess[:, 0, 0] += 0.5 * (-s.n_within / swv**2 + 2 * s.ssw / swv**3)
        Mxx = s.M[..., 2:, 2:]
        hess[:, 4:, 4:] = _csum(W[:, :, :, None, :, None] * Mxx[:, :, None, :, None, :]
                                ).reshape(R, 2 * k, 2 * k)
    negll[bad] = np.nan
    return negll, grad, hess


def _start_batch(s: BatchStats, *, clamp: bool = False) -> np.ndarray:
    """Closed-form start (the balanced-data ML): ANOVA within variance, OLS of (y, xbar)
    on [1, z], residual covariance minus diag(0, sigma_w mean(1/n)). ``clamp`` keeps
    Omega positive definite (its variances at least 5% of the residual ones)."""
    R, C = s.count.shape
    k = s.M.shape[-1] - 2
    sw = s.ssw / s.n_within
    M = _csum(s.M)
    B = np.linalg.solve(M[:, 2:, 2:], M[:, 2:, :2])  # (R, k, 2)
    Q, _ = _residual_moments(s, B)
    S = _csum(Q) / s.n_groups
    psi = np.empty((R, 4 + 2 * k))
    psi[:, 0] = sw
    psi[:, 1] = S[:, 0, 0]
    psi[:, 2] = S[:, 0, 1]
    psi[:, 3] = S[:, 1, 1] - sw * _csum(s.count * s.inv_n) / s.n_groups
    if clamp:
        psi[:, 3] = np.maximum(psi[:, 3], 0.05 * S[:, 1, 1])
        psi[:, 1] = np.maximum(psi[:, 1], psi[:, 2] ** 2 / psi[:, 3] + 0.05 * S[:, 0, 0])
    psi[:, 4 : 4 + k] = B[:, :, 0]
    psi[:, 4 + k :] = B[:, :, 1]
    return psi


def newton_batch(s: BatchStats, psi: np.ndarray, *, max_iter: int = 60,
                  step_tol: float = 1e-11) -> tuple[np.ndarray, np.ndarray]:
    """Newton's method on the full likelihood, all replications at once.

    Far from the optimum (Newton decrement g' H^-1 g above 1e-6) steps are halved until
    the likelihood increases; closer in, full steps are taken (the quadratic region,
    where likelihood differences are at rounding level). Converged where the largest
    step, relative to 1 + |psi|, falls below ``step_tol``; a replication whose Hessian is
    not positive definite along the Newton direction, or whose Omega leaves the positive
    definite cone, stops unconverged.
    """
    R = psi.shape[0]
    psi = psi.copy()
    f, g, H = batch_derivs(s, psi)
    conv = np.zeros(R, dtype=bool)
    active = np.isfinite(f)
    for _ in range(max_iter):
        idx = np.flatnonzero(active & ~conv)
        if not len(idx):
            break
        step = np.full(g[idx].shape, np.nan)
        fin = np.all(np.isfinite(H[idx]), axis=(1, 2))
        if fin.any():
            step[fin] = _solve(H[idx][fin], g[idx][fin])
        dec = rowdot(g[idx], step)
        good = np.isfinite(dec) & (dec >= 0)
        active[idx[~good]] = False
        idx, step, dec = idx[good], step[good], dec[good]
        t = np.ones(len(idx))
        strict = dec >= 1e-6
        for _h in range(40):
            if not len(idx):
                break
            trial = psi[idx] - t[:, None] * step
            ft, gt, Ht = batch_derivs(_subset(s, idx), trial)
            ok = np.isfinite(ft) & (~strict | (ft <= f[idx]))
            acc = idx[ok]
            small = np.max(np.abs(t[ok, None] * step[ok]) / (1 + np.abs(psi[acc])), axis=1)
            psi[acc], f[acc], g[acc], H[acc] = trial[ok], ft[ok], gt[ok], Ht[ok]
            conv[acc[small < step_tol]] = True
            idx, step, t, strict = idx[~ok], step[~ok], t[~ok] / 2, strict[~ok]
        active[idx] = False  # no admissible point along the Newton direction
    return psi, conv


def _solve(H: np.ndarray, g: np.ndarray) -> np.ndarray:
    """H^-1 g for a stack of matrices (g of shape (R, k) or (R, k, j)); NaN where H is
    singular."""
    return solve_batch(H, g)[0]


def fit_batch_two_level(batch: Batch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ML estimates and joint-ML SEs (:func:`joint_cov_batch`) of every replication.

    Each dataset is fitted centred (:func:`centre`) and its estimates moved back to its
    own location (:func:`uncentre`), as the per-dataset path does. Returns params (R, k),
    SEs (R, k) and a mask of the replications the batch solution covers: an interior
    optimum (both between variances clear of the zero bound by :data:`_FAST_MARGIN`,
    relative), a converged Newton solve and a positive definite information. The others
    go through the reference fit.
    """
    if batch.balanced:
        s, var_y, var_xbar, shift = balanced_centred_stats(batch)
    else:
        centred = [centre(d) for d in batch.datasets]
        s, var_y, var_xbar = batch_stats(batch, [c[0] for c in centred])
        shift = np.stack([c[1] for c in centred])
    k = len(batch.terms) - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        psi = _start_batch(s, clamp=not batch.balanced)
        if batch.balanced:  # the start is the ML (every Sigma_g is the same)
            f, g, H = batch_derivs(s, psi)
            conv = np.isfinite(f)
        else:
            psi, conv = newton_batch(s, psi)
            f, g, H = batch_derivs(s, psi)
        o00, o01, tau = psi[:, 1], psi[:, 2], psi[:, 3]
        bx = o01 / tau
        s2e = o00 - o01 * bx
        By, Bx = psi[:, 4 : 4 + k], psi[:, 4 + k :]
        params = np.concatenate([By - bx[:, None] * Bx, bx[:, None]], axis=1)
        params, cov = uncentre(params, joint_cov_batch(psi, H), shift)
        inside = (tau >= _FAST_MARGIN * var_xbar) & (s2e >= _FAST_MARGIN * var_y)
        ok = conv & inside & (s.n_within > 0) & np.all(np.isfinite(params), axis=1)
        se = standard_errors(cov)
        ok &= np.all(np.isfinite(se), axis=1)
        se[~ok] = np.nan
    return params, se, ok


def joint_cov_batch(psi: np.ndarray, H: np.ndarray) -> np.ndarray:
    """Covariance of (b0, b_z, b_xi) at the joint ML (lavaan ``fixed.x = FALSE``),
    (R, k + 1, k + 1).

    The model is a reparametrization of the saturated conditional model psi times the
    likelihood of z, whose parameters separate from psi, and b depends on psi only
    (b_xi = Omega_yx / Omega_xx, b_j = B_yj - b_xi B_xj): at the optimum the joint
    observed information gives Cov(b) = D H^-1 D' with D = db/dpsi (the delta method).
    NaN where ``H`` is singular.
    """
    R, P = psi.shape
    k = (P - 4) // 2
    o01, o11 = psi[:, 2], psi[:, 3]
    bx = o01 / o11
    Bx = psi[:, 4 + k :]
    D = np.zeros((R, k + 1, P))
    D[:, k, 2] = 1 / o11
    D[:, k, 3] = -bx / o11
    j = np.arange(k)
    D[:, j, 4 + j] = 1.0
    D[:, j, 4 + k + j] = -bx[:, None]
    D[:, :k, 2] = -Bx / o11[:, None]
    D[:, :k, 3] = Bx * (bx / o11)[:, None]
    X = _solve(H, D.transpose(0, 2, 1))
    cov = np.empty((R, k + 1, k + 1))
    for a in range(k + 1):
        for b in range(k + 1):
            cov[:, a, b] = rowdot(D[:, a], X[:, :, b])
    return cov
