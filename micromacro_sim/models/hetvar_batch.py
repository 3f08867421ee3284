"""Heterogeneous-variance random intercept for many replications at once: the batch
partner of :mod:`.hetvar`.

:func:`hetvar_ml_batch` runs the Fisher scoring of :func:`~.hetvar.hetvar_ml` on all
replications at once (same start, step cap, step halving, stopping, boundary and
convergence rules), each replication stopping on its own. Groups holding positions
0..n_g-1 (no member ids) use the prefix-structured statistics below; replications with
member ids (absent members) go to :mod:`.hetvar_masked`, which works on their positional
layouts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from micromacro_sim.generate.batch import Batch
from micromacro_sim.generate.padding import width_groups
from micromacro_sim.models.hetvar import (
    BOUNDARY_TOL,
    GRAD_TOL,
    HALVINGS,
    LL_NOISE,
    MAX_STEP,
    SMALL_STEP,
)
from micromacro_sim.models.hetvar_masked import fit_masked
from micromacro_sim.models.linalg import solve_stack

__all__ = ["HetVarBatch", "hetvar_ml_batch"]


@dataclass(frozen=True)
class HetVarBatch:
    """:func:`~.hetvar.hetvar_ml` results of many replications (leading axis R).

    ``s2`` is (R, J) with J the largest number of member positions of the batch (the
    largest group size without member ids); positions a replication does not have are
    NaN.
    """

    mu: np.ndarray
    tau2: np.ndarray
    s2: np.ndarray
    modes: np.ndarray
    loglik: np.ndarray
    iterations: np.ndarray
    grad_max: np.ndarray
    converged: np.ndarray
    boundary: np.ndarray


class _WideBatch:
    """:class:`~.hetvar.WideLayout` of many replications, in sufficient statistics per group.

    x is centred at each replication's grand mean (the model is location equivariant) and
    held as (R, G, J) with zeros where a group lacks a position. Group g has positions
    0..n_g-1, so with ``v_j = 1 / s2_j``: ``a_g = sum_{j < n_g} v_j`` (a prefix sum),
    ``s1 = X v`` and ``s2 = X^2 v`` give ``b = s1 - mu a`` and ``sum_j w R^2 = s2 - 2 mu s1
    + mu^2 a``; sums over groups having position j are sums over groups with ``n_g > j``
    (suffix sums over sizes). Positions a replication does not have keep ``s2_j = 1`` and
    are not parameters.
    """

    def __init__(self, X: np.ndarray, X2: np.ndarray, n: np.ndarray) -> None:
        self.X, self.X2, self.n = X, X2, n
        R, G, J = X.shape
        self.N = n.sum(axis=1).astype(float)
        self._bins = (np.arange(R)[:, None] * (J + 1) + n).ravel()
        self.nj = self.upper(np.ones((R, G)))  # groups having each position, (R, J)
        self.present = self.nj > 0
        self.n_present = self.present.sum(axis=1)
        self.colx2 = X2.sum(axis=1)

    def take(self, i: np.ndarray) -> _WideBatch:
        """The replications ``i``."""
        return _WideBatch(self.X[i], self.X2[i], self.n[i])

    def upper(self, vals: np.ndarray) -> np.ndarray:
        """``sum_{g: n_g > j} vals_g`` for every position j, shape (R, J)."""
        R, _, J = self.X.shape
        per_size = np.bincount(self._bins, weights=vals.ravel(), minlength=R * (J + 1))
        return np.cumsum(per_size.reshape(R, J + 1)[:, ::-1], axis=1)[:, ::-1][:, 1:]

    def prefix(self, v: np.ndarray) -> np.ndarray:
        """``sum_{j < n_g} v_j`` for every group, shape (R, G)."""
        cv = np.concatenate([np.zeros((v.shape[0], 1)), np.cumsum(v, axis=1)], axis=1)
        return np.take_along_axis(cv, self.n, axis=1)

    def mean_d(self, d: np.ndarray) -> np.ndarray:
        """Mean of the variances of the positions each replication has."""
        return np.where(self.present, d, 0.0).sum(axis=1) / self.n_present

    def mu_loglik(self, tau2: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """GLS intercepts and the log-likelihoods there."""
        v = 1.0 / d
        a = self.prefix(v)
        s1 = np.matmul(self.X, v[:, :, None])[:, :, 0]
        s2 = np.matmul(self.X2, v[:, :, None])[:, :, 0]
        c = 1.0 + tau2[:, None] * a
        mu = (s1 / c).sum(axis=1) / (a / c).sum(axis=1)
        m = mu[:, None]
        b = s1 - m * a
        quad = (s2 - 2.0 * m * s1 + m * m * a).sum(axis=1) - (tau2[:, None] * b * b / c).sum(1)
        logdet = (self.nj * np.log(d)).sum(axis=1) + np.log(c).sum(axis=1)
        return mu, -0.5 * (self.N * np.log(2 * np.pi) + logdet + quad)

    def _ab(self, mu: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        v = 1.0 / d
        a = self.prefix(v)
        return v, a, np.matmul(self.X, v[:, :, None])[:, :, 0] - mu[:, None] * a

    def kkt(self, mu: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Derivative of the log-likelihood in tau2 at tau2 = 0, times the mean s2."""
        _, a, b = self._ab(mu, d)
        return 0.5 * (b * b - a).sum(axis=1) * self.mean_d(d)

    def score_info(self, mu: np.ndarray, tau2: np.ndarray, d: np.ndarray):
        """Gradients (R, J+1), expected informations (R, J+1, J+1) and modes (R, G)."""
        v, a, b = self._ab(mu, d)
        c = 1.0 + tau2[:, None] * a
        t = tau2[:, None] / c
        m = t * b
        g_tau = 0.5 * ((b / c) ** 2 - a / c).sum(axis=1)
        h = mu[:, None] + m  # fitted value of each group
        mt = self.upper(t)  # sum over groups having position j of t
        sq = self.colx2 - 2.0 * np.matmul(h[:, None, :], self.X)[:, 0, :] + self.upper(h * h)
        v2 = v * v
        g_d = 0.5 * (v2 * (sq + mt) - self.nj * v)
        k, J = d.shape
        info = np.empty((k, J + 1, J + 1))
        info[:, 0, 0] = 0.5 * ((a / c) ** 2).sum(axis=1)
        info[:, 0, 1:] = info[:, 1:, 0] = 0.5 * v2 * self.upper(1.0 / c**2)
        pos = np.arange(J)
        block = self.upper(t * t)[:, np.maximum.outer(pos, pos)]  # groups having i and j
        block *= v2[:, :, None] * v2[:, None, :]
        block[:, pos, pos] += v2 * self.nj - 2.0 * v2 * v * mt
        info[:, 1:, 1:] = 0.5 * block
        theta = np.concatenate([tau2[:, None], d], axis=1)
        grad = np.concatenate([g_tau[:, None], g_d], axis=1) * theta
        return grad, info * theta[:, :, None] * theta[:, None, :], m


def _solve_steps(info: np.ndarray, grad: np.ndarray, free: np.ndarray) -> np.ndarray:
    """Fisher steps on the free parameters (fixed ones get identity rows: step 0).

    Each replication's system is solved by the same LAPACK call whatever its companions
    (:func:`~micromacro_sim.models.linalg.solve_stack`); only the singular ones take the
    reference's least-squares step.
    """
    both = free[:, :, None] & free[:, None, :]
    eye = np.broadcast_to(np.eye(info.shape[1], dtype=bool), info.shape)
    A = np.where(both, info, eye.astype(float))
    g = np.where(free, grad, 0.0)[:, :, None]
    x, ok = solve_stack(A, g)
    step = x[:, :, 0]
    for r in np.flatnonzero(~ok):  # rare: singular
        f = free[r]
        step[r] = 0.0
        step[r, f] = np.linalg.lstsq(info[r][np.ix_(f, f)], grad[r][f], rcond=None)[0]
    return step


@dataclass
class _State:
    """Current iterate of every replication (mutated in place by the iteration)."""

    mu: np.ndarray
    tau2: np.ndarray
    d: np.ndarray
    ll: np.ndarray
    free0: np.ndarray  # tau2 still a free parameter
    iterations: np.ndarray


def _start(batch: Batch, reps: np.ndarray, J: int) -> tuple[_WideBatch, _State, np.ndarray]:
    """The reference's moment start for the replications ``reps``, all of largest group
    size ``J`` (their arrays are cut to it); also their grand means (the data are centred
    at them)."""
    M = batch.mask[reps, :, :J]
    sizes = batch.sizes[reps]
    n = sizes.astype(float)
    N = n.sum(axis=1)
    R, G = n.shape
    x = batch.x[reps, :, :J]
    mu0 = x.sum(axis=(1, 2)) / N
    X = np.where(M, x - mu0[:, None, None], 0.0)
    full = _WideBatch(X, X * X, sizes)
    xbar = x.sum(axis=2) / sizes - mu0[:, None]
    resid = np.where(M, X - xbar[:, :, None], 0.0)
    mse = np.einsum("rgi,rgi->r", resid, resid) / np.maximum(N - G, 1)
    msa = np.einsum("rg,rg,rg->r", n, xbar, xbar) / (G - 1)
    n0 = (N - (n**2).sum(axis=1) / N) / (G - 1)
    var = full.colx2.sum(axis=1) / N
    d_start = np.where(mse > 0, mse, np.where(var != 0, var, 1.0))
    d = np.where(full.present, d_start[:, None], 1.0)
    tau2 = np.maximum((msa - mse) / n0, 0.05 * d_start)
    mu, ll = full.mu_loglik(tau2, d)
    state = _State(mu, tau2, d, ll, np.ones(R, dtype=bool), np.zeros(R, dtype=int))
    return full, state, mu0


def _line_search(wide: _WideBatch, s: _State, A: np.ndarray, step: np.ndarray,
                 capped: np.ndarray):
    """Step halving of the active replications ``A`` (each on its own), as the reference.

    Returns whether each found an acceptable point, its scale, and the accepted
    (tau2, d, mu, ll) (the current values where none was found).
    """
    log_theta = np.log(np.concatenate([np.maximum(s.tau2[A], 1e-300)[:, None], s.d[A]], axis=1))
    ll_a = s.ll[A]
    scale = np.ones(A.size)
    improved = np.zeros(A.size, dtype=bool)
    new = [s.tau2[A].copy(), s.d[A].copy(), s.mu[A].copy(), ll_a.copy()]
    pending = np.arange(A.size)
    sub = wide
    for _ in range(HALVINGS):
        cand = log_theta[pending] + scale[pending, None] * step[pending]
        t2 = np.where(s.free0[A[pending]], np.exp(cand[:, 0]), 0.0)
        dd = np.exp(cand[:, 1:])
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            mu_c, ll_c = sub.mu_loglik(t2, dd)
        ll_p = ll_a[pending]
        small = scale[pending] * capped[pending] <= SMALL_STEP
        ok = np.isfinite(ll_c) & (
            (ll_c >= ll_p) | small & (ll_c >= ll_p - LL_NOISE * np.abs(ll_p))
        )
        acc = pending[ok]
        improved[acc] = True
        for arr, val in zip(new, (t2, dd, mu_c, ll_c), strict=True):
            arr[acc] = val[ok]
        if ok.all():
            break
        pending = pending[~ok]
        sub = sub.take(np.flatnonzero(~ok))
        scale[pending] *= 0.5
    return improved, scale, new


def _iterate(full: _WideBatch, s: _State, max_iter: int, tol: float) -> None:
    """Fisher scoring of every replication until its own rule stops it."""
    active = np.arange(s.mu.size)
    wide = full
    for it in range(1, max_iter + 1):
        if active.size == 0:
            break
        A = active
        s.iterations[A] = it
        hit = s.free0[A] & (s.tau2[A] < BOUNDARY_TOL * (s.tau2[A] + wide.mean_d(s.d[A])))
        if hit.any():  # the optimum is on the boundary: continue with tau2 = 0 exactly
            s.free0[A[hit]] = False
            s.tau2[A[hit]] = 0.0
            mu_h, ll_h = wide.take(np.flatnonzero(hit)).mu_loglik(s.tau2[A[hit]], s.d[A[hit]])
            s.mu[A[hit]], s.ll[A[hit]] = mu_h, ll_h
        grad, info, _ = wide.score_info(s.mu[A], s.tau2[A], s.d[A])
        free = np.concatenate([s.free0[A][:, None], wide.present], axis=1)
        step = np.where(free, _solve_steps(info, grad, free), 0.0)
        big = np.max(np.abs(step), axis=1)
        capped = np.minimum(big, MAX_STEP)
        step *= (capped / np.where(big > 0, big, 1.0))[:, None]
        improved, scale, new = _line_search(wide, s, A, step, capped)
        up = A[improved]
        s.tau2[up], s.d[up] = new[0][improved], new[1][improved]
        s.mu[up], s.ll[up] = new[2][improved], new[3][improved]
        keep = improved & ~(scale * big < tol)
        active = A[keep]
        if not keep.all():
            wide = wide.take(np.flatnonzero(keep))


def _fit_width(batch: Batch, reps: np.ndarray, J: int, max_iter: int, tol: float) -> dict:
    """:func:`hetvar_ml_batch` of replications whose largest group size is ``J``."""
    full, s, mu0 = _start(batch, reps, J)
    _iterate(full, s, max_iter, tol)
    grad, _, modes = full.score_info(s.mu, s.tau2, s.d)
    free = np.concatenate([s.free0[:, None], full.present], axis=1)
    grad_max = np.max(np.where(free, np.abs(grad), -np.inf), axis=1)
    at0 = np.flatnonzero(~s.free0)
    if at0.size:
        # Karush-Kuhn-Tucker at tau2 = 0: the likelihood must not rise into tau2 > 0.
        grad_max[at0] = np.maximum(grad_max[at0], full.take(at0).kkt(s.mu[at0], s.d[at0]))
    total = s.tau2 + full.mean_d(s.d)
    small_var = BOUNDARY_TOL * total
    boundary = (s.tau2 < small_var) | np.any(full.present & (s.d < small_var[:, None]), axis=1)
    return dict(
        mu=s.mu + mu0, tau2=s.tau2, s2=np.where(full.present, s.d, np.nan), modes=modes,
        loglik=s.ll, iterations=s.iterations, grad_max=grad_max,
        converged=grad_max <= GRAD_TOL, boundary=boundary,
    )


def hetvar_ml_batch(
    batch: Batch, *, reps: np.ndarray | None = None, max_iter: int = 500, tol: float = 1e-12
) -> HetVarBatch:
    """:func:`~.hetvar.hetvar_ml` for the replications ``reps`` of a batch, all at once.

    Fisher scoring vectorized over replications with the reference's start, step cap
    (5 in the log parameters), step halving (up to 40 times, until the likelihood does not
    fall, with the same rounding allowance for tiny steps), stopping rule (no acceptable
    step, or a step below ``tol``), switch to ``tau2 = 0`` near the boundary, and
    gradient/KKT convergence check; a replication leaves the iteration when its own rule
    stops it. Replications are fitted in groups of equal largest group size, each on
    arrays of its own width (:func:`~.oneway_batch.width_groups`), so none depends on its
    batch companions. A replication whose members carry ids (absent members: its groups
    hold any positions, not 0..n_g-1) is fitted on its positional layout by
    :func:`~.hetvar_masked.fit_masked`, at its own number of positions.
    """
    reps = np.arange(batch.n_reps) if reps is None else np.asarray(reps)
    masked = np.array([batch.member_ids and batch.datasets[r].member is not None
                       for r in reps], dtype=bool)
    sizes = batch.sizes[reps]
    R, G = reps.size, sizes.shape[1]
    J = int(sizes.max(initial=1))
    if masked.any():
        J = max(J, int(batch.positional[2][reps[masked]].max()))
    out = dict(mu=np.empty(R), tau2=np.empty(R), s2=np.full((R, J), np.nan),
               modes=np.empty((R, G)), loglik=np.empty(R), iterations=np.zeros(R, dtype=int),
               grad_max=np.empty(R), converged=np.zeros(R, dtype=bool),
               boundary=np.zeros(R, dtype=bool))
    prefix = np.flatnonzero(~masked)
    parts = [(prefix[rows], width, _fit_width(batch, reps[prefix[rows]], width, max_iter, tol))
             for width, rows in width_groups(sizes[prefix])]
    if masked.any():
        where = np.flatnonzero(masked)
        parts += [(where[rows], width, part) for rows, width, part
                  in fit_masked(batch, reps[where], max_iter=max_iter, tol=tol)]
    for rows, width, part in parts:
        for key, val in part.items():
            if key == "s2":
                out[key][rows, :width] = val
            else:
                out[key][rows] = val
    return HetVarBatch(**out)
