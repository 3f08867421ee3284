"""Starting values of the FIML one-factor CFA (:mod:`micromacro_sim.models.cfa_fiml`).

The available-case moments (means over the observed cells, pairwise covariances), the
rank-one fit of a covariance given residual variances, and the positive start (lavaan's
basin: the complete-data fit's positive-start solution on the pairwise covariance).
"""

from __future__ import annotations

import numpy as np

from micromacro_sim.models import cfa_solver as solver
from micromacro_sim.models.cfa_profile_derivs import evaluate as profile
from micromacro_sim.models.cfa_profile_newton import Charts, minimize
from micromacro_sim.models.linalg import cholesky_stack

__all__ = ["available_moments", "positive_start", "rank_one_start"]

_QUIET = {"invalid": "ignore", "over": "ignore", "divide": "ignore", "under": "ignore"}



def available_moments(x: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means over the observed cells and pairwise covariances (R, K), (R, K, K).

    A covariance uses the groups that observe both columns (0 where fewer than two do);
    a variance observed in fewer than two groups is replaced by the mean of the others.
    """
    n = m.sum(axis=1)
    mu = x.sum(axis=1) / n
    dev = (x - mu[:, None, :]) * m
    pairs = np.swapaxes(m, 1, 2) @ m
    with np.errstate(**_QUIET):
        S = np.where(pairs >= 2, (np.swapaxes(dev, 1, 2) @ dev) / pairs, 0.0)
    d, ok = np.diagonal(S, axis1=1, axis2=2), n >= 2
    fill = np.sum(d * ok, axis=1) / np.maximum(ok.sum(axis=1), 1)
    i = np.arange(d.shape[1])
    S[:, i, i] = np.where(ok, d, np.where(fill > 0, fill, 1.0)[:, None])
    return mu, S


def rank_one_start(S: np.ndarray, psi: np.ndarray, sign: int) -> tuple[np.ndarray, np.ndarray]:
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


def positive_start(S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lambda, psi, phi) and marker of the positive start: the solution of the
    complete-data fit's positive start on S (:mod:`.cfa_profile`: profiled ML from the
    first principal component, confined to the positive branch), where that one does not
    run to infinity (S is only a proxy with missing cells); else the component itself."""
    R, K, _ = S.shape
    d = np.diagonal(S, axis1=1, axis2=2)
    c = S / np.sqrt(d[:, :, None] * d[:, None, :])  # shrunk to positive definite if needed
    low = np.linalg.eigvalsh(c)[:, 0]
    lam = np.where(low < 1e-3, (1e-3 - low) / (1.0 - low), 0.0)[:, None, None]
    S = np.where(np.eye(K, dtype=bool), S, (1.0 - lam) * S)
    L = cholesky_stack(S)[0]
    w0 = np.zeros(R, dtype=bool)
    runs = minimize(solver.start(S, 1)[0][:, K : 2 * K], w0, L, d, ~w0)
    p, w = runs.p, runs.wchart
    prof = profile(p, w, Charts(L, d, R).basis(np.arange(R), w))
    with np.errstate(**_QUIET):
        mu0 = np.where(w, 1.0 / prof.ev[:, 0], prof.ev[:, 0])
        a = (L @ prof.U[:, :, :1])[:, :, 0]
        k = np.argmax(np.abs(a), axis=1)
        ak = a[np.arange(R), k]
        th = np.concatenate([a / ak[:, None], np.where(w[:, None], 1.0 / p, p),
                             ((1.0 - mu0) * ak**2)[:, None]], axis=1)
    bad = runs.released | ~np.all(np.isfinite(th), axis=1)
    th[bad], k[bad] = solver.start(S[bad], 1)
    return th, k
