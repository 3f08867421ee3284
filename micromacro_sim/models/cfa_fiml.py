"""Full-information ML for the one-factor CFA on wide data with absent members.

The model of :mod:`micromacro_sim.models.cfa` (first loading 1, the rest free, unbounded)
on a G x K matrix with missing cells, each group contributing the likelihood of what it
observes (algebra in :mod:`micromacro_sim.models.cfa_fiml_derivs`), as lavaan's
``cfa(..., meanstructure = TRUE, missing = "fiml")`` and ``lavPredict``. Per replication:

1. starts from the available-case moments (means, pairwise covariance S): the positive
   start (lavaan's basin: the solution of the complete-data fit's positive start on S,
   or the first principal component where that one runs to infinity) and the positive
   and negative rank-one fits given residual variances diag S / 3 and diag S;
2. Newton with the exact Hessian (scoring where it is not positive definite; steps halved
   until F does not increase beyond rounding). A run whose residual variance j runs away
   moves to the far chart of j and can pass through infinity into the other sign branch;
   the positive start stops there, not converged, as lavaan mostly does;
3. a second look from ``SECOND_LOOK_RUNS`` negative starts where the kept solution has a
   negative factor variance or none converged. Kept: the lowest converged F (the
   positive start on a tie within ``TIE_TOL``), else the positive start, not converged;
4. the verdicts of :func:`~micromacro_sim.models.cfa_fit.verdicts` with the first loading
   1; marker not identified from the expected information of the covariance parameters
   (orthogonal to the intercepts); ``lower_inadmissible_optimum`` as in ``cfa_fit.finish``.

On complete data this is :func:`~micromacro_sim.models.cfa.fit_cfa_batch`'s optimum and,
but for rare paths to infinity, its verdicts. A position observed in one or two groups
leaves no interior optimum (its intercept and loading fit those values while its
conditional variance goes to 0): the runs stop at ``DEGENERATE``, not converged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from micromacro_sim.core.status import Reason, flag
from micromacro_sim.models import cfa_fiml_derivs as fd
from micromacro_sim.models.cfa import CFABatch, CFAFit
from micromacro_sim.models.cfa_fiml_starts import (
    available_moments,
    positive_start,
    rank_one_start,
)
from micromacro_sim.models.cfa_fit import TIE_TOL, verdicts

__all__ = ["DECREMENT_TOL", "MAX_ITER", "cfa_fiml_scores", "fit_cfa_fiml",
           "fit_cfa_fiml_batch"]

DECREMENT_TOL = 1e-14  # converged: Hessian PD, decrement below this times max(1, |F|)
F_NOISE = 1e-14  # a step may raise F by this times max(1, |F|) (rounding)
MAX_ITER, MAX_HALVINGS = 100, 40
DIVERGED = 1e10  # stop a run whose coordinates pass this
SWITCH, SWITCH_BACK = 1.2, 1.1  # far chart of j from |psi_j| > SWITCH Sigma_jj, back below
#: About infinity: a far chart's |gamma Sigma_jj| below this. The confined positive start
#: stops there, not converged; no run converges there (theta's arithmetic is too coarse).
FACE_TOL = 1e-3
DEGENERATE = 1e8  # stop a run where a Sigma_jj is this times x_j's conditional variance
REMARK = 10.0  # a run in no far chart takes a loading this times its marker's as marker
NEG_SPREAD, SECOND_LOOK_RUNS = 4.0, 4
BLOCK_CELLS = 2**18  # replications fitted together: about this many R x G x K cells
_QUIET = {"invalid": "ignore", "over": "ignore", "divide": "ignore", "under": "ignore"}


def _check(x: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate; the values with 0 at the cells not observed, and the mask as floats."""
    x = np.asarray(x, dtype=float)
    mask = np.asarray(mask, dtype=bool)
    if x.ndim != 3 or mask.shape != x.shape:
        raise ValueError(f"x and mask: expected two (R, G, K) arrays of one shape, got "
                         f"{x.shape} and {mask.shape}")
    if x.shape[2] < 3:
        raise ValueError(f"a one-factor CFA needs at least 3 indicators, got {x.shape[2]}")
    if not np.all(np.any(mask, axis=1)):
        raise ValueError("every column of every replication must be observed in at least "
                         "one group")
    if not np.all(np.isfinite(x[mask])):
        raise ValueError("x: the observed cells must be finite")
    return np.where(mask, x, 0.0), mask.astype(float)


# ------------------------------------------------------------------ Newton


@dataclass
class _Runs:
    """N Newton runs: point (as theta), F, free entries, far chart (-1: none), status."""

    theta: np.ndarray
    f: np.ndarray
    keep: np.ndarray
    chart: np.ndarray
    active: np.ndarray
    conv: np.ndarray
    iters: np.ndarray
    confined: np.ndarray


def newton(theta0: np.ndarray, marker: np.ndarray, x: np.ndarray, m: np.ndarray,
           nc: np.ndarray, confined: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """Minimize F for N runs (loading ``marker[i]`` of run i fixed; ``confined`` runs do
    not pass through infinity); theta, F, converged, iterations. Converged: Hessian
    positive definite and decrement below ``DECREMENT_TOL``; stopped unconverged when no
    halving decreases F, on :func:`_charts`'s checks, or after ``MAX_ITER`` iterations.
    """
    N, P = theta0.shape
    keep = np.ones((N, P), dtype=bool)
    keep[np.arange(N), marker] = False
    f = fd.evaluate(theta0, x, m, nc).f
    if confined is None:
        confined = np.zeros(N, dtype=bool)
    runs = _Runs(theta0.copy(), f, keep, np.full(N, -1), np.isfinite(f),
                 np.zeros(N, dtype=bool), np.zeros(N, dtype=int), confined)
    _charts(runs, np.flatnonzero(runs.active))  # a start far out begins in its far chart
    for it in range(MAX_ITER + 1):
        idx = np.flatnonzero(runs.active)
        if not len(idx):
            break
        xi, step, dec, pd = fd.newton_step(runs.theta[idx], runs.keep[idx],
                                           runs.chart[idx], x[idx], m[idx], nc[idx])
        runs.iters[idx] = it
        done = pd & (dec < DECREMENT_TOL * np.maximum(1.0, np.abs(runs.f[idx])))
        done &= ~fd.near_face(xi, runs.chart[idx], FACE_TOL)  # too coarse there
        bad = ~np.isfinite(dec)
        runs.active[idx[bad]] = False
        if done.any():  # take the last step in full where F stays finite
            r = idx[done]
            runs.conv[r], runs.active[r] = True, False
            _try(runs, r, xi[done], step[done], np.ones(len(r)), x, m, nc, np.inf)
        go = ~done & ~bad
        if it < MAX_ITER and go.any():
            _line_search(runs, idx[go], xi[go], step[go], x, m, nc)
            _charts(runs, idx[go])
    return runs.theta, runs.f, runs.conv, runs.iters


def _try(runs: _Runs, rows: np.ndarray, xi: np.ndarray, step: np.ndarray, t: np.ndarray,
         x: np.ndarray, m: np.ndarray, nc: np.ndarray, bound: np.ndarray | float
         ) -> np.ndarray:
    """Move ``rows`` to xi - t step where F is finite and at most ``bound``; the mask."""
    cand = xi.copy()
    cand[runs.keep[rows]] -= (t[:, None] * step).ravel()
    th = fd.point(cand, runs.chart[rows])
    fc = fd.evaluate(np.nan_to_num(th), x[rows], m[rows], nc[rows]).f
    acc = np.isfinite(fc) & np.all(np.isfinite(th), axis=1) & (fc <= bound)
    K = (xi.shape[1] - 1) // 3
    conf = runs.confined[rows] & (runs.chart[rows] >= 0)
    if conf.any():  # a confined run does not cross infinity; at infinity it stops
        acc &= ~(conf & (cand[:, 2 * K] * xi[:, 2 * K] <= 0))
        runs.active[rows[conf & acc & fd.near_face(cand, runs.chart[rows], FACE_TOL)]] = False
    runs.theta[rows[acc]], runs.f[rows[acc]] = th[acc], fc[acc]
    return acc


def _line_search(runs: _Runs, rows: np.ndarray, xi: np.ndarray, step: np.ndarray,
                 x: np.ndarray, m: np.ndarray, nc: np.ndarray) -> None:
    """Halve the steps of ``rows`` until F does not increase beyond its rounding noise
    (``F_NOISE``); stop the runs that cannot."""
    f0 = runs.f[rows]
    bound = f0 + F_NOISE * np.maximum(1.0, np.abs(f0))
    t = np.ones(len(rows))
    pending = np.arange(len(rows))
    for _ in range(MAX_HALVINGS):
        if not len(pending):
            return
        acc = _try(runs, rows[pending], xi[pending], step[pending], t[pending], x, m, nc,
                   bound[pending])
        pending = pending[~acc]
        t[pending] /= 2
    runs.active[rows[pending]] = False


def _charts(runs: _Runs, rows: np.ndarray) -> None:
    """After a step: stop runs that degenerate or diverge; move runs into or out of a far
    chart; rescale a run in no chart to its largest loading as marker where needed."""
    K = (runs.theta.shape[1] - 1) // 3
    theta, chart = runs.theta[rows], runs.chart[rows]
    lam, psi, phi, _ = fd.split(theta)
    n = np.arange(len(rows))
    with np.errstate(**_QUIET):
        var = psi + phi[:, None] * lam**2
        ratio = np.where(np.isfinite(var), np.abs(psi) / var, np.inf)
        u = lam / psi
        c = 1.0 + phi * np.sum(u * lam, axis=1)
        prec = 1.0 / psi - (phi / c)[:, None] * u * u
        stop = ~(np.max(var * prec, axis=1) <= DEGENERATE)
        stop |= ~(np.max(np.abs(fd.coords(theta, chart)), axis=1) <= DIVERGED)
    runs.active[rows[stop]] = False
    far = chart >= 0
    back = far & (ratio[n, np.maximum(chart, 0)] < SWITCH_BACK)
    runs.chart[rows[back]] = -1
    j = np.argmax(ratio, axis=1)
    into = ~far & (ratio[n, j] > SWITCH)
    alab, marker = np.abs(lam), np.argmin(runs.keep[rows], axis=1)
    big = np.argmax(alab, axis=1)
    weak = ~far & ~into & (alab[n, big] > REMARK * alab[n, marker])
    new = np.where(into, j, big)
    sel = into | weak
    r, k = rows[sel], new[sel]
    if len(r):
        lk = runs.theta[r, k]
        runs.theta[r, :K] /= lk[:, None]
        runs.theta[r, 2 * K] *= lk**2
        runs.theta[r, k] = 1.0
        runs.keep[r] = True
        runs.keep[r, k] = False
        runs.chart[rows[into]] = j[into]


# ------------------------------------------------------------------ the fit


def _choose(f: np.ndarray, conv: np.ndarray, positive: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """Per replication (columns) the kept start (rows) and whether any converged; on a tie
    the positive start, else the first tied one with a positive factor variance."""
    fm = np.where(conv, f, np.inf)
    best = np.argmin(fm, axis=0)
    fbest = np.min(fm, axis=0)
    with np.errstate(invalid="ignore"):
        tie = conv & (fm <= fbest + TIE_TOL)
    pos_tie = tie & positive
    kept = np.where(np.any(pos_tie, axis=0), np.argmax(pos_tie, axis=0), best)
    kept = np.where(tie[0], 0, kept)
    return kept, np.isfinite(fbest)


def _second_look(mu: np.ndarray, S: np.ndarray, x: np.ndarray, m: np.ndarray,
                 nc: np.ndarray, f_kept: np.ndarray) -> tuple[np.ndarray, ...]:
    """Newton from the ``SECOND_LOOK_RUNS`` of lowest F among the negative rank-one fits
    given psi = diag S, one psi_j raised ``NEG_SPREAD`` times; (better, theta, f, iters)
    of the best, ``better`` where it converged below ``f_kept`` - ``TIE_TOL``."""
    R, K = mu.shape
    psi = np.tile(np.diagonal(S, axis1=1, axis2=2), (K, 1))
    psi[np.arange(K * R), np.repeat(np.arange(K), R)] *= NEG_SPREAD
    th0, mk0 = rank_one_start(np.tile(S, (K, 1, 1)), psi, -1)
    th0 = np.concatenate([th0, np.tile(mu, (K, 1))], axis=1)
    rep = np.tile(np.arange(R), K)
    f0 = fd.evaluate(th0, x[rep], m[rep], nc[rep]).f.reshape(K, R)
    k = min(K, SECOND_LOOK_RUNS)
    pick = np.sort(np.argsort(np.where(np.isnan(f0), np.inf, f0), axis=0, kind="stable")[:k],
                   axis=0)
    sel = (pick * R + np.arange(R)).ravel()
    rep = rep[sel]
    th, f, conv, iters = newton(th0[sel], mk0[sel], x[rep], m[rep], nc[rep])
    fm = np.where(conv, f, np.inf).reshape(k, R)
    best = np.argmin(fm, axis=0) * R + np.arange(R)
    with np.errstate(invalid="ignore"):
        better = fm.ravel()[best] < np.where(np.isfinite(f_kept), f_kept, np.inf) - TIE_TOL
    return better, th[best], f[best], iters[best]


def _fit_block(x: np.ndarray, m: np.ndarray) -> dict[str, np.ndarray]:
    """Fit replications x, m (R, G, K), already checked; the fields of a CFABatch."""
    R, G, K = x.shape
    nc = np.sum(np.any(m > 0, axis=2), axis=1).astype(float)
    mu, S = available_moments(x, m)
    d = np.diagonal(S, axis1=1, axis2=2)
    starts = [positive_start(S), rank_one_start(S, d / 3.0, 1), rank_one_start(S, d, -1)]
    th0 = np.concatenate([np.concatenate([th, mu], axis=1) for th, _ in starts])
    mk0, n_st = np.concatenate([mk for _, mk in starts]), len(starts)
    rep = np.tile(np.arange(R), n_st)
    th, f, conv, iters = newton(th0, mk0, x[rep], m[rep], nc[rep], np.arange(len(th0)) < R)
    positive = (th[:, 2 * K] > 0).reshape(n_st, R)
    kept, any_conv = _choose(f.reshape(n_st, R), conv.reshape(n_st, R), positive)
    row = np.where(any_conv, kept, 0) * R + np.arange(R)
    th_k, f_k, c_k, it_k = th[row], f[row], conv[row], iters[row]
    lower = any_conv & (kept != 0)
    sel = np.flatnonzero(~any_conv | ~(th_k[:, 2 * K] > 0))
    if len(sel):
        better, th2, f2, it2 = _second_look(mu[sel], S[sel], x[sel], m[sel], nc[sel],
                                            np.where(c_k[sel], f_k[sel], np.nan))
        to = sel[better]
        th_k[to], f_k[to], it_k[to] = th2[better], f2[better], it2[better]
        c_k[to], lower[to] = True, True
    theta, th_p, c_p = fd.to_first_marker(th_k), fd.to_first_marker(th[:R]), conv[:R]
    bad = fd.marker_singular(theta, x, m, nc)
    bad_p, lw = bad.copy(), np.flatnonzero(lower)
    bad_p[lw] = fd.marker_singular(th_p[lw], x[lw], m[lw], nc[lw])
    cov, ones = np.s_[:, : 2 * K + 1], np.ones(R, dtype=bool)
    flags, admissible = verdicts(theta[cov], c_k, ones, bad)
    lavaan_flags, lavaan_ok = verdicts(th_p[cov], c_p, ones, bad_p)
    for r in np.flatnonzero(lower & c_p & lavaan_ok & ~admissible):
        flags[r] = tuple(flags[r]) + (flag(Reason.LOWER_INADMISSIBLE_OPTIMUM),)
    n_obs = m.sum(axis=(1, 2))
    return dict(
        loadings=theta[:, :K], residual_variances=theta[:, K : 2 * K],
        factor_variance=theta[:, 2 * K], intercepts=theta[:, 2 * K + 1 :],
        fmin=(f_k + n_obs / nc * np.log(2.0 * np.pi)) / 2.0, converged=c_k,
        admissible=admissible, flags=flags, n_iter=it_k, lavaan_flags=lavaan_flags,
    )


def fit_cfa_fiml_batch(x: np.ndarray, mask: np.ndarray) -> CFABatch:
    """One-factor CFA by full-information ML of R wide datasets with missing cells.

    Parameters
    ----------
    x : ndarray (R, G, K)
        Groups by member positions (the indicators), read only where ``mask`` is True.
    mask : ndarray of bool (R, G, K)
        True where the member is observed.

    Returns
    -------
    CFABatch
        As the complete-data fit: ``loadings`` (first column 1), ``residual_variances``,
        ``factor_variance``, ``intercepts`` (FIML means), ``converged``, ``admissible``,
        ``flags``, ``n_iter`` (of the kept run) and ``lavaan_flags`` (the positive start's
        verdict). ``fmin`` is minus the log-likelihood (2 pi included) per group that
        observes anything; lavaan's ``fmin`` is that plus the unrestricted (EM) model's
        log-likelihood per group, a constant of the data.

    Raises
    ------
    ValueError
        Shapes differ, K < 3, a column of a replication is observed in no group, or an
        observed value is not finite.
    """
    xs, m = _check(x, mask)
    R, G, K = xs.shape
    step = max(1, BLOCK_CELLS // (G * K))
    parts = [_fit_block(xs[i : i + step], m[i : i + step]) for i in range(0, R, step)]
    return CFABatch(**{k: np.concatenate([p[k] for p in parts]) for k in parts[0]})


def fit_cfa_fiml(x: np.ndarray, mask: np.ndarray) -> CFAFit:
    """:func:`fit_cfa_fiml_batch` of one dataset: ``x``, ``mask`` of shape (G, K)."""
    x = np.asarray(x, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"x: expected a (G, K) array, got shape {x.shape}")
    return fit_cfa_fiml_batch(x[None], np.asarray(mask, dtype=bool)[None]).fit(0)


def cfa_fiml_scores(fits: CFABatch, x: np.ndarray, mask: np.ndarray,
                    method: str = "regression") -> np.ndarray:
    """Factor scores (R, G) as ``lavPredict`` on a FIML fit, each group from its own
    observed indicators O.

    Parameters
    ----------
    fits : CFABatch
        From :func:`fit_cfa_fiml_batch` on the same ``x``, ``mask`` (R, G, K).
    method : {"regression", "bartlett"}
        phi l_O' Sigma_OO^-1 (x_O - nu_O), or
        (l_O' Theta_O^-1 l_O)^-1 l_O' Theta_O^-1 (x_O - nu_O).

    Returns
    -------
    ndarray (R, G)
        NaN without a finite solution and for a group that observes nothing.
    """
    method = method.lower()
    if method not in ("regression", "bartlett"):
        raise ValueError(f"method: expected 'regression' or 'bartlett', got {method!r}")
    xs, m = _check(x, mask)
    K = xs.shape[2]
    theta = np.concatenate([fits.loadings, fits.residual_variances,
                            fits.factor_variance[:, None], fits.intercepts], axis=1)
    ok = np.all(np.isfinite(theta), axis=1) & np.all(fits.residual_variances != 0, axis=1)
    theta = np.where(ok[:, None], theta, 1.0)
    t = fd.evaluate(theta, xs, m, np.ones(len(xs)))  # the sums a, b, c need psi != 0 only
    with np.errstate(**_QUIET):
        out = theta[:, 2 * K, None] * t.b / t.c if method == "regression" else t.b / t.a
    out[~ok] = np.nan
    out[~np.any(m > 0, axis=2)] = np.nan
    return out
