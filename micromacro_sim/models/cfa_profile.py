"""The one-factor ML CFA in profiled form (Joreskog 1967), batched over replications.

A drop-in replacement of :func:`micromacro_sim.models.cfa_fit.fit_arrays`: the same keys,
shapes, dtypes and meanings, the same verdict rules. The residual variances are the only
parameters; the rank-one term is profiled out for fixed residual variances and
reconstructed at the end (:mod:`micromacro_sim.models.cfa_profile_derivs` has the
mathematics). For every replication (the same arithmetic whatever the batch):

1. the sample covariance S (denominator G) and its Cholesky factor; S not positive
   definite: no fit (as the Newton fit);
2. Newton's method with the exact Hessian of the profile from five starts: the three of
   the profiled-CFA design note's robust strategy (the residual variances of the Newton
   fit's positive start, psi chart; of its negative start and psi = diag S, w chart) and
   two more positive ones, psi_j = 1 / (S^-1)_jj and psi = diag S / 3, which find the
   lowest of several positive-branch optima where the three miss it (small samples). An
   indefinite Hessian is replaced by its absolute eigenvalues; steps are halved until F
   does not increase. A run that goes to an infinite residual variance crosses into the
   other sign branch through that point (the w chart is analytic there) and goes on: the
   design note's restart from that boundary point, without stopping there. Only the
   positive start is confined to the positive branch until it reaches infinity;
3. the kept solution is the converged one with the lowest discrepancy, the positive start
   on a tie within ``TIE_TOL`` (then any solution with a positive factor variance);
   with none converged, the positive start's positive-branch solution is reported,
   flagged ``not_converged``;
4. reconstructed in lavaan's marker parametrization (first loading 1), then the verdicts
   of :mod:`micromacro_sim.models.cfa_fit`: negative variance, not positive definite,
   marker not identified, lower inadmissible optimum;
5. ``lavaan_flags``: the verdict of the positive start's run while it stays in the
   positive branch (the basin lavaan's optimizer reaches); a run that leaves the branch
   through infinity is not converged there.

``n_iter`` counts the Newton iterations of the run that produced the kept solution.
Every run follows its own path; the runs and replications only share array operations
(stacked LAPACK calls factor each matrix on its own), so a replication's results are the
same bits in any batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from micromacro_sim.models import cfa_solver as solver
from micromacro_sim.models.cfa_fit import TIE_TOL, Kept, finish
from micromacro_sim.models.cfa_profile_derivs import (
    Profile,
    bases,
    evaluate,
    gradient_hessian,
    newton_step,
    reconstruct,
)
from micromacro_sim.models.linalg import inv_stack

__all__ = ["DECREMENT_TOL", "MAX_HALVINGS", "MAX_ITER", "SWITCH", "Runs",
           "fit_arrays_profiled", "minimize", "starts"]

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
#: Number of starts (3: the design note's robust strategy; 5: two more positive starts).
N_STARTS = 5
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


def _negative_branch(p: np.ndarray, wchart: np.ndarray) -> np.ndarray:
    """Runs in the negative factor variance branch: w chart, every 1/psi positive."""
    return wchart & np.all(p > 0, axis=1)


def starts(S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The starts of every replication, stacked run by run (N_STARTS blocks of R rows).

    Parameters
    ----------
    S : ndarray (R, n, n)
        Positive-definite sample covariances.

    Returns
    -------
    p0 : ndarray (N_STARTS * R, n)
        The residual variances of the Newton fit's positive start (psi chart, the
        confined run); the reciprocals of its negative start's and 1 / diag S (w chart);
        then the positive starts psi_j = 1 / (S^-1)_jj (squared multiple correlations)
        and psi = diag S / 3 (psi chart).
    wchart : ndarray of bool (N_STARTS * R,)
    """
    R, n, _ = S.shape
    pos = solver.start(S, 1)[0][:, n : 2 * n]
    neg = solver.start(S, -1)[0][:, n : 2 * n]
    d = np.diagonal(S, axis1=1, axis2=2)
    blocks = [pos, 1.0 / neg, 1.0 / d]
    if N_STARTS > 3:
        Si, _ = inv_stack(S)
        blocks += [1.0 / np.diagonal(Si, axis1=1, axis2=2), d / 3.0][: N_STARTS - 3]
    wchart = np.repeat(np.array([False, True, True, False, False][:N_STARTS]), R)
    return np.concatenate(blocks), wchart


def _chart_basis(wchart: np.ndarray, B_psi: np.ndarray, B_w: np.ndarray) -> np.ndarray:
    return np.where(wchart[:, None, None], B_w, B_psi)


def _accept(runs: Runs, rows: np.ndarray, p: np.ndarray, prof: Profile, it: int,
            dS: np.ndarray, bases_: tuple) -> None:
    """Move ``rows`` to ``p`` (profile ``prof``), switch charts beyond SWITCH, release
    confined runs at infinity."""
    runs.p[rows], runs.f[rows], runs.ev[rows] = p, prof.f, prof.ev
    runs.fresh[rows] = prof.U is not None
    if prof.U is not None:
        runs.U[rows] = prof.U
    lim = np.where(runs.wchart[rows][:, None], -SWITCH / dS[rows], -SWITCH * dS[rows])
    s = rows[np.any(runs.p[rows] < lim, axis=1)]
    if len(s):
        with np.errstate(**_QUIET):
            q = 1.0 / runs.p[s]
        w_new = ~runs.wchart[s]
        pq = evaluate(q, w_new, _chart_basis(w_new, bases_[0][s], bases_[1][s]),
                      vectors=False)
        ok = np.isfinite(pq.f)
        runs.p[s[ok]], runs.wchart[s[ok]] = q[ok], w_new[ok]
        runs.f[s[ok]], runs.ev[s[ok]], runs.fresh[s[ok]] = pq.f[ok], pq.ev[ok], False
    face = runs.confined[rows] & runs.wchart[rows] & np.any(
        (runs.p[rows] < 0) & (-runs.p[rows] * dS[rows] < FACE_TOL), axis=1)
    c = rows[face]
    if len(c):
        runs.confined[c], runs.released[c] = False, True
        runs.rec_p[c], runs.rec_wchart[c], runs.rec_iters[c] = runs.p[c], True, it


def _allowed(runs: Runs, rows: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Candidates a run may move to: a confined run stays in the positive branch."""
    return ~(runs.confined[rows] & _negative_branch(cand, runs.wchart[rows]))


def _first_step(runs: Runs, rows: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Initial step lengths: 1, or 0.9 of the way to infinity for a confined run."""
    conf = runs.confined[rows] & runs.wchart[rows]
    if not conf.any():
        return np.ones(len(rows))
    p = runs.p[rows]
    with np.errstate(**_QUIET):
        t_face = np.min(np.where((p < 0) & (step > 0), -p / step, np.inf), axis=1)
    return np.where(conf, np.minimum(1.0, 0.9 * t_face), 1.0)


def _line_search(runs: Runs, rows: np.ndarray, step: np.ndarray, it: int,
                 dS: np.ndarray, bases_: tuple) -> None:
    """Halve the steps of ``rows`` until F does not increase (beyond its rounding noise,
    ``F_NOISE``); stop the runs that cannot."""
    t = _first_step(runs, rows, step)
    pending = np.ones(len(rows), dtype=bool)
    for h in range(MAX_HALVINGS):
        k = np.flatnonzero(pending)
        if not len(k):
            break
        r = rows[k]
        cand = runs.p[r] + t[k, None] * step[k]
        B = _chart_basis(runs.wchart[r], bases_[0][r], bases_[1][r])
        pc = evaluate(cand, runs.wchart[r], B, vectors=h == 0)  # the full step: usually kept
        f0 = runs.f[r]
        acc = (np.isfinite(pc.f) & (pc.f <= f0 + F_NOISE * np.maximum(1.0, f0))
               & _allowed(runs, r, cand))
        _accept(runs, r[acc], cand[acc],
                Profile(pc.f[acc], pc.ev[acc], None if pc.U is None else pc.U[acc]),
                it, dS, bases_)
        pending[k[acc]] = False
        t[k[~acc]] /= 2
    runs.active[rows[pending]] = False  # no step decreases F: stuck, not converged


def _finish(runs: Runs, rows: np.ndarray, step: np.ndarray, B: np.ndarray, it: int,
            dS: np.ndarray, bases_: tuple) -> None:
    """Converged runs: take the last Newton step in full (where F stays finite)."""
    runs.converged[rows] = True
    runs.active[rows] = False
    cand = runs.p[rows] + step
    pc = evaluate(cand, runs.wchart[rows], B, vectors=False)
    ok = np.isfinite(pc.f) & _allowed(runs, rows, cand)
    _accept(runs, rows[ok], cand[ok], Profile(pc.f[ok], pc.ev[ok], None), it, dS, bases_)


def minimize(p0: np.ndarray, wchart: np.ndarray, L: np.ndarray, dS: np.ndarray,
             confined: np.ndarray) -> Runs:
    """Minimize the profiled F of N runs by safeguarded Newton, each on its own path.

    Parameters
    ----------
    p0 : ndarray (N, n)
        Start points (psi, or 1/psi where ``wchart``).
    wchart : ndarray of bool (N,)
    L : ndarray (N, n, n)
        Cholesky factors of each run's sample covariance.
    dS : ndarray (N, n)
        Diagonal of each run's sample covariance (the chart switch thresholds).
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
    N = len(p0)
    bases_ = bases(L)
    wchart = wchart.copy()
    prof = evaluate(p0, wchart, _chart_basis(wchart, *bases_))
    runs = Runs(p=p0.copy(), wchart=wchart, f=prof.f, ev=prof.ev, U=prof.U,
                fresh=np.ones(N, dtype=bool), converged=np.zeros(N, dtype=bool),
                active=np.isfinite(prof.f), iters=np.zeros(N, dtype=int),
                confined=confined.copy(), released=np.zeros(N, dtype=bool),
                rec_p=p0.copy(), rec_wchart=wchart.copy(), rec_iters=np.zeros(N, dtype=int))
    for it in range(MAX_ITER + 1):
        idx = np.flatnonzero(runs.active)
        if not len(idx):
            break
        B = _chart_basis(runs.wchart[idx], bases_[0][idx], bases_[1][idx])
        stale = np.flatnonzero(~runs.fresh[idx])
        if len(stale):
            ps = evaluate(runs.p[idx[stale]], runs.wchart[idx[stale]], B[stale])
            _accept(runs, idx[stale], runs.p[idx[stale]], ps, it, dS, bases_)
        prof = Profile(runs.f[idx], runs.ev[idx], runs.U[idx])
        g, H = gradient_hessian(prof, runs.wchart[idx], B)
        step, dec, pd = newton_step(g, H)
        runs.iters[idx] = it
        done = pd & (dec < DECREMENT_TOL * np.maximum(1.0, prof.f))
        runs.active[idx[~np.isfinite(dec)]] = False
        if done.any():
            _finish(runs, idx[done], step[done], B[done], it, dS, bases_)
        go = ~done & np.isfinite(dec)
        if it < MAX_ITER and go.any():
            _line_search(runs, idx[go], step[go], it, dS, bases_)
    return runs


# ------------------------------------------------------------------ the verdicts
# The verdict rules are cfa_fit's own (marker_singular, verdicts); the reconstruction is
# already in the marker parametrization.


def _choose(f: np.ndarray, conv: np.ndarray, positive: np.ndarray,
            rec_conv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per replication, the kept run (an index over the starts) and whether any converged.

    The lowest converged discrepancy; on a tie within ``TIE_TOL`` the positive start
    (when it converged without leaving the positive branch), then the first tied run with
    a positive factor variance, then the lowest.
    """
    fm = np.where(conv, f, np.inf)
    best = np.argmin(fm, axis=0)
    fbest = np.min(fm, axis=0)
    any_conv = np.isfinite(fbest)
    with np.errstate(invalid="ignore"):
        tie = conv & (fm <= fbest + TIE_TOL)
    pos_tie = tie & positive
    kept = np.where(np.any(pos_tie, axis=0), np.argmax(pos_tie, axis=0), best)
    kept = np.where(tie[0] & rec_conv, 0, kept)
    return kept, any_conv


def _solutions(S: np.ndarray, L: np.ndarray) -> dict[str, np.ndarray]:
    """The kept solution and the positive start's positive-branch solution of every
    replication (``theta``, ``f``, ``conv``, ``iters``, ``lower`` and ``rec_theta``,
    ``rec_conv``)."""
    R, n, _ = S.shape
    p0, wchart = starts(S)
    k = len(p0) // R
    dS = np.tile(np.diagonal(S, axis1=1, axis2=2), (k, 1))
    runs = minimize(p0, wchart, np.concatenate([L] * k), dS, np.arange(k * R) < R)
    x0 = runs.ev[:, 0]
    positive = np.where(runs.wchart, (x0 > 1) | (x0 < 0), x0 < 1).reshape(k, R)
    rel = runs.released[:R]
    rec_conv = runs.converged[:R] & ~rel
    kept, any_conv = _choose(runs.f.reshape(k, R), runs.converged.reshape(k, R), positive,
                             rec_conv)
    row = kept * R + np.arange(R)
    rec_p = np.where(rel[:, None], runs.rec_p[:R], runs.p[:R])
    rec_w = np.where(rel, runs.rec_wchart[:R], runs.wchart[:R])
    rec_it = np.where(rel, runs.rec_iters[:R], runs.iters[:R])
    p = np.concatenate([np.where(any_conv[:, None], runs.p[row], rec_p), rec_p])
    w = np.concatenate([np.where(any_conv, runs.wchart[row], rec_w), rec_w])
    L2 = np.concatenate([L, L])
    prof = evaluate(p, w, _chart_basis(w, *bases(L2)))
    theta = reconstruct(p, w, prof, L2)
    return dict(theta=theta[:R], f=prof.f[:R], conv=any_conv,
                iters=np.where(any_conv, runs.iters[row], rec_it),
                lower=any_conv & ~((kept == 0) & rec_conv),
                rec_theta=theta[R:], rec_conv=rec_conv)


def fit_arrays_profiled(X: np.ndarray) -> dict[str, np.ndarray]:
    """Fit every replication of ``X`` (R, G, n) by the profiled ML CFA.

    Parameters
    ----------
    X : ndarray (R, G, n)
        Wide matrices (rows groups, columns the indicators), n >= 3.

    Returns
    -------
    dict
        The keys, shapes, dtypes and meanings of
        :func:`micromacro_sim.models.cfa_fit.fit_arrays`: ``loadings`` (R, n) with first
        column 1, ``residual_variances`` (R, n), ``factor_variance`` (R,), ``intercepts``
        (R, n), ``fmin`` (R,) half the ML discrepancy, ``converged`` and ``admissible``
        (R,) bool, ``flags`` (R,) object (a tuple of Flag each), ``n_iter`` (R,) int and
        ``lavaan_flags`` (R,) object (the positive start's positive-branch verdict).
    """
    R, G, n = X.shape
    mu = X.mean(axis=1)
    dev = X - mu[:, None, :]
    S = np.einsum("rgi,rgj->rij", dev, dev) / G
    Ls, s_pd = solver.cholesky(S)
    Ls[~s_pd] = np.eye(n)
    logdet_s = 2.0 * np.sum(np.log(np.diagonal(Ls, axis1=1, axis2=2)), axis=1)
    S_use = np.where(s_pd[:, None, None], S, np.eye(n))

    theta, f = np.full((R, 2 * n + 1), np.nan), np.full(R, np.nan)
    conv, iters = np.zeros(R, dtype=bool), np.zeros(R, dtype=int)
    th_p, c_p = theta.copy(), conv.copy()
    lower = np.zeros(R, dtype=bool)
    todo = np.flatnonzero(s_pd)  # no fit where S is singular
    if len(todo):
        sol = _solutions(S_use[todo], Ls[todo])
        theta[todo], f[todo], conv[todo] = sol["theta"], sol["f"], sol["conv"]
        iters[todo], lower[todo] = sol["iters"], sol["lower"]
        th_p[todo], c_p[todo] = sol["rec_theta"], sol["rec_conv"]

    return finish(Kept(theta, f, conv, iters, lower), th_p, c_p, S_use, logdet_s, s_pd, mu)
