"""Full-information ML for the one-factor CFA on wide data with absent members.

The model of :mod:`micromacro_sim.models.cfa` (groups as rows, member positions as
indicators, lavaan's default identification: first loading 1; the other loadings, the
residual variances, the factor variance and the intercepts free; unbounded, so a Heywood
case shows as a negative variance) fitted to a G x K matrix with missing cells: each
group contributes the normal likelihood of the indicators it observes. The reference is
R ``lavaan::cfa('lv =~ x1 + ... + xK', data, meanstructure = TRUE, missing = "fiml")``
with ``lavPredict(fit, method = "regression")`` / ``"Bartlett"``, which score each group
from its own observed indicators.

For every replication (the same arithmetic whatever the batch, see
:mod:`micromacro_sim.models.cfa_fiml_derivs` for the O(K)-per-group likelihood):

1. available-case moments: column means over the observed cells and pairwise covariances
   (the start values only);
2. Newton's method with the exact Hessian (expected-information scoring where the
   Hessian is not positive definite; steps halved until F does not increase beyond its
   rounding noise) from four starts: the first principal component of the pairwise
   covariance (``solver.start``, positive factor variance: the basin lavaan's positive
   default start reaches), the last one (negative factor variance), and the rank-one
   terms that best fit it given residual variances diag S / 3 (positive) and diag S
   (negative); each start fixes its strongest indicator's loading at 1 internally;
3. a second look where the kept solution has a negative factor variance or no run
   converged: negative starts with one indicator's residual variance ``NEG_SPREAD``
   times its variance, the ``SECOND_LOOK_RUNS`` of lowest F; a converged one lower by
   more than ``TIE_TOL`` replaces the kept solution;
4. the kept solution is the converged run of lowest F, the positive start on a tie
   within ``TIE_TOL``; with none converged, the positive start's end point, flagged
   ``not_converged``;
5. rescaled to the first loading 1, then the verdicts of
   :func:`micromacro_sim.models.cfa_fit.verdicts`: negative variance, implied covariance
   not positive definite, marker not identified (the expected information of the
   covariance parameters with the first loading fixed has a condition number above
   ``MARKER_COND``, as the complete-data rule; the intercepts are orthogonal to them),
   and ``lower_inadmissible_optimum`` when the kept solution is inadmissible while the
   positive start converged to an admissible one.

On complete data the optimum is the complete-data ML one (intercepts the column means).
A position observed in one or two groups makes the likelihood unbounded (its intercept
and loading fit those values exactly while its conditional variance goes to zero): the
runs then stop without converging. lavaan refuses a column observed once.
"""

from __future__ import annotations

import numpy as np

from micromacro_sim.core.status import Reason, flag, no_flags
from micromacro_sim.models import cfa_fiml_derivs as fd
from micromacro_sim.models import cfa_solver as solver
from micromacro_sim.models.cfa import CFABatch, CFAFit
from micromacro_sim.models.cfa_fit import MARKER_COND, TIE_TOL, verdicts
from micromacro_sim.models.linalg import cholesky_stack, solve_stack

__all__ = ["DECREMENT_TOL", "MAX_ITER", "cfa_fiml_scores", "fit_cfa_fiml",
           "fit_cfa_fiml_batch"]

#: Converged: Hessian positive definite and Newton decrement g' H^-1 g below this times
#: max(1, |F|); the last step is then taken in full.
DECREMENT_TOL = 1e-14
#: A step is accepted when F does not increase by more than this times max(1, |F|).
F_NOISE = 1e-14
MAX_ITER = 100
MAX_HALVINGS = 40
#: A run whose parameters pass this size in absolute value has diverged.
DIVERGED = 1e10
#: A residual variance above this many times its indicator's implied variance (in
#: absolute value) means a run heads to infinity: it is reflected through that point once
#: (see :func:`_reflect`), then stopped; the positive start is stopped at ``RATIO_MAX``.
RATIO = 20.0
RATIO_MAX = 1e4
#: An indicator whose implied variance exceeds this many times its conditional variance
#: given the others: the run heads to a singular implied covariance (an unbounded
#: likelihood) and is stopped.
DEGENERATE = 1e8
#: Runs with a residual variance beyond this many times its implied variance (in absolute
#: value) try doubling accepted steps, at most ``MAX_DOUBLINGS`` times.
EXPAND = 2.0
MAX_DOUBLINGS = 10
#: A run whose largest loading is this many times its marker's takes it as the marker.
REMARK = 10.0
#: Second look: residual variance of the raised indicator, in units of its variance.
NEG_SPREAD = 4.0
SECOND_LOOK_RUNS = 4
#: Replications fitted together: about this many cells (R x G x K) per block.
BLOCK_CELLS = 2**18
_QUIET = {"invalid": "ignore", "over": "ignore", "divide": "ignore", "under": "ignore"}


# ------------------------------------------------------------------ data and starts


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


def available_moments(x: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means over the observed cells and pairwise covariances (R, K), (R, K, K).

    A covariance uses the groups that observe both columns (0 where fewer than two do);
    a variance observed in fewer than two groups is replaced by the mean of the others.
    """
    n = m.sum(axis=1)
    mu = x.sum(axis=1) / n
    dev = (x - mu[:, None, :]) * m
    mt = np.swapaxes(m, 1, 2)
    pairs = mt @ m
    with np.errstate(**_QUIET):
        S = np.where(pairs >= 2, (np.swapaxes(dev, 1, 2) @ dev) / pairs, 0.0)
    d = np.diagonal(S, axis1=1, axis2=2).copy()
    few = n < 2
    if few.any():
        ok = ~few
        fill = np.sum(np.where(ok, d, 0.0), axis=1) / np.maximum(np.sum(ok, axis=1), 1)
        fill = np.where(fill > 0, fill, 1.0)
        d = np.where(few, fill[:, None], d)
        i = np.arange(d.shape[1])
        S[:, i, i] = d
    return mu, S


def _profiled(S: np.ndarray, psi: np.ndarray, sign: int) -> tuple[np.ndarray, np.ndarray]:
    """(lambda, psi, phi) with the rank-one term that best fits S given ``psi`` (> 0):
    the first (sign +1) or last (sign -1) eigenvector of Psi^-1/2 S Psi^-1/2; the
    strongest indicator is the marker."""
    R, K, _ = S.shape
    sq = np.sqrt(psi)
    evals, evecs = np.linalg.eigh(S / (sq[:, :, None] * sq[:, None, :]))
    k = -1 if sign > 0 else 0
    gap = np.maximum(sign * (evals[:, k] - 1.0), 1e-3)
    v = sq * evecs[:, :, k] * np.sqrt(gap)[:, None]
    marker = np.argmax(np.abs(v), axis=1)
    vk = v[np.arange(R), marker]
    return np.concatenate([v / vk[:, None], psi, (sign * vk**2)[:, None]], axis=1), marker


def _starts(mu: np.ndarray, S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The four starts of every replication, stacked start by start (theta, marker)."""
    d = np.diagonal(S, axis1=1, axis2=2)
    blocks = [solver.start(S, 1), solver.start(S, -1), _profiled(S, d / 3.0, 1),
              _profiled(S, d, -1)]
    theta = np.concatenate([np.concatenate([th, mu], axis=1) for th, _ in blocks])
    return theta, np.concatenate([mk for _, mk in blocks])


def _negative_starts(mu: np.ndarray, S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Second-look starts, one per indicator (stacked indicator by indicator): the
    negative rank-one fit given psi = diag S with psi_j raised ``NEG_SPREAD`` times."""
    R, K, _ = S.shape
    psi = np.tile(np.diagonal(S, axis1=1, axis2=2), (K, 1))
    psi[np.arange(K * R), np.repeat(np.arange(K), R)] *= NEG_SPREAD
    th, marker = _profiled(np.tile(S, (K, 1, 1)), psi, -1)
    return np.concatenate([th, np.tile(mu, (K, 1))], axis=1), marker


# ------------------------------------------------------------------ Newton


def _free(a: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The free entries of a stack of vectors (N, P) or matrices (N, P, P)."""
    N, P = keep.shape
    if a.ndim == 2:
        return a[keep].reshape(N, P - 1)
    return a[keep[:, :, None] & keep[:, None, :]].reshape(N, P - 1, P - 1)


def _pd_solve(H: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """H^-1 g where H is positive definite (NaN elsewhere) and the PD mask."""
    _, pd = cholesky_stack(H)
    step = np.full(g.shape, np.nan)
    if pd.any():
        sol, ok = solve_stack(H[pd], g[pd][:, :, None])
        step[pd] = np.where(ok[:, None], sol[:, :, 0], np.nan)
        pd[np.flatnonzero(pd)[~ok]] = False
    return step, pd


def _step(theta: np.ndarray, keep: np.ndarray, x: np.ndarray, m: np.ndarray,
          nc: np.ndarray) -> tuple[np.ndarray, ...]:
    """Newton (or scoring) step, decrement, Hessian-PD mask and F of runs at theta."""
    t = fd.evaluate(theta, x, m, nc)
    g, H = fd.derivatives(theta, t, m, nc)
    gf = _free(g, keep)
    step, pd = _pd_solve(_free(H, keep), gf)
    sc = np.flatnonzero(~pd)
    if len(sc):
        info = fd.information(theta[sc], fd.Terms(t.f[sc], t.w[sc], t.u[sc], t.e[sc],
                                                  t.a[sc], t.b[sc], t.c[sc]),
                              m[sc], nc[sc])
        step[sc] = _pd_solve(_free(info, keep[sc]), gf[sc])[0]
        stuck = sc[np.isnan(step[sc, 0])]
        step[stuck] = gf[stuck]
    return step, np.sum(gf * step, axis=1), pd, t.f


def newton(theta0: np.ndarray, marker: np.ndarray, x: np.ndarray, m: np.ndarray,
           nc: np.ndarray, reflect: np.ndarray) -> tuple[np.ndarray, ...]:
    """Minimize F for N runs, run i with loading ``marker[i]`` fixed (at its start value).

    A run converges when its Hessian is positive definite and its Newton decrement is
    below ``DECREMENT_TOL`` (relative to |F| above 1); it stops unconverged when no
    halving decreases F, its parameters diverge, its implied covariance goes singular,
    or after ``MAX_ITER`` iterations. A run heading to an infinite residual variance is
    reflected through infinity once where ``reflect`` (:func:`_escape`).

    Returns
    -------
    theta, F, converged, iterations
    """
    N, P = theta0.shape
    theta = theta0.copy()
    keep = np.ones((N, P), dtype=bool)
    keep[np.arange(N), marker] = False
    f = fd.evaluate(theta, x, m, nc).f
    active = np.isfinite(f)
    conv = np.zeros(N, dtype=bool)
    iters = np.zeros(N, dtype=int)
    reflect = reflect.copy()
    cap = np.where(reflect, RATIO, RATIO_MAX)
    for it in range(MAX_ITER + 1):
        idx = np.flatnonzero(active)
        if not len(idx):
            break
        step, dec, pd, fi = _step(theta[idx], keep[idx], x[idx], m[idx], nc[idx])
        iters[idx] = it
        scale = np.maximum(1.0, np.abs(fi))
        done = pd & (dec < DECREMENT_TOL * scale)
        bad = ~np.isfinite(dec)
        active[idx[bad]] = False
        if done.any():  # take the last step in full where F stays finite
            r = idx[done]
            conv[r], active[r] = True, False
            cand = theta[r].copy()
            cand[keep[r]] -= step[done].ravel()
            fc = fd.evaluate(cand, x[r], m[r], nc[r]).f
            ok = np.isfinite(fc)
            theta[r[ok]], f[r[ok]] = cand[ok], fc[ok]
        go = ~done & ~bad
        if it < MAX_ITER and go.any():
            _line_search(theta, f, active, keep, idx[go], step[go], x, m, nc)
        _escape(theta, f, active, keep, reflect, cap, x, m, nc)
    return theta, f, conv, iters


def _reflect(theta: np.ndarray, j: np.ndarray) -> np.ndarray:
    """The point across infinity from theta, in the parametrization with marker j.

    In that parametrization (l_j = 1) a run heading to psi_j = +-infinity has phi going
    to -+infinity with c_k = phi l_k and Sigma_jj = psi_j + phi finite. Crossing
    gamma = 1 / phi through 0 keeps c, Sigma_jj and every Sigma_kk and flips only
    Sigma_kk' = c_k c_k' / phi (k, k' != j), which is O(1 / phi): phi -> -phi,
    l_k -> -l_k, psi_j -> psi_j + 2 phi, psi_k -> psi_k + 2 phi l_k^2.
    """
    K = (theta.shape[1] - 1) // 3
    rows = np.arange(len(theta))
    lam, psi, phi, nu = fd.split(theta)
    lj = lam[rows, j]
    lt = lam / lj[:, None]
    pt = phi * lj**2
    out = np.concatenate([-lt, psi + 2.0 * pt[:, None] * lt**2, -pt[:, None], nu], axis=1)
    out[rows, j] = 1.0
    out[rows, K + j] = psi[rows, j] + 2.0 * pt
    return out


def _remark(theta: np.ndarray, keep: np.ndarray, rows: np.ndarray) -> None:
    """Give ``rows`` their largest loading as the marker where the marker's loading is
    below 1 / ``REMARK`` of it (in place; the same point, rescaled)."""
    K = (theta.shape[1] - 1) // 3
    lam = np.abs(theta[rows, :K])
    j = np.argmax(lam, axis=1)
    marker = np.argmin(keep[rows], axis=1)
    with np.errstate(**_QUIET):
        weak = lam[np.arange(len(rows)), j] > REMARK * lam[np.arange(len(rows)), marker]
    r, j = rows[weak], j[weak]
    if len(r):
        lj = theta[r, j]
        theta[r, :K] /= lj[:, None]
        theta[r, 2 * K] *= lj**2
        theta[r, j] = 1.0
        keep[r] = True
        keep[r, j] = False


def _escape(theta: np.ndarray, f: np.ndarray, active: np.ndarray, keep: np.ndarray,
            reflect: np.ndarray, cap: np.ndarray, x: np.ndarray, m: np.ndarray,
            nc: np.ndarray) -> None:
    """Stop or reflect the active runs that head to infinity or to a singular implied
    covariance (in place; a reflected run gets the reflected indicator as its marker and
    may not be reflected again)."""
    idx = np.flatnonzero(active)
    if not len(idx):
        return
    lam, psi, phi, _ = fd.split(theta[idx])
    with np.errstate(**_QUIET):
        var = psi + phi[:, None] * lam**2
        ratio = np.abs(psi) / var
        u = lam / psi
        c = 1.0 + phi * np.sum(u * lam, axis=1)
        prec = 1.0 / psi - (phi / c)[:, None] * u * u
        stop = ~(np.max(var * prec, axis=1) <= DEGENERATE)
        stop |= ~(np.max(np.abs(theta[idx]), axis=1) <= DIVERGED)
    _remark(theta, keep, idx[~stop])
    j = np.argmax(np.where(np.isfinite(ratio), ratio, np.inf), axis=1)
    rj = ratio[np.arange(len(idx)), j]
    turn = ~(rj <= RATIO) & reflect[idx] & ~stop
    stop |= ~(rj <= cap[idx]) & ~turn
    active[idx[stop]] = False
    r, j = idx[turn], j[turn]
    if len(r):
        th = _reflect(theta[r], j)
        fr = fd.evaluate(th, x[r], m[r], nc[r]).f
        ok = np.isfinite(fr)
        r, j = r[ok], j[ok]
        theta[r], f[r] = th[ok], fr[ok]
        keep[r] = True
        keep[r, j] = False
        reflect[r] = False
        active[idx[turn][~ok]] = False


def _ratio(theta: np.ndarray) -> np.ndarray:
    """Per run, the largest |psi_j| / Sigma_jj (NaN-safe: NaN counts as infinite)."""
    lam, psi, phi, _ = fd.split(theta)
    with np.errstate(**_QUIET):
        r = np.abs(psi) / (psi + phi[:, None] * lam**2)
    return np.max(np.where(np.isnan(r), np.inf, r), axis=1)


def _line_search(theta: np.ndarray, f: np.ndarray, active: np.ndarray, keep: np.ndarray,
                 rows: np.ndarray, step: np.ndarray, x: np.ndarray, m: np.ndarray,
                 nc: np.ndarray) -> None:
    """Halve the steps of ``rows`` until F does not increase beyond its rounding noise;
    move the runs in place, stop those that cannot. A run far out (``_ratio`` above
    ``EXPAND``) whose full step is accepted tries doubling it while F keeps decreasing:
    such runs follow a valley to infinity, where Newton's steps grow slowly."""
    bound = f[rows] + F_NOISE * np.maximum(1.0, np.abs(f[rows]))
    far = _ratio(theta[rows]) > EXPAND
    t = np.ones(len(rows))
    pending = np.arange(len(rows))
    for _ in range(MAX_HALVINGS):
        if not len(pending):
            break
        r = rows[pending]
        cand = theta[r].copy()
        cand[keep[r]] -= (t[pending, None] * step[pending]).ravel()
        fc = fd.evaluate(cand, x[r], m[r], nc[r]).f
        acc = np.isfinite(fc) & (fc <= bound[pending])
        theta[r[acc]], f[r[acc]] = cand[acc], fc[acc]
        pending = pending[~acc]
        t[pending] /= 2
    active[rows[pending]] = False
    grow = np.flatnonzero(far & (t == 1.0) & active[rows])
    for _ in range(MAX_DOUBLINGS):
        if not len(grow):
            return
        t[grow] *= 2
        r = rows[grow]
        cand = theta[r].copy()
        cand[keep[r]] -= (0.5 * t[grow, None] * step[grow]).ravel()
        fc = fd.evaluate(cand, x[r], m[r], nc[r]).f
        acc = np.isfinite(fc) & (fc < f[r])
        theta[r[acc]], f[r[acc]] = cand[acc], fc[acc]
        grow = grow[acc]


# ------------------------------------------------------------------ the fit


def _choose(f: np.ndarray, conv: np.ndarray, positive: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """Per replication (columns), the kept run (rows: the starts) and whether any run
    converged: the lowest converged F; on a tie within ``TIE_TOL`` the positive start
    when it converged, else the first tied run with a positive factor variance."""
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
    """The ``SECOND_LOOK_RUNS`` negative starts of lowest F for each replication given;
    returns (better, theta, f, iters) with ``better`` where the best converged one is
    lower than ``f_kept`` by more than ``TIE_TOL``."""
    R, K = mu.shape
    th0, mk0 = _negative_starts(mu, S)
    rep = np.tile(np.arange(R), K)
    f0 = fd.evaluate(th0, x[rep], m[rep], nc[rep]).f.reshape(K, R)
    k = min(K, SECOND_LOOK_RUNS)
    pick = np.sort(np.argsort(np.where(np.isnan(f0), np.inf, f0), axis=0, kind="stable")[:k],
                   axis=0)
    sel = (pick * R + np.arange(R)).ravel()
    rep = rep[sel]
    th, f, conv, iters = newton(th0[sel], mk0[sel], x[rep], m[rep], nc[rep],
                                 np.ones(len(sel), dtype=bool))
    fm = np.where(conv, f, np.inf).reshape(k, R)
    best = np.argmin(fm, axis=0) * R + np.arange(R)
    with np.errstate(invalid="ignore"):
        better = fm.ravel()[best] < np.where(np.isfinite(f_kept), f_kept, np.inf) - TIE_TOL
    return better, th[best], f[best], iters[best]


def _to_marker(theta: np.ndarray) -> np.ndarray:
    """Rescale to the first loading 1 (phi lambda_1^2; NaN where lambda_1 is 0)."""
    K = (theta.shape[1] - 1) // 3
    lam1 = theta[:, :1]
    with np.errstate(**_QUIET):
        return np.concatenate([theta[:, :K] / lam1, theta[:, K : 2 * K],
                               theta[:, 2 * K : 2 * K + 1] * lam1**2, theta[:, 2 * K + 1 :]],
                              axis=1)


def _marker_bad(theta: np.ndarray, x: np.ndarray, m: np.ndarray, nc: np.ndarray
                ) -> np.ndarray:
    """Whether the expected information of the covariance parameters, first loading
    fixed, is singular to double precision (or the solution is not a finite point)."""
    K = x.shape[2]
    t = fd.evaluate(np.nan_to_num(theta), x, m, nc)
    out = ~np.all(np.isfinite(theta), axis=1) | ~np.isfinite(t.f)
    idx = np.flatnonzero(~out)
    if len(idx):
        info = fd.information(theta[idx], fd.Terms(t.f[idx], t.w[idx], t.u[idx], t.e[idx],
                                                   t.a[idx], t.b[idx], t.c[idx]),
                              m[idx], nc[idx])[:, 1 : 2 * K + 1, 1 : 2 * K + 1]
        with np.errstate(**_QUIET):
            cond = np.linalg.cond(info)
        out[idx] = ~(cond < MARKER_COND)
    return out


def _fit_block(x: np.ndarray, m: np.ndarray) -> dict[str, np.ndarray]:
    """Fit replications x, m (R, G, K), already checked; the fields of a CFABatch."""
    R, G, K = x.shape
    nc = np.sum(np.any(m > 0, axis=2), axis=1).astype(float)
    mu, S = available_moments(x, m)
    th0, mk0 = _starts(mu, S)
    n_st = len(th0) // R
    rep = np.tile(np.arange(R), n_st)
    th, f, conv, iters = newton(th0, mk0, x[rep], m[rep], nc[rep], np.arange(len(th0)) >= R)
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
    theta, th_p, c_p = _to_marker(th_k), _to_marker(th[:R]), conv[:R]
    bad = _marker_bad(theta, x, m, nc)
    bad_p = np.where(lower, _marker_bad(th_p, x, m, nc), bad)
    cov = np.s_[:, : 2 * K + 1]
    ones = np.ones(R, dtype=bool)
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
        Rows are groups, columns member positions (the indicators); read only where
        ``mask`` is True (anything, NaN included, elsewhere).
    mask : ndarray of bool (R, G, K)
        True where the member is observed.

    Returns
    -------
    CFABatch
        The meanings of the complete-data fit (:class:`~micromacro_sim.models.cfa.CFABatch`):
        ``loadings`` (R, K) with first column 1, ``residual_variances``,
        ``factor_variance``, ``intercepts`` (the FIML estimates of the means, not the
        column means), ``converged``, ``admissible``, ``flags``, ``n_iter`` (Newton
        iterations of the kept run) and ``lavaan_flags`` (the verdict of the positive
        start's solution, the one lavaan's optimizer reaches). ``fmin`` is minus the
        log-likelihood (2 pi constant included) per group that observes anything; lavaan's
        ``fmin`` for ``missing = "fiml"`` is this plus the unrestricted (EM) model's
        log-likelihood per group, which does not depend on the model.

    Raises
    ------
    ValueError
        Shapes differ, K < 3, a column of some replication is observed in no group, or an
        observed value is not finite.

    Notes
    -----
    Every replication follows its own arithmetic (see the module docstring): its results
    are the same bits alone or in any stack.
    """
    xs, m = _check(x, mask)
    R, G, K = xs.shape
    step = max(1, BLOCK_CELLS // (G * K))
    parts = [_fit_block(xs[i : i + step], m[i : i + step]) for i in range(0, R, step)]
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]
           if k not in ("flags", "lavaan_flags")}
    for k in ("flags", "lavaan_flags"):
        out[k] = no_flags(R)
        for r, fl in enumerate(fl for p in parts for fl in p[k]):
            out[k][r] = fl
    return CFABatch(**out)


def fit_cfa_fiml(x: np.ndarray, mask: np.ndarray) -> CFAFit:
    """:func:`fit_cfa_fiml_batch` of one dataset: ``x``, ``mask`` of shape (G, K)."""
    x = np.asarray(x, dtype=float)
    if x.ndim != 2:
        raise ValueError(f"x: expected a (G, K) array, got shape {x.shape}")
    return fit_cfa_fiml_batch(x[None], np.asarray(mask, dtype=bool)[None]).fit(0)


def cfa_fiml_scores(fits: CFABatch, x: np.ndarray, mask: np.ndarray,
                    method: str = "regression") -> np.ndarray:
    """Factor scores (R, G) as ``lavPredict`` on a FIML fit: each group from its own
    observed indicators.

    Parameters
    ----------
    fits : CFABatch
        From :func:`fit_cfa_fiml_batch` on the same data.
    x, mask : ndarray (R, G, K)
    method : {"regression", "bartlett"}
        Regression: phi l_O' Sigma_OO^-1 (x_O - nu_O); Bartlett (lavaan's "Bartlett"):
        (l_O' Theta_O^-1 l_O)^-1 l_O' Theta_O^-1 (x_O - nu_O).

    Returns
    -------
    ndarray (R, G)
        NaN for a replication without a finite solution and for a group that observes
        nothing.
    """
    method = method.lower()
    if method not in ("regression", "bartlett"):
        raise ValueError(f"method: expected 'regression' or 'bartlett', got {method!r}")
    xs, m = _check(x, mask)
    theta = np.concatenate([fits.loadings, fits.residual_variances,
                            fits.factor_variance[:, None], fits.intercepts], axis=1)
    ok = np.all(np.isfinite(theta), axis=1)
    out = fd.scores(np.where(ok[:, None], theta, 1.0), xs, m, method)
    out[~ok] = np.nan
    return out
