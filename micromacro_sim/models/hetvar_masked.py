"""Heterogeneous-variance random intercept for many replications with absent members.

The batch partner of :mod:`.hetvar` for groups that hold any set of member positions (a
group may have positions {0, 2, 5}), as when members carry ids and some are absent.
:mod:`.hetvar_batch` keeps its prefix-structured sufficient statistics for groups holding
positions 0..n_g-1 and hands replications with member ids to :func:`fit_masked`.

Every replication is held as its own G x K layout (K its number of positions, from
:attr:`~micromacro_sim.generate.batch.Batch.positional`) and the kernel repeats the
reference's arithmetic operation for operation on a stack of equal-width layouts:
elementwise operations, sums inside one replication's slice (along the same axes and in
the same order as the reference's sums over its G x K arrays), one stacked matrix product
per replication (the information block) and one ``gesv`` per replication. A replication's
numbers therefore do not depend on its batch companions and follow the reference's
iteration step by step, including where the likelihood is unbounded: a position observed
in a single group drives its variance to 0 once tau2 is at 0, and the fit stops there as
the reference does (non-finite information, or no acceptable step).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from micromacro_sim.generate.batch import Batch
from micromacro_sim.generate.padding import width_classes
from micromacro_sim.models.hetvar import (
    BOUNDARY_TOL,
    GRAD_TOL,
    HALVINGS,
    LL_NOISE,
    MAX_STEP,
    SMALL_STEP,
    _start,
    _Wide,
)
from micromacro_sim.models.linalg import solve_stack

__all__ = ["fit_masked"]

_QUIET = {"over": "ignore", "invalid": "ignore", "divide": "ignore", "under": "ignore"}


class _MaskedWide:
    """:class:`~.hetvar._Wide` of a stack of replications of equal width.

    Parameters
    ----------
    X : ndarray (k, G, K)
        Values at the member positions, 0 where absent.
    M : ndarray (k, G, K)
        1.0 where a member is observed, else 0.0.
    N : ndarray (k,)
        Observed members of each replication.
    """

    def __init__(self, X: np.ndarray, M: np.ndarray, N: np.ndarray) -> None:
        self.X, self.M, self.N = X, M, N

    def take(self, i: np.ndarray) -> _MaskedWide:
        """The replications ``i`` (contiguous copies)."""
        return _MaskedWide(self.X[i], self.M[i], self.N[i])

    def pieces(self, mu: np.ndarray, tau2: np.ndarray, d: np.ndarray):
        """w, residuals, a, b, c of every replication (as ``_Wide.pieces``)."""
        w = self.M / d[:, None, :]
        R = (self.X - mu[:, None, None]) * self.M
        a = w.sum(axis=2)
        b = (w * R).sum(axis=2)
        c = 1.0 + tau2[:, None] * a
        return w, R, a, b, c

    def gls_mu(self, tau2: np.ndarray, d: np.ndarray) -> np.ndarray:
        """GLS intercepts for given variances."""
        w = self.M / d[:, None, :]
        a = w.sum(axis=2)
        c = 1.0 + tau2[:, None] * a
        return ((w * self.X).sum(axis=2) / c).sum(axis=1) / (a / c).sum(axis=1)

    def loglik(self, mu: np.ndarray, tau2: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Marginal log-likelihoods (whole-layout sums as one flat sum per replication)."""
        w, R, a, b, c = self.pieces(mu, tau2, d)
        k = d.shape[0]
        logdet = (self.M * np.log(d)[:, None, :]).reshape(k, -1).sum(axis=1) + np.log(c).sum(1)
        quad = (w * R * R).reshape(k, -1).sum(axis=1) - (tau2[:, None] * b * b / c).sum(axis=1)
        return -0.5 * (self.N * np.log(2 * np.pi) + logdet + quad)

    def score_info(self, mu: np.ndarray, tau2: np.ndarray, d: np.ndarray):
        """Gradients (k, K+1), expected informations (k, K+1, K+1) in (log tau2, log d)
        and the conditional modes (k, G)."""
        w, R, a, b, c = self.pieces(mu, tau2, d)
        m = tau2[:, None] * b / c
        v = tau2[:, None] / c
        g_tau = 0.5 * ((b / c) ** 2 - a / c).sum(axis=1)
        E = (R - m[:, :, None]) ** 2 + v[:, :, None]
        dd = d[:, None, :]
        g_d = 0.5 * (self.M * (E / dd**2 - 1.0 / dd)).sum(axis=1)
        t = tau2[:, None] / c
        k, K = d.shape
        info = np.empty((k, K + 1, K + 1))
        info[:, 0, 0] = 0.5 * ((a / c) ** 2).sum(axis=1)
        info[:, 0, 1:] = info[:, 1:, 0] = 0.5 * ((w / c[:, :, None]) ** 2).sum(axis=1)
        w2 = w * w
        block = np.matmul(np.swapaxes(w2 * (t**2)[:, :, None], 1, 2), w2)
        pos = np.arange(K)
        block[:, pos, pos] += (w2 - 2.0 * t[:, :, None] * w2 * w).sum(axis=1)
        info[:, 1:, 1:] = 0.5 * block
        theta = np.concatenate([tau2[:, None], d], axis=1)
        grad = np.concatenate([g_tau[:, None], g_d], axis=1) * theta
        return grad, info * (theta[:, :, None] * theta[:, None, :]), m

    def kkt(self, mu: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Derivative of the log-likelihood in tau2 at tau2 = 0, times the mean s2."""
        _, _, a, b, _ = self.pieces(mu, np.zeros(mu.size), d)
        return 0.5 * (b**2 - a).sum(axis=1) * d.mean(axis=1)


@dataclass
class _State:
    """Current iterate of every replication of a width class (mutated in place)."""

    mu: np.ndarray
    tau2: np.ndarray
    d: np.ndarray
    ll: np.ndarray
    free0: np.ndarray  # tau2 still a free parameter
    iterations: np.ndarray


def _solve(info: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """``np.linalg.solve`` of every system (one ``gesv`` each, whatever the stack), with
    the reference's least-squares step where it would raise (singular)."""
    x, ok = solve_stack(info, grad[:, :, None])
    step = x[:, :, 0]
    for r in np.flatnonzero(~ok):  # rare: singular
        step[r] = np.linalg.lstsq(info[r], grad[r], rcond=None)[0]
    return step


def _fisher_steps(wide: _MaskedWide, s: _State, A: np.ndarray):
    """The capped Fisher steps of the active replications ``A`` (0 on a fixed tau2), their
    uncapped sizes and which have a finite information (the others stop, as the
    reference does where a member variance has reached 0 with tau2 at 0)."""
    with np.errstate(**_QUIET):
        grad, info, _ = wide.score_info(s.mu[A], s.tau2[A], s.d[A])
    free0 = s.free0[A]
    step = np.zeros(grad.shape)
    finite = np.zeros(A.size, dtype=bool)
    for tau_free in (True, False):
        rows = np.flatnonzero(free0 == tau_free)
        lo = 0 if tau_free else 1  # with tau2 fixed, the system of the variances alone
        g, inf = grad[rows, lo:], info[rows, lo:, lo:]
        ok = np.isfinite(inf).all(axis=(1, 2)) & np.isfinite(g).all(axis=1)
        finite[rows] = ok
        if ok.any():
            step[rows[ok], lo:] = _solve(inf[ok], g[ok])
    big = np.max(np.abs(step), axis=1)
    with np.errstate(**_QUIET):
        cap = np.where(big > MAX_STEP, MAX_STEP / big, 1.0)
    step = np.where((big > MAX_STEP)[:, None], step * cap[:, None], step)
    return step, big, finite


def _line_search(wide: _MaskedWide, s: _State, A: np.ndarray, step: np.ndarray,
                 big: np.ndarray):
    """Step halving of the replications ``A`` (each on its own), as the reference.

    Returns whether each found an acceptable point, its scale, and the accepted
    (tau2, d, mu, ll) (the current values where none was found).
    """
    log_theta = np.log(np.concatenate([np.maximum(s.tau2[A], 1e-300)[:, None], s.d[A]], axis=1))
    free = np.ones(step.shape, dtype=bool)
    free[:, 0] = s.free0[A]
    ll_a = s.ll[A]
    capped = np.minimum(big, MAX_STEP)
    scale = np.ones(A.size)
    improved = np.zeros(A.size, dtype=bool)
    new = [s.tau2[A].copy(), s.d[A].copy(), s.mu[A].copy(), ll_a.copy()]
    pending = np.arange(A.size)
    sub = wide
    for _ in range(HALVINGS):
        lt = log_theta[pending]
        cand = np.where(free[pending], lt + scale[pending, None] * step[pending], lt)
        with np.errstate(**_QUIET):
            t2 = np.where(free[pending, 0], np.exp(cand[:, 0]), 0.0)
            dd = np.exp(cand[:, 1:])
            mu_c = sub.gls_mu(t2, dd)
            ll_c = sub.loglik(mu_c, t2, dd)
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


def _iterate(full: _MaskedWide, s: _State, max_iter: int, tol: float) -> None:
    """Fisher scoring of every replication until its own rule stops it."""
    active = np.arange(s.mu.size)
    wide = full
    for it in range(1, max_iter + 1):
        if active.size == 0:
            break
        A = active
        s.iterations[A] = it
        hit = s.free0[A] & (s.tau2[A] < BOUNDARY_TOL * (s.tau2[A] + s.d[A].mean(axis=1)))
        if hit.any():  # the optimum is on the boundary: continue with tau2 = 0 exactly
            H = A[hit]
            s.free0[H] = False
            s.tau2[H] = 0.0
            sub = wide.take(np.flatnonzero(hit))
            s.mu[H] = sub.gls_mu(s.tau2[H], s.d[H])
            s.ll[H] = sub.loglik(s.mu[H], s.tau2[H], s.d[H])
        step, big, finite = _fisher_steps(wide, s, A)
        keep = finite.copy()
        if finite.any():
            rows = np.flatnonzero(finite)
            improved, scale, new = _line_search(wide.take(rows), s, A[rows], step[rows],
                                                big[rows])
            up = A[rows[improved]]
            s.tau2[up], s.d[up] = new[0][improved], new[1][improved]
            s.mu[up], s.ll[up] = new[2][improved], new[3][improved]
            keep[rows] = improved & ~(scale * big[rows] < tol)
        active = A[keep]
        if not keep.all():
            wide = wide.take(np.flatnonzero(keep))


def _stack(batch: Batch, reps: np.ndarray, K: int) -> _MaskedWide:
    """The layouts of replications ``reps`` (all of width ``K``), cut to that width."""
    x, mask, _ = batch.positional
    X = np.ascontiguousarray(x[reps, :, :K])
    M = mask[reps, :, :K].astype(float)
    N = np.array([float(batch.datasets[r].n_persons) for r in reps])
    return _MaskedWide(X, M, N)


def _fit_class(batch: Batch, reps: np.ndarray, K: int, max_iter: int, tol: float) -> dict:
    """:func:`fit_masked` of replications of width ``K``."""
    full = _stack(batch, reps, K)
    starts = [_start(batch.datasets[r], _Wide(batch.datasets[r]), 0) for r in reps]
    tau2 = np.array([t for t, _ in starts])
    d = np.stack([dd for _, dd in starts])
    mu = full.gls_mu(tau2, d)
    s = _State(mu, tau2, d, full.loglik(mu, tau2, d), np.ones(reps.size, dtype=bool),
               np.zeros(reps.size, dtype=int))
    _iterate(full, s, max_iter, tol)
    with np.errstate(**_QUIET):
        grad, _, modes = full.score_info(s.mu, s.tau2, s.d)
    grad = np.where(s.free0[:, None] | (np.arange(K + 1) > 0), np.abs(grad), -np.inf)
    grad_max = np.max(grad, axis=1)
    at0 = np.flatnonzero(~s.free0)
    if at0.size:
        # Karush-Kuhn-Tucker at tau2 = 0: the likelihood must not rise into tau2 > 0
        # (the reference's max(grad_max, kkt): a NaN KKT leaves grad_max as it is).
        with np.errstate(**_QUIET):
            kkt = full.take(at0).kkt(s.mu[at0], s.d[at0])
        grad_max[at0] = np.where(kkt > grad_max[at0], kkt, grad_max[at0])
    total = s.tau2 + s.d.mean(axis=1)
    small_var = BOUNDARY_TOL * total
    boundary = (s.tau2 < small_var) | np.any(s.d < small_var[:, None], axis=1)
    return dict(mu=s.mu, tau2=s.tau2, s2=s.d, modes=modes, loglik=s.ll,
                iterations=s.iterations, grad_max=grad_max,
                converged=grad_max <= GRAD_TOL, boundary=boundary)


def fit_masked(batch: Batch, reps: np.ndarray, *, max_iter: int = 500,
               tol: float = 1e-12) -> list[tuple[np.ndarray, int, dict]]:
    """:func:`~.hetvar.hetvar_ml` of the replications ``reps``, whatever positions their
    groups hold.

    Parameters
    ----------
    batch : Batch
        Its :attr:`~micromacro_sim.generate.batch.Batch.positional` layouts are used.
    reps : ndarray of int
        Replications to fit.
    max_iter, tol : int, float
        As :func:`~.hetvar.hetvar_ml`.

    Returns
    -------
    list of (ndarray, int, dict)
        Per width class: the positions in ``reps`` of its replications, the width K and
        the fields of :class:`~.hetvar_batch.HetVarBatch` (``s2`` of shape (k, K)).
    """
    reps = np.asarray(reps)
    widths = batch.positional[2][reps]
    return [(rows, K, _fit_class(batch, reps[rows], K, max_iter, tol))
            for K, rows in width_classes(widths)]
