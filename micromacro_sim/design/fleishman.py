"""Non-normal variables with given skewness, excess kurtosis and correlations.

Fleishman's (1978) power method turns a standard normal ``U`` into
``Y = a + b U + c U^2 + d U^3`` with ``a = -c``; ``b, c, d`` solve

* ``b^2 + 6 b d + 2 c^2 + 15 d^2 = 1`` (unit variance),
* ``2 c (b^2 + 24 b d + 105 d^2 + 2) = skew``,
* ``24 (b d + c^2 (1 + b^2 + 28 b d) + d^2 (12 + 48 b d + 141 c^2 + 225 d^2)) = kurtosis``
  (excess kurtosis),

so ``Y`` has mean 0, variance 1 and the target skewness and excess kurtosis exactly.
Not every pair is reachable: the method needs (Headrick 2002)
``kurtosis >= 1.6410373 skew^2 - 1.2264489``.

Vale & Maurelli (1983) extend it to several variables: the normals are drawn with an
*intermediate* correlation ``rho_ij`` that the polynomials map to the target ``r_ij``,

``r_ij = rho (b_i b_j + 3 b_i d_j + 3 d_i b_j + 9 d_i d_j) + 2 c_i c_j rho^2
+ 6 d_i d_j rho^3``,

solved pair by pair (the real root in [-1, 1] nearest ``r_ij``). The intermediate matrix
must be positive definite. This is what lavaan's ``simulateData`` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.polynomial import polynomial as P

__all__ = [
    "Fleishman", "FleishmanError", "fleishman", "intermediate_correlation",
    "intermediate_matrix", "kurtosis_bound", "polynomial_moments",
]

#: Fleishman's feasibility bound: excess kurtosis >= A skew^2 - B (Headrick 2002).
BOUND_A, BOUND_B = 1.6410373, 1.2264489
#: Largest equation residual of an accepted solution.
SOLVE_TOL = 1e-12


class FleishmanError(ValueError):
    """A (skew, kurtosis) pair or a correlation the power method cannot produce."""


def kurtosis_bound(skew: float) -> float:
    """Smallest excess kurtosis Fleishman's method reaches at ``skew``."""
    return BOUND_A * skew * skew - BOUND_B


@dataclass(frozen=True)
class Fleishman:
    """The polynomial ``a + b U + c U^2 + d U^3`` (``a = -c``)."""

    a: float
    b: float
    c: float
    d: float

    @property
    def is_identity(self) -> bool:
        """The polynomial is ``U`` itself (normal target)."""
        return self.a == 0.0 and self.b == 1.0 and self.c == 0.0 and self.d == 0.0

    @property
    def coefficients(self) -> np.ndarray:
        """``[a, b, c, d]`` (increasing powers)."""
        return np.array([self.a, self.b, self.c, self.d])

    def apply(self, u: np.ndarray) -> np.ndarray:
        """Transform standard normal draws (returned unchanged for the identity)."""
        if self.is_identity:
            return u
        return self.a + u * (self.b + u * (self.c + u * self.d))


def _equations(v: np.ndarray, skew: float, kurt: float) -> np.ndarray:
    b, c, d = v
    return np.array([
        b * b + 6 * b * d + 2 * c * c + 15 * d * d - 1.0,
        2 * c * (b * b + 24 * b * d + 105 * d * d + 2) - skew,
        24 * (b * d + c * c * (1 + b * b + 28 * b * d)
              + d * d * (12 + 48 * b * d + 141 * c * c + 225 * d * d)) - kurt,
    ])


@lru_cache(maxsize=256)
def fleishman(skew: float, kurtosis: float) -> Fleishman:
    """Fleishman's coefficients for a target skewness and excess kurtosis.

    Raises
    ------
    FleishmanError
        The pair is outside the method's range, or no solution was found.
    """
    if skew == 0.0 and kurtosis == 0.0:
        return Fleishman(0.0, 1.0, 0.0, 0.0)
    if kurtosis < kurtosis_bound(skew):
        raise FleishmanError(
            f"skewness {skew:g} with excess kurtosis {kurtosis:g} is impossible for "
            f"Fleishman's method (it needs excess kurtosis >= {BOUND_A:.4f} skew^2 - "
            f"{BOUND_B:.4f} = {kurtosis_bound(skew):.4g})")
    from scipy.optimize import root

    best = None
    for start in ((1.0, 0.0, 0.0), (0.9, 0.1 * math.copysign(1, skew), 0.05),
                  (0.5, 0.3 * math.copysign(1, skew), 0.2), (1.2, 0.0, -0.1), (0.2, 0.5, 0.3)):
        sol = root(_equations, np.array(start), args=(skew, kurtosis), method="hybr",
                   options={"xtol": 1e-15, "maxfev": 4000})
        res = np.abs(_equations(sol.x, skew, kurtosis)).max()
        if res < SOLVE_TOL and sol.x[0] > 0:
            best = sol.x
            break
    if best is None:
        raise FleishmanError(f"no Fleishman solution found for skewness {skew:g} and "
                             f"excess kurtosis {kurtosis:g}")
    b, c, d = (float(v) for v in best)
    if skew == 0.0:  # the symmetric solution is exact; drop round-off in c
        c = 0.0
    return Fleishman(-c, b, c, d)


def _normal_moment(m: int) -> float:
    """E[U^m] of a standard normal: 0 for odd m, (m - 1)!! for even m."""
    return 0.0 if m % 2 else float(math.prod(range(m - 1, 0, -2)))


def polynomial_moments(f: Fleishman) -> tuple[float, float, float, float]:
    """Exact mean, variance, skewness and excess kurtosis of ``f(U)``, U standard normal.

    Computed from the normal moments by expanding the powers of the polynomial (no
    simulation).
    """
    coef = f.coefficients

    def raw(k: int) -> float:
        p = P.polypow(coef, k)
        return float(sum(p[m] * _normal_moment(m) for m in range(len(p))))

    m1, m2, m3, m4 = (raw(k) for k in range(1, 5))
    var = m2 - m1**2
    mu3 = m3 - 3 * m1 * m2 + 2 * m1**3
    mu4 = m4 - 4 * m1 * m3 + 6 * m1**2 * m2 - 3 * m1**4
    return m1, var, mu3 / var**1.5, mu4 / var**2 - 3.0


def intermediate_correlation(r: float, f1: Fleishman, f2: Fleishman) -> float:
    """Correlation of the two normals that gives ``f1(U1)`` and ``f2(U2)`` correlation ``r``.

    Raises
    ------
    FleishmanError
        No root in [-1, 1].
    """
    if r == 0.0:
        return 0.0
    if f1.is_identity and f2.is_identity:
        return r
    lin = f1.b * f2.b + 3 * f1.b * f2.d + 3 * f1.d * f2.b + 9 * f1.d * f2.d
    roots = np.roots([6 * f1.d * f2.d, 2 * f1.c * f2.c, lin, -r])
    real = [float(z.real) for z in roots if abs(z.imag) < 1e-10 and abs(z.real) <= 1 + 1e-12]
    if not real:
        raise FleishmanError(f"correlation {r:g} cannot be reached by these "
                             "Fleishman polynomials")
    return float(np.clip(min(real, key=lambda x: abs(x - r)), -1.0, 1.0))


def intermediate_matrix(corr: np.ndarray, polys: tuple[Fleishman, ...]) -> np.ndarray:
    """Vale & Maurelli's intermediate correlation matrix of the normals (not checked PD)."""
    k = len(polys)
    out = np.eye(k)
    for i in range(k):
        for j in range(i + 1, k):
            out[i, j] = out[j, i] = intermediate_correlation(float(corr[i, j]), polys[i],
                                                             polys[j])
    return out
