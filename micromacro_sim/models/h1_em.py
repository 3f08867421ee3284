"""Saturated (h1) normal moments of incomplete data by EM, as lavaan computes them.

lavaan's ``missing = "ml"`` estimates the unrestricted means and covariances of the
observed variables with ``lav_mvnorm_missing_h1_estimate_moments`` (lavaan 0.6.14),
and :func:`em_moments` repeats that algorithm step for step so that its numbers agree
with lavaan's to rounding, including where EM has not fully converged:

* start: the available-case means and ML variances (denominator: the observed count),
  zero covariances; a variance that is zero or not finite starts at 1;
* E-step (``lav_mvnorm_missing_estep``): each row's missing values are replaced by their
  conditional means given its observed values, and the conditional covariance is added
  to the cross-products (computed through the precision matrix, see :func:`_em_step`:
  the same quantities, rounded differently);
* M-step: mu = T1 / N, Sigma = T2 / N - mu mu' (N: rows with at least one observed
  value); when an eigenvalue of Sigma is below 1e-6, ``max(diag(Sigma)) * 1e-8`` is
  added to its diagonal;
* stop when the largest absolute change of (mu, vech(Sigma)) is below ``tol`` (1e-5,
  lavaan's ``em.h1.tol``) or after ``max_iter`` (500, ``em.h1.iter.max``) iterations.

lavaan warns (``em.h1.warn``) when the iteration limit is reached and when the smallest
eigenvalue of the final Sigma is below 1e-5; :class:`EMMoments` records both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["EMMoments", "em_moments", "padded_inverse"]

#: lavaan's defaults: em.h1.tol, em.h1.iter.max; the ridge and warning thresholds.
EM_TOL, EM_MAX_ITER = 1e-5, 500
_RIDGE_EIGEN, _WARN_EIGEN = 1e-6, 1e-5


@dataclass(frozen=True)
class EMMoments:
    """Saturated ML moments of incomplete data.

    Attributes
    ----------
    mu : ndarray (P,)
    sigma : ndarray (P, P)
    n_iter : int
        EM iterations run.
    converged : bool
        The change fell below the tolerance before the iteration limit (lavaan warns
        otherwise).
    min_eigen : float
        Smallest eigenvalue of ``sigma`` (lavaan warns when it is below 1e-5).
    n_obs : int
        Rows with at least one observed value.
    """

    mu: np.ndarray
    sigma: np.ndarray
    n_iter: int
    converged: bool
    min_eigen: float
    n_obs: int

    @property
    def near_singular(self) -> bool:
        """lavaan's warning: the smallest eigenvalue of Sigma is below 1e-5."""
        return not self.min_eigen >= _WARN_EIGEN


def _pattern_inverse(sigma: np.ndarray, pats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Zero-padded inverses of the observed blocks of each pattern, and the matrices
    inverted (the missing rows and columns replaced by those of the identity)."""
    both = pats[:, :, None] & pats[:, None, :]
    a = np.where(both, sigma, np.eye(pats.shape[1]))
    Wp = np.linalg.inv(a)
    Wp[~both] = 0.0
    return Wp, a


def padded_inverse(sigma: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of each row's observed block of ``sigma``, zero-padded to P x P.

    Parameters
    ----------
    sigma : ndarray (P, P)
        Covariance matrix.
    mask : ndarray of bool (N, P)
        Observed cells.

    Returns
    -------
    W : ndarray (N, P, P)
        ``W[i]`` holds the inverse of ``sigma[O_i, O_i]`` in the rows and columns O_i,
        zeros elsewhere (one inverse per distinct pattern).
    logdet : ndarray (N,)
        log-determinant of each observed block (NaN where it is not positive definite).
    """
    pats, inv = np.unique(mask, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    Wp, a = _pattern_inverse(sigma, pats)
    sign, ld = np.linalg.slogdet(a)
    return Wp[inv], np.where(sign > 0, ld, np.nan)[inv]


def _start(x: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """lavaan's start: available-case means and ML variances, zero covariances."""
    count = mask.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mu = np.where(mask, x, 0.0).sum(axis=0) / count
        dev = np.where(mask, x - mu, 0.0)
        var = (dev**2).sum(axis=0) / count
    var = np.where(np.isfinite(var) & (var != 0), var, 1.0)
    return mu, np.diag(var)


def _missing_index(mask: np.ndarray) -> np.ndarray:
    """Each row's missing columns, padded to the largest count with the distinct
    sentinel columns d, d + 1, ... (an identity block appended to the precision matrix,
    so that padding leaves each row's own block and its inverse unchanged), (n, m_max)."""
    miss = ~mask
    n, d = mask.shape
    m_max = int(miss.sum(axis=1).max(initial=0))
    idx = np.empty((n, m_max), dtype=np.int64)
    for i in range(n):
        cols = np.flatnonzero(miss[i])
        idx[i, :len(cols)] = cols
        idx[i, len(cols):] = d + np.arange(len(cols), m_max)
    return idx


def _em_step(x: np.ndarray, mask: np.ndarray, idx: np.ndarray, mu: np.ndarray,
             sigma: np.ndarray) -> tuple[np.ndarray, ...]:
    """One E- and M-step over the rows (no empty rows; ``idx`` from
    :func:`_missing_index`).

    The E-step through the precision matrix P = Sigma^-1: given the observed cells O, the
    missing cells M have covariance (P_MM)^-1 and mean mu_M - (P_MM)^-1 P_MO r_O (the
    same as Sigma_MM - Sigma_MO Sigma_OO^-1 Sigma_OM and mu_M + Sigma_MO Sigma_OO^-1 r_O,
    with one d x d inverse per step and a small one per row instead of a d x d one per
    pattern).
    """
    n, d = x.shape
    m_max = idx.shape[1]
    P = np.linalg.inv(sigma)
    Pe = np.eye(d + m_max)
    Pe[:d, :d] = (P + P.T) / 2
    r = np.where(mask, x - mu, 0.0)
    Pr = np.zeros((n, d + m_max))
    Pr[:, :d] = r @ P
    full = np.zeros((n, d + m_max))
    full[:, :d] = np.where(mask, x, 0.0)
    csum = np.zeros((d + m_max, d + m_max))
    if m_max:
        C = np.linalg.inv(Pe[idx[:, :, None], idx[:, None, :]])
        prm = np.take_along_axis(Pr, idx, axis=1)
        mue = np.concatenate([mu, np.zeros(m_max)])
        cond = mue[idx] - np.matmul(C, prm[:, :, None])[:, :, 0]
        np.put_along_axis(full, idx, cond, axis=1)
        D = d + m_max
        lin = (idx[:, :, None] * D + idx[:, None, :]).ravel()
        csum = np.bincount(lin, weights=C.ravel(), minlength=D * D).reshape(D, D)
    full, csum = full[:, :d], csum[:d, :d]
    mu_new = full.sum(axis=0) / n
    sig_new = (full.T @ full + csum) / n - np.outer(mu_new, mu_new)
    sig_new = (sig_new + sig_new.T) / 2
    if np.min(np.linalg.eigvalsh(sig_new)) < _RIDGE_EIGEN:
        sig_new[np.diag_indices_from(sig_new)] += np.max(np.diag(sig_new)) * 1e-8
    return mu_new, sig_new


def em_moments(x: np.ndarray, mask: np.ndarray, *, tol: float = EM_TOL,
               max_iter: int = EM_MAX_ITER) -> EMMoments:
    """Saturated normal ML means and covariances of incomplete data (lavaan's EM).

    Parameters
    ----------
    x : ndarray (N, P)
        Data; cells where ``mask`` is False are ignored (they may hold NaN).
    mask : ndarray of bool (N, P)
        Observed cells. Rows with no observed cell are dropped (as lavaan does).
    tol, max_iter : float, int
        Stopping rule: the largest absolute change of (mu, vech(Sigma)) below ``tol``,
        or ``max_iter`` iterations.

    Returns
    -------
    EMMoments
    """
    x = np.asarray(x, dtype=float)
    mask = np.asarray(mask, dtype=bool)
    keep = mask.any(axis=1)
    x, mask = x[keep], mask[keep]
    n_obs = int(keep.sum())
    idx = _missing_index(mask)
    mu0, sig0 = _start(x, mask)
    tri = np.tril_indices(x.shape[1])
    n_iter, converged = 0, False
    while n_iter < max_iter and not converged:
        n_iter += 1
        mu, sig = _em_step(x, mask, idx, mu0, sig0)
        delta = max(np.max(np.abs(mu - mu0)), np.max(np.abs(sig[tri] - sig0[tri])))
        converged = bool(delta < tol)
        mu0, sig0 = mu, sig
    return EMMoments(mu=mu, sigma=sig, n_iter=n_iter, converged=converged,
                     min_eigen=float(np.min(np.linalg.eigvalsh(sig))), n_obs=n_obs)
