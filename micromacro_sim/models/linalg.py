"""Small batched linear-algebra helpers shared by the kernels."""

from __future__ import annotations

import numpy as np

__all__ = ["is_pd", "solve_batch"]


def is_pd(a: np.ndarray) -> bool:
    """Positive definiteness of a symmetric matrix (Cholesky; NaN is not PD)."""
    if not np.all(np.isfinite(a)):
        return False
    try:
        np.linalg.cholesky((a + a.T) / 2)
    except np.linalg.LinAlgError:
        return False
    return True


def solve_batch(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Solve ``a[r] x = b[r]`` for every r; singular systems give NaN instead of raising.

    Parameters
    ----------
    a : ndarray (R, k, k)
    b : ndarray (R, k) or (R, k, j)

    Returns
    -------
    x : ndarray shaped like ``b`` (NaN where ``a[r]`` is singular)
    singular : ndarray of bool (R,)
    """
    vec = b.ndim == 2
    rhs = b[..., None] if vec else b
    singular = np.zeros(a.shape[0], dtype=bool)
    try:
        x = np.linalg.solve(a, rhs)
    except np.linalg.LinAlgError:  # rare: find the singular systems one by one
        x = np.full(rhs.shape, np.nan)
        for r in range(a.shape[0]):
            try:
                x[r] = np.linalg.solve(a[r], rhs[r])
            except np.linalg.LinAlgError:
                singular[r] = True
    return (x[..., 0] if vec else x), singular
