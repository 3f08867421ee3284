"""Safeguarded Newton for the profiled one-factor CFA: N runs at once, each on its own path.

The machinery behind :func:`micromacro_sim.models.cfa_profile.fit_arrays_profiled` (its
docstring gives the method): the run state (:class:`Runs`), the charts of each problem
(:class:`Charts`), the line search with its chart switches and the passage through
infinity, and the convergence rule. Every run follows its own path; runs only share
array operations, so a run's result does not depend on the others.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from micromacro_sim.models.cfa_profile_derivs import (
    Profile,
    bases,
    evaluate,
    gradient_hessian,
    newton_step,
)

__all__ = ["DECREMENT_TOL", "FACE_TOL", "F_NOISE", "MAX_HALVINGS", "MAX_ITER", "SWITCH",
           "Charts", "Runs", "minimize", "run_newton"]

#: Converged: Hessian positive definite and Newton decrement g' H^-1 g below this times
#: max(1, F) (the rounding noise of F grows with F); the last step is then taken in full.
DECREMENT_TOL = 1e-14
#: A step is accepted when F does not increase by more than this times max(1, F).
F_NOISE = 1e-14
MAX_ITER = 100
MAX_HALVINGS = 40
#: A residual variance below -SWITCH * S_jj moves a run to the w chart; 1/psi_j below
#: -SWITCH / S_jj moves it back (the two charts agree there).
SWITCH = 2.0
#: A confined run with -1/psi_j below FACE_TOL / S_jj has reached infinity.
FACE_TOL = 1e-6
_QUIET = {"invalid": "ignore", "over": "ignore", "divide": "ignore", "under": "ignore"}


@dataclass
class Runs:
    """The state of N Newton runs (arrays over runs).

    Attributes
    ----------
    p : ndarray (N, n)
        The point, psi or 1/psi.
    wchart : ndarray of bool (N,)
        True in the w chart (p = 1/psi).
    f : ndarray (N,)
        The profiled discrepancy at p.
    ev, U : ndarray (N, n), (N, n, n)
        Eigenvalues (the smallest, dropped one gives the sign of the factor variance) and
        eigenvectors of K at p; U is current only where ``fresh``.
    fresh : ndarray of bool (N,)
        U was computed at p (by the line search's first trial), so the next iteration
        does not decompose K again (the same LAPACK call on the same matrix).
    converged, active : ndarray of bool (N,)
    iters : ndarray of int (N,)
    confined : ndarray of bool (N,)
        Runs kept in the positive branch (the positive start) until they reach an
        infinite residual variance (``FACE_TOL``); then they are released.
    released : ndarray of bool (N,)
        A confined run reached infinity and went on in both branches.
    rec_p, rec_wchart, rec_iters : ndarray
        A released run's point at infinity and its iteration.
    """

    p: np.ndarray
    wchart: np.ndarray
    f: np.ndarray
    ev: np.ndarray
    U: np.ndarray
    fresh: np.ndarray
    converged: np.ndarray
    active: np.ndarray
    iters: np.ndarray
    confined: np.ndarray
    released: np.ndarray
    rec_p: np.ndarray
    rec_wchart: np.ndarray
    rec_iters: np.ndarray



class Charts:
    """Per-problem constants of :func:`minimize`, shared by the runs of one problem.

    ``basis(rows, w)`` gathers each run's chart basis and ``limit(rows, w)`` its chart
    switch thresholds from one stacked array (psi chart rows first, then w chart rows):
    the same values as choosing between the two charts' arrays, in one copy.
    """

    __slots__ = ("B", "M", "dS", "lim", "src")

    def __init__(self, L: np.ndarray, dS: np.ndarray, N: int) -> None:
        B_psi, B_w = bases(L)
        self.M = len(L)
        self.B = np.concatenate([B_psi, B_w])
        self.lim = np.concatenate([-SWITCH * dS, -SWITCH / dS])
        self.dS = dS
        self.src = np.arange(N) % self.M

    def _rows(self, rows: np.ndarray, w: np.ndarray) -> np.ndarray:
        return self.src[rows] + self.M * w

    def basis(self, rows: np.ndarray, w: np.ndarray) -> np.ndarray:
        return self.B[self._rows(rows, w)]

    def limit(self, rows: np.ndarray, w: np.ndarray) -> np.ndarray:
        return self.lim[self._rows(rows, w)]


def _accept(runs: Runs, rows: np.ndarray, p: np.ndarray, prof: Profile, it: int,
            ch: Charts) -> None:
    """Move ``rows`` to ``p`` (profile ``prof``), switch charts beyond SWITCH, release
    confined runs at infinity."""
    if not len(rows):
        return
    runs.p[rows], runs.f[rows], runs.ev[rows] = p, prof.f, prof.ev
    runs.fresh[rows] = prof.U is not None
    if prof.U is not None:
        runs.U[rows] = prof.U
    s = rows[np.any(p < ch.limit(rows, runs.wchart[rows]), axis=1)]
    if len(s):
        with np.errstate(**_QUIET):
            q = 1.0 / runs.p[s]
        w_new = ~runs.wchart[s]
        pq = evaluate(q, w_new, ch.basis(s, w_new), vectors=False)
        ok = np.isfinite(pq.f)
        runs.p[s[ok]], runs.wchart[s[ok]] = q[ok], w_new[ok]
        runs.f[s[ok]], runs.ev[s[ok]], runs.fresh[s[ok]] = pq.f[ok], pq.ev[ok], False
    conf = runs.confined[rows] & runs.wchart[rows]
    if conf.any():
        c = rows[conf]
        pc = runs.p[c]
        c = c[np.any((pc < 0) & (-pc * ch.dS[ch.src[c]] < FACE_TOL), axis=1)]
        if len(c):
            runs.confined[c], runs.released[c] = False, True
            runs.rec_p[c], runs.rec_wchart[c], runs.rec_iters[c] = runs.p[c], True, it


def _first_step(runs: Runs, rows: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Initial step lengths: 1, or 0.9 of the way to infinity for a confined run."""
    conf = runs.confined[rows] & runs.wchart[rows]
    if not conf.any():
        return np.ones(len(rows))
    p = runs.p[rows]
    with np.errstate(**_QUIET):
        t_face = np.min(np.where((p < 0) & (step > 0), -p / step, np.inf), axis=1)
    return np.where(conf, np.minimum(1.0, 0.9 * t_face), 1.0)


def _line_search(runs: Runs, rows: np.ndarray, step: np.ndarray, B: np.ndarray, it: int,
                 ch: Charts) -> None:
    """Halve the steps of ``rows`` (chart bases ``B``) until F does not increase (beyond
    its rounding noise, ``F_NOISE``); stop the runs that cannot.

    A pending run's point, F, chart and confinement do not change during the search (only
    accepted runs move), so they are read once. After the full step, the next halvings
    of the runs still pending are evaluated together in blocks of 1, 1, 2, 4, ...
    halvings; each run moves to the first acceptable one, the point the halvings taken
    one at a time reach (the same step lengths and F of each trial point).
    """
    t = _first_step(runs, rows, step)
    p0, w0, f0 = runs.p[rows], runs.wchart[rows], runs.f[rows]
    bound = f0 + F_NOISE * np.maximum(1.0, f0)
    conf = runs.confined[rows] & w0  # only these can step into the negative branch

    def acceptable(k: np.ndarray, cand: np.ndarray, pc: Profile) -> np.ndarray:
        acc = np.isfinite(pc.f) & (pc.f <= bound[k])
        ck = conf[k]
        if ck.any():
            acc &= ~(ck & np.all(cand > 0, axis=1))
        return acc

    cand = p0 + t[:, None] * step
    pc = evaluate(cand, w0, B)  # the full step: usually kept, so with eigenvectors
    acc = acceptable(np.arange(len(rows)), cand, pc)
    if acc.any():
        _accept(runs, rows[acc], cand[acc], Profile(pc.f[acc], pc.ev[acc], pc.U[acc]), it, ch)
    k = np.flatnonzero(~acc)
    t[k] /= 2
    h = 1
    while len(k) and h < MAX_HALVINGS:
        m = min(max(1, h - 1), MAX_HALVINGS - h)  # halvings 1, 2, 3-4, 5-8, 9-16, ...
        ts = np.empty((m, len(k)))  # the step lengths of halvings h .. h + m - 1
        ts[0] = t[k]
        for j in range(1, m):
            ts[j] = ts[j - 1] / 2
        km = np.tile(k, m)
        cand = p0[km] + ts.reshape(-1)[:, None] * step[km]
        pc = evaluate(cand, w0[km], B[km], vectors=False)
        acc = acceptable(km, cand, pc).reshape(m, len(k))
        hit = acc.any(axis=0)
        if hit.any():
            sel = np.argmax(acc, axis=0)[hit] * len(k) + np.flatnonzero(hit)
            _accept(runs, rows[k[hit]], cand[sel], Profile(pc.f[sel], pc.ev[sel], None),
                    it, ch)
        k = k[~hit]
        t[k] = ts[-1, ~hit] / 2
        h += m
    runs.active[rows[k]] = False  # no step decreases F: stuck, not converged


def _finish(runs: Runs, rows: np.ndarray, step: np.ndarray, B: np.ndarray, it: int,
            ch: Charts) -> None:
    """Converged runs: take the last Newton step in full (where F stays finite)."""
    runs.converged[rows] = True
    runs.active[rows] = False
    cand = runs.p[rows] + step
    w = runs.wchart[rows]
    pc = evaluate(cand, w, B, vectors=False)
    ok = np.isfinite(pc.f)
    conf = runs.confined[rows] & w
    if conf.any():
        ok &= ~(conf & np.all(cand > 0, axis=1))
    _accept(runs, rows[ok], cand[ok], Profile(pc.f[ok], pc.ev[ok], None), it, ch)


def minimize(p0: np.ndarray, wchart: np.ndarray, L: np.ndarray, dS: np.ndarray,
             confined: np.ndarray) -> Runs:
    """Minimize the profiled F of N runs by safeguarded Newton, each on its own path.

    Parameters
    ----------
    p0 : ndarray (N, n)
        Start points (psi, or 1/psi where ``wchart``).
    wchart : ndarray of bool (N,)
    L : ndarray (M, n, n)
        Cholesky factors of the sample covariances; run i uses ``L[i % M]`` (M = N: one
        each; M dividing N: blocks of runs over the same problems).
    dS : ndarray (M, n)
        Diagonals of the sample covariances (the chart switch thresholds), as ``L``.
    confined : ndarray of bool (N,)
        Runs kept in the positive branch until they reach infinity.

    Returns
    -------
    Runs
        A run converges when its Hessian is positive definite and its Newton decrement
        is below ``DECREMENT_TOL`` (relative to F above 1); it stops unconverged when no
        halving decreases F or after ``MAX_ITER`` iterations. The other runs only share
        the array operations.
    """
    return run_newton(p0, wchart, Charts(L, dS, len(p0)), confined)


def run_newton(p0: np.ndarray, wchart: np.ndarray, ch: Charts,
               confined: np.ndarray) -> Runs:
    """:func:`minimize` with the problems' :class:`Charts` already built (they are shared
    by every call on the same problems)."""
    N = len(p0)
    wchart = wchart.copy()
    prof = evaluate(p0, wchart, ch.basis(np.arange(N), wchart))
    runs = Runs(p=p0.copy(), wchart=wchart, f=prof.f, ev=prof.ev, U=prof.U,
                fresh=np.ones(N, dtype=bool), converged=np.zeros(N, dtype=bool),
                active=np.isfinite(prof.f), iters=np.zeros(N, dtype=int),
                confined=confined.copy(), released=np.zeros(N, dtype=bool),
                rec_p=p0.copy(), rec_wchart=wchart.copy(), rec_iters=np.zeros(N, dtype=int))
    for it in range(MAX_ITER + 1):
        idx = np.flatnonzero(runs.active)
        if not len(idx):
            break
        w = runs.wchart[idx]
        B = ch.basis(idx, w)
        B_ls = B  # the bases of the charts after the stale points are accepted again
        stale = np.flatnonzero(~runs.fresh[idx])
        if len(stale):
            ps = evaluate(runs.p[idx[stale]], w[stale], B[stale])
            _accept(runs, idx[stale], runs.p[idx[stale]], ps, it, ch)
            w_new = runs.wchart[idx]
            if np.any(w_new != w):  # not expected: the point was accepted there before
                w, B_ls = w_new, ch.basis(idx, w_new)
        prof = Profile(runs.f[idx], runs.ev[idx], runs.U[idx])
        g, H = gradient_hessian(prof, w, B)
        step, dec, pd = newton_step(g, H)
        runs.iters[idx] = it
        finite = np.isfinite(dec)
        done = pd & (dec < DECREMENT_TOL * np.maximum(1.0, prof.f))
        runs.active[idx[~finite]] = False
        if done.any():
            _finish(runs, idx[done], step[done], B[done], it, ch)
        go = ~done & finite
        if it < MAX_ITER and go.any():
            _line_search(runs, idx[go], step[go], B_ls[go], it, ch)
    return runs
