"""Expected information of the joint SEM behind local SAM's two-step standard errors.

The model (equal loadings 1 on n members, one residual variance v, y ~ lv + Z, Phi the
covariance of (lv, Z)) implies Sigma(theta) for [x_1..x_n, y, Z_1..Z_q] with
theta = (v, b_lv, b_z (q), psi_y, vech(Phi)). The unit expected information is
0.5 tr(S^-1 dS_a S^-1 dS_b): :func:`expected_information` by central differences (one
dataset), :func:`expected_information_batch` from the exact derivatives (a batch).
Sigma is a polynomial of degree <= 3 in theta, so the two agree to about 1e-10.
"""

from __future__ import annotations

import numpy as np

from micromacro_sim.models.linalg import solve_batch

__all__ = ["expected_information", "expected_information_batch", "sigma"]


def sigma(theta: np.ndarray, n: int, q: int) -> np.ndarray:
    """Model covariance of [x_1..x_n, y, Z_1..Z_q] at ``theta``."""
    k = q + 1
    v, b = theta[0], theta[1 : 2 + q]
    psi_y = theta[2 + q]
    phi = np.zeros((k, k))
    phi[np.tril_indices(k)] = theta[3 + q :]
    phi = phi + np.tril(phi, -1).T
    A = np.zeros((n + 1 + q, k))
    A[:n, 0] = 1.0
    A[n, :] = b
    A[n + 1 :, 1:] = np.eye(q)
    S = A @ phi @ A.T
    S[np.arange(n), np.arange(n)] += v
    S[n, n] += psi_y
    return S


def expected_information(theta: np.ndarray, n: int, q: int, h: float = 1e-5) -> np.ndarray:
    """Unit expected information at ``theta``, derivatives by central differences
    (truncation error O(h^2 * third derivative), about 1e-10)."""
    Si = np.linalg.inv(sigma(theta, n, q))
    m = len(theta)
    d = []
    for a in range(m):
        e = np.zeros(m)
        e[a] = h
        d.append(Si @ ((sigma(theta + e, n, q) - sigma(theta - e, n, q)) / (2 * h)))
    info = np.empty((m, m))
    for a in range(m):
        for b in range(a, m):
            info[a, b] = info[b, a] = 0.5 * np.sum(d[a] * d[b].T)
    return info


def expected_information_batch(v: np.ndarray, coef: np.ndarray, psi_y: np.ndarray,
                               phi: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit expected information of every replication, exact derivatives of Sigma.

    Parameters
    ----------
    v, psi_y : ndarray (R,)
    coef : ndarray (R, k)
        (b_lv, b_z) with k = q + 1.
    phi : ndarray (R, k, k)
    n : int
        Members per group.

    Returns
    -------
    info : ndarray (R, m, m), m = 2 + k + k(k + 1)/2
    singular : ndarray of bool (R,)
        Replications with a singular Sigma (``info`` is NaN there).
    """
    R, k = coef.shape
    q = k - 1
    P = n + 1 + q
    A = np.zeros((R, P, k))
    A[:, :n, 0] = 1.0
    A[:, n, :] = coef
    A[:, n + 1 :, 1:] = np.eye(q)
    ap = A @ phi  # (R, P, k)
    S = ap @ A.transpose(0, 2, 1)
    S[:, np.arange(n), np.arange(n)] += v[:, None]
    S[:, n, n] += psi_y
    rows, cols = np.tril_indices(k)
    m = 2 + k + len(rows)
    dS = np.zeros((R, m, P, P))
    dS[:, 0, np.arange(n), np.arange(n)] = 1.0
    for j in range(k):
        dS[:, 1 + j, n, :] += ap[:, :, j]
        dS[:, 1 + j, :, n] += ap[:, :, j]
    dS[:, 1 + k, n, n] = 1.0
    for t, (i, j) in enumerate(zip(rows, cols, strict=True)):
        outer = A[:, :, i, None] * A[:, None, :, j]
        dS[:, 2 + k + t] = outer if i == j else outer + outer.transpose(0, 2, 1)
    Si, singular = solve_batch(S, np.broadcast_to(np.eye(P), S.shape))
    D = (Si[:, None] @ dS).reshape(R, m, P * P)
    Dt = D.reshape(R, m, P, P).transpose(0, 1, 3, 2).reshape(R, m, P * P)
    return 0.5 * D @ Dt.transpose(0, 2, 1), singular
