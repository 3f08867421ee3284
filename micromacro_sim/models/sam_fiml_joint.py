"""The joint model behind local SAM's two-step standard errors on incomplete members.

lavaan's ``sam()`` computes its ``se = "twostep"`` standard errors from the information
matrix of the joint model (measurement and structural parts together) evaluated at the
step-1 and step-2 estimates, on the raw data with ``missing = "ml"``:
V = I22^-1 / N + I22^-1 I21 Sigma11 I12 I22^-1, with Sigma11 the covariance of the
step-1 estimates from the measurement fit (its rows of the factor variance zeroed, since
the structural step re-estimates it). Under ``missing = "ml"`` lavaan's default
information is ``"observed"`` (the Hessian of the FIML log-likelihood, for both steps);
``information = "expected"`` gives the pattern-wise expected information.

Joint parameters, in this order: nu_1..nu_K (step 1), v (step 1), b_lv, b_z (q), psi_y,
vech(Phi) of (lv, Z) (lower triangle, row by row), alpha_y, alpha_z (q); the variables
are x_1..x_K, y, Z_1..Z_q. The mean of lv is fixed at 0, so E(x_k) = nu_k,
E(y) = alpha_y + b_z' alpha_z, E(Z) = alpha_z. lavaan does not map the structural
intercepts back into the joint model: alpha_y and alpha_z keep their start values, the
sample means of y and Z, and the information is evaluated there.
"""

from __future__ import annotations

import numpy as np

from micromacro_sim.models.sam_fiml_lik import fiml_derivatives

__all__ = ["joint_model", "twostep_vcov"]


def joint_model(K: int, nu: np.ndarray, v: float, coef: np.ndarray, psi_y: float,
                phi: np.ndarray, alpha_y: float, alpha_z: np.ndarray) -> tuple[np.ndarray, ...]:
    """Mean, covariance and their first and second derivatives at the joint parameters.

    Returns
    -------
    mu (P,), sigma (P, P), dmu (m, P), dsig (m, P, P), d2mu (m, m, P), d2sig (m, m, P, P)
    """
    k = len(coef)
    q = k - 1
    P = K + 1 + q
    iy = K
    rows, cols = np.tril_indices(k)
    m = K + 1 + k + 1 + len(rows) + 1 + q
    i_v, i_c, i_psi = K, K + 1, K + 1 + k
    i_phi, i_ay = i_psi + 1, i_psi + 1 + len(rows)
    i_az = i_ay + 1
    A = np.zeros((P, k))
    A[:K, 0] = 1.0
    A[iy] = coef
    A[iy + 1 :, 1:] = np.eye(q)
    ap = A @ phi
    sigma = ap @ A.T
    sigma[np.arange(K), np.arange(K)] += v
    sigma[iy, iy] += psi_y
    mu = np.concatenate([nu, [alpha_y + coef[1:] @ alpha_z], alpha_z])
    dmu = np.zeros((m, P))
    dmu[:K, :K] = np.eye(K)
    dmu[i_ay, iy] = 1.0
    dmu[i_az + np.arange(q), iy + 1 + np.arange(q)] = 1.0
    dmu[i_az + np.arange(q), iy] = coef[1:]
    dmu[i_c + 1 + np.arange(q), iy] = alpha_z
    d2mu = np.zeros((m, m, P))
    d2mu[i_c + 1 + np.arange(q), i_az + np.arange(q), iy] = 1.0
    d2mu[i_az + np.arange(q), i_c + 1 + np.arange(q), iy] = 1.0
    dsig = np.zeros((m, P, P))
    dsig[i_v, np.arange(K), np.arange(K)] = 1.0
    for i in range(k):
        dsig[i_c + i, iy, :] += ap[:, i]
        dsig[i_c + i, :, iy] += ap[:, i]
    dsig[i_psi, iy, iy] = 1.0
    d2sig = np.zeros((m, m, P, P))
    for t, (i, j) in enumerate(zip(rows, cols, strict=True)):
        E = np.zeros((k, k))
        E[i, j] = E[j, i] = 1.0
        dsig[i_phi + t] = A @ E @ A.T
        for c in range(k):  # d/dc of the y row and column of A E A'
            w = A @ E[:, c]
            d2sig[i_c + c, i_phi + t, iy, :] += w
            d2sig[i_c + c, i_phi + t, :, iy] += w
            d2sig[i_phi + t, i_c + c] = d2sig[i_c + c, i_phi + t]
    d2sig[i_c : i_c + k, i_c : i_c + k, iy, iy] = 2 * phi
    return mu, sigma, dmu, dsig, d2mu, d2sig


def twostep_vcov(data: np.ndarray, mask: np.ndarray, model: tuple[np.ndarray, ...],
                 K: int, sigma11: np.ndarray, *, information: str) -> np.ndarray:
    """lavaan's two-step covariance of the structural parameters.

    Parameters
    ----------
    data, mask : ndarray (G, P)
        [x_1..x_K, y, Z] and its observed cells.
    model : tuple
        :func:`joint_model` at the estimates.
    K : int
        Member positions; the first K + 1 joint parameters (nu, v) are step 1.
    sigma11 : ndarray (K + 1, K + 1)
        Covariance of the step-1 estimates (nu, v).
    information : {"observed", "expected"}

    Returns
    -------
    ndarray (m - K - 1, m - K - 1)
        Covariance of (b_lv, b_z, psi_y, vech(Phi), alpha_y, alpha_z): the inverse of the
        step-2 block of the (total) information plus the step-1 term.
    """
    _, _, info = fiml_derivatives(data, mask, *model, information=information)
    s1 = slice(0, K + 1)
    s2 = slice(K + 1, info.shape[0])
    i22_inv = np.linalg.inv(info[s2, s2])
    g = i22_inv @ info[s2, s1]
    return i22_inv + g @ sigma11 @ g.T
