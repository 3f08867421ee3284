"""Heterogeneous-variance random intercept for many replications with absent members.

The batch partner of :mod:`.hetvar` for groups that hold any set of member positions (a
group may have positions {0, 2, 5}), as when members carry ids and some are absent.
:mod:`.hetvar_batch` keeps its prefix-structured sufficient statistics for groups holding
positions 0..n_g-1 and hands replications with member ids to :func:`fit_masked`.

Every replication is held as its own G x K layout (K its number of positions, from
:attr:`~micromacro_sim.generate.batch.Batch.positional`) and the kernel repeats the
reference's arithmetic operation for operation on a stack of equal-width layouts:
elementwise operations, sums inside one replication's slice in the order of the
reference's sums over its G x K arrays (:func:`_rowsum`, :func:`_groupsum`, one flat sum
per layout), one stacked matrix product per replication (the information block) and one
``gesv`` per replication, from the reference's own start. A replication's numbers
therefore do not depend on its batch companions, and they are the reference's bits (as
long as numpy sums in the orders these helpers rely on; the tests check it).

That is deliberate. A position observed in one or two groups can drive its variance to 0:
with tau2 at 0 the likelihood is unbounded and the fit stops when the information is no
longer finite (or at ``max_iter``); with tau2 > 0 the optimum is on the boundary and the
scoring only approaches it. There the reference evaluates its likelihood with
cancellation (``sum w R^2`` and ``sum tau2 b^2 / c`` both grow like 1 / s2_j), so where it
stops, and its tau2 and modes, are set by rounding (the verdict, boundary and not
converged, is not). Only the reference's own arithmetic reproduces them.
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
    WideLayout,
    moment_start,
)
from micromacro_sim.models.linalg import solve_stack

__all__ = ["fit_masked"]

#: Replications of a width class are fitted in stacks of about this many layout cells
#: (G x K each), which keeps the working arrays in cache; a replication's numbers do not
#: depend on the stack it is in.
CHUNK_ELEMENTS = 32768
#: Stacks of at least this many elements are summed by columns in :func:`_rowsum`.
_COLUMN_OPS_FROM = 4096
_QUIET = {"over": "ignore", "invalid": "ignore", "divide": "ignore", "under": "ignore"}


def _rowsum(a: np.ndarray) -> np.ndarray:
    """``a.sum(axis=-1)`` bit for bit, faster for short rows.

    numpy sums a contiguous row with its pairwise algorithm, which for up to 128 terms is
    eight running lanes (one when fewer than 8 terms) combined as a tree, then the
    remainder, added to the identity 0. Repeating that order with operations on whole
    columns avoids numpy's per-row overhead on rows of a few member positions; longer
    rows, and small stacks (where the column operations' own overhead dominates), use
    numpy itself.
    """
    n = a.shape[-1]
    if n > 128 or a.size < _COLUMN_OPS_FROM:
        return a.sum(axis=-1)
    if n < 8:
        res = 0.0 + a[..., 0]
        for i in range(1, n):
            res = res + a[..., i]
        return res
    lanes = [a[..., j] for j in range(8)]
    i = 8
    while i < n - n % 8:
        lanes = [lanes[j] + a[..., i + j] for j in range(8)]
        i += 8
    res = ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + (
        (lanes[4] + lanes[5]) + (lanes[6] + lanes[7]))
    for j in range(i, n):
        res = res + a[..., j]
    return 0.0 + res


def _groupsum(a: np.ndarray) -> np.ndarray:
    """``a.sum(axis=1)`` of a stack (k, G, K) bit for bit: each position's sum over the
    groups in order, as the reference's ``sum(axis=0)`` of its G x K arrays.

    ``einsum`` runs the same sequential sum over the groups with the positions of all
    replications in its inner loop (numpy's reduction loops over the few positions of one
    group at a time, which is slow); with a single position it would sum otherwise.
    """
    return np.einsum("rgj->rj", a) if a.shape[2] > 1 else a.sum(axis=1)


class _MaskedWide:
    """:class:`~.hetvar.WideLayout` of a stack of replications of equal width.

    Sums over a group's positions use :func:`_rowsum`, sums over the groups of a position
    :func:`_groupsum`, whole-layout sums one flat sum per replication.

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

    def pieces(self, mu: np.ndarray, tau2: np.ndarray, d: np.ndarray,
               wac: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
               ) -> tuple[np.ndarray, ...]:
        """w, residuals, a, b, c and w R of every replication (as ``WideLayout.pieces``);
        ``wac`` passes w, a, c already computed for ``tau2`` and ``d``."""
        if wac is None:
            w = self.M / d[:, None, :]
            a = _rowsum(w)
            c = 1.0 + tau2[:, None] * a
        else:
            w, a, c = wac
        R = (self.X - mu[:, None, None]) * self.M
        wR = w * R
        return w, R, a, _rowsum(wR), c, wR

    def mu_loglik(self, tau2: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """GLS intercepts for given variances and the marginal log-likelihoods there
        (``WideLayout.gls_mu``, then ``WideLayout.loglik``)."""
        w = self.M / d[:, None, :]
        a = _rowsum(w)
        c = 1.0 + tau2[:, None] * a
        mu = (_rowsum(w * self.X) / c).sum(axis=1) / (a / c).sum(axis=1)
        _, R, _, b, _, wR = self.pieces(mu, tau2, d, (w, a, c))
        k = d.shape[0]
        logdet = (self.M * np.log(d)[:, None, :]).reshape(k, -1).sum(axis=1) + np.log(c).sum(1)
        quad = (wR * R).reshape(k, -1).sum(axis=1) - (tau2[:, None] * b * b / c).sum(axis=1)
        return mu, -0.5 * (self.N * np.log(2 * np.pi) + logdet + quad)

    def score_info(self, mu: np.ndarray, tau2: np.ndarray, d: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Gradients (k, K+1), expected informations (k, K+1, K+1) in (log tau2, log d)
        and the conditional modes (k, G)."""
        w, R, a, b, c, _ = self.pieces(mu, tau2, d)
        m = tau2[:, None] * b / c
        v = tau2[:, None] / c
        g_tau = 0.5 * ((b / c) ** 2 - a / c).sum(axis=1)
        E = (R - m[:, :, None]) ** 2 + v[:, :, None]
        dd = d[:, None, :]
        g_d = 0.5 * _groupsum(self.M * (E / dd**2 - 1.0 / dd))
        t = tau2[:, None] / c
        k, K = d.shape
        info = np.empty((k, K + 1, K + 1))
        info[:, 0, 0] = 0.5 * ((a / c) ** 2).sum(axis=1)
        info[:, 0, 1:] = info[:, 1:, 0] = 0.5 * _groupsum((w / c[:, :, None]) ** 2)
        w2 = w * w
        block = np.matmul(np.swapaxes(w2 * (t**2)[:, :, None], 1, 2), w2)
        pos = np.arange(K)
        block[:, pos, pos] += _groupsum(w2 - 2.0 * t[:, :, None] * w2 * w)
        info[:, 1:, 1:] = 0.5 * block
        theta = np.concatenate([tau2[:, None], d], axis=1)
        grad = np.concatenate([g_tau[:, None], g_d], axis=1) * theta
        return grad, info * (theta[:, :, None] * theta[:, None, :]), m

    def kkt(self, mu: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Derivative of the log-likelihood in tau2 at tau2 = 0, times the mean s2."""
        _, _, a, b, _, _ = self.pieces(mu, np.zeros(mu.size), d)
        return 0.5 * (b**2 - a).sum(axis=1) * d.mean(axis=1)


@dataclass
class _Active:
    """The replications still iterating: their layouts and current iterates."""

    wide: _MaskedWide
    idx: np.ndarray  # rows of the width class
    mu: np.ndarray
    tau2: np.ndarray
    d: np.ndarray
    ll: np.ndarray
    free0: np.ndarray  # tau2 still a free parameter

    def keep(self, rows: np.ndarray) -> _Active:
        """The replications ``rows`` (copies)."""
        return _Active(self.wide.take(rows), self.idx[rows], self.mu[rows], self.tau2[rows],
                       self.d[rows], self.ll[rows], self.free0[rows])


def _solve(info: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """``np.linalg.solve`` of every system (one ``gesv`` each, whatever the stack), with
    the reference's least-squares step where it would raise (singular)."""
    x, ok = solve_stack(info, grad[:, :, None])
    step = x[:, :, 0]
    for r in np.flatnonzero(~ok):  # rare: singular
        step[r] = np.linalg.lstsq(info[r], grad[r], rcond=None)[0]
    return step


def _fisher_steps(a: _Active) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The capped Fisher steps (0 on a fixed tau2), their uncapped sizes and which have a
    finite information (the others stop, as the reference does where a member variance
    has reached 0 with tau2 at 0)."""
    grad, info, _ = a.wide.score_info(a.mu, a.tau2, a.d)
    step = np.zeros(grad.shape)
    finite = np.zeros(a.idx.size, dtype=bool)
    for lo in (0, 1):  # tau2 free: the whole system; tau2 fixed: the variances alone
        rows = np.flatnonzero(a.free0) if lo == 0 else np.flatnonzero(~a.free0)
        if rows.size == 0:
            continue
        g, inf = grad[rows, lo:], info[rows, lo:, lo:]
        ok = np.isfinite(inf).all(axis=(1, 2)) & np.isfinite(g).all(axis=1)
        finite[rows] = ok
        if ok.all():
            step[rows, lo:] = _solve(inf, g)
        elif ok.any():
            step[rows[ok], lo:] = _solve(inf[ok], g[ok])
    big = np.max(np.abs(step), axis=1)
    over = big > MAX_STEP  # cap the step, keeping its (ascent) direction
    if over.any():
        step[over] *= (MAX_STEP / big[over])[:, None]
    return step, big, finite


def _line_search(a: _Active, step: np.ndarray, big: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Step halving of every replication of ``a`` (each on its own), as the reference.

    Returns whether each found an acceptable point, its scale, and the accepted
    (tau2, d, mu, ll) (the current values where none was found). A fixed tau2 has a zero
    step, so its log stays put; its candidate is 0 whatever the log.
    """
    k = a.idx.size
    lt = np.log(np.concatenate([np.maximum(a.tau2, 1e-300)[:, None], a.d], axis=1))
    free0, ll, capped = a.free0, a.ll, np.minimum(big, MAX_STEP)
    improved, out_scale, scale = np.zeros(k, dtype=bool), np.ones(k), np.ones(k)
    new = [a.tau2.copy(), a.d.copy(), a.mu.copy(), a.ll.copy()]
    idx, sub = np.arange(k), a.wide
    for _ in range(HALVINGS):
        cand = lt + scale[:, None] * step
        t2 = np.where(free0, np.exp(cand[:, 0]), 0.0)
        dd = np.exp(cand[:, 1:])
        mu_c, ll_c = sub.mu_loglik(t2, dd)
        small = scale * capped <= SMALL_STEP
        ok = np.isfinite(ll_c) & ((ll_c >= ll) | small & (ll_c >= ll - LL_NOISE * np.abs(ll)))
        if ok.any():
            acc = idx[ok]
            improved[acc], out_scale[acc] = True, scale[ok]
            for arr, val in zip(new, (t2, dd, mu_c, ll_c), strict=True):
                arr[acc] = val[ok]
            if ok.all():
                break
            rest = np.flatnonzero(~ok)
            idx, lt, step, scale = idx[rest], lt[rest], step[rest], scale[rest]
            free0, ll, capped, sub = free0[rest], ll[rest], capped[rest], sub.take(rest)
        scale = scale * 0.5
    return improved, out_scale, new


def _step(a: _Active, tol: float) -> np.ndarray:
    """One Fisher-scoring iteration of every replication of ``a`` (updated in place);
    which go on iterating."""
    hit = a.free0 & (a.tau2 < BOUNDARY_TOL * (a.tau2 + a.d.mean(axis=1)))
    if hit.any():  # the optimum is on the boundary: continue with tau2 = 0 exactly
        h = np.flatnonzero(hit)
        a.free0[h], a.tau2[h] = False, 0.0
        sub = a.wide if hit.all() else a.wide.take(h)
        a.mu[h], a.ll[h] = sub.mu_loglik(a.tau2[h], a.d[h])
    step, big, finite = _fisher_steps(a)
    go_on = np.zeros(finite.size, dtype=bool)
    if finite.any():
        f = np.flatnonzero(finite)
        improved, scale, new = _line_search(a if finite.all() else a.keep(f), step[f], big[f])
        up = f[improved]
        a.tau2[up], a.d[up] = new[0][improved], new[1][improved]
        a.mu[up], a.ll[up] = new[2][improved], new[3][improved]
        go_on[f] = improved & ~(scale * big[f] < tol)
    return go_on


def _iterate(a: _Active, max_iter: int, tol: float) -> dict:
    """Fisher scoring of every replication until its own rule stops it; the final
    mu, tau2, d, ll, free0 and iterations of each, in the order of ``a``."""
    keys = ("mu", "tau2", "d", "ll", "free0")
    out = {key: getattr(a, key).copy() for key in keys}
    out["iterations"] = np.full(a.idx.size, max_iter)
    with np.errstate(**_QUIET):
        for it in range(1, max_iter + 1):
            if a.idx.size == 0:
                break
            go_on = _step(a, tol)
            if not go_on.all():
                done = np.flatnonzero(~go_on)
                for key in keys:
                    out[key][a.idx[done]] = getattr(a, key)[done]
                out["iterations"][a.idx[done]] = it
                a = a.keep(np.flatnonzero(go_on))
    for key in keys:  # still iterating at max_iter
        out[key][a.idx] = getattr(a, key)
    return out


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
    starts = [moment_start(batch.datasets[r], WideLayout(batch.datasets[r]), 0) for r in reps]
    tau2 = np.array([t for t, _ in starts])
    d = np.stack([dd for _, dd in starts])
    mu, ll = full.mu_loglik(tau2, d)
    s = _iterate(_Active(full, np.arange(reps.size), mu, tau2, d, ll,
                         np.ones(reps.size, dtype=bool)), max_iter, tol)
    mu, tau2, d, free0 = s["mu"], s["tau2"], s["d"], s["free0"]
    with np.errstate(**_QUIET):
        grad, _, modes = full.score_info(mu, tau2, d)
        grad = np.where(free0[:, None] | (np.arange(K + 1) > 0), np.abs(grad), -np.inf)
        grad_max = np.max(grad, axis=1)
        at0 = np.flatnonzero(~free0)
        if at0.size:
            # Karush-Kuhn-Tucker at tau2 = 0: the likelihood must not rise into tau2 > 0
            # (the reference's max(grad_max, kkt): a NaN KKT leaves grad_max as it is).
            kkt = full.take(at0).kkt(mu[at0], d[at0])
            grad_max[at0] = np.where(kkt > grad_max[at0], kkt, grad_max[at0])
    small_var = BOUNDARY_TOL * (tau2 + d.mean(axis=1))
    boundary = (tau2 < small_var) | np.any(d < small_var[:, None], axis=1)
    return dict(mu=mu, tau2=tau2, s2=d, modes=modes, loglik=s["ll"],
                iterations=s["iterations"], grad_max=grad_max,
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
        Per stack of replications of one width (about :data:`CHUNK_ELEMENTS` layout cells
        each): their positions in ``reps``, the width K and the fields of
        :class:`~.hetvar_batch.HetVarBatch` (``s2`` of shape (k, K)).
    """
    reps = np.asarray(reps)
    widths = batch.positional[2][reps]
    out = []
    for K, rows in width_classes(widths):
        size = max(1, CHUNK_ELEMENTS // (batch.n_groups * K))
        for at in range(0, rows.size, size):
            part = rows[at : at + size]
            out.append((part, K, _fit_class(batch, reps[part], K, max_iter, tol)))
    return out
