"""The stacked LAPACK helpers give numpy's per-matrix results and verdicts, bit for bit.

``cholesky_stack``, ``inv_stack`` and ``solve_stack`` replace a loop of
``numpy.linalg`` calls (one per matrix, catching ``LinAlgError``) by one call over the
stack; each matrix must get exactly what the public function gives it alone, and the
same accept/reject verdict, whatever else is in the stack.
"""

from __future__ import annotations

import numpy as np
import pytest

from micromacro_sim.models.linalg import cholesky_stack, inv_stack, solve_stack


def _stack(k: int, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((40, k, k))
    m = a @ a.transpose(0, 2, 1) + 0.1 * np.eye(k)
    m[3] -= 50 * np.eye(k)  # indefinite
    m[5] = 0.0  # singular
    m[7, 0, 0] = np.nan  # not finite
    m[9, -1, -1] = np.inf
    if k > 1:
        m[11, 0, 1] = m[11, 1, 0] = np.sqrt(m[11, 0, 0] * m[11, 1, 1]) * 1.0000001
    return m


def _one(fn, *args):
    try:
        with np.errstate(all="ignore"):
            return fn(*args), True
    except np.linalg.LinAlgError:
        return None, False


@pytest.mark.parametrize("k", [1, 2, 5, 12])
def test_cholesky_stack_is_numpy_per_matrix(k):
    m = _stack(k)
    L, ok = cholesky_stack(m)
    assert (~ok).sum() >= 2  # the stack holds rejected matrices
    for r in range(len(m)):
        ref, accepted = _one(np.linalg.cholesky, m[r])
        assert ok[r] == accepted, r
        if accepted:
            np.testing.assert_array_equal(L[r], ref)


@pytest.mark.parametrize("k", [1, 3, 8])
def test_inv_and_solve_stack_are_numpy_per_matrix(k):
    m = _stack(k)
    b = np.random.default_rng(4).standard_normal((len(m), k, 2))
    inv, ok_i = inv_stack(m)
    x, ok_s = solve_stack(m, b)
    assert not ok_i[5] and not ok_s[5]
    for r in range(len(m)):
        ref, accepted = _one(np.linalg.inv, m[r])
        assert ok_i[r] == accepted, r
        if accepted:
            np.testing.assert_array_equal(inv[r], ref)
        ref, accepted = _one(np.linalg.solve, m[r], b[r])
        assert ok_s[r] == accepted, r
        if accepted:
            np.testing.assert_array_equal(x[r], ref)


def test_stack_results_do_not_depend_on_companions():
    m = _stack(6)
    L, ok = cholesky_stack(m)
    for rows in (slice(0, 1), slice(2, 9), [11, 0, 3]):
        Ls, oks = cholesky_stack(m[rows])
        np.testing.assert_array_equal(oks, ok[rows])
        np.testing.assert_array_equal(Ls[oks], L[rows][oks])


def test_empty_stacks():
    for fn in (cholesky_stack, inv_stack):
        out, ok = fn(np.zeros((0, 3, 3)))
        assert out.shape == (0, 3, 3) and ok.shape == (0,)
    x, ok = solve_stack(np.zeros((0, 3, 3)), np.zeros((0, 3, 1)))
    assert x.shape == (0, 3, 1) and ok.shape == (0,)

