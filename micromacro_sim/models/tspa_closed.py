"""The closed-form stage 2 of two-stage path analysis, and the OLS moments it rests on.

When every group of a replication has the same error variance (complete balanced data),
the stage-2 model of :mod:`micromacro_sim.models.tspa` is a one-to-one reparameterisation of
the saturated bivariate normal regression of (s, y) on (1, z): its ML and observed
information need no iteration (:func:`closed_form`). The functions take the stage-2 data
laid out groups first (``s``, ``y``, ``ev`` (G, R); ``zt`` (G, R, m); ``zz`` (G, R, m, m);
``m``), as :mod:`~micromacro_sim.models.tspa` builds it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from micromacro_sim.models.linalg import dot_last, inv_stack, solve_stack, sum_first

__all__ = ["BOUND_TOL", "closed_form", "ols_moments"]

#: Relative size at or below which psi or s2e counts as on the zero bound.
BOUND_TOL = 1e-6


def ols_moments(d: Any) -> tuple[np.ndarray, ...]:
    """OLS of s and y on (1, z): X'X, alpha, beta and the residual moments (over G)."""
    xtx = sum_first(d.zz)
    xts = sum_first(d.zt * d.s[:, :, None])
    xty = sum_first(d.zt * d.y[:, :, None])
    coef, _ = solve_stack(xtx, np.stack([xts, xty], axis=2))
    alpha, beta = coef[:, :, 0], coef[:, :, 1]
    e1 = d.s - dot_last(d.zt, alpha[None])
    e2 = d.y - dot_last(d.zt, beta[None])
    G = d.s.shape[0]
    sss, ssy, syy = sum_first(e1 * e1) / G, sum_first(e1 * e2) / G, sum_first(e2 * e2) / G
    return xtx, alpha, beta, sss, ssy, syy


def closed_form(d: Any, moments: tuple[np.ndarray, ...] | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The exact ML and its observed-information covariance when every group of a
    replication has the same error variance (complete balanced data).

    The model is then a one-to-one reparameterisation of the saturated bivariate normal
    regression of (s, y) on (1, z): the ML is the OLS coefficients with the residual
    moments S (over G), ``psi = S11 - ev``, ``b = S12 / psi``, ``s2e = S22 - b^2 psi``.
    At that optimum the observed information equals the expected one: the coefficients
    have covariance ``S kron inv(X'X)``, the moments ``(2/G) D+ (S kron S) D+'``, and the
    two blocks are uncorrelated; the delta method carries the moments to (psi, b, s2e).

    Parameters
    ----------
    d : stage-2 data (see the module docstring)
    moments : tuple of ndarray, optional
        :func:`ols_moments` of ``d`` when the caller has them (computed otherwise).

    Returns
    -------
    theta : ndarray (R, 2m + 3)
    cov : ndarray (R, 2m + 3, 2m + 3)
        Covariance of theta (``2 inv(H)`` of the iterative path).
    interior : ndarray of bool (R,)
        psi and s2e are positive: the closed form is the ML (else the iterative path
        finds the boundary optimum).
    """
    xtx, alpha, beta, A, C, V = ols_moments(d) if moments is None else moments
    G, m = d.s.shape[0], d.m
    psi = A - d.ev[0]
    b = C / psi
    s2e = V - b * b * psi
    interior = ((psi > BOUND_TOL * (np.abs(psi) + d.ev[0]))
                & (s2e > BOUND_TOL * (s2e + b * b * np.abs(psi))))
    W, _ = inv_stack(xtx)
    R, k = A.shape[0], 2 * m + 3
    cov = np.zeros((R, k, k))
    for (i, j), s_ij in (((0, 0), A), ((1, 1), V), ((0, 1), C), ((1, 0), C)):
        cov[:, i * m:(i + 1) * m, j * m:(j + 1) * m] = s_ij[:, None, None] * W
    vech = np.stack([np.stack([2 * A * A, 2 * A * C, 2 * C * C], 1),
                     np.stack([2 * A * C, A * V + C * C, 2 * C * V], 1),
                     np.stack([2 * C * C, 2 * C * V, 2 * V * V], 1)], 1) / G
    one, zero = np.ones(R), np.zeros(R)
    J = np.stack([np.stack([one, zero, zero], 1),
                  np.stack([-b / psi, 1 / psi, zero], 1),
                  np.stack([b * b, -2 * b, one], 1)], 1)  # d(psi, b, s2e) / d(A, C, V)
    cov[:, 2 * m:, 2 * m:] = J @ vech @ J.transpose(0, 2, 1)
    theta = np.concatenate([alpha, beta, np.stack([psi, b, s2e], axis=1)], axis=1)
    return theta, cov, interior
