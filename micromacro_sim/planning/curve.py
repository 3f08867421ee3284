"""Local models of a performance measure against the design value, and their root.

Rates (power, coverage) are fitted by a binomial GLM, ``logit p = a + b log x``, on the
pooled replications near the root; bias by weighted least squares, ``bias = a + b / x``.
The root's confidence interval inverts the fitted band: the design values at which the
band's upper (lower) edge first reaches the target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["CurveFit", "fit_curve"]


@dataclass(frozen=True)
class CurveFit:
    """A fitted local curve.

    Attributes
    ----------
    kind : str
        ``rate`` (logit link on log x) or ``bias`` (identity link on 1 / x).
    coef, cov : ndarray
        Coefficients (a, b) and their covariance.
    support : tuple of float
        The smallest and largest design value fitted (the curve is local).
    """

    kind: str
    coef: np.ndarray
    cov: np.ndarray
    support: tuple[float, float] = (0.0, float("inf"))

    def _design(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        t = np.log(x) if self.kind == "rate" else 1.0 / x
        return np.column_stack([np.ones_like(t), t])

    def linear(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The linear predictor and its standard error at ``x``."""
        X = self._design(x)
        eta = X @ self.coef
        se = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", X, self.cov, X), 0.0))
        return eta, se

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The fitted measure (a rate, or the bias) at ``x``."""
        eta, _ = self.linear(x)
        return 1 / (1 + np.exp(-eta)) if self.kind == "rate" else eta

    def margins(self, x: np.ndarray, target: float, z: float) -> tuple[np.ndarray, ...]:
        """How far the target is met at ``x`` (>= 0: met): point, lower and upper.

        Rates: ``logit p - logit target`` (the target is a lower bound). Bias:
        ``target - |bias|`` (the target bounds the absolute bias).
        """
        eta, se = self.linear(x)
        if self.kind == "rate":
            m = eta - math.log(target / (1 - target))
            return m, m - z * se, m + z * se
        lo, hi = eta - z * se, eta + z * se
        nearest = np.where((lo <= 0) & (hi >= 0), 0.0, np.minimum(np.abs(lo), np.abs(hi)))
        return target - np.abs(eta), target - np.maximum(np.abs(lo), np.abs(hi)), \
            target - nearest

    def root(self, grid: np.ndarray, target: float, level: float = 0.95
             ) -> tuple[int | None, int | None, int | None]:
        """The smallest grid value meeting the target, with an interval (None: not
        within the grid)."""
        from scipy import stats

        z = float(stats.norm.ppf(0.5 + level / 2))
        m, lower, upper = self.margins(grid, target, z)

        def first(ok: np.ndarray) -> int | None:
            idx = np.flatnonzero(ok)
            return int(grid[idx[0]]) if idx.size else None

        return first(m >= 0), first(upper >= 0), first(lower >= 0)


def _wls(X: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    XtW = X.T * w
    cov = np.linalg.inv(XtW @ X)
    return cov @ (XtW @ y), cov


def _binomial_glm(X: np.ndarray, s: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Logistic regression on grouped counts by Newton-Raphson, started at the
    empirical-logit WLS fit (which it keeps when the counts are separated)."""
    emp = np.log((s + 0.5) / (n - s + 0.5))
    beta, cov = _wls(X, emp, 1 / (1 / (s + 0.5) + 1 / (n - s + 0.5)))
    for _ in range(50):
        p = 1 / (1 + np.exp(-(X @ beta)))
        w = n * p * (1 - p)
        info = (X.T * w) @ X
        if not np.all(np.isfinite(info)) or np.linalg.cond(info) > 1e12:
            break
        step = np.linalg.solve(info, X.T @ (s - n * p))
        beta = beta + step
        if np.max(np.abs(step)) < 1e-10:
            p = 1 / (1 + np.exp(-(X @ beta)))
            cov = np.linalg.inv((X.T * (n * p * (1 - p))) @ X)
            return beta, cov
    return beta, cov


def fit_curve(kind: str, x: np.ndarray, n: np.ndarray, s1: np.ndarray,
              s2: np.ndarray) -> CurveFit:
    """Fit the local curve to pooled evaluations.

    Parameters
    ----------
    kind : {"rate", "bias"}
    x : ndarray
        Design values (at least two distinct).
    n, s1, s2 : ndarray
        Replications, sum and sum of squares of the per-replication quantity (an
        indicator for rates, estimate - truth for bias) at each design value.
    """
    x = np.asarray(x, dtype=float)
    n = np.asarray(n, dtype=float)
    s1 = np.asarray(s1, dtype=float)
    fit = CurveFit(kind, np.zeros(2), np.eye(2))
    X = fit._design(x)
    if kind == "rate":
        coef, cov = _binomial_glm(X, s1, n)
    else:
        mean = s1 / n
        var = np.maximum((np.asarray(s2, dtype=float) - n * mean**2) / np.maximum(n - 1, 1),
                         1e-12)
        coef, cov = _wls(X, mean, n / var)
    return CurveFit(kind, coef, cov, (float(x.min()), float(x.max())))
