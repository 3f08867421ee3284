"""Two-stage path analysis (2S-PA) of micro-macro data: stage 1 and the batched stage 2.

Stage 1 (:mod:`~micromacro_sim.models.tspa_stage1`) scores every group by the mean of its
observed members, ``s_g = xbar_g``, with its own error variance ``ev_g = sigma2_w / n_g``
(``sigma2_w`` the pooled within-group variance, within sums of squares over N - G). Stage 2
(:func:`fit_tspa`) is the ML fit of the structural model with ``ev_g`` a known per-group
quantity (a definition variable)::

    s_g   = eta_g + u_g,                           u_g ~ N(0, ev_g)
    eta_g = a + gamma' z_g + zeta_g,               zeta_g ~ N(0, psi)
    y_g   = b0 + b_z' z_g + b_xi eta_g + e_g,      e_g ~ N(0, s2e)

i.e. (s_g, y_g) given z_g is normal with means ``zt_g' alpha`` and ``zt_g' beta``
(``zt_g = (1, z_g)``, ``alpha = (a, gamma)``, ``beta = (b0 + b_xi a, b_z + b_xi gamma)``)
and covariance ``[[psi + ev_g, b_xi psi], [b_xi psi, b_xi^2 psi + s2e]]``. The internal
parameters ``theta = (alpha, beta, psi, b_xi, s2e)`` are a smooth bijection of the model's;
Newton's method on -2 log L (analytic gradient and observed Hessian; a Fisher-scoring
step where the Newton step is not a descent direction; step halving) runs on all
replications at once, each replication on its own iterates, so that a replication's
result does not depend on the batch: group sums are sequential loops, linear systems
per matrix. The reported terms are (b0, b_z, b_xi) with SEs from the observed
information, ``cov = 2 inv(H)`` (H the Hessian of -2 log L, as OpenMx), moved to the
reported parameters by the delta method (exact at a stationary point).

Reference: Lai, M. H. C. & Hsiao, Y.-Y. (2022). Two-stage path analysis with definition
variables: an alternative framework to account for measurement error. Psychological
Methods, 27(4), 568-588; R package R2spa, ``tspa()`` / ``tspa_mx_model()``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from micromacro_sim.models.linalg import dot_last, inv_stack, solve_stack, sum_first
from micromacro_sim.models.tspa_closed import BOUND_TOL, ols_moments
from micromacro_sim.models.tspa_closed import closed_form as exact_fit
from micromacro_sim.models.tspa_stage1 import Stage1, stage1, stage1_batch

__all__ = ["BOUND_TOL", "MAX_ITER", "TOL", "Stage1", "TSPAFit", "fit_tspa", "m2ll", "stage1",
           "stage1_batch"]

#: Newton decrement (-2 log L units) below which an iterate is the optimum.
TOL = 1e-11
#: Iteration limit of the stage-2 Newton iterations.
MAX_ITER = 200
#: Step halvings tried before a replication's line search gives up.
_HALVINGS = 40
#: A replication whose line search fails counts as converged below this decrement.
_STALL_TOL = 1e-7
_LOG2PI = float(np.log(2.0 * np.pi))


@dataclass(frozen=True)
class TSPAFit:
    """Stage-2 fits of R replications.

    Attributes
    ----------
    params : ndarray (R, q + 2)
        (b0, b_z, b_xi): intercept where eta = 0, on the scale of x.
    se : ndarray (R, q + 2)
        Observed-information SEs (NaN where the information is not invertible).
    theta : ndarray (R, 2q + 5)
        Internal parameters (alpha, beta, psi, b_xi, s2e).
    converged : ndarray of bool (R,)
    proper : ndarray of bool (R,)
        psi > 0 and s2e > 0.
    m2ll : ndarray (R,)
        -2 log L at the estimates (with the 2 pi constant, as OpenMx reports it).
    iterations : ndarray of int (R,)
    """

    params: np.ndarray
    se: np.ndarray
    theta: np.ndarray
    converged: np.ndarray
    proper: np.ndarray
    m2ll: np.ndarray
    iterations: np.ndarray

    @property
    def psi(self) -> np.ndarray:
        """Residual variance of eta given z, shape (R,)."""
        return self.theta[:, -3]

    @property
    def s2e(self) -> np.ndarray:
        """Residual variance of y, shape (R,)."""
        return self.theta[:, -1]


@dataclass(frozen=True)
class _Data:
    """Stage-2 inputs laid out groups first: s, y, ev (G, R); zt (G, R, m), zz (G, R, m, m)."""

    s: np.ndarray
    y: np.ndarray
    ev: np.ndarray
    zt: np.ndarray
    zz: np.ndarray

    @classmethod
    def build(cls, s: np.ndarray, ev: np.ndarray, z: np.ndarray, y: np.ndarray) -> _Data:
        R, G = s.shape
        zt = np.concatenate([np.ones((R, G, 1)), np.asarray(z, dtype=float)], axis=2)
        zt = np.ascontiguousarray(zt.transpose(1, 0, 2))
        return cls(s=np.ascontiguousarray(s.T), y=np.ascontiguousarray(y.T),
                   ev=np.ascontiguousarray(ev.T), zt=zt, zz=zt[:, :, :, None] * zt[:, :, None, :])

    @property
    def m(self) -> int:
        """Columns of (1, z)."""
        return self.zt.shape[2]

    def rows(self, idx: np.ndarray) -> _Data:
        """The replications ``idx``."""
        return _Data(self.s[:, idx], self.y[:, idx], self.ev[:, idx], self.zt[:, idx],
                     self.zz[:, idx])


def _split(theta: np.ndarray, m: int) -> tuple[np.ndarray, ...]:
    """(alpha, beta, psi, b_xi, s2e) of the internal parameters."""
    return (theta[:, :m], theta[:, m:2 * m], theta[:, 2 * m], theta[:, 2 * m + 1],
            theta[:, 2 * m + 2])


def _moments(d: _Data, theta: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per group: residuals, inverse covariance entries, log det (G, R each)."""
    alpha, beta, psi, b, s2e = _split(theta, d.m)
    r1 = d.s - dot_last(d.zt, alpha[None])
    r2 = d.y - dot_last(d.zt, beta[None])
    A = psi[None] + d.ev
    C = b * psi
    V = b * b * psi + s2e
    D = A * V - C * C
    p11, p12, p22 = V / D, -C / D, A / D
    ok = (A > 0) & (D > 0)
    logdet = np.log(np.where(ok, D, np.nan))
    return r1, r2, p11, p12, p22, logdet


def m2ll(d: _Data, theta: np.ndarray) -> np.ndarray:
    """-2 log L of every replication (inf where some group's covariance is not PD)."""
    r1, r2, p11, p12, p22, logdet = _moments(d, theta)
    f = logdet + p11 * r1 * r1 + 2 * p12 * r1 * r2 + p22 * r2 * r2 + 2 * _LOG2PI
    out = sum_first(f)
    return np.where(np.isfinite(out), out, np.inf)


def _derivs(d: _Data, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradient (R, k), observed and expected Hessians (R, k, k) of -2 log L."""
    m = d.m
    alpha, beta, psi, b, s2e = _split(theta, m)
    r1, r2, p11, p12, p22, _ = _moments(d, theta)
    t1, t2 = p11 * r1 + p12 * r2, p12 * r1 + p22 * r2
    vecs = {"A": (t1, 0.0 * t1), "C": (t2, t1), "V": (0.0 * t2, t2)}

    def quad(v: tuple, w: tuple) -> np.ndarray:
        return p11 * v[0] * w[0] + p12 * (v[0] * w[1] + v[1] * w[0]) + p22 * v[1] * w[1]

    trace = {("A", "A"): p11 * p11, ("A", "C"): 2 * p11 * p12, ("A", "V"): p12 * p12,
             ("C", "C"): 2 * (p12 * p12 + p11 * p22), ("C", "V"): 2 * p22 * p12,
             ("V", "V"): p22 * p22}
    pairs = list(trace)
    h1 = [-2 * p11 * t1, -2 * (p11 * t2 + p12 * t1), -2 * p12 * t2]  # d2f / dr1 dsigma
    h2 = [-2 * p12 * t1, -2 * (p12 * t2 + p22 * t1), -2 * p22 * t2]  # d2f / dr2 dsigma
    scal = np.stack([p11 - t1 * t1, 2 * (p12 - t1 * t2), p22 - t2 * t2,
                     *(2 * quad(vecs[i], vecs[j]) - trace[i, j] for i, j in pairs),
                     *(trace[p] for p in pairs)], axis=2)
    vec = np.stack([2 * t1, 2 * t2, *h1, *h2], axis=2)  # d f / d r, d2 f / dr dsigma
    mat = np.stack([2 * p11, 2 * p12, 2 * p22], axis=2)
    G, R = d.s.shape
    # sums over groups as stacked products, one per replication (the same bits in any
    # batch): (R, 8, G) @ (R, G, m) and (R, 3, G) @ (R, G, m * m)
    zsum = np.matmul(vec.transpose(1, 2, 0), d.zt.transpose(1, 0, 2))
    zzsum = np.matmul(mat.transpose(1, 2, 0), d.zz.reshape(G, R, m * m).transpose(1, 0, 2))
    sums = np.concatenate([sum_first(scal), -zsum.reshape(R, -1), zzsum.reshape(R, -1)], axis=1)
    return _assemble(sums, m, psi, b)


def _assemble(sums: np.ndarray, m: int, psi: np.ndarray, b: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradient and Hessians from the group sums (chain rule through A, C, V)."""
    R = sums.shape[0]
    fs = sums[:, :3]
    hobs, hexp = np.zeros((R, 3, 3)), np.zeros((R, 3, 3))
    for n, (i, j) in enumerate(((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))):
        hobs[:, i, j] = hobs[:, j, i] = sums[:, 3 + n]
        hexp[:, i, j] = hexp[:, j, i] = sums[:, 9 + n]
    zsum = sums[:, 15:15 + 8 * m].reshape(R, 8, m)
    zz = sums[:, 15 + 8 * m:].reshape(R, 3, m, m)
    # Jc[sigma, (psi, b, s2e)] for sigma = (A, C, V)
    one, zero = np.ones(R), np.zeros(R)
    Jc = np.stack([np.stack([one, zero, zero], 1), np.stack([b, psi, zero], 1),
                   np.stack([b * b, 2 * b * psi, one], 1)], axis=1)
    k = 2 * m + 3
    grad = np.empty((R, k))
    grad[:, :m], grad[:, m:2 * m] = zsum[:, 0], zsum[:, 1]
    grad[:, 2 * m:] = dot_last(Jc.transpose(0, 2, 1), fs[:, None, :])
    H, E = np.zeros((R, k, k)), np.zeros((R, k, k))
    for M in (H, E):
        M[:, :m, :m], M[:, m:2 * m, m:2 * m] = zz[:, 0], zz[:, 2]
        M[:, :m, m:2 * m] = M[:, m:2 * m, :m] = zz[:, 1]
    Jt = Jc.transpose(0, 2, 1)[:, None]  # (R, 1, 3 params, 3 sigma)
    for blk, rows in ((2, slice(0, m)), (5, slice(m, 2 * m))):
        cross = dot_last(zsum[:, blk:blk + 3].transpose(0, 2, 1)[:, :, None, :], Jt)  # (R, m, 3)
        H[:, rows, 2 * m:] = cross
        H[:, 2 * m:, rows] = cross.transpose(0, 2, 1)
    cov = slice(2 * m, k)
    for M, h in ((H, hobs), (E, hexp)):
        left = dot_last(Jt[:, 0][:, :, None, :], h.transpose(0, 2, 1)[:, None])  # Jc' h
        M[:, cov, cov] = dot_last(left[:, :, None, :], Jt[:, 0][:, None])       # (Jc' h) Jc
    H[:, 2 * m, 2 * m + 1] += fs[:, 1] + 2 * b * fs[:, 2]
    H[:, 2 * m + 1, 2 * m] += fs[:, 1] + 2 * b * fs[:, 2]
    H[:, 2 * m + 1, 2 * m + 1] += 2 * psi * fs[:, 2]
    return grad, H, E


def _start(d: _Data, moments: tuple[np.ndarray, ...] | None = None) -> np.ndarray:
    """Closed-form start: OLS means, residual moments (:func:`ols_moments` of ``d``, given
    or computed) with the mean error variance."""
    _, alpha, beta, sss, ssy, syy = ols_moments(d) if moments is None else moments
    evbar = sum_first(d.ev) / d.s.shape[0]
    psi = np.maximum(sss - evbar, 0.1 * sss)
    b = ssy / psi
    s2e = np.maximum(syy - b * b * psi, 0.1 * syy)
    return np.concatenate([alpha, beta, np.stack([psi, b, s2e], axis=1)], axis=1)


def _direction(grad: np.ndarray, H: np.ndarray, E: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Newton step where it descends, else the Fisher-scoring step; and the decrement."""
    newton, _ = solve_stack(H, -grad[:, :, None])
    newton = newton[:, :, 0]
    slope = dot_last(grad, newton)
    good = np.all(np.isfinite(newton), axis=1) & (slope < 0)
    if not np.all(good):
        fisher, _ = solve_stack(E, -grad[:, :, None])
        newton = np.where(good[:, None], newton, fisher[:, :, 0])
        slope = dot_last(grad, newton)
    return newton, -slope


def _line_search(d: _Data, theta: np.ndarray, step: np.ndarray, f0: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step halving per replication until -2 log L does not increase."""
    t = np.ones(theta.shape[0])
    new, fnew = theta.copy(), np.full(theta.shape[0], np.inf)
    todo = np.ones(theta.shape[0], dtype=bool)
    for _ in range(_HALVINGS):
        rows = np.flatnonzero(todo)
        if not rows.size:
            break
        trial = theta[rows] + t[rows, None] * step[rows]
        f = m2ll(d.rows(rows), trial)
        ok = f <= f0[rows]
        new[rows[ok]], fnew[rows[ok]] = trial[ok], f[ok]
        todo[rows[ok]] = False
        t[rows[~ok]] *= 0.5
    return new, fnew, ~todo


def fit_tspa(s: np.ndarray, ev: np.ndarray, z: np.ndarray, y: np.ndarray,
             closed_form: bool = True) -> TSPAFit:
    """Stage-2 ML of R replications at once.

    Parameters
    ----------
    s, ev, y : ndarray (R, G)
        Stage-1 scores, their error variances, the outcome.
    z : ndarray (R, G, q)
        Group covariates (q >= 0).
    closed_form : bool
        Replications whose groups all have the same error variance take the exact ML and
        its information in closed form where it is interior
        (:func:`~micromacro_sim.models.tspa_closed.closed_form`); False sends every
        replication through Newton's method (a check of the closed form).

    Returns
    -------
    TSPAFit
        Each replication's result is the same alone or in any batch (bitwise).
    """
    d = _Data.build(np.asarray(s, float), np.asarray(ev, float), z, np.asarray(y, float))
    R, m = d.s.shape[1], d.m
    moments = ols_moments(d)  # once: the start and the closed form share them
    theta = _start(d, moments)
    cov = np.full((R, 2 * m + 3, 2 * m + 3), np.nan)
    closed = np.flatnonzero(np.all(d.ev == d.ev[:1], axis=0) & closed_form)
    if closed.size:  # every group's ev equal: the ML in closed form where it is interior
        th, cv, interior = exact_fit(d.rows(closed), tuple(a[closed] for a in moments))
        closed = closed[interior]
        theta[closed], cov[closed] = th[interior], cv[interior]
    f = m2ll(d, theta)
    conv = np.zeros(R, dtype=bool)
    conv[closed] = True
    done = ~np.isfinite(f) | conv
    iters = np.zeros(R, dtype=np.int64)
    hess = np.full(cov.shape, np.nan)
    for _ in range(MAX_ITER):
        rows = np.flatnonzero(~done)
        if not rows.size:
            break
        sub = d.rows(rows)
        grad, H, E = _derivs(sub, theta[rows])
        hess[rows] = H
        step, dec = _direction(grad, H, E)
        fin = np.isfinite(dec)
        now = fin & (dec < TOL)
        conv[rows[now]] = done[rows[now]] = True
        done[rows[~fin]] = True
        go = rows[fin & ~now]
        keep = fin & ~now
        new, fnew, moved = _line_search(sub.rows(np.flatnonzero(keep)), theta[go],
                                        step[keep], f[go])
        theta[go[moved]], f[go[moved]] = new[moved], fnew[moved]
        iters[go] += 1
        stalled = go[~moved]
        conv[stalled] = dec[keep][~moved] < _STALL_TOL
        done[stalled] = True
    newton = np.setdiff1d(np.arange(R), closed)
    if newton.size:
        inv, _ = inv_stack(hess[newton])
        cov[newton] = 2 * inv
    evbar = sum_first(d.ev) / d.s.shape[0]
    return _finish(theta, cov, conv, f, iters, m, evbar)


def _finish(theta: np.ndarray, cov: np.ndarray, conv: np.ndarray, f: np.ndarray,
            iters: np.ndarray, m: int, evbar: np.ndarray) -> TSPAFit:
    """Reported parameters (b0, b_z, b_xi) and their observed-information SEs (``cov``:
    the covariance of theta, NaN where the information is not invertible)."""
    alpha, beta, psi, b, s2e = _split(theta, m)
    params = np.concatenate([beta - b[:, None] * alpha, b[:, None]], axis=1)
    ok = np.all(np.isfinite(cov), axis=(1, 2))
    R = theta.shape[0]
    var = np.full((R, m + 1), np.nan)
    ib = 2 * m + 1
    for j in range(m):
        ia, iy = j, m + j
        w = {ia: -b, iy: np.ones(R), ib: -alpha[:, j]}
        var[:, j] = sum(w[i] * w[k] * cov[:, i, k] for i in w for k in w)
    var[:, m] = cov[:, ib, ib]
    se = np.where(ok[:, None] & (var > 0), np.sqrt(np.abs(var)), np.nan)
    # a variance within BOUND_TOL of zero relative to its variable's scale is on the bound
    proper = ((psi > BOUND_TOL * (np.abs(psi) + evbar))
              & (s2e > BOUND_TOL * (s2e + b * b * np.abs(psi))))
    return TSPAFit(params=params, se=se, theta=theta, converged=conv, proper=proper,
                   m2ll=np.where(np.isfinite(f), f, np.nan), iterations=iters)
