"""Newton's method on the profile likelihood of the parallel FIML model, and its information.

The likelihood and the GLS step for the mean parameters are
:mod:`micromacro_sim.models.parallel_fiml`. Here, for every replication (the same
arithmetic whatever the stack):

1. starting values from moments (position means, the pooled within variance, the
   variance of the group means left over by Z minus the within part, the regression of y
   on them), the latent variance kept at least a twentieth of the group means' variance;
2. Newton's method on the covariance parameters s, the mean parameters profiled out by
   GLS: the gradient is the analytic score in s at the GLS solution (the envelope
   theorem), the Hessian the Schur complement of the full Hessian, whose blocks in s are
   complex-step derivatives of the analytic scores (exact to rounding).
   An indefinite Hessian is replaced by its absolute eigenvalues; steps are halved until
   the solution stays proper (positive v, positive variance of every group's mean and of
   y given the members) and the likelihood does not fall. Converged when the Newton
   decrement is below :data:`TOL`; at most :data:`MAX_ITER` iterations;
3. the observed information of all parameters (m, s) at the solution: lavaan's default
   for FIML (``information = "observed"``, the Hessian).

No bounds: a negative latent variance is a solution like any other (lavaan's is
unbounded too) and the caller flags it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from micromacro_sim.models.linalg import solve_batch
from micromacro_sim.models.parallel_fiml import (
    ParallelData,
    cross_hessian,
    gls,
    loglik,
    residual_stats,
    score_at,
)

__all__ = ["MAX_ITER", "TOL", "ParallelFit", "fit_parallel"]

#: Newton decrement (log-likelihood units) below which a run has converged.
TOL = 1e-12
#: Newton iterations at most.
MAX_ITER = 100
#: Complex step.
_H = 1e-30


@dataclass(frozen=True, eq=False)
class ParallelFit:
    """FIML solutions of R replications.

    Attributes
    ----------
    m : ndarray (R, P)
        Mean parameters: nu (K), Gamma (q), then c and delta (q) with y.
    s : ndarray (R, 2) or (R, 4)
        Covariance parameters (v, psi) or (v, psi, beta, sigma2).
    loglik : ndarray (R,)
        Log-likelihood of the members' x (and y) given Z.
    converged : ndarray of bool (R,)
    n_iter : ndarray of int (R,)
    info : ndarray (R, P + 2 or 4, P + 2 or 4)
        Observed information of (m, s); NaN where the run did not converge.
    """

    m: np.ndarray
    s: np.ndarray
    loglik: np.ndarray
    converged: np.ndarray
    n_iter: np.ndarray
    info: np.ndarray


def _ols(X: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Residuals of t (R, G) on X (R, G, p), each replication on its own."""
    XtX = (X[:, :, :, None] * X[:, :, None, :]).sum(axis=1)
    Xty = (X * t[:, :, None]).sum(axis=1)
    b, _ = solve_batch(XtX, Xty)
    return t - (X * b[:, None, :]).sum(axis=2)


def start(data: ParallelData) -> np.ndarray:
    """Moment starting values of s (R, 2 or 4)."""
    K, R, G = data.n_positions, *data.k.shape
    nu = data.u.sum(axis=1) / data.mask.sum(axis=1)
    dev = (data.u - nu[:, None, :]) * data.mask
    dbar = dev.sum(axis=2) / data.k
    within = ((dev * dev).sum(axis=2) - data.k * dbar * dbar).sum(axis=1)
    v = within / data.n_within
    X = np.concatenate([np.ones((R, G, 1)), data.z], axis=2)
    e = _ols(X, dbar)
    var_e = (e * e).mean(axis=1)
    psi = np.maximum(var_e - (v[:, None] / data.k).mean(axis=1), var_e / 20)
    if data.y is None:
        return np.stack([v, psi], axis=1)
    ey = _ols(X, data.y)
    var_y = (ey * ey).mean(axis=1)
    beta = (ey * e).mean(axis=1) / psi
    sigma2 = np.maximum(var_y - beta * beta * psi, var_y / 10)
    _ = K
    return np.stack([v, psi, beta, sigma2], axis=1)


def _hessian_blocks(m: np.ndarray, s: np.ndarray, A: np.ndarray, data: ParallelData
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Score in s (R, ns), Hessian in s (R, ns, ns) and cross Hessian (R, P, ns) at (m, s):
    the analytic scores, and the complex-step derivative of the score in s."""
    stats = residual_stats(m, data)
    g = score_at(s, stats, data)
    ns = s.shape[1]
    Hss = np.empty(s.shape + (ns,))
    for j in range(ns):
        sc = s.astype(complex)
        sc[:, j] += 1j * _H
        Hss[:, :, j] = score_at(sc, stats, data).imag / _H
    Hms = cross_hessian(m, s, data)
    _ = A
    return g, (Hss + np.swapaxes(Hss, 1, 2)) / 2, Hms


def _profile_derivatives(s: np.ndarray, data: ParallelData
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Log-likelihood, gradient and Hessian of the profile in s (GLS m, Schur complement)."""
    m, A = gls(s, data)
    g, Hss, Hms = _hessian_blocks(m, s, A, data)
    X, _ = solve_batch(A, Hms)  # A^-1 H_ms
    Hp = Hss + np.matmul(np.swapaxes(Hms, 1, 2), X)
    return loglik(m, s, data), g, (Hp + np.swapaxes(Hp, 1, 2)) / 2


def _ascent(H: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Newton ascent direction with |eigenvalues| (R, ns) and the decrement (R,)."""
    w, V = np.linalg.eigh(-H)
    w = np.abs(w)
    w = np.where(w > 0, w, np.inf)
    c = (V * g[:, :, None]).sum(axis=1) / w
    step = (V * c[:, None, :]).sum(axis=2)
    return step, (g * step).sum(axis=1)


def _proper(s: np.ndarray, data: ParallelData) -> np.ndarray:
    """Whether s gives every group a positive definite covariance (R,)."""
    v, psi = s[:, 0], s[:, 1]
    D = v[:, None] + data.k * psi[:, None]
    ok = (v > 0) & np.all(D > 0, axis=1)
    if s.shape[1] == 4:
        cond = s[:, 3, None] + s[:, 2, None] ** 2 * psi[:, None] * v[:, None] / D
        ok &= np.all(cond > 0, axis=1)
    return ok & np.all(np.isfinite(s), axis=1)


def _newton(data: ParallelData, s: np.ndarray) -> tuple[np.ndarray, ...]:
    """Newton's method from s; returns s, log-likelihood, converged, iterations."""
    R = s.shape[0]
    s = s.copy()
    ll = np.full(R, np.nan)
    conv = np.zeros(R, dtype=bool)
    iters = np.zeros(R, dtype=np.int64)
    active = _proper(s, data)
    for _ in range(MAX_ITER):
        rows = np.flatnonzero(active)
        if rows.size == 0:
            break
        sub = data if rows.size == R else data.take(rows)
        sr = s[rows]
        llr, g, Hp = _profile_derivatives(sr, sub)
        ll[rows] = llr
        step, dec = _ascent(Hp, g)
        done = np.isfinite(dec) & (dec <= TOL)
        conv[rows[done]] = True
        iters[rows] += ~done
        moving = ~done & np.isfinite(dec)
        active[rows[~moving]] = False
        t = np.ones(rows.size)
        accepted = np.zeros(rows.size, dtype=bool)
        for _half in range(40):
            todo = moving & ~accepted
            if not todo.any():
                break
            idx = np.flatnonzero(todo)
            trial = sr[idx] + t[idx, None] * step[idx]
            tsub = sub.take(idx)
            ok = _proper(trial, tsub)
            llt = np.full(idx.size, -np.inf)
            if ok.any():
                mt, _ = gls(trial[ok], tsub.take(np.flatnonzero(ok)))
                llt[ok] = loglik(mt, trial[ok], tsub.take(np.flatnonzero(ok)))
            good = np.isfinite(llt) & (llt >= llr[idx] - 1e-9 * np.abs(llr[idx]))
            s[rows[idx[good]]] = trial[good]
            accepted[idx[good]] = True
            t[idx[~good]] /= 2
        active[rows[moving & ~accepted]] = False
    return s, ll, conv, iters


def information(m: np.ndarray, s: np.ndarray, data: ParallelData) -> np.ndarray:
    """Observed information (R, P + ns, P + ns) of (m, s): minus the Hessian."""
    P, ns = m.shape[1], s.shape[1]
    _, A = gls(s, data)
    _, Hss, Hms = _hessian_blocks(m, s, A, data)
    H = np.zeros((m.shape[0], P + ns, P + ns))
    H[:, :P, :P] = -A
    H[:, :P, P:] = Hms
    H[:, P:, :P] = np.swapaxes(Hms, 1, 2)
    H[:, P:, P:] = Hss
    return -H


def fit_parallel(data: ParallelData) -> ParallelFit:
    """FIML of every replication of ``data`` (see the module docstring)."""
    s, ll, conv, iters = _newton(data, start(data))
    m, _ = gls(s, data)
    R, P, ns = m.shape[0], m.shape[1], s.shape[1]
    info = np.full((R, P + ns, P + ns), np.nan)
    rows = np.flatnonzero(conv)
    if rows.size:
        info[rows] = information(m[rows], s[rows], data.take(rows))
        ll[rows] = loglik(m[rows], s[rows], data.take(rows))
    return ParallelFit(m=m, s=s, loglik=ll, converged=conv, n_iter=iters, info=info)
