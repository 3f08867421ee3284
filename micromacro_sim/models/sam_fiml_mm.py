"""FIML measurement step of local SAM on incomplete members (lavaan's ``missing = "ml"``).

The measurement model of the member positions x_1..x_K: one factor, loadings fixed at 1,
one residual variance v for all positions, free intercepts nu_k; a group observes the
positions O_g (n_g of them), x_O ~ N(nu_O, v I + psi 11'). lavaan fits it by FIML
(``nlminb``) on the x columns alone, with ``bounds = "standard"``:
0 <= v <= Var_h1(x_1) and 0 <= psi <= max_k Var_h1(x_k), the variances of the
saturated EM moments of the x columns alone
(:func:`~micromacro_sim.models.h1_em.em_moments`; with one equality-constrained v the
bound of the first copy is kept, as with complete data).

:func:`fit_measurement` maximises the same likelihood to machine precision: nu is
profiled out (for given v, psi it is the GLS solution), and (v, psi) follow a
projected Newton method on the box with the exact profile Hessian (the Schur
complement of the full Hessian).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from micromacro_sim.models.sam_fiml_lik import fiml_derivatives

__all__ = ["Measurement", "fit_measurement", "measurement_information"]

_MAX_ITER = 200


@dataclass(frozen=True)
class Measurement:
    """FIML estimates of the measurement model.

    Attributes
    ----------
    nu : ndarray (K,)
        Intercepts of the member positions.
    v, psi : float
        Residual and factor variance.
    converged : bool
        The Newton iterations met their stopping rule.
    active : tuple of str
        Bounds active at the solution ("v_upper", "psi_lower", ...).
    """

    nu: np.ndarray
    v: float
    psi: float
    converged: bool
    active: tuple[str, ...] = ()


def _feasible(mask: np.ndarray, v: float, psi: float) -> bool:
    """Every observed block v I + psi 11' positive definite."""
    return bool(v > 0 and np.all(v + mask.sum(axis=1) * psi > 0))


def _objective(x: np.ndarray, mask: np.ndarray, nu: np.ndarray, v: float,
               psi: float) -> float:
    """Minus the log-likelihood (without its constant); +inf outside the domain."""
    if not _feasible(mask, v, psi):
        return np.inf
    n = mask.sum(axis=1)
    d = v + n * psi
    r = np.where(mask, x - nu, 0.0)
    t, ss = r.sum(axis=1), np.sum(r * r, axis=1)
    return float(0.5 * np.sum((n - 1) * np.log(v) + np.log(d) + (ss - psi * t**2 / d) / v))


def _gls_nu(x: np.ndarray, mask: np.ndarray, v: float, psi: float) -> np.ndarray:
    """Intercepts maximising the likelihood for given (v, psi): sum_g W_g (x_g - nu) = 0
    with W_g = (I - c_g 11')/v on the observed positions, c_g = psi / (v + n_g psi)."""
    m = mask.astype(float)
    c = psi / (v + m.sum(axis=1) * psi)
    xm = np.where(mask, x, 0.0)
    A = np.diag(m.sum(axis=0)) - np.einsum("g,gi,gj->ij", c, m, m)
    b = xm.sum(axis=0) - np.einsum("g,gi,g->i", c, m, xm.sum(axis=1))
    return np.linalg.solve(A, b)


def _model(K: int, nu: np.ndarray, v: float, psi: float):
    """Mean, covariance and first derivatives in theta = (nu, v, psi)."""
    m = K + 2
    dmu = np.zeros((m, K))
    dmu[:K] = np.eye(K)
    dsig = np.zeros((m, K, K))
    dsig[K] = np.eye(K)
    dsig[K + 1] = 1.0
    return nu, v * np.eye(K) + psi, dmu, dsig


def measurement_information(x: np.ndarray, mask: np.ndarray, meas: Measurement, *,
                            information: str = "observed") -> tuple[np.ndarray, np.ndarray]:
    """Gradient and information (minus the Hessian, or its expectation) of the FIML
    log-likelihood in theta = (nu_1..nu_K, v, psi), totals over the groups."""
    K = mask.shape[1]
    _, grad, info = fiml_derivatives(x, mask, *_model(K, meas.nu, meas.v, meas.psi),
                                     information=information)
    return grad, info


def _profile_derivatives(x: np.ndarray, mask: np.ndarray, nu: np.ndarray, p: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Gradient and Hessian of the profile objective in (v, psi) at its GLS nu."""
    K = mask.shape[1]
    _, grad, info = fiml_derivatives(x, mask, *_model(K, nu, p[0], p[1]))
    a, b = slice(0, K), slice(K, K + 2)
    hess = info[b, b] - info[b, a] @ np.linalg.solve(info[a, a], info[a, b])
    return -grad[b], hess


def _newton_direction(g: np.ndarray, H: np.ndarray) -> np.ndarray:
    """Newton direction, Levenberg-damped when H is not positive definite."""
    scale = max(float(np.max(np.abs(np.diag(H)))), 1e-300)
    lam = 0.0
    for _ in range(60):
        try:
            L = np.linalg.cholesky(H + lam * np.eye(len(g)))
            return -np.linalg.solve(L.T, np.linalg.solve(L, g))
        except np.linalg.LinAlgError:
            lam = scale * 1e-8 if lam == 0 else lam * 10
    return -g / scale


def _solve(x: np.ndarray, mask: np.ndarray, start: np.ndarray, lo: np.ndarray,
           hi: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """Projected Newton on the profile objective of (v, psi) within [lo, hi]."""
    p = np.clip(start, lo, hi)
    nu = _gls_nu(x, mask, *p)
    f = _objective(x, mask, nu, *p)
    for _ in range(_MAX_ITER):
        g, H = _profile_derivatives(x, mask, nu, p)
        active = ((p <= lo) & (g > 0)) | ((p >= hi) & (g < 0))
        free = ~active
        if not free.any():
            return p, nu, True
        d = np.zeros(2)
        d[free] = _newton_direction(g[free], H[np.ix_(free, free)])
        t, accepted = 1.0, False
        while t > 1e-14:
            pn = np.clip(p + t * d, lo, hi)
            small = np.all(np.abs(pn - p) <= 1e-9 * (1 + np.abs(p)))
            if _feasible(mask, *pn):
                nun = _gls_nu(x, mask, *pn)
                fn = _objective(x, mask, nun, *pn)
            else:
                nun, fn = nu, np.inf
            if np.isfinite(fn) and (small or fn <= f + 1e-4 * g @ (pn - p)):
                accepted = True
                break
            t /= 2
        if not accepted:
            return p, nu, bool(np.all(np.abs(g[free]) <= 1e-8 * (1 + abs(f))))
        done = np.all(np.abs(pn - p) <= 1e-13 * (1 + np.abs(p)))
        p, nu, f = pn, nun, fn
        if done:
            return p, nu, True
    return p, nu, False


def _start_values(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Moment start for (v, psi): pooled within variance of the position-centred values,
    between variance of the group means minus mean(v / n_g)."""
    n = mask.sum(axis=1)
    nu0 = np.where(mask, x, 0.0).sum(axis=0) / mask.sum(axis=0)
    e = np.where(mask, x - nu0, 0.0)
    ok = n > 0
    ebar = e[ok].sum(axis=1) / n[ok]
    within = np.sum((e[ok] - ebar[:, None]) ** 2 * mask[ok])
    v0 = within / max(int(np.sum(n[ok] - 1)), 1)
    psi0 = np.mean((ebar - ebar.mean()) ** 2) - np.mean(v0 / n[ok])
    if not v0 + n.max() * psi0 > 0.1 * v0:
        psi0 = 0.0
    return np.array([v0, psi0])


def fit_measurement(x: np.ndarray, mask: np.ndarray, *, upper: tuple[float, float] | None,
                    start: Measurement | None = None) -> Measurement:
    """FIML of the equal-loading, equal-residual one-factor model on incomplete rows.

    Parameters
    ----------
    x, mask : ndarray (G, K)
        Member positions; only rows with at least one observed cell are used.
    upper : (float, float) or None
        Upper bounds of (v, psi) with lower bounds 0 (lavaan's ``bounds = "standard"``),
        or None for the unbounded fit.
    start : Measurement, optional
        Start point (e.g. the unbounded solution, projected onto the box).
    """
    keep = mask.any(axis=1)
    x, mask = x[keep], mask[keep]
    p0 = _start_values(x, mask) if start is None else np.array([start.v, start.psi])
    if upper is None:
        lo, hi = np.full(2, -np.inf), np.full(2, np.inf)
    else:
        lo, hi = np.zeros(2), np.asarray(upper, dtype=float)
    p, nu, ok = _solve(x, mask, p0, lo, hi)
    names = (("v_lower", "psi_lower"), ("v_upper", "psi_upper"))
    active = tuple(names[0][i] for i in range(2) if p[i] <= lo[i]) + tuple(
        names[1][i] for i in range(2) if p[i] >= hi[i])
    return Measurement(nu=nu, v=float(p[0]), psi=float(p[1]), converged=ok, active=active)
