"""Small batched linear-algebra helpers shared by the kernels.

Every helper computes each replication's result with an order of operations that does
not depend on how many other replications share the stack, nor on the padding of
unbalanced groups, so a replication's numbers are the same in any batch.
"""

from __future__ import annotations

import numpy as np

try:  # numpy's stacked LAPACK gufuncs: one call, failed matrices NaN-filled, no raise
    from numpy.linalg import _umath_linalg as _gufuncs
except ImportError:  # pragma: no cover - every numpy this package supports has them
    _gufuncs = None

__all__ = ["backward_small", "cholesky_small", "cholesky_stack", "dot_last", "forward_small",
           "inv_stack", "is_pd", "quad_form", "solve_batch", "solve_stack", "sum_first"]

_QUIET = {"invalid": "ignore", "over": "ignore", "divide": "ignore", "under": "ignore"}


def is_pd(a: np.ndarray) -> bool:
    """Positive definiteness of a symmetric matrix (Cholesky; NaN is not PD)."""
    if not np.all(np.isfinite(a)):
        return False
    try:
        np.linalg.cholesky((a + a.T) / 2)
    except np.linalg.LinAlgError:
        return False
    return True


def _per_matrix(fn, a: np.ndarray, rows: np.ndarray, out: np.ndarray,
                ok: np.ndarray, *args: np.ndarray) -> None:
    """Redo ``rows`` one matrix at a time with numpy's public function (its verdict)."""
    for r in rows:
        try:
            out[r] = fn(a[r], *(x[r] for x in args))
            ok[r] = True
        except np.linalg.LinAlgError:
            ok[r] = False


def cholesky_stack(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lower Cholesky factors of a stack (R, k, k) in one LAPACK loop, never raising.

    Returns the factors (NaN-filled where a matrix is not positive definite) and the mask
    of the matrices numpy's :func:`numpy.linalg.cholesky` accepts. Each factor is the
    one that function gives for that matrix alone (the same ``potrf`` call), so nothing
    depends on the rest of the stack. numpy fills a failed matrix with NaN and zeroes the
    upper triangle of a factored one, which tells the two apart in a single call; only
    1 x 1 stacks with NaN need a second look.
    """
    m = np.asarray(m, dtype=float)
    if _gufuncs is None or m.shape[0] == 0:
        return _cholesky_loop(m)
    with np.errstate(**_QUIET):
        L = _gufuncs.cholesky_lo(m, signature="d->d")
    k = m.shape[-1]
    if k >= 2:
        return L, ~np.isnan(L[:, 0, k - 1])
    ok = ~np.isnan(L[:, 0, 0])
    _per_matrix(np.linalg.cholesky, m, np.flatnonzero(~ok), L, ok)
    return L, ok


def _cholesky_loop(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    L = np.full(m.shape, np.nan)
    ok = np.zeros(m.shape[0], dtype=bool)
    _per_matrix(np.linalg.cholesky, m, np.arange(m.shape[0]), L, ok)
    return L, ok


def inv_stack(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverses of a stack (R, k, k) in one LAPACK loop, never raising.

    Returns the inverses and the mask of matrices numpy's :func:`numpy.linalg.inv`
    accepts (NaN-filled where it would raise). Same ``gesv`` call per matrix as that
    function, so each inverse does not depend on the rest of the stack; a matrix whose
    inverse holds some but not all NaN (non-finite input) is redone alone for numpy's
    verdict.
    """
    m = np.asarray(m, dtype=float)
    if _gufuncs is None or m.shape[0] == 0:
        out, ok = np.full(m.shape, np.nan), np.zeros(m.shape[0], dtype=bool)
        _per_matrix(np.linalg.inv, m, np.arange(m.shape[0]), out, ok)
        return out, ok
    with np.errstate(**_QUIET):
        out = _gufuncs.inv(m, signature="d->d")
    return out, _verdict(np.linalg.inv, m, out)


def solve_stack(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Solve ``a[r] x = b[r]`` (b of shape (R, k, j)) in one LAPACK loop, never raising.

    Returns the solutions (NaN-filled where :func:`numpy.linalg.solve` would raise) and
    the mask of systems it accepts; the same ``gesv`` call per system as that function.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if _gufuncs is None or a.shape[0] == 0:
        out, ok = np.full(b.shape, np.nan), np.zeros(a.shape[0], dtype=bool)
        _per_matrix(np.linalg.solve, a, np.arange(a.shape[0]), out, ok, b)
        return out, ok
    with np.errstate(**_QUIET):
        out = _gufuncs.solve(a, b, signature="dd->d")
    return out, _verdict(np.linalg.solve, a, out, b)


def _verdict(fn, a: np.ndarray, out: np.ndarray, *args: np.ndarray) -> np.ndarray:
    """Accepted systems: a failed one is all NaN; a partly-NaN one is redone alone."""
    nan = np.isnan(out)
    some = nan.any(axis=tuple(range(1, out.ndim)))
    ok = ~some
    if some.any():
        full = nan.all(axis=tuple(range(1, out.ndim)))
        # all NaN is numpy's failure fill, unless the input itself was not finite
        finite = np.isfinite(a).all(axis=(1, 2))
        _per_matrix(fn, a, np.flatnonzero(some & ~(full & finite)), out, ok, *args)
    return ok


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
    x, ok = solve_stack(a, rhs)
    return (x[..., 0] if vec else x), ~ok


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


def cholesky_small(a: np.ndarray) -> np.ndarray:
    """Lower Cholesky factors of a stack (..., k, k) of small positive definite matrices,
    written out elementwise: each factor comes from its own matrix only, in a fixed order
    of operations (and for k <= 6 faster than LAPACK per matrix). Not PD: NaN entries."""
    k = a.shape[-1]
    L = np.zeros_like(a)
    with np.errstate(invalid="ignore"):
        for j in range(k):
            d = a[..., j, j].copy()
            for p in range(j):
                d -= L[..., j, p] * L[..., j, p]
            L[..., j, j] = np.sqrt(d)
            for i in range(j + 1, k):
                s = a[..., i, j].copy()
                for p in range(j):
                    s -= L[..., i, p] * L[..., j, p]
                L[..., i, j] = s / L[..., j, j]
    return L


def forward_small(L: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve ``L w = b`` (L lower triangular, stacks (..., k, k) and (..., k))."""
    k = b.shape[-1]
    w = np.empty_like(b)
    for i in range(k):
        s = b[..., i].copy()
        for p in range(i):
            s -= L[..., i, p] * w[..., p]
        w[..., i] = s / L[..., i, i]
    return w


def backward_small(L: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve ``L' w = b`` (L lower triangular)."""
    k = b.shape[-1]
    w = np.empty_like(b)
    for i in range(k - 1, -1, -1):
        s = b[..., i].copy()
        for p in range(i + 1, k):
            s -= L[..., p, i] * w[..., p]
        w[..., i] = s / L[..., i, i]
    return w


def sum_first(a: np.ndarray) -> np.ndarray:
    """Sum over axis 0 (the groups) in a fixed order, whatever the other axes hold (a
    replication's sum has the same bits in any batch)."""
    out = a[0].copy()
    for g in range(1, a.shape[0]):
        out += a[g]
    return out


def dot_last(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sum over the last axis of ``a * b`` in a fixed order (broadcasting)."""
    out = a[..., 0] * b[..., 0]
    for j in range(1, a.shape[-1]):
        out = out + a[..., j] * b[..., j]
    return out
