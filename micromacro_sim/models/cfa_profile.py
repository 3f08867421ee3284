"""The one-factor ML CFA in profiled form (Joreskog 1967), batched over replications.

A drop-in replacement of :func:`micromacro_sim.models.cfa_fit.fit_arrays`: the same keys,
shapes, dtypes and meanings, the same verdict rules. The residual variances are the only
parameters; the rank-one term is profiled out for fixed residual variances and
reconstructed at the end (:mod:`micromacro_sim.models.cfa_profile_derivs` has the
mathematics, :mod:`micromacro_sim.models.cfa_profile_newton` the Newton runs). For every
replication (the same arithmetic whatever the batch):

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
3. a second look where the kept solution has a negative factor variance or no run
   converged: of n negative-branch starts (:func:`negative_starts`), one per indicator,
   the ``SECOND_LOOK_RUNS`` with the lowest profiled discrepancy; a converged one lower by
   more than ``TIE_TOL`` replaces the kept solution (a
   negative-branch optimum puts the negative term mostly on one indicator, and which one
   the first starts reach depends on the start, not on the depth of the optimum);
4. the kept solution is the converged one with the lowest discrepancy, the positive start
   on a tie within ``TIE_TOL`` (then any solution with a positive factor variance);
   with none converged, the positive start's positive-branch solution is reported,
   flagged ``not_converged``;
5. reconstructed in lavaan's marker parametrization (first loading 1), then the verdicts
   of :mod:`micromacro_sim.models.cfa_fit`: negative variance, not positive definite,
   marker not identified, lower inadmissible optimum;
6. ``lavaan_flags``: the verdict of the positive start's run while it stays in the
   positive branch (the basin lavaan's optimizer reaches); a run that leaves the branch
   through infinity is not converged there.

``n_iter`` counts the Newton iterations of the run that produced the kept solution.
Every run follows its own path; the runs and replications only share array operations
(stacked LAPACK calls factor each matrix on its own), so a replication's results are the
same bits in any batch.
"""

from __future__ import annotations

import numpy as np

from micromacro_sim.models import cfa_solver as solver
from micromacro_sim.models.cfa_fit import TIE_TOL, Kept, finish, sample_moments
from micromacro_sim.models.cfa_profile_derivs import evaluate, reconstruct
from micromacro_sim.models.cfa_profile_newton import Charts, Runs, minimize, run_newton
from micromacro_sim.models.linalg import inv_stack

__all__ = ["N_STARTS", "NEG_SPREAD", "SECOND_LOOK_RUNS", "fit_arrays_profiled", "minimize",
           "negative_starts", "starts"]

#: Number of starts (3: the design note's robust strategy; 5: two more positive starts).
N_STARTS = 5
#: The second look's negative starts raise one indicator's residual variance this many
#: times above its sample variance (:func:`negative_starts`).
NEG_SPREAD = 4.0
#: The second look runs Newton from this many of the n negative starts: those where the
#: profiled discrepancy is lowest (one evaluation each), so its cost does not grow with n.
SECOND_LOOK_RUNS = 4


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


def negative_starts(S: np.ndarray) -> np.ndarray:
    """Second-look starts in the negative branch (w chart), one per indicator, stacked
    start by start: w = 1 / diag S with w_j divided by ``NEG_SPREAD``.

    A negative-branch optimum puts the negative rank-one term mostly on one indicator
    (its residual variance far above its sample variance); the indicator it falls on
    depends on the start, and the design note's two negative starts can reach an optimum
    above another one. Starting each indicator high finds them.
    """
    R, n, _ = S.shape
    w = np.tile(1.0 / np.diagonal(S, axis1=1, axis2=2), (n, 1))
    w[np.arange(n * R), np.repeat(np.arange(n), R)] /= NEG_SPREAD
    return w


def _second_look(S: np.ndarray, L: np.ndarray, f_kept: np.ndarray, sel: np.ndarray
                 ) -> tuple[np.ndarray, Runs | None, np.ndarray]:
    """Run the ``SECOND_LOOK_RUNS`` of :func:`negative_starts` with the lowest starting
    discrepancy for each replication of ``sel`` (indices).

    Returns ``(better, runs, run_of)``: whether a second-look run converged lower than
    ``f_kept`` by more than ``TIE_TOL`` (per replication of ``sel``), the runs, and the
    index of the best run per replication of ``sel``.
    """
    m, n = len(sel), S.shape[1]
    if not m:
        return np.zeros(0, dtype=bool), None, np.zeros(0, dtype=int)
    k = min(n, SECOND_LOOK_RUNS)
    Ls, dS = L[sel], np.diagonal(S[sel], axis1=1, axis2=2).copy()
    p_all = negative_starts(S[sel])
    w_all = np.ones(len(p_all), dtype=bool)
    f0 = evaluate(p_all, w_all, Charts(Ls, dS, len(p_all)).basis(np.arange(len(p_all)), w_all),
                  vectors=False).f.reshape(n, m)
    # each replication's k starts of lowest discrepancy, in the order of their indicators
    pick = np.sort(np.argsort(np.where(np.isnan(f0), np.inf, f0), axis=0, kind="stable")[:k],
                   axis=0)
    p0 = p_all[(pick * m + np.arange(m)).ravel()]
    runs = run_newton(p0, np.ones(k * m, dtype=bool), Charts(Ls, dS, k * m),
                      np.zeros(k * m, dtype=bool))
    fm = np.where(runs.converged, runs.f, np.inf).reshape(k, m)
    best = np.argmin(fm, axis=0)
    with np.errstate(invalid="ignore"):
        better = fm[best, np.arange(m)] < np.where(np.isfinite(f_kept[sel]), f_kept[sel],
                                                   np.inf) - TIE_TOL
    return better, runs, best * m + np.arange(m)


def _solutions(S: np.ndarray, L: np.ndarray) -> dict[str, np.ndarray]:
    """The kept solution and the positive start's positive-branch solution of every
    replication (``theta``, ``f``, ``conv``, ``iters``, ``lower`` and ``rec_theta``,
    ``rec_conv``)."""
    R, n, _ = S.shape
    p0, wchart = starts(S)
    k = len(p0) // R
    ch = Charts(L, np.diagonal(S, axis1=1, axis2=2).copy(), len(p0))
    runs = run_newton(p0, wchart, ch, np.arange(k * R) < R)
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
    p_k = np.where(any_conv[:, None], runs.p[row], rec_p)
    w_k = np.where(any_conv, runs.wchart[row], rec_w)
    it_k = np.where(any_conv, runs.iters[row], rec_it)
    lower = any_conv & ~((kept == 0) & rec_conv)
    # a second look where the kept solution is in the negative branch or none converged
    f_kept = np.where(any_conv, runs.f[row], np.nan)
    sel = np.flatnonzero(~any_conv | ~positive[kept, np.arange(R)])
    better, extra, run_of = _second_look(S, L, f_kept, sel)
    if better.any():
        to, src = sel[better], run_of[better]
        p_k[to], w_k[to], it_k[to] = extra.p[src], extra.wchart[src], extra.iters[src]
        any_conv[to], lower[to] = True, True
    # the two solutions are often the same point (bit for bit): evaluate it once
    same = (w_k == rec_w) & np.all(p_k.view(np.int64) == rec_p.view(np.int64), axis=1)
    other = np.flatnonzero(~same)
    rows = np.concatenate([np.arange(R), other])
    p = np.concatenate([p_k, rec_p[other]])
    w = np.concatenate([w_k, rec_w[other]])
    prof = evaluate(p, w, ch.basis(rows, w))
    theta = reconstruct(p, w, prof, L[rows])
    rec_theta = theta[:R].copy()
    rec_theta[other] = theta[R:]
    return dict(theta=theta[:R], f=prof.f[:R], conv=any_conv, iters=it_k, lower=lower,
                rec_theta=rec_theta, rec_conv=rec_conv)


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
    mu, S_use, Ls, logdet_s, s_pd = sample_moments(X)

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
