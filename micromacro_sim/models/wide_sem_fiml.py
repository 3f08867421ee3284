"""The single-step SEM and the Z-conditional scores by FIML, for absent members (batched).

Both fit the parallel model of :mod:`micromacro_sim.models.parallel_fiml` on the member-
position layout (absent members missing): ``sem`` with y, ``zcond_score``'s measurement
model (``lv ~ Z``) without. On complete balanced data they reach the closed forms of
:mod:`micromacro_sim.models.wide_sem` and :mod:`micromacro_sim.models.moments`; the
methods keep those for such data, bit for bit.

The SEM's parameters in lavaan's terms (the latent mean fixed at 0, Z's mean and
covariance their sample values mu_Z and S_Z, denominator G): b_xi = beta,
b_z = delta - beta Gamma, intercept b0 = c + beta Gamma' mu_Z, Var(lv) = psi +
Gamma' S_Z Gamma. Standard errors: lavaan's default for FIML, the observed information
(the Hessian) of all parameters, by the delta method; Z's part of the likelihood is
separate, with Var(mu_Z) = S_Z / G.

Reference: R ``lavaan::sem(model, data = wide, meanstructure = TRUE, missing = "fiml")``
(sem) and ``lavaan::sem('lv =~ 1*x1 + ...; x1 ~~ v*x1; ...; lv ~ z', missing = "fiml")``
with ``lavPredict()`` (zcond_score).
"""

from __future__ import annotations

import numpy as np

from micromacro_sim.generate.padding import width_classes
from micromacro_sim.models.linalg import inv_stack
from micromacro_sim.models.parallel_fiml import prepare
from micromacro_sim.models.parallel_fiml_fit import ParallelFit, fit_parallel

__all__ = ["sem_fiml", "zcond_fiml"]


def _by_width(x: np.ndarray, mask: np.ndarray, widths: np.ndarray, z: np.ndarray,
              y: np.ndarray | None):
    """Yield (rows, K, ParallelFit) for each set of replications with K positions."""
    for K, rows in width_classes(widths):
        data = prepare(x[rows, :, :K], mask[rows, :, :K], z[rows],
                       None if y is None else y[rows])
        yield rows, K, data, fit_parallel(data)


def _z_moments(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Means (R, q) and ML covariances (R, q, q) of Z."""
    mu = z.mean(axis=1)
    dz = z - mu[:, None, :]
    return mu, (dz[:, :, :, None] * dz[:, :, None, :]).sum(axis=1) / z.shape[1]


def _sem_params(fit: ParallelFit, K: int, q: int, mu_z: np.ndarray, s_zz: np.ndarray,
                G: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Estimates (R, 2 + q), SEs and Var(lv) of the SEM from the parallel fit."""
    m, s = fit.m, fit.s
    gamma, c, delta = m[:, K:K + q], m[:, K + q], m[:, K + q + 1:]
    beta = s[:, 2]
    b0 = c + beta * (gamma * mu_z).sum(axis=1)
    params = np.concatenate([b0[:, None], delta - beta[:, None] * gamma, beta[:, None]], axis=1)
    R, P = m.shape
    n = P + s.shape[1]
    jac = np.zeros((R, 2 + q, n + q))  # rows: b0, b_z, b_xi; columns: m, s, mu_Z
    jac[:, 0, K + q] = 1.0
    jac[:, 0, K:K + q] = beta[:, None] * mu_z
    jac[:, 0, P + 2] = (gamma * mu_z).sum(axis=1)
    jac[:, 0, n:] = beta[:, None] * gamma
    for j in range(q):
        jac[:, 1 + j, K + q + 1 + j] = 1.0
        jac[:, 1 + j, K + j] = -beta
        jac[:, 1 + j, P + 2] = -gamma[:, j]
    jac[:, 1 + q, P + 2] = 1.0
    cov_theta, ok = inv_stack(fit.info)
    cov = np.zeros((R, n + q, n + q))
    cov[:, :n, :n] = cov_theta
    cov[:, n:, n:] = s_zz / G
    V = (jac[:, :, :, None] * cov[:, None, :, :]).sum(axis=2)
    V = (V[:, :, None, :] * jac[:, None, :, :]).sum(axis=3)
    se = np.sqrt(np.diagonal(V, axis1=1, axis2=2))
    se[~ok] = np.nan
    phi = s[:, 1] + (gamma[:, :, None] * s_zz * gamma[:, None, :]).sum(axis=(1, 2))
    return params, se, phi


def sem_fiml(x: np.ndarray, mask: np.ndarray, widths: np.ndarray, y: np.ndarray,
             z: np.ndarray) -> dict[str, np.ndarray]:
    """FIML of the single-step SEM for R replications.

    Parameters
    ----------
    x, mask : ndarray (R, G, Kmax)
        Members' x by position and the observed cells
        (:attr:`~micromacro_sim.generate.batch.Batch.positional`).
    widths : ndarray of int (R,)
        Each replication's own number of positions.
    y : ndarray (R, G)
    z : ndarray (R, G, q)

    Returns
    -------
    dict
        ``params`` and ``se`` (R, 2 + q) in the order intercept, z..., xi; ``converged``,
        ``proper`` (every variance positive: v, psi, sigma2, Var(lv)); ``v``, ``psi_r``,
        ``phi``, ``sigma2``, ``loglik``, ``n_iter`` (R,).
    """
    R, G, _ = x.shape
    q = z.shape[2]
    mu_z, s_zz = _z_moments(z)
    out = {k: np.full((R, 2 + q), np.nan) for k in ("params", "se")}
    for k in ("v", "psi_r", "phi", "sigma2", "loglik"):
        out[k] = np.full(R, np.nan)
    out["converged"] = np.zeros(R, dtype=bool)
    out["n_iter"] = np.zeros(R, dtype=np.int64)
    for rows, K, _, fit in _by_width(x, mask, widths, z, y):
        params, se, phi = _sem_params(fit, K, q, mu_z[rows], s_zz[rows], G)
        out["params"][rows], out["se"][rows], out["phi"][rows] = params, se, phi
        out["v"][rows], out["psi_r"][rows], out["sigma2"][rows] = fit.s[:, 0], fit.s[:, 1], \
            fit.s[:, 3]
        out["loglik"][rows], out["converged"][rows] = fit.loglik, fit.converged
        out["n_iter"][rows] = fit.n_iter
    out["proper"] = ((out["v"] > 0) & (out["psi_r"] > 0) & (out["sigma2"] > 0)
                     & (out["phi"] > 0))
    return out


def zcond_fiml(x: np.ndarray, mask: np.ndarray, widths: np.ndarray,
               z: np.ndarray) -> dict[str, np.ndarray]:
    """Z-conditional regression factor scores by FIML for R replications.

    The score of group g is lavPredict's ``Gamma'Z_g + W_g (xbar_g - mean of nu over its
    observed positions - Gamma'Z_g)``, ``W_g = psi_r / (psi_r + v / k_g)``, plus the mean
    of the position intercepts nu, which puts it on the scale of x (on complete balanced
    data: the closed form's ``mu_x + Gamma'(Z_g - mean Z) + W (xbar_g - m_g)``).

    Returns
    -------
    dict
        ``values`` (R, G) (NaN where psi_r or v is not positive or the fit did not
        converge); ``converged``, ``negative`` (R,) bool; ``v``, ``psi_r`` (R,);
        ``gamma`` (R, q).
    """
    R, G, _ = x.shape
    q = z.shape[2]
    out = {"values": np.full((R, G), np.nan), "v": np.full(R, np.nan),
           "psi_r": np.full(R, np.nan), "gamma": np.full((R, q), np.nan),
           "converged": np.zeros(R, dtype=bool)}
    for rows, K, data, fit in _by_width(x, mask, widths, z, None):
        nu, gamma = fit.m[:, :K], fit.m[:, K:]
        v, psi = fit.s[:, 0, None], fit.s[:, 1, None]
        mean_z = (data.z * gamma[:, None, :]).sum(axis=2)
        nubar = (data.mask * nu[:, None, :]).sum(axis=2) / data.k
        w = psi / (psi + v / data.k)
        values = nu.mean(axis=1)[:, None] + mean_z + w * (data.ubar - nubar - mean_z)
        out["values"][rows] = values
        out["v"][rows], out["psi_r"][rows] = v[:, 0], psi[:, 0]
        out["gamma"][rows], out["converged"][rows] = gamma, fit.converged
    out["negative"] = ~((out["v"] > 0) & (out["psi_r"] > 0))
    out["values"][out["negative"] | ~out["converged"]] = np.nan
    return out
