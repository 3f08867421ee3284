"""Newton solver of the one-factor ML discrepancy, batched over replications.

The numerical core of :mod:`micromacro_sim.models.cfa`: the implied covariance of
theta = (lambda, psi, phi), the ML discrepancy, its closed-form gradient, expected
information and Hessian, never-raising batched Cholesky / solve, principal-component
start values and Newton's method with step halving. Every replication follows its own
path; the others only share the array operations, so a replication's arithmetic does
not depend on the batch it is in.
"""

from __future__ import annotations

import numpy as np

from micromacro_sim.models.linalg import cholesky_stack, inv_stack, solve_stack

__all__ = ["cholesky", "derivatives", "discrepancy", "newton", "sigma", "solve", "start"]

#: Convergence criterion: largest absolute gradient of the ML discrepancy.
GTOL = 1e-9
#: ... or Newton decrement g' H^-1 g (twice the predicted drop of F) below this.
DECREMENT_TOL = 1e-14
MAX_ITER = 100
MAX_HALVINGS = 30


def sigma(theta: np.ndarray) -> np.ndarray:
    """Implied covariances phi lambda lambda' + diag(psi) of theta (R, 2n + 1)."""
    n = (theta.shape[1] - 1) // 2
    lam, psi, phi = theta[:, :n], theta[:, n : 2 * n], theta[:, -1]
    sig = phi[:, None, None] * lam[:, :, None] * lam[:, None, :]
    i = np.arange(n)
    sig[:, i, i] += psi
    return sig


def cholesky(M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """LAPACK Cholesky factors of a stack of symmetric matrices, never raising.

    Returns the factors (the identity where a matrix is not positive definite) and the
    mask of positive-definite matrices. Each positive-definite matrix is factored by the
    same LAPACK call whatever else is in the stack, so a replication's arithmetic does not
    depend on the batch it is in.
    """
    L, pd = cholesky_stack(M)
    if not pd.all():
        L[~pd] = np.eye(M.shape[1])
    return L, pd


def solve(M: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve M x = b (b of shape (R, k)) for positive-definite stacks, NaN elsewhere."""
    _, pd = cholesky_stack(M)
    x = np.full(b.shape, np.nan)
    rows = np.flatnonzero(pd) if not pd.all() else slice(None)
    sol, ok = solve_stack(M[rows], b[rows][:, :, None])
    x[rows] = np.where(ok[:, None], sol[:, :, 0], np.nan)
    return x


def discrepancy(
    theta: np.ndarray, S: np.ndarray, logdet_s: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """ML discrepancy F = log|Sigma| + tr(S Sigma^-1) - log|S| - n and Sigma^-1.

    F is NaN where Sigma is not positive definite (there Sigma^-1 is the identity).
    """
    n = S.shape[1]
    sig = sigma(theta)
    L, pd = cholesky(sig)
    A = np.broadcast_to(np.eye(n), sig.shape).copy()
    rows = np.flatnonzero(pd) if not pd.all() else slice(None)
    inv, ok = inv_stack(sig[rows])  # LU-singular though Cholesky passed: not PD
    A[rows] = np.where(ok[:, None, None], inv, np.eye(n))
    pd[rows] &= ok
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


def derivatives(
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
    D = A @ (sigma(theta) - S) @ A
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


def newton(
    theta: np.ndarray, S: np.ndarray, logdet_s: np.ndarray, marker: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Minimize F for every replication, with loading ``marker[r]`` fixed at 1.

    Newton steps where the Hessian (free part) is positive definite, Fisher-scoring steps
    otherwise, halved until F does not increase. A replication stops when its largest
    absolute gradient is below ``GTOL`` or its Newton decrement below ``DECREMENT_TOL``
    (the last step then taken in full), when no halving decreases F, or after
    ``MAX_ITER`` iterations. Each replication follows its own path; the others only
    share the array operations.

    Returns
    -------
    theta, F, converged, iterations
    """
    R, k = theta.shape
    theta = theta.copy()
    keep = np.ones((R, k), dtype=bool)
    keep[np.arange(R), marker] = False
    f, A = discrepancy(theta, S, logdet_s)
    active = np.isfinite(f)
    converged = np.zeros(R, dtype=bool)
    iters = np.zeros(R, dtype=int)
    for it in range(MAX_ITER + 1):
        idx = np.flatnonzero(active)
        if not len(idx):
            break
        g_all, info_all, hess_all = derivatives(theta[idx], S[idx], A[idx])
        kp = keep[idx]
        g = _free(g_all, kp)
        step = solve(_free(hess_all, kp), g)
        scoring = np.isnan(step[:, 0])  # Hessian not positive definite
        if scoring.any():
            step[scoring] = solve(_free(info_all[scoring], kp[scoring]), g[scoring])
        stuck = np.isnan(step[:, 0])
        step[stuck] = g[stuck]
        decrement = np.sum(g * step, axis=1)
        gmax = np.max(np.abs(g), axis=1)
        done = (gmax < GTOL) | (np.abs(decrement) < DECREMENT_TOL)
        iters[idx] = it
        if done.any():
            fin = idx[done]
            converged[fin] = True
            active[fin] = False
            # a decrement below the noise of F: take the step without a line search
            take = done & (gmax >= GTOL)
            if take.any():
                t_idx = idx[take]
                cand = theta[t_idx].copy()
                cand[keep[t_idx]] -= step[take].ravel()
                fc, Ac = discrepancy(cand, S[t_idx], logdet_s[t_idx])
                ok = np.isfinite(fc)
                theta[t_idx[ok]], f[t_idx[ok]], A[t_idx[ok]] = cand[ok], fc[ok], Ac[ok]
        if it == MAX_ITER:
            break
        idx, step = idx[~done], step[~done]
        t = np.ones(len(idx))
        pending = np.ones(len(idx), dtype=bool)
        for _ in range(MAX_HALVINGS):
            p = np.flatnonzero(pending)
            if not len(p):
                break
            rows = idx[p]
            cand = theta[rows].copy()
            cand[keep[rows]] -= (t[p, None] * step[p]).ravel()
            fc, Ac = discrepancy(cand, S[rows], logdet_s[rows])
            acc = np.isfinite(fc) & (fc <= f[rows])
            a = rows[acc]
            theta[a], f[a], A[a] = cand[acc], fc[acc], Ac[acc]
            pending[p[acc]] = False
            t[p[~acc]] /= 2
        active[idx[pending]] = False  # no step decreases F: stuck, not converged
    return theta, f, converged, iters


def start(S: np.ndarray, sign: int) -> tuple[np.ndarray, np.ndarray]:
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

