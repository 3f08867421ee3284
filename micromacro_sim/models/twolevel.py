"""Two-level ML with one x: the per-dataset reference (any group sizes, q >= 0 z).

Model, likelihood and lavaan's parametrization are described in
:mod:`micromacro_sim.models.twolevel_batch` (the batch version, which shares the
closed-form derivatives) and in the method ``sem_2level``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from micromacro_sim.core.status import Reason
from micromacro_sim.generate.dataset import Dataset
from micromacro_sim.models.twolevel_batch import (
    BOUND_TOL,
    BatchStats,
    batch_derivs,
    class_stats,
    joint_cov_batch,
    newton_batch,
)

__all__ = ["TwoLevelFit", "fit_two_level", "joint_cov_one"]


@dataclass(frozen=True)
class _Data:
    """Sufficient statistics: per group y, xbar, [1, z] and size; the within sum of squares."""

    u: np.ndarray  # (G, 2): y, xbar
    X: np.ndarray  # (G, k): 1, z
    sizes: np.ndarray
    ssw: float
    stats: BatchStats  # the same pooled per size class (one replication)


def prepare_data(data: Dataset) -> _Data:
    xbar = data.xbar[:, 0]
    within = data.x[:, 0] - np.repeat(xbar, data.sizes)
    X = np.column_stack([np.ones(data.n_groups), data.z])
    u = np.column_stack([data.y, xbar])
    ssw = float(within @ within)
    return _Data(u=u, X=X, sizes=data.sizes.astype(float), ssw=ssw,
                 stats=class_stats(u[None], X[None], data.sizes[None], np.array([ssw])))


def _omega(eta: np.ndarray) -> tuple[float, np.ndarray]:
    """sigma_w and Omega (order y, xbar) from the unconstrained (log) parameters."""
    sw = np.exp(eta[0])
    l11, l21, l22 = np.exp(eta[1]), eta[2], np.exp(eta[3])  # Cholesky in order (x, y)
    tau = l11**2
    om = np.array([[l21**2 + l22**2, l11 * l21], [l11 * l21, tau]])
    return float(sw), om


def _vinv(d: _Data, sw: float, om: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-group inverse (entries w11, w12, w22) and log-determinant of Omega + diag(0, sw/n)."""
    a, b = om[0, 0], om[0, 1]
    dd = om[1, 1] + sw / d.sizes
    det = a * dd - b * b
    return dd / det, -b / det, a / det, det


def _gls(d: _Data, sw: float, om: np.ndarray) -> np.ndarray:
    """GLS coefficients B (k x 2, columns y and xbar) given the covariance parameters."""
    w11, w12, w22, det = _vinv(d, sw, om)
    if np.any(det <= 0):
        raise np.linalg.LinAlgError("between covariance not positive definite")
    X, u = d.X, d.u
    A = np.block([[X.T @ (w11[:, None] * X), X.T @ (w12[:, None] * X)],
                  [X.T @ (w12[:, None] * X), X.T @ (w22[:, None] * X)]])
    b = np.concatenate([X.T @ (w11 * u[:, 0] + w12 * u[:, 1]),
                        X.T @ (w12 * u[:, 0] + w22 * u[:, 1])])
    k = X.shape[1]
    return np.linalg.solve(A, b).reshape(2, k).T


def _loglik_parts(d: _Data, sw: float, om: np.ndarray, B: np.ndarray) -> float:
    """Log-likelihood of the persons' x and the groups' y given z (constant dropped)."""
    N = float(d.sizes.sum())
    G = len(d.sizes)
    w11, w12, w22, det = _vinv(d, sw, om)
    if sw <= 0 or np.any(det <= 0):
        return -np.inf
    R = d.u - d.X @ B
    quad = w11 * R[:, 0] ** 2 + 2 * w12 * R[:, 0] * R[:, 1] + w22 * R[:, 1] ** 2
    ll = -0.5 * ((N - G) * np.log(sw) + d.ssw / sw)
    return float(ll - 0.5 * (np.sum(np.log(det)) + np.sum(quad)))


def _profile(eta: np.ndarray, d: _Data) -> float:
    sw, om = _omega(eta)
    try:
        B = _gls(d, sw, om)
    except np.linalg.LinAlgError:
        return np.inf
    return -_loglik_parts(d, sw, om, B)


@dataclass(frozen=True)
class TwoLevelFit:
    """ML solution of the two-level model (lavaan's parameters and the moments of z, x^B).

    Attributes
    ----------
    b0, b_z, b_xi, sigma2_e, sigma_w : lavaan's free parameters.
    mu_z, s_zz, s_zx, s_xx, mu_x : the moments of z and the between part of x.
    psi : ndarray
        The saturated conditional parametrization (sigma_w, Omega_yy, Omega_yx, Omega_xx,
        the y and xbar columns of B), as the batch kernel uses it.
    loglik : float
        Log-likelihood of x and y given z (up to a constant).
    converged : bool
        The analytic gradient of the profile log-likelihood per person is below
        :data:`GRAD_TOL` (scale-free: it does not grow with the number of rows).
    grad_max : float
        That largest gradient per person.
    reason : Reason or None
        ``NEGATIVE_VARIANCE`` when a between variance (of x^B given z, or of e) is at the
        zero bound, else None.
    """

    b0: float
    b_z: np.ndarray
    b_xi: float
    sigma2_e: float
    sigma_w: float
    mu_z: np.ndarray
    s_zz: np.ndarray
    s_zx: np.ndarray
    s_xx: float
    mu_x: float
    psi: np.ndarray
    loglik: float
    converged: bool
    grad_max: float
    reason: Reason | None

    def free(self) -> np.ndarray:
        """lavaan's free parameters: sigma_w, b0, b_z, b_xi, sigma2_e."""
        return np.concatenate([[self.sigma_w, self.b0], self.b_z, [self.b_xi, self.sigma2_e]])


#: Convergence bound on the gradient of the profile log-likelihood per person (in the
#: log / Cholesky parameters): the BFGS objective is the deviance per person.
GRAD_TOL = 1e-6


def _profile_grad(eta: np.ndarray, d: _Data) -> np.ndarray:
    """Analytic gradient of :func:`_profile` (the B gradient vanishes at the GLS B)."""
    sw, om = _omega(eta)
    try:
        B = _gls(d, sw, om)
    except np.linalg.LinAlgError:
        return np.full(4, np.nan)
    psi = np.concatenate([[sw, om[0, 0], om[0, 1], om[1, 1]], B[:, 0], B[:, 1]])
    g = batch_derivs(d.stats, psi[None])[1][0, :4]
    l11, l21, l22 = np.exp(eta[1]), eta[2], np.exp(eta[3])
    return np.array([g[0] * sw, 2 * l11**2 * g[3] + l11 * l21 * g[2],
                     l11 * g[2] + 2 * l21 * g[1], 2 * l22**2 * g[1]])


def fit_two_level(data: Dataset) -> TwoLevelFit:
    """ML fit of the two-level model (one x, any group sizes, q >= 0 covariates z).

    BFGS with the analytic gradient on the profile deviance per person, in log / Cholesky
    parameters (so the solution stays in the parameter space), from the ANOVA moments;
    then Newton with the closed-form derivatives of the full likelihood where the
    optimum is interior (:func:`_newton_polish`).
    """
    d = prepare_data(data)
    G, N = data.n_groups, data.n_persons
    if N <= G:
        raise ValueError("the two-level model needs some groups with more than one member")
    y, xbar = d.u[:, 0], d.u[:, 1]
    # start: ANOVA moments and OLS of (y, xbar) on [1, z]
    mse = d.ssw / (N - G)
    B0, *_ = np.linalg.lstsq(d.X, d.u, rcond=None)
    R0 = d.u - d.X @ B0
    S0 = R0.T @ R0 / G
    tau0 = max(S0[1, 1] - mse * np.mean(1.0 / d.sizes), 0.05 * S0[1, 1])
    l21 = S0[0, 1] / np.sqrt(tau0)
    l22 = np.sqrt(max(S0[0, 0] - l21**2, 0.05 * S0[0, 0]))
    eta0 = np.array([np.log(mse), 0.5 * np.log(tau0), l21, np.log(l22)])
    from scipy import optimize  # lazy: the fast engine never needs it

    opt = optimize.minimize(lambda e: _profile(e, d) / N, eta0, method="BFGS",
                            jac=lambda e: _profile_grad(e, d) / N,
                            options={"gtol": 1e-10, "maxiter": 2000})
    eta = _newton_polish(d, opt.x)
    grad = np.max(np.abs(_profile_grad(eta, d))) / N
    sw, om = _omega(eta)
    B = _gls(d, sw, om)
    tau = om[1, 1]
    bx = om[0, 1] / tau
    s2e = om[0, 0] - om[0, 1] ** 2 / tau
    a, c = B[0, 1], B[1:, 1]
    Z = data.z
    mu_z = Z.mean(axis=0)
    s_zz = (Z - mu_z).T @ (Z - mu_z) / G
    s_zx = s_zz @ c
    at_bound = bool(tau < BOUND_TOL * max(np.var(xbar), 1e-300)
                    or s2e < BOUND_TOL * max(np.var(y), 1e-300))
    f = _profile(eta, d)
    return TwoLevelFit(
        b0=float(B[0, 0] - bx * a), b_z=B[1:, 0] - bx * c, b_xi=float(bx),
        sigma2_e=float(s2e), sigma_w=sw, mu_z=mu_z, s_zz=s_zz, s_zx=s_zx,
        s_xx=float(tau + c @ s_zx), mu_x=float(a + c @ mu_z),
        psi=np.concatenate([[sw, om[0, 0], om[0, 1], tau], B[:, 0], B[:, 1]]),
        loglik=-float(f), converged=bool(grad < GRAD_TOL and np.isfinite(f)),
        grad_max=float(grad), reason=Reason.NEGATIVE_VARIANCE if at_bound else None,
    )


def joint_cov_one(d: _Data, fit: TwoLevelFit) -> np.ndarray:
    """Covariance of (b0, b_z, b_xi) of the joint ML (lavaan ``fixed.x = FALSE``) from the
    analytic Hessian at ``fit.psi`` (:func:`~.twolevel_batch.joint_cov_batch`: the batch's
    own arithmetic); NaN where the Hessian is singular."""
    _, _, H = batch_derivs(d.stats, fit.psi[None])
    return joint_cov_batch(fit.psi[None], H)[0]


def _newton_polish(d: _Data, eta: np.ndarray) -> np.ndarray:
    """Newton steps with the closed-form derivatives of the full likelihood from the BFGS
    solution to the optimum at machine precision.

    BFGS stops where the profile is flat to its tolerance, which can leave weakly
    determined directions (a small Var(x^B)) off in the last digits. The polished point
    replaces the BFGS one only when Newton converged inside
    the parameter space (Omega positive definite) and the likelihood is not lower.
    """
    sw, om = _omega(eta)
    try:
        B = _gls(d, sw, om)
    except np.linalg.LinAlgError:
        return eta
    psi0 = np.concatenate([[sw, om[0, 0], om[0, 1], om[1, 1]], B[:, 0], B[:, 1]])
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        psi, conv = newton_batch(d.stats, psi0[None])
    sw, o00, o01, tau = psi[0, :4]
    if not conv[0] or not (sw > 0 and tau > 0 and o00 * tau > o01**2):
        return eta
    new = np.array([np.log(sw), 0.5 * np.log(tau), o01 / np.sqrt(tau),
                    0.5 * np.log(o00 - o01**2 / tau)])
    f_old, f_new = _profile(eta, d), _profile(new, d)
    return new if f_new <= f_old + 1e-12 * abs(f_old) else eta


def _z_loglik(z: np.ndarray, mu_z: np.ndarray, s_zz: np.ndarray) -> float:
    """Normal log-likelihood of the groups' z (constant dropped)."""
    if z.shape[1] == 0:
        return 0.0
    sign, logdet = np.linalg.slogdet(s_zz)
    if sign <= 0:
        return -np.inf
    D = z - mu_z
    return float(-0.5 * (len(z) * logdet + np.sum(D @ np.linalg.inv(s_zz) * D)))
