"""The fit driver of the one-factor CFA: starts, the global optimum, the verdicts.

For every replication (same arithmetic whatever the batch):

1. the sample covariance S (denominator G); not positive definite: no fit;
2. Newton's method (:func:`~micromacro_sim.models.cfa_solver.newton`) from two starts,
   the first principal component (positive factor variance) and the last (negative
   factor variance), each with its strongest indicator as the internal marker;
3. the kept solution is the converged one with the lowest discrepancy (the positive
   start on a tie within ``TIE_TOL``), so a lower inadmissible optimum is never hidden
   behind an admissible one (flagged ``lower_inadmissible_optimum`` as well when the
   positive start found an admissible one); with neither converged, the positive start
   is reported, flagged ``not_converged``;
4. rescaled to lavaan's marker parametrization (first loading 1, factor variance
   phi lambda_1^2: the same implied covariance and discrepancy);
5. ``marker_not_identified`` when the expected information in that parametrization is
   singular to double precision (condition number above ``1 / eps``, see
   :data:`MARKER_COND`): the first member's standardized loading is then so close to 0
   (below about .004 at G = 100, n = 10) that no optimizer working in lavaan's
   parametrization can locate the optimum, and lavaan mostly reports non-convergence.

Besides the verdict of the kept (global) solution, the verdict of the positive start's
solution is returned: lavaan's start (factor variance .05, FABIN 3 loadings) lands in
that basin on almost every dataset, so it is lavaan's accept/reject (the ``lavaan_cfa``
gate); the datasets where lavaan's optimizer lands in another basin are listed in
``tests/test_kernels_cfa.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from micromacro_sim.core.status import Reason, flag, no_flags
from micromacro_sim.models import cfa_solver as solver

__all__ = ["MARKER_COND", "TIE_TOL", "Kept", "finish", "fit_arrays", "marker_singular",
           "sample_moments", "verdicts"]

#: Two solutions whose discrepancies differ by less than this are the same optimum.
TIE_TOL = 1e-9
#: Condition number of the information (marker parametrization) beyond which the
#: marker's loading is not identified in double precision.
MARKER_COND = 1.0 / np.finfo(float).eps


def _to_marker(th: np.ndarray, n: int) -> np.ndarray:
    """Rescale theta to first loading 1 (NaN where the first loading is 0)."""
    lam1 = th[:, 0]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return np.concatenate([th[:, :n] / lam1[:, None], th[:, n : 2 * n],
                               (th[:, -1] * lam1**2)[:, None]], axis=1)


def marker_singular(theta: np.ndarray, S: np.ndarray, logdet_s: np.ndarray) -> np.ndarray:
    """Whether the information of the free parameters (first loading fixed) is singular."""
    R, k = theta.shape
    out = ~np.all(np.isfinite(theta), axis=1)
    idx = np.flatnonzero(~out)
    if not len(idx):
        return out
    f, A = solver.discrepancy(theta[idx], S[idx], logdet_s[idx])
    good = np.isfinite(f)
    out[idx[~good]] = True
    idx = idx[good]
    if len(idx):
        info = solver.derivatives(theta[idx], S[idx], A[good])[1][:, 1:, 1:]
        with np.errstate(all="ignore"):
            cond = np.linalg.cond(info)
        out[idx] = ~(cond < MARKER_COND)
    return out


def verdicts(theta: np.ndarray, conv: np.ndarray, s_pd: np.ndarray,
              marker_bad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flags and admissibility of solutions in the marker parametrization."""
    R = len(theta)
    n = (theta.shape[1] - 1) // 2
    psi, phi = theta[:, n : 2 * n], theta[:, -1]
    with np.errstate(invalid="ignore"):
        negative = (phi <= 0) | np.any(psi <= 0, axis=1)
    finite = np.all(np.isfinite(theta), axis=1)
    implied = solver.sigma(np.nan_to_num(theta))
    _, sig_pd = solver.cholesky(np.where(finite[:, None, None], implied, 0.0))
    flags = no_flags(R)
    admissible = np.ones(R, dtype=bool)
    for r in range(R):
        if not s_pd[r]:
            flags[r], admissible[r] = (flag(Reason.SAMPLE_COV_NOT_PD),), False
            continue
        parts = [] if conv[r] else [flag(Reason.NOT_CONVERGED)]
        if negative[r]:
            parts.append(flag(Reason.NEGATIVE_VARIANCE))
        elif not (finite[r] and sig_pd[r]):
            parts.append(flag(Reason.NOT_POSITIVE_DEFINITE))
        if marker_bad[r] and conv[r]:
            parts.append(flag(Reason.MARKER_NOT_IDENTIFIED))
        admissible[r] = not any(p.code != Reason.NOT_CONVERGED for p in parts)
        flags[r] = tuple(parts)
    return flags, admissible


@dataclass(frozen=True)
class Kept:
    """The kept solution of every replication (marker parametrization), before verdicts;
    ``lower`` marks replications whose kept solution is not the positive start's."""

    theta: np.ndarray
    f: np.ndarray
    conv: np.ndarray
    iters: np.ndarray
    lower: np.ndarray


def finish(kept: Kept, th_p: np.ndarray, c_p: np.ndarray, S: np.ndarray,
           logdet_s: np.ndarray, s_pd: np.ndarray, mu: np.ndarray) -> dict[str, np.ndarray]:
    """The verdicts of the kept solution and of the positive start's (lavaan's basin), and
    the fields of a ``CFABatch``: the one end of every one-factor CFA driver."""
    n = mu.shape[1]
    theta, lower = kept.theta, kept.lower
    bad_p = marker_singular(th_p, S, logdet_s)
    bad = np.where(lower, marker_singular(theta, S, logdet_s), bad_p)
    flags, admissible = verdicts(theta, kept.conv, s_pd, bad)
    lavaan_flags, lavaan_ok = verdicts(th_p, c_p, s_pd, bad_p)
    hidden = lower & c_p & lavaan_ok & ~admissible
    for r in np.flatnonzero(hidden):
        flags[r] = tuple(flags[r]) + (flag(Reason.LOWER_INADMISSIBLE_OPTIMUM),)
    return dict(
        loadings=theta[:, :n], residual_variances=theta[:, n : 2 * n],
        factor_variance=theta[:, -1], intercepts=mu, fmin=kept.f / 2, converged=kept.conv,
        admissible=admissible, flags=flags, n_iter=kept.iters, lavaan_flags=lavaan_flags,
    )


def sample_moments(X: np.ndarray) -> tuple[np.ndarray, ...]:
    """The sample moments both CFA drivers start from, for ``X`` (R, G, n).

    Returns
    -------
    mu : ndarray (R, n)
        Column means.
    S_use : ndarray (R, n, n)
        Sample covariances (denominator G); the identity where S is not positive definite.
    Ls : ndarray (R, n, n)
        Their Cholesky factors (the identity where S is not positive definite).
    logdet_s : ndarray (R,)
        log |S|.
    s_pd : ndarray of bool (R,)
        S is positive definite (no fit otherwise).
    """
    R, G, n = X.shape
    mu = X.mean(axis=1)
    dev = X - mu[:, None, :]
    S = np.einsum("rgi,rgj->rij", dev, dev) / G
    Ls, s_pd = solver.cholesky(S)
    Ls[~s_pd] = np.eye(n)
    logdet_s = 2.0 * np.sum(np.log(np.diagonal(Ls, axis1=1, axis2=2)), axis=1)
    S_use = np.where(s_pd[:, None, None], S, np.eye(n))
    return mu, S_use, Ls, logdet_s, s_pd


def fit_arrays(X: np.ndarray) -> dict[str, np.ndarray]:
    """Fit every replication of ``X`` (R, G, n); the fields of a ``CFABatch`` plus
    ``lavaan_flags`` (the positive start's verdict)."""
    R, G, n = X.shape
    mu, S_use, Ls, logdet_s, s_pd = sample_moments(X)

    sols = {}
    todo = np.flatnonzero(s_pd)  # no fit where S is singular
    for sign in (1, -1):
        th, fv = np.full((R, 2 * n + 1), np.nan), np.full(R, np.nan)
        cv, it = np.zeros(R, dtype=bool), np.zeros(R, dtype=int)
        if len(todo):
            th0, marker = solver.start(S_use[todo], sign)
            th[todo], fv[todo], cv[todo], it[todo] = solver.newton(
                th0, S_use[todo], logdet_s[todo], marker)
        sols[sign] = (_to_marker(th, n), fv, cv, it)
    th_p, f_p, c_p, i_p = sols[1]
    th_n, f_n, c_n, i_n = sols[-1]
    with np.errstate(invalid="ignore"):
        lower = c_n & (~c_p | (f_n < f_p - TIE_TOL))
    theta = np.where(lower[:, None], th_n, th_p)
    f = np.where(lower, f_n, f_p)
    conv = np.where(lower, c_n, c_p)
    iters = np.where(lower, i_n, i_p)

    kept = Kept(theta, f, conv, iters, lower)
    return finish(kept, th_p, c_p, S_use, logdet_s, s_pd, mu)
