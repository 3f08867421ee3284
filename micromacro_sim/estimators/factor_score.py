"""Factor scores from a one-factor CFA on the wide G x n matrix (members as indicators).

The CFA uses lavaan's default identification for ``cfa('lv =~ x1 + ... + xn')``: the
first loading is fixed at 1; the other loadings, all residual variances and the factor
variance are free; ML with a mean structure, so the intercepts are the sample means. The
ML fit is our own (Fisher scoring on the ML discrepancy with analytic derivatives,
unbounded like lavaan), so a Heywood case shows up as a negative variance instead of
being silently clamped at zero.

Reference: R ``lavaan::cfa(..., meanstructure=TRUE)`` and ``lavPredict()``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..dataset import Dataset
from .base import Scores, TwoStepEstimator

__all__ = ["CFAFit", "FactorScore", "fit_cfa"]

#: Convergence criterion: largest absolute gradient of the ML discrepancy.
_GTOL = 1e-9
#: ... or Newton decrement g' I^-1 g (the predicted drop of F, twice) below this.
_DECREMENT_TOL = 1e-12
_MAX_ITER = 200


@dataclass(frozen=True)
class CFAFit:
    """ML fit of the one-factor model x = nu + lambda * f + e on a G x n matrix.

    Attributes
    ----------
    loadings : ndarray (n,)
        lambda, with lambda[0] = 1.
    residual_variances : ndarray (n,)
        Diagonal of Theta.
    factor_variance : float
        phi = Var(f).
    intercepts : ndarray (n,)
        nu, the sample means.
    fmin : float
        lavaan's ``fmin``: half the ML discrepancy at the solution.
    converged : bool
        The optimizer met the gradient criterion.
    admissible : bool
        Positive factor and residual variances and a positive-definite implied
        covariance matrix (lavaan's post-check).
    reason : str
        Why the fit is flagged ("" when converged and admissible).
    n_iter : int
        Fisher-scoring iterations used.
    """

    loadings: np.ndarray
    residual_variances: np.ndarray
    factor_variance: float
    intercepts: np.ndarray
    fmin: float
    converged: bool
    admissible: bool
    reason: str
    n_iter: int

    @property
    def ok(self) -> bool:
        """Converged and admissible."""
        return self.converged and self.admissible

    @property
    def implied_cov(self) -> np.ndarray:
        """Model-implied covariance phi lambda lambda' + Theta."""
        lam = self.loadings
        return self.factor_variance * np.outer(lam, lam) + np.diag(self.residual_variances)

    def scores(self, wide: np.ndarray, *, method: str = "regression") -> np.ndarray:
        """Factor scores of every row of ``wide``, as ``lavaan::lavPredict``.

        Parameters
        ----------
        wide : ndarray (G, n)
        method : {"regression", "bartlett"}
            Regression: phi lambda' Sigma^-1 (x - nu). Bartlett:
            (lambda' Theta^-1 lambda)^-1 lambda' Theta^-1 (x - nu).
        """
        dev = np.asarray(wide, dtype=float) - self.intercepts
        lam = self.loadings
        if method == "regression":
            w = self.factor_variance * np.linalg.solve(self.implied_cov, lam)
        elif method == "bartlett":
            t = lam / self.residual_variances
            w = t / (t @ lam)
        else:
            raise ValueError(f"method: expected 'regression' or 'bartlett', got {method!r}")
        return dev @ w


def _sigma(theta: np.ndarray, n: int) -> np.ndarray:
    lam, psi, phi = theta[:n], theta[n : 2 * n], theta[-1]
    return phi * np.outer(lam, lam) + np.diag(psi)


def _discrepancy(theta: np.ndarray, S: np.ndarray, logdet_s: float) -> float | None:
    """ML discrepancy F = log|Sigma| + tr(S Sigma^-1) - log|S| - n, or None if not PD."""
    n = len(S)
    try:
        chol = np.linalg.cholesky(_sigma(theta, n))
    except np.linalg.LinAlgError:
        return None
    ci = np.linalg.inv(chol)
    return float(2.0 * np.sum(np.log(np.diag(chol))) + np.sum((ci @ S) * ci) - logdet_s - n)


def _derivatives(theta: np.ndarray, n: int) -> np.ndarray:
    """dSigma / dtheta for theta = (lambda_1..n, psi_1..n, phi), shape (2n + 1, n, n)."""
    lam, phi = theta[:n], theta[-1]
    deriv = np.zeros((2 * n + 1, n, n))
    for j in range(n):
        deriv[j, j, :] += phi * lam
        deriv[j, :, j] += phi * lam
        deriv[n + j, j, j] = 1.0
    deriv[-1] = np.outer(lam, lam)
    return deriv


def _fisher_scoring(
    theta: np.ndarray, free: np.ndarray, S: np.ndarray, logdet_s: float, max_iter: int
) -> tuple[np.ndarray, float | None, bool, int]:
    """Minimize F over the ``free`` entries of theta; returns (theta, F, converged, iters)."""
    f = _discrepancy(theta, S, logdet_s)
    if f is None:
        return theta, None, False, 0
    grad, info = _grad_info(theta, free, S)
    for it in range(max_iter + 1):
        try:
            step = np.linalg.solve(info, grad)
        except np.linalg.LinAlgError:
            step = grad
        # converged: tiny gradient, or a Newton decrement at the noise level of F
        if np.max(np.abs(grad)) < _GTOL:
            return theta, f, True, it
        if abs(grad @ step) < _DECREMENT_TOL:
            # the last Newton step is below the noise of F: take it without a line search
            cand = theta.copy()
            cand[free] -= step
            fc = _discrepancy(cand, S, logdet_s)
            if fc is not None:
                return cand, fc, True, it + 1
            return theta, f, True, it
        if it == max_iter:
            break
        t, moved = 1.0, False
        while t > 1e-9:
            cand = theta.copy()
            cand[free] -= t * step
            fc = _discrepancy(cand, S, logdet_s)
            if fc is not None and fc <= f + 1e-12 * max(1.0, abs(f)):
                gc, ic = _grad_info(cand, free, S)
                # a step within the noise of F must at least shrink the gradient
                if fc < f - 1e-12 * max(1.0, abs(f)) or np.max(np.abs(gc)) < np.max(
                    np.abs(grad)
                ):
                    theta, f, grad, info, moved = cand, fc, gc, ic, True
                    break
            t /= 2
        if not moved:
            break
    return theta, f, False, max_iter


def _grad_info(
    theta: np.ndarray, free: np.ndarray, S: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Gradient of F and its expected Hessian tr(Sigma^-1 dSigma_a Sigma^-1 dSigma_b).

    Closed forms for the one-factor model (A = Sigma^-1, u = A lambda, s = lambda' u):
    lambda_i, lambda_j: 2 phi^2 (u_i u_j + s A_ij); lambda_i, psi_j: 2 phi A_ij u_j;
    lambda_i, phi: 2 phi s u_i; psi_i, psi_j: A_ij^2; psi_j, phi: u_j^2; phi, phi: s^2.
    """
    n = len(S)
    lam, phi = theta[:n], theta[-1]
    sigma = _sigma(theta, n)
    A = np.linalg.inv(sigma)
    D = A @ (sigma - S) @ A
    u = A @ lam
    s = lam @ u
    grad = np.concatenate([2 * phi * (D @ lam), np.diag(D), [lam @ D @ lam]])
    info = np.empty((2 * n + 1, 2 * n + 1))
    info[:n, :n] = 2 * phi**2 * (np.outer(u, u) + s * A)
    info[:n, n : 2 * n] = 2 * phi * A * u[None, :]
    info[n : 2 * n, :n] = info[:n, n : 2 * n].T
    info[n : 2 * n, n : 2 * n] = A**2
    info[:n, -1] = info[-1, :n] = 2 * phi * s * u
    info[n : 2 * n, -1] = info[-1, n : 2 * n] = u**2
    info[-1, -1] = s**2
    return grad[free], info[np.ix_(free, free)]


def _fabin3(S: np.ndarray) -> np.ndarray:
    """FABIN3 (instrumental-variable) loadings with the first indicator as marker."""
    n = len(S)
    lam = np.ones(n)
    for j in range(1, n):
        inst = [k for k in range(1, n) if k != j]
        try:
            a = np.linalg.solve(S[np.ix_(inst, inst)], S[inst, 0])
        except np.linalg.LinAlgError:
            continue
        den = S[0, inst] @ a
        if abs(den) > 1e-12:
            lam[j] = S[j, inst] @ a / den
    return lam


def fit_cfa(wide: np.ndarray) -> CFAFit:
    """One-factor CFA by ML with lavaan's default identification.

    Fisher scoring with step halving on the ML discrepancy (sample covariance with
    denominator G, as lavaan's ``likelihood = "normal"``), unbounded variances. The
    model is first fitted with the factor variance fixed at 1 from a principal-component
    start (well conditioned even when the first member is a weak indicator), then
    rescaled to the marker parametrization (first loading 1) and polished there; a direct
    start in the marker parametrization (equal loadings) and lavaan's default start (FABIN3
    loadings) are tried as well; the converged fit with the lowest discrepancy wins.
    Never raises for numerical trouble: the result is flagged instead.

    Parameters
    ----------
    wide : ndarray (G, n)
        Rows are groups, columns member positions (the indicators), n >= 3.

    Returns
    -------
    CFAFit
    """
    X = np.asarray(wide, dtype=float)
    G, n = X.shape
    if n < 3:
        raise ValueError(f"a one-factor CFA needs at least 3 indicators, got {n}")
    mu = X.mean(axis=0)
    dev = X - mu
    S = dev.T @ dev / G
    sign, logdet_s = np.linalg.slogdet(S)
    if sign <= 0:
        raise np.linalg.LinAlgError("sample covariance matrix is not positive definite")
    marker = np.ones(2 * n + 1, dtype=bool)
    marker[0] = False
    std = np.ones(2 * n + 1, dtype=bool)
    std[-1] = False

    candidates = []
    # (a) standardized factor from the first principal component, then rescaled
    evals, evecs = np.linalg.eigh(S)
    lam0 = evecs[:, -1] * np.sqrt(max(evals[-1] - np.mean(evals[:-1]), 1e-3 * evals[-1]))
    psi0 = np.maximum(np.diag(S) - lam0**2, 0.1 * np.diag(S))
    th, f, _, it_a = _fisher_scoring(np.concatenate([lam0, psi0, [1.0]]), std, S, logdet_s, 200)
    if f is not None and abs(th[0]) > 1e-8:
        th = np.concatenate([th[:n] / th[0], th[n : 2 * n], [th[0] ** 2]])
        th, f, conv, it = _fisher_scoring(th, marker, S, logdet_s, _MAX_ITER)
        candidates.append((f, conv, th, it_a + it))
    # (b) equal loadings, factor variance = mean covariance
    off = (S.sum() - np.trace(S)) / (n * (n - 1))
    phi0 = max(off, 0.05 * np.mean(np.diag(S)))
    psi0 = np.maximum(np.diag(S) - phi0, 0.1 * np.diag(S))
    th, f, conv, it = _fisher_scoring(
        np.concatenate([np.ones(n), psi0, [phi0]]), marker, S, logdet_s, _MAX_ITER
    )
    candidates.append((f, conv, th, it))
    # (c) lavaan's default start: FABIN3 loadings, half the variances, factor variance .05
    th, f, conv, it = _fisher_scoring(
        np.concatenate([_fabin3(S), 0.5 * np.diag(S), [0.05]]), marker, S, logdet_s, _MAX_ITER
    )
    candidates.append((f, conv, th, it))
    usable = [c for c in candidates if c[0] is not None]
    if not usable:
        nan = np.full(n, np.nan)
        return CFAFit(nan, nan, np.nan, mu, np.nan, False, False, "not positive definite", 0)
    # prefer converged fits, then the lowest discrepancy
    f, converged, th, n_iter = min(usable, key=lambda c: (not c[1], c[0]))
    lam, psi, phi = th[:n], th[n : 2 * n], float(th[-1])
    reasons = []
    if not converged:
        reasons.append("not converged")
    if phi <= 0 or np.any(psi <= 0):
        reasons.append("negative variance")
    else:
        try:
            np.linalg.cholesky(_sigma(th, n))
        except np.linalg.LinAlgError:
            reasons.append("not positive definite")
    return CFAFit(
        loadings=lam,
        residual_variances=psi,
        factor_variance=phi,
        intercepts=mu,
        fmin=f / 2,
        converged=converged,
        admissible=not (set(reasons) - {"not converged"}),
        reason=", ".join(reasons),
        n_iter=n_iter,
    )


class FactorScore(TwoStepEstimator):
    """Factor scores of a free-loading one-factor CFA as the group score.

    Options
    -------
    scores : {"regression", "bartlett"}
        lavaan ``lavPredict`` method (default "regression", as Clark).

    Balanced data and one x only (the members are the indicators of the wide matrix).
    Reference: R ``lavaan::cfa('lv =~ x1 + ... + xn', meanstructure=TRUE)``,
    ``lavPredict(fit, method=...)``, then ``lm(y ~ z + fs)``.
    """

    name = "factor_score"
    description = "OLS on factor scores of a one-factor CFA (members as indicators)"
    options = {"scores": "regression"}
    needs_balanced = True
    max_x = 1

    def __init__(self, *, label: str | None = None, **options) -> None:
        super().__init__(label=label, **options)
        if self.params["scores"] not in ("regression", "bartlett"):
            raise ValueError(
                f"scores: expected 'regression' or 'bartlett', got {self.params['scores']!r}"
            )

    def scores(self, data: Dataset) -> Scores:
        wide = data.wide(0)
        fit = fit_cfa(wide)
        extras = {
            "loadings": fit.loadings,
            "residual_variances": fit.residual_variances,
            "factor_variance": fit.factor_variance,
        }
        if not np.isfinite(fit.factor_variance):
            return Scores(
                values=np.full(data.n_groups, np.nan), converged=False, admissible=False,
                reason=fit.reason, extras=extras,
            )
        values = fit.scores(wide, method=self.params["scores"])
        return Scores(
            values=values, converged=fit.converged, admissible=fit.admissible,
            reason=fit.reason, extras=extras,
        )
