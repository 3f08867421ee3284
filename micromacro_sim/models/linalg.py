"""Small batched linear-algebra helpers shared by the kernels.

Every helper computes each replication's result with an order of operations that does
not depend on how many other replications share the stack, nor on the padding of
unbalanced groups, so a replication's numbers are the same in any batch.
"""

from __future__ import annotations

import numpy as np

__all__ = ["is_pd", "member_sums", "quad_form", "solve_batch"]


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

    Notes
    -----
    LAPACK solves each system on its own, so ``x[r]`` does not depend on the others.
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


def member_sums(x: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Sums over the members of each group of a padded stack, independent of the padding.

    Parameters
    ----------
    x : ndarray (R, G, m)
        Member values in the first ``sizes[r, g]`` slots of each group (m >= every size).
    sizes : ndarray (R, G)

    Returns
    -------
    ndarray (R, G)
        ``x[r, g, :sizes[r, g]].sum()`` (numpy's pairwise sum over exactly the members):
        bitwise what ``x.sum(axis=2)`` gives for a balanced stack of that group size, and
        unchanged by the width m a batch pads to (a plain sum over the padded axis is
        not: its pairwise blocks move with m).
    """
    out = np.empty(sizes.shape)
    for s in np.unique(sizes):
        sel = sizes == s
        out[sel] = x[sel][:, : int(s)].sum(axis=-1)
    return out


def quad_form(a: np.ndarray, m: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a[r]' m[r] b[r]`` for every r, accumulated in a fixed order.

    Parameters
    ----------
    a, b : ndarray (R, k)
    m : ndarray (R, k, k)

    Returns
    -------
    ndarray (R,)
        The sum of ``(a_i m_ij) b_j`` over i then j (row-major), from 0. This is the
        order ``np.einsum("ri,rij,rj->r", ...)`` uses for a stack of two or more; for a
        stack of one einsum takes another order, so results would depend on the batch.
    """
    out = np.zeros(a.shape[0])
    for i in range(a.shape[1]):
        for j in range(b.shape[1]):
            out = out + a[:, i] * m[:, i, j] * b[:, j]
    return out
