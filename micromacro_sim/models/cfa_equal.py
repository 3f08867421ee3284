"""The equal-loading, equal-residual one-factor model in closed form (balanced wide data).

x_gj = nu_j + f_g + e_gj with Var(f) = phi and Var(e_gj) = v for every member position j
(lavaan ``lv =~ 1*x1 + ... + 1*xn`` with ``xj ~~ v*xj``, meanstructure), or equivalently
the one-way random effects model ``x ~ -1 + item + (1 | group)`` by ML. Writing each row
as its mean xbar_g plus n - 1 orthonormal contrasts, the covariance v I + phi 11' has
eigenvalues v + n phi (along 1) and v (n - 1 times), so the ML estimates are

* nu_j the column means,
* v the sum of squares of the member-position-centred within deviations / (G (n - 1)),
* phi = Var_ML(xbar) - v / n,

when phi > 0; otherwise the ML estimate is on the boundary phi = 0, v = tr(S) / n. This
is the measurement part of the single-step SEM (:mod:`.wide_sem`) and the factor model of
the BFI demonstration (:mod:`micromacro_sim.api.demo`). :func:`equal_loading_ml` works on one
(G, n) matrix or a stack (R, G, n) with the same arithmetic per dataset.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from micromacro_sim.core.status import Flag, Reason, flag

__all__ = ["EqualLoadingFit", "equal_loading_cfa", "equal_loading_ml", "saturated_loglik"]


def equal_loading_ml(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Item intercepts, group means and the ML residual variance v of wide data.

    Parameters
    ----------
    X : ndarray (G, n) or (R, G, n)

    Returns
    -------
    nu : ndarray (n,) or (R, n)
    xbar : ndarray (G,) or (R, G)
    v : float ndarray () or (R,)
        Within sum of squares of the member-position-centred data over G (n - 1).
    """
    X = np.asarray(X, dtype=float)
    G, n = X.shape[-2:]
    nu = X.mean(axis=-2)
    xbar = X.mean(axis=-1)
    resid = X - xbar[..., None] - (nu - nu.mean(axis=-1, keepdims=True))[..., None, :]
    v = np.sum(resid**2, axis=(-2, -1)) / (G * (n - 1))
    return nu, xbar, v


@dataclass(frozen=True)
class EqualLoadingFit:
    """ML fit of the equal-loading one-factor model on one (G, n) matrix.

    Attributes
    ----------
    intercepts : ndarray (n,)
    residual_variance : float
        v (on the boundary: tr(S) / n).
    factor_variance : float
        phi (on the boundary: 0).
    n_groups : int
    flags : tuple of Flag
        ``negative_variance`` when the unconstrained phi is <= 0 (the estimates are then
        the boundary ML).
    """

    intercepts: np.ndarray
    residual_variance: float
    factor_variance: float
    n_groups: int
    flags: tuple[Flag, ...] = ()

    @property
    def n(self) -> int:
        """Number of indicators."""
        return len(self.intercepts)

    @property
    def implied_cov(self) -> np.ndarray:
        """v I + phi 11'."""
        n = self.n
        return self.residual_variance * np.eye(n) + self.factor_variance * np.ones((n, n))

    def information(self) -> np.ndarray:
        """Expected information of (v, phi) over all G groups (NaN on the boundary).

        With l1 = v + n phi and l2 = v: G/2 [[1/l1^2 + (n-1)/l2^2, n/l1^2],
        [n/l1^2, n^2/l1^2]].
        """
        if self.flags:
            return np.full((2, 2), np.nan)
        n, v = self.n, self.residual_variance
        l1 = v + n * self.factor_variance
        return 0.5 * self.n_groups * np.array(
            [[1 / l1**2 + (n - 1) / v**2, n / l1**2], [n / l1**2, n**2 / l1**2]]
        )

    def scores(self, wide: np.ndarray) -> np.ndarray:
        """Regression factor scores phi 1' Sigma^-1 (x - nu) = phi sum_j (x_j - nu_j) / l1."""
        r = np.asarray(wide, dtype=float) - self.intercepts
        return self.factor_variance * r.sum(axis=1) / (
            self.residual_variance + self.n * self.factor_variance)

    def loglik(self, wide: np.ndarray) -> float:
        """Normal log-likelihood of ``wide`` under the fitted mean and covariance."""
        y = np.asarray(wide, dtype=float)
        G, n = y.shape
        r = y - self.intercepts
        sigma = self.implied_cov
        logdet = np.linalg.slogdet(sigma)[1]
        tr = np.trace(np.linalg.solve(sigma, r.T @ r / G))
        return float(-0.5 * G * (n * np.log(2 * np.pi) + logdet + tr))


def equal_loading_cfa(wide: np.ndarray) -> EqualLoadingFit:
    """Closed-form ML of the equal-loading one-factor model (see the module docstring).

    Parameters
    ----------
    wide : ndarray (G, n), n >= 2

    Returns
    -------
    EqualLoadingFit
        Flagged ``negative_variance`` (boundary estimates phi = 0) when the
        unconstrained factor variance is <= 0.
    """
    X = np.asarray(wide, dtype=float)
    G, n = X.shape
    if n < 2:
        raise ValueError("the equal-loading one-factor model needs at least 2 indicators")
    nu, xbar, v = equal_loading_ml(X)
    v = float(v)
    phi = float(np.mean((xbar - xbar.mean()) ** 2) - v / n)
    if phi > 0:
        return EqualLoadingFit(nu, v, phi, G)
    return EqualLoadingFit(nu, v + phi, 0.0, G, (flag(Reason.NEGATIVE_VARIANCE),))


def saturated_loglik(wide: np.ndarray) -> float:
    """Normal log-likelihood of the model with free means and covariance (denominator G)."""
    y = np.asarray(wide, dtype=float)
    G, n = y.shape
    r = y - y.mean(axis=0)
    logdet = np.linalg.slogdet(r.T @ r / G)[1]
    return float(-0.5 * G * (n * np.log(2 * np.pi) + logdet + n))
