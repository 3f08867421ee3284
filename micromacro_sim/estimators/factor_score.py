"""Factor scores from a one-factor CFA on the wide G x n matrix (members as indicators).

The CFA uses lavaan's default identification for ``cfa('lv =~ x1 + ... + xn')``: the
first loading is fixed at 1; the other loadings, all residual variances and the factor
variance are free; ML with a mean structure, so the intercepts are the sample means. The
ML fit is our own (Newton's method on the ML discrepancy with closed-form gradient,
information and Hessian, unbounded like lavaan), so a Heywood case shows up as a negative
variance instead of being silently clamped at zero. It is vectorized over replications
(:func:`fit_cfa_batch`); the per-dataset :func:`fit_cfa` is the same code on a batch of
one, so the fast engine and the redraw gate (:func:`cfa_gate_batch`) give the verdicts of
the reference path.

Reference: R ``lavaan::cfa(..., meanstructure=TRUE)`` and ``lavPredict()``.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from ..batch import Batch
from ..dataset import Dataset
from ..options import Option
from ..results import BatchScores, Scores
from ..status import Flag, Reason, flag, flags_text, no_flags
from .base import TwoStepEstimator

__all__ = ["CFABatch", "CFAFit", "FactorScore", "cfa_gate_batch", "fit_cfa", "fit_cfa_batch"]

#: Convergence criterion: largest absolute gradient of the ML discrepancy.
_GTOL = 1e-9
#: ... or Newton decrement g' H^-1 g (twice the predicted drop of F) below this.
_DECREMENT_TOL = 1e-14
_MAX_ITER = 100
_MAX_HALVINGS = 30
#: A first loading this small relative to the largest means the marker
#: parametrization (first loading 1) has no solution: not converged.
_MARKER_TOL = 1e-6


@dataclass(frozen=True)
class CFAFit:
    """ML fit of the one-factor model x = nu + lambda * f + e on a G x n matrix.

    Attributes
    ----------
    loadings : ndarray (n,)
        lambda, with lambda[0] = 1.
    residual_variances : ndarray (n,)
        Diagonal of Theta.
    factor_variance : float
        phi = Var(f).
    intercepts : ndarray (n,)
        nu, the sample means.
    fmin : float
        lavaan's ``fmin``: half the ML discrepancy at the solution.
    converged : bool
        The optimizer met the gradient criterion.
    admissible : bool
        Positive factor and residual variances and a positive-definite implied
        covariance matrix (lavaan's post-check).
    flags : tuple of Flag
        Why the fit is flagged (empty when converged and admissible).
    n_iter : int
        Fisher-scoring iterations used.
    """

    loadings: np.ndarray
    residual_variances: np.ndarray
    factor_variance: float
    intercepts: np.ndarray
    fmin: float
    converged: bool
    admissible: bool
    flags: tuple[Flag, ...]
    n_iter: int

    @property
    def reason(self) -> str:
        """Human text of the flags."""
        return flags_text(self.flags)

    @property
    def ok(self) -> bool:
        """Converged and admissible."""
        return self.converged and self.admissible

    @property
    def implied_cov(self) -> np.ndarray:
        """Model-implied covariance phi lambda lambda' + Theta."""
        lam = self.loadings
        return self.factor_variance * np.outer(lam, lam) + np.diag(self.residual_variances)

    def scores(self, wide: np.ndarray, *, method: str = "regression") -> np.ndarray:
        """Factor scores of every row of ``wide``, as ``lavaan::lavPredict``.

        Parameters
        ----------
        wide : ndarray (G, n)
        method : {"regression", "bartlett"}
            Regression: phi lambda' Sigma^-1 (x - nu). Bartlett:
            (lambda' Theta^-1 lambda)^-1 lambda' Theta^-1 (x - nu).
        """
        dev = np.asarray(wide, dtype=float) - self.intercepts
        lam = self.loadings
        if method == "regression":
            w = self.factor_variance * np.linalg.solve(self.implied_cov, lam)
        elif method == "bartlett":
            t = lam / self.residual_variances
            w = t / (t @ lam)
        else:
            raise ValueError(f"method: expected 'regression' or 'bartlett', got {method!r}")
        return dev @ w


@dataclass(frozen=True, eq=False)
class CFABatch:
    """ML fits of the one-factor model on R wide matrices at once (arrays over R).

    Attributes
    ----------
    loadings : ndarray (R, n)
        lambda, first column 1.
    residual_variances : ndarray (R, n)
    factor_variance : ndarray (R,)
    intercepts : ndarray (R, n)
    fmin : ndarray (R,)
        Half the ML discrepancy at the solution (lavaan's ``fmin``).
    converged, admissible : ndarray of bool (R,)
    flags : ndarray of object (R,)
        A tuple of flags per replication.
    n_iter : ndarray of int (R,)
        Newton iterations of the start that produced the solution.
    """

    loadings: np.ndarray
    residual_variances: np.ndarray
    factor_variance: np.ndarray
    intercepts: np.ndarray
    fmin: np.ndarray
    converged: np.ndarray
    admissible: np.ndarray
    flags: np.ndarray
    n_iter: np.ndarray

    def fit(self, r: int) -> CFAFit:
        """Replication ``r`` as a :class:`CFAFit`."""
        return CFAFit(
            loadings=self.loadings[r].copy(),
            residual_variances=self.residual_variances[r].copy(),
            factor_variance=float(self.factor_variance[r]),
            intercepts=self.intercepts[r].copy(),
            fmin=float(self.fmin[r]),
            converged=bool(self.converged[r]),
            admissible=bool(self.admissible[r]),
            flags=tuple(self.flags[r]),
            n_iter=int(self.n_iter[r]),
        )

    def scores(self, wide: np.ndarray, *, method: str = "regression") -> np.ndarray:
        """Factor scores of every replication, shape (R, G) (NaN without a solution)."""
        dev = np.asarray(wide, dtype=float) - self.intercepts[:, None, :]
        lam, psi, phi = self.loadings, self.residual_variances, self.factor_variance
        ok = np.isfinite(phi) & np.all(np.isfinite(lam), axis=1) & np.all(np.isfinite(psi), axis=1)
        lam = np.where(ok[:, None], lam, 1.0)
        psi = np.where(ok[:, None], psi, 1.0)
        phi = np.where(ok, phi, 1.0)
        if method == "regression":
            sigma = _sigma(np.concatenate([lam, psi, phi[:, None]], axis=1))
            w = phi[:, None] * _solve(sigma, lam)
        elif method == "bartlett":
            t = lam / psi
            w = t / np.sum(t * lam, axis=1, keepdims=True)
        else:
            raise ValueError(f"method: expected 'regression' or 'bartlett', got {method!r}")
        out = np.einsum("rgj,rj->rg", dev, w)
        out[~ok] = np.nan
        return out


def _sigma(theta: np.ndarray) -> np.ndarray:
    """Implied covariances phi lambda lambda' + diag(psi) of theta (R, 2n + 1)."""
    n = (theta.shape[1] - 1) // 2
    lam, psi, phi = theta[:, :n], theta[:, n : 2 * n], theta[:, -1]
    sig = phi[:, None, None] * lam[:, :, None] * lam[:, None, :]
    i = np.arange(n)
    sig[:, i, i] += psi
    return sig


def _pivots_positive(M: np.ndarray) -> np.ndarray:
    """Which matrices of a stack are positive definite (all Cholesky pivots > 0)."""
    R, k, _ = M.shape
    L = np.zeros_like(M)
    pd = np.ones(R, dtype=bool)
    with np.errstate(all="ignore"):
        for j in range(k):
            row = L[:, j, :j]
            d = M[:, j, j] - np.sum(row * row, axis=1)
            pd &= d > 0
            s = np.sqrt(np.where(d > 0, d, 1.0))
            L[:, j, j] = s
            below = M[:, j + 1 :, j] - np.sum(L[:, j + 1 :, :j] * row[:, None, :], axis=2)
            L[:, j + 1 :, j] = below / s[:, None]
    return pd


def _cholesky(M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """LAPACK Cholesky factors of a stack of symmetric matrices, never raising.

    Returns the factors (the identity where a matrix is not positive definite) and the
    mask of positive-definite matrices. Each positive-definite matrix is factored by the
    same LAPACK call whatever else is in the stack, so a replication's arithmetic does not
    depend on the batch it is in.
    """
    k = M.shape[1]
    try:
        return np.linalg.cholesky(M), np.ones(len(M), dtype=bool)
    except np.linalg.LinAlgError:
        pass
    L = np.broadcast_to(np.eye(k), M.shape).copy()
    pd = np.zeros(len(M), dtype=bool)
    # the verdict is LAPACK's on each matrix alone; the pivot screen only saves calls
    screen = _pivots_positive(M) if len(M) > 32 else np.ones(len(M), dtype=bool)
    idx = np.flatnonzero(screen)
    try:
        L[idx] = np.linalg.cholesky(M[idx])
        pd[idx] = True
        rest = np.flatnonzero(~screen)
    except np.linalg.LinAlgError:
        rest = np.arange(len(M))
    for r in rest:
        try:
            L[r] = np.linalg.cholesky(M[r])
            pd[r] = True
        except np.linalg.LinAlgError:
            pass
    return L, pd


def _solve(M: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve M x = b (b of shape (R, k)) for positive-definite stacks, NaN elsewhere."""
    _, pd = _cholesky(M)
    x = np.full(b.shape, np.nan)
    if pd.any():
        x[pd] = np.linalg.solve(M[pd], b[pd][:, :, None])[:, :, 0]
    return x


def _discrepancy(
    theta: np.ndarray, S: np.ndarray, logdet_s: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """ML discrepancy F = log|Sigma| + tr(S Sigma^-1) - log|S| - n and Sigma^-1.

    F is NaN where Sigma is not positive definite (there Sigma^-1 is the identity).
    """
    n = S.shape[1]
    sig = _sigma(theta)
    L, pd = _cholesky(sig)
    A = np.broadcast_to(np.eye(n), sig.shape).copy()
    if pd.all():
        A = np.linalg.inv(sig)
    elif pd.any():
        A[pd] = np.linalg.inv(sig[pd])
    logdet = 2.0 * np.sum(np.log(np.diagonal(L, axis1=1, axis2=2)), axis=1)
    f = logdet + np.einsum("rij,rji->r", S, A) - logdet_s - n
    f[~pd] = np.nan
    return f, A


def _pair_trace(lam: np.ndarray, phi: np.ndarray, M: np.ndarray, N: np.ndarray) -> np.ndarray:
    """J_ab = tr(M dSigma_a N dSigma_b) for theta = (lambda, psi, phi), shape (R, k, k).

    With m = M lambda, v = N lambda, sM = lambda' m, sN = lambda' v:
    lambda_i, lambda_j: phi^2 (m_i v_j + v_i m_j + sN M_ij + sM N_ij);
    lambda_i, psi_j: phi (M_ij v_j + N_ij m_j); lambda_i, phi: phi (sN m_i + sM v_i);
    psi_i, psi_j: M_ij N_ij; psi_i, phi: m_i v_i; phi, phi: sM sN (and J_ba = J_ab with
    M and N swapped).
    """
    R, n = lam.shape
    m = np.einsum("rij,rj->ri", M, lam)
    v = np.einsum("rij,rj->ri", N, lam)
    sM = np.sum(lam * m, axis=1)
    sN = np.sum(lam * v, axis=1)
    ph = phi[:, None, None]
    J = np.empty((R, 2 * n + 1, 2 * n + 1))
    J[:, :n, :n] = ph**2 * (
        m[:, :, None] * v[:, None, :] + v[:, :, None] * m[:, None, :]
        + sN[:, None, None] * M + sM[:, None, None] * N
    )
    J[:, :n, n : 2 * n] = ph * (M * v[:, None, :] + N * m[:, None, :])
    J[:, n : 2 * n, :n] = ph * (N * m[:, :, None] + M * v[:, :, None])
    J[:, n : 2 * n, n : 2 * n] = M * N
    J[:, :n, -1] = J[:, -1, :n] = phi[:, None] * (sN[:, None] * m + sM[:, None] * v)
    J[:, n : 2 * n, -1] = J[:, -1, n : 2 * n] = m * v
    J[:, -1, -1] = sM * sN
    return J


def _derivatives(
    theta: np.ndarray, S: np.ndarray, A: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradient, expected information and Hessian of F in all 2n + 1 parameters.

    With D = A (Sigma - S) A (A = Sigma^-1): gradient tr(D dSigma_a); expected
    information I_ab = tr(A dSigma_a A dSigma_b); Hessian
    I_ab - tr(A dSigma_a D dSigma_b) - tr(D dSigma_a A dSigma_b) + tr(D d2Sigma_ab), where
    the only second derivatives are d2Sigma / dlambda_i dlambda_j = phi (e_i e_j' + e_j e_i')
    and d2Sigma / dlambda_i dphi = e_i lambda' + lambda e_i'.
    """
    n = S.shape[1]
    lam, phi = theta[:, :n], theta[:, -1]
    D = A @ (_sigma(theta) - S) @ A
    Dl = np.einsum("rij,rj->ri", D, lam)
    i = np.arange(n)
    grad = np.concatenate(
        [2 * phi[:, None] * Dl, D[:, i, i], np.sum(lam * Dl, axis=1)[:, None]], axis=1
    )
    info = _pair_trace(lam, phi, A, A)
    jad = _pair_trace(lam, phi, A, D)
    hess = info - jad - jad.transpose(0, 2, 1)
    hess[:, :n, :n] += 2 * phi[:, None, None] * D
    hess[:, :n, -1] += 2 * Dl
    hess[:, -1, :n] += 2 * Dl
    return grad, info, hess


def _free(a: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The free entries of a stack of vectors (R, k) or matrices (R, k, k)."""
    R, k = keep.shape
    if a.ndim == 2:
        return a[keep].reshape(R, k - 1)
    return a[keep[:, :, None] & keep[:, None, :]].reshape(R, k - 1, k - 1)


def _newton(
    theta: np.ndarray, S: np.ndarray, logdet_s: np.ndarray, marker: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Minimize F for every replication, with loading ``marker[r]`` fixed at 1.

    Newton steps where the Hessian (free part) is positive definite, Fisher-scoring steps
    otherwise, halved until F does not increase. A replication stops when its largest
    absolute gradient is below ``_GTOL`` or its Newton decrement below ``_DECREMENT_TOL``
    (the last step then taken in full), when no halving decreases F, or after
    ``_MAX_ITER`` iterations. Each replication follows its own path; the others only
    share the array operations.

    Returns
    -------
    theta, F, converged, iterations
    """
    R, k = theta.shape
    theta = theta.copy()
    keep = np.ones((R, k), dtype=bool)
    keep[np.arange(R), marker] = False
    f, A = _discrepancy(theta, S, logdet_s)
    active = np.isfinite(f)
    converged = np.zeros(R, dtype=bool)
    iters = np.zeros(R, dtype=int)
    for it in range(_MAX_ITER + 1):
        idx = np.flatnonzero(active)
        if not len(idx):
            break
        g_all, info_all, hess_all = _derivatives(theta[idx], S[idx], A[idx])
        kp = keep[idx]
        g = _free(g_all, kp)
        step = _solve(_free(hess_all, kp), g)
        scoring = np.isnan(step[:, 0])  # Hessian not positive definite
        if scoring.any():
            step[scoring] = _solve(_free(info_all[scoring], kp[scoring]), g[scoring])
        stuck = np.isnan(step[:, 0])
        step[stuck] = g[stuck]
        decrement = np.sum(g * step, axis=1)
        gmax = np.max(np.abs(g), axis=1)
        done = (gmax < _GTOL) | (np.abs(decrement) < _DECREMENT_TOL)
        iters[idx] = it
        if done.any():
            fin = idx[done]
            converged[fin] = True
            active[fin] = False
            # a decrement below the noise of F: take the step without a line search
            take = done & (gmax >= _GTOL)
            if take.any():
                t_idx = idx[take]
                cand = theta[t_idx].copy()
                cand[keep[t_idx]] -= step[take].ravel()
                fc, Ac = _discrepancy(cand, S[t_idx], logdet_s[t_idx])
                ok = np.isfinite(fc)
                theta[t_idx[ok]], f[t_idx[ok]], A[t_idx[ok]] = cand[ok], fc[ok], Ac[ok]
        if it == _MAX_ITER:
            break
        idx, step = idx[~done], step[~done]
        t = np.ones(len(idx))
        pending = np.ones(len(idx), dtype=bool)
        for _ in range(_MAX_HALVINGS):
            p = np.flatnonzero(pending)
            if not len(p):
                break
            rows = idx[p]
            cand = theta[rows].copy()
            cand[keep[rows]] -= (t[p, None] * step[p]).ravel()
            fc, Ac = _discrepancy(cand, S[rows], logdet_s[rows])
            acc = np.isfinite(fc) & (fc <= f[rows])
            a = rows[acc]
            theta[a], f[a], A[a] = cand[acc], fc[acc], Ac[acc]
            pending[p[acc]] = False
            t[p[~acc]] /= 2
        active[idx[pending]] = False  # no step decreases F: stuck, not converged
    return theta, f, converged, iters


def _start(S: np.ndarray, sign: int) -> tuple[np.ndarray, np.ndarray]:
    """Start values from the first (sign +1) or last (sign -1) principal component.

    The factor is v v' with v the component scaled by the distance of its eigenvalue from
    the mean of the others; the marker is the indicator with the largest |v_j| (so the
    start is well conditioned even when the first member is a weak indicator); residual
    variances diag(S) - sign v^2, at least a tenth of diag(S). Sign -1 gives a negative
    factor variance: the direction of a solution lavaan reaches when the members'
    covariances are mostly negative.
    """
    R, n, _ = S.shape
    evals, evecs = np.linalg.eigh(S)
    d = np.diagonal(S, axis1=1, axis2=2)
    if sign > 0:
        gap = evals[:, -1] - evals[:, :-1].mean(axis=1)
        vec, scale = evecs[:, :, -1], evals[:, -1]
    else:
        gap = evals[:, 1:].mean(axis=1) - evals[:, 0]
        vec, scale = evecs[:, :, 0], evals[:, 1:].mean(axis=1)
    v = vec * np.sqrt(np.maximum(gap, 1e-3 * scale))[:, None]
    marker = np.argmax(np.abs(v), axis=1)
    vk = v[np.arange(R), marker]
    lam = v / vk[:, None]
    psi = np.maximum(d - sign * v**2, 0.1 * d)
    return np.concatenate([lam, psi, (sign * vk**2)[:, None]], axis=1), marker


#: Fits of recent datasets, keyed by a digest of the wide matrix. The redraw gate and
#: the factor_score method fit the same datasets; the second asks the cache. A fit
#: depends on its own data only, so a cached row equals a fresh one.
_CACHE: OrderedDict[bytes, tuple] = OrderedDict()
_CACHE_SIZE = 4096
_FIELDS = ("loadings", "residual_variances", "factor_variance", "intercepts", "fmin",
           "converged", "admissible", "flags", "n_iter")


def clear_cache() -> None:
    """Forget the cached CFA fits (for timing the fit itself)."""
    _CACHE.clear()


def fit_cfa_batch(wide: np.ndarray) -> CFABatch:
    """:func:`_fit_cfa_batch`, reusing the fits of datasets seen recently in this process."""
    X = np.ascontiguousarray(wide, dtype=float)
    if X.ndim != 3:
        raise ValueError(f"wide: expected an (R, G, n) array, got shape {X.shape}")
    keys = [hashlib.blake2b(X[r].tobytes() + repr(X[r].shape).encode(), digest_size=16).digest()
            for r in range(len(X))]
    missing = [r for r, k in enumerate(keys) if k not in _CACHE]
    if missing:
        fresh = _fit_cfa_batch(X[missing])
        for i, r in enumerate(missing):
            _CACHE[keys[r]] = tuple(getattr(fresh, f)[i] for f in _FIELDS)
            while len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
        if len(missing) == len(X):
            return fresh
    rows = [_CACHE[k] for k in keys]
    cols = {f: np.array([row[i] for row in rows]) for i, f in enumerate(_FIELDS)
            if f != "flags"}
    cols["flags"] = no_flags(len(rows))
    for r, row in enumerate(rows):
        cols["flags"][r] = row[_FIELDS.index("flags")]
    return CFABatch(**cols)


def _fit_cfa_batch(wide: np.ndarray) -> CFABatch:
    """One-factor CFA by ML with lavaan's default identification, for R datasets at once.

    Unbounded ML (as lavaan: a Heywood case shows up as a negative variance) on the sample
    covariance with denominator G. The algorithm, identical for every replication:

    1. start from the first principal component (positive factor variance), with the
       strongest indicator as the marker;
    2. Newton's method with step halving (Fisher scoring where the Hessian is not
       positive definite), until the largest absolute gradient of F is below 1e-9 or the
       Newton decrement below 1e-14, at most 100 iterations;
    3. only where that fails (not converged, or a solution whose first loading is 0 so
       that the marker parametrization does not exist), the same from the last principal
       component (negative factor variance); if that fails too, the first attempt is
       reported, flagged "not converged";
    4. rescale to the marker parametrization (first loading 1, factor variance
       phi lambda_1^2), which is the same implied covariance matrix and discrepancy.

    The fit of one replication does not depend on the others, so :func:`fit_cfa` (this
    function on one dataset) gives the same verdicts.

    Parameters
    ----------
    wide : ndarray (R, G, n)
        Rows are groups, columns member positions (the indicators), n >= 3.

    Returns
    -------
    CFABatch
    """
    X = np.asarray(wide, dtype=float)
    if X.ndim != 3:
        raise ValueError(f"wide: expected an (R, G, n) array, got shape {X.shape}")
    R, G, n = X.shape
    if n < 3:
        raise ValueError(f"a one-factor CFA needs at least 3 indicators, got {n}")
    mu = X.mean(axis=1)
    dev = X - mu[:, None, :]
    S = np.einsum("rgi,rgj->rij", dev, dev) / G
    Ls, s_pd = _cholesky(S)
    Ls[~s_pd] = np.eye(n)
    logdet_s = 2.0 * np.sum(np.log(np.diagonal(Ls, axis1=1, axis2=2)), axis=1)
    S_use = np.where(s_pd[:, None, None], S, np.eye(n))

    theta = np.full((R, 2 * n + 1), np.nan)
    f = np.full(R, np.nan)
    conv = np.zeros(R, dtype=bool)
    iters = np.zeros(R, dtype=int)
    todo = np.flatnonzero(s_pd)
    for sign in (1, -1):
        if not len(todo):
            break
        th0, marker = _start(S_use[todo], sign)
        th, fv, cv, it = _newton(th0, S_use[todo], logdet_s[todo], marker)
        lam1 = th[:, 0]
        cv &= np.abs(lam1) > _MARKER_TOL * np.max(np.abs(th[:, :n]), axis=1)
        # marker parametrization of lavaan: first loading 1
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            th = np.concatenate([th[:, :n] / lam1[:, None], th[:, n : 2 * n],
                                 (th[:, -1] * lam1**2)[:, None]], axis=1)
        first = sign > 0
        take = cv | first
        theta[todo[take]], f[todo[take]] = th[take], fv[take]
        conv[todo[take]], iters[todo[take]] = cv[take], it[take]
        todo = todo[~cv]

    lam, psi, phi = theta[:, :n], theta[:, n : 2 * n], theta[:, -1]
    with np.errstate(invalid="ignore"):
        negative = (phi <= 0) | np.any(psi <= 0, axis=1)
    finite = np.all(np.isfinite(theta), axis=1)
    _, sig_pd = _cholesky(np.where(finite[:, None, None], _sigma(np.nan_to_num(theta)), 0.0))
    flags = no_flags(R)
    admissible = np.ones(R, dtype=bool)
    for r in range(R):
        if not s_pd[r]:
            flags[r], admissible[r] = (flag(Reason.SAMPLE_COV_NOT_PD),), False
            continue
        parts = [] if conv[r] else [flag(Reason.NOT_CONVERGED)]
        if negative[r]:
            parts.append(flag(Reason.NEGATIVE_VARIANCE))
            admissible[r] = False
        elif not (finite[r] and sig_pd[r]):
            parts.append(flag(Reason.NOT_POSITIVE_DEFINITE))
            admissible[r] = False
        flags[r] = tuple(parts)
    return CFABatch(
        loadings=lam, residual_variances=psi, factor_variance=phi, intercepts=mu,
        fmin=f / 2, converged=conv, admissible=admissible, flags=flags, n_iter=iters,
    )


def fit_cfa(wide: np.ndarray) -> CFAFit:
    """One-factor CFA by ML with lavaan's default identification, one dataset.

    :func:`fit_cfa_batch` on a batch of one (same algorithm, same verdicts). Never raises
    for numerical trouble: the result is flagged instead.

    Parameters
    ----------
    wide : ndarray (G, n)
        Rows are groups, columns member positions (the indicators), n >= 3.

    Returns
    -------
    CFAFit
    """
    X = np.asarray(wide, dtype=float)
    if X.ndim != 2:
        raise ValueError(f"wide: expected a (G, n) array, got shape {X.shape}")
    return fit_cfa_batch(X[None]).fit(0)


def cfa_gate_batch(x: np.ndarray) -> np.ndarray:
    """The redraw gate of :mod:`micromacro_sim.admissibility` for R balanced datasets.

    Parameters
    ----------
    x : ndarray (R, G, n)
        Wide member values of every replication.

    Returns
    -------
    ndarray of str (R,)
        "" where the CFA is converged and admissible, otherwise ``"cfa: <reason>"`` (the
        strings of the per-dataset gate).
    """
    fits = fit_cfa_batch(x)
    out = np.full(len(fits.flags), "", dtype=object)
    for r, (c, a, fl) in enumerate(zip(fits.converged, fits.admissible, fits.flags,
                                       strict=True)):
        if not c:
            out[r] = f"cfa: {flags_text(fl) or 'not converged'}"
        elif not a:
            out[r] = f"cfa: {flags_text(fl) or 'inadmissible'}"
    return out.astype(str)


class FactorScore(TwoStepEstimator):
    """Factor scores of a free-loading one-factor CFA as the group score.

    Options
    -------
    scores : {"regression", "bartlett"}
        lavaan ``lavPredict`` method (default "regression", as Clark).

    Balanced data and one x only (the members are the indicators of the wide matrix).
    Reference: R ``lavaan::cfa('lv =~ x1 + ... + xn', meanstructure=TRUE)``,
    ``lavPredict(fit, method=...)``, then ``lm(y ~ z + fs)``.
    """

    name = "factor_score"
    description = "OLS on factor scores of a one-factor CFA (members as indicators)"
    options = {
        "scores": Option("regression", "str", "lavPredict method",
                         choices=("regression", "bartlett")),
    }
    needs_balanced = True
    max_x = 1
    batch_designs = ("balanced",)

    def scores(self, data: Dataset) -> Scores:
        wide = data.wide(0)
        fit = fit_cfa(wide)
        extras = {
            "loadings": fit.loadings,
            "residual_variances": fit.residual_variances,
            "factor_variance": fit.factor_variance,
        }
        if not np.isfinite(fit.factor_variance):
            return Scores(
                values=np.full(data.n_groups, np.nan), converged=False, admissible=False,
                flags=fit.flags, extras=extras,
            )
        values = fit.scores(wide, method=self.params["scores"])
        return Scores(
            values=values, converged=fit.converged, admissible=fit.admissible,
            flags=fit.flags, extras=extras,
        )

    def scores_batch(self, batch: Batch) -> BatchScores:
        R, _, n = batch.x.shape
        if n < 3:  # the reference path records its error for every replication
            return BatchScores.ok(np.full(batch.y.shape, np.nan), fallback=np.ones(R, bool))
        fits = fit_cfa_batch(batch.x)
        values = fits.scores(batch.x, method=self.params["scores"])
        return BatchScores(values, fits.converged.copy(), fits.admissible.copy(),
                           fits.flags.copy())
