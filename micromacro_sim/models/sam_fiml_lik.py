"""The normal full-information (FIML) log-likelihood of incomplete data and its derivatives.

Each row i contributes the normal log-density of its observed cells O_i with mean
mu(theta)[O_i] and covariance Sigma(theta)[O_i, O_i]. With W_i the zero-padded inverse of
the observed block (:func:`~micromacro_sim.models.h1_em.padded_inverse`) and r_i the
zero-padded residual, every formula of complete data holds with W_i in place of
Sigma^-1:

* gradient: -1/2 tr(W Sigma_a) + 1/2 r'W Sigma_a W r + mu_a' W r;
* observed information (minus the Hessian):
  1/2 tr(W Sigma_a W Sigma_b) - 1/2 tr(W Sigma_ab) - r'W Sigma_a W Sigma_b W r ... with the
  mean terms, see :func:`fiml_derivatives`;
* expected information (lavaan's ``h1.information = "structured"`` for missing data:
  the expectation given each row's pattern): 1/2 tr(W Sigma_a W Sigma_b) + mu_a' W mu_b.

Sums over rows; lavaan's unit information is this total divided by the row count.
"""

from __future__ import annotations

import numpy as np

from micromacro_sim.models.h1_em import padded_inverse

__all__ = ["fiml_derivatives", "fiml_loglik"]

INFORMATION = ("observed", "expected")


def fiml_loglik(x: np.ndarray, mask: np.ndarray, mu: np.ndarray,
                sigma: np.ndarray) -> float:
    """FIML log-likelihood (with the 2 pi constant); -inf where an observed block of
    ``sigma`` is not positive definite."""
    W, logdet = padded_inverse(sigma, mask)
    if not np.all(np.isfinite(logdet)):
        return -np.inf
    r = np.where(mask, x - mu, 0.0)
    quad = np.einsum("ni,nij,nj->", r, W, r)
    return float(-0.5 * (logdet.sum() + quad + mask.sum() * np.log(2 * np.pi)))


def _nonzero(d: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.any(d.reshape(d.shape[0], -1) != 0, axis=1))


def fiml_derivatives(x: np.ndarray, mask: np.ndarray, mu: np.ndarray, sigma: np.ndarray,
                     dmu: np.ndarray, dsig: np.ndarray, d2mu: np.ndarray | None = None,
                     d2sig: np.ndarray | None = None, *,
                     information: str = "observed") -> tuple[float, np.ndarray, np.ndarray]:
    """FIML log-likelihood, gradient and information matrix (totals over rows).

    Parameters
    ----------
    x : ndarray (N, P)
        Data (cells where ``mask`` is False are ignored).
    mask : ndarray of bool (N, P)
        Observed cells.
    mu, sigma : ndarray (P,), (P, P)
        Model mean and covariance at theta.
    dmu, dsig : ndarray (m, P), (m, P, P)
        First derivatives with respect to the m parameters.
    d2mu, d2sig : ndarray (m, m, P), (m, m, P, P), optional
        Second derivatives (zero when omitted); used by the observed information only.
    information : {"observed", "expected"}
        Minus the Hessian of the log-likelihood, or its expectation given each row's
        missing-data pattern.

    Returns
    -------
    loglik : float
    grad : ndarray (m,)
    info : ndarray (m, m)
    """
    if information not in INFORMATION:
        raise ValueError(f"information: expected one of {INFORMATION}, got {information!r}")
    N, P = mask.shape
    m = dmu.shape[0]
    W, logdet = padded_inverse(sigma, mask)
    r = np.where(mask, x - mu, 0.0)
    s = np.einsum("nij,nj->ni", W, r)  # W r
    w_sum, s_sum = W.sum(axis=0), s.sum(axis=0)
    ss = s.T @ s
    loglik = float(-0.5 * (logdet.sum() + np.sum(r * s) + mask.sum() * np.log(2 * np.pi)))
    half = 0.5 * (ss - w_sum)
    grad = np.einsum("aij,ij->a", dsig, half) + dmu @ s_sum
    cov = _nonzero(dsig)  # parameters that move Sigma
    ds = dsig[cov]
    B = np.einsum("nij,ajk->naik", W, ds)  # W Sigma_a
    Bf = B.reshape(N, len(cov), P * P)
    Bt = B.transpose(0, 1, 3, 2).reshape(N, len(cov), P * P)
    tt = np.tensordot(Bf, Bt, axes=([0, 2], [0, 2]))  # sum_i tr(W S_a W S_b)
    info = np.zeros((m, m))
    mean_part = dmu @ w_sum @ dmu.T
    if information == "expected":
        info[np.ix_(cov, cov)] += 0.5 * tt
        return loglik, grad, info + mean_part
    t = np.einsum("aij,nj->nai", ds, s)  # Sigma_a W r
    u = np.einsum("nij,naj->nai", W, t)  # W Sigma_a W r
    hess = np.zeros((m, m))
    hess[np.ix_(cov, cov)] = 0.5 * tt - np.tensordot(t, u, axes=([0, 2], [0, 2]))
    m1 = np.zeros((m, m))
    m1[:, cov] = np.einsum("ai,nbi->ab", dmu, u)  # mu_a' W Sigma_b W r
    hess -= m1 + m1.T + mean_part
    if d2sig is not None:
        hess += np.einsum("abij,ij->ab", d2sig, half)
    if d2mu is not None:
        hess += d2mu @ s_sum
    return loglik, grad, -hess
