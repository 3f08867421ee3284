"""Two-level SEM on the long data (any group sizes, p >= 1 x), by our own ML.

lavaan model (``cluster = group``)::

    level: 1
        x ~~ x
    level: 2
        y ~ z + x

x_ig = x^B_g + x^W_ig with Var(x^W) = sigma_w; at level 2 y and z are between-only and
y = b0 + b_z' z + b_xi x^B + e. lavaan (``fixed.x = TRUE``) treats z and the between part
of x as exogenous covariates: their means, variances and covariance are *fixed* at the
estimates of the unrestricted (saturated) two-level model, and the free parameters are
sigma_w, b0, b_z, b_xi and Var(e). Since the model is a reparametrization of the
saturated one, the estimates are those of the saturated two-level ML; we compute them
from the likelihood of (y_g, xbar_g) given z_g, which for a group of size n_g is
bivariate normal with mean B' [1, z_g] and covariance Omega + diag(0, sigma_w / n_g),
times the within-group part (n_g - 1 contrasts with variance sigma_w). The GLS
coefficients B are profiled out; (sigma_w, Omega) are optimized by BFGS from the ANOVA
moments. Standard errors follow lavaan's default for two-level models
(``information = "observed"``): the inverse Hessian of the log-likelihood in the free
parameters with the fixed ones held at their values.

Several x (``level: 1 / x1 ~~ x1 + x2; x2 ~~ x2 / level: 2 / y ~ z + x1 + x2``): the same
with u_g = (y_g, xbar_g) of length 1 + p, covariance Omega + blockdiag(0, Sigma_w / n_g) and
the pooled within scatter of x (N - G df) for Sigma_w (:func:`fit_two_level_multi`; BFGS
with the analytic gradient, then analytic Newton; reference path only). For one x it
reproduces :func:`fit_two_level`, which keeps its own code and the fast batch engine.

Reference: R ``lavaan::sem(model, data = long, cluster = "group")``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..batch import Batch
from ..dataset import Dataset
from ..options import Option
from ..results import BatchResult, FitResult
from ..status import Reason, flag, no_flags
from .base import Estimator

__all__ = [
    "SEM2Level",
    "TwoLevelFit",
    "TwoLevelFitMulti",
    "fit_two_level",
    "fit_two_level_multi",
]

#: Relative size below which a variance counts as having hit the zero bound.
_BOUND_TOL = 1e-4


@dataclass(frozen=True)
class _Data:
    """Sufficient statistics: per group y, xbar, [1, z] and size; the within sum of squares."""

    u: np.ndarray  # (G, 2): y, xbar
    X: np.ndarray  # (G, k): 1, z
    sizes: np.ndarray
    ssw: float


def _prepare(data: Dataset) -> _Data:
    xbar = data.xbar[:, 0]
    within = data.x[:, 0] - np.repeat(xbar, data.sizes)
    X = np.column_stack([np.ones(data.n_groups), data.z])
    return _Data(
        u=np.column_stack([data.y, xbar]), X=X, sizes=data.sizes.astype(float),
        ssw=float(within @ within),
    )


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
    """ML solution of the two-level model (lavaan's parameters and the fixed ones).

    Attributes
    ----------
    b0, b_z, b_xi, sigma2_e, sigma_w : the free parameters.
    mu_z, s_zz, s_zx, s_xx, mu_x : the (fixed) moments of z and the between part of x.
    loglik : float
        Log-likelihood of x and y given z (up to a constant).
    converged : bool
    grad_max : float
        Largest absolute gradient of the profile log-likelihood at the solution.
    at_bound : bool
        A between variance (of x^B given z, or of e) is at the zero bound.
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
    loglik: float
    converged: bool
    grad_max: float
    at_bound: bool

    def free(self) -> np.ndarray:
        """lavaan's free parameters: sigma_w, b0, b_z, b_xi, sigma2_e."""
        return np.concatenate([[self.sigma_w, self.b0], self.b_z, [self.b_xi, self.sigma2_e]])


def _conditional_from_free(theta: np.ndarray, fit: TwoLevelFit) -> tuple[float, np.ndarray,
                                                                        np.ndarray]:
    """(sigma_w, Omega, B) of the conditional model from lavaan's free parameters."""
    q = len(fit.b_z)
    sw, b0 = theta[0], theta[1]
    bz = theta[2 : 2 + q]
    bx, s2e = theta[2 + q], theta[3 + q]
    c = np.linalg.solve(fit.s_zz, fit.s_zx) if q else np.zeros(0)
    a = fit.mu_x - c @ fit.mu_z
    tau = fit.s_xx - c @ fit.s_zx
    om = np.array([[bx**2 * tau + s2e, bx * tau], [bx * tau, tau]])
    B = np.column_stack([
        np.concatenate([[b0 + bx * a], bz + bx * c]),
        np.concatenate([[a], c]),
    ])
    return float(sw), om, B


def fit_two_level(data: Dataset) -> TwoLevelFit:
    """ML fit of the two-level model (one x, any group sizes, q >= 0 covariates z)."""
    d = _prepare(data)
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
    wyx = S0[0, 1]
    l21 = wyx / np.sqrt(tau0)
    l22 = np.sqrt(max(S0[0, 0] - l21**2, 0.05 * S0[0, 0]))
    eta0 = np.array([np.log(mse), 0.5 * np.log(tau0), l21, np.log(l22)])
    from scipy import optimize  # lazy: the fast engine never needs it

    opt = optimize.minimize(_profile, eta0, args=(d,), method="BFGS",
                            options={"gtol": 1e-9, "maxiter": 2000})
    eta = opt.x
    # polish with Newton steps on a finite-difference Hessian
    for _ in range(5):
        g = optimize.approx_fprime(eta, _profile, 1e-7, d)
        if np.max(np.abs(g)) < 1e-7:
            break
        H = _fd_hessian(lambda e: _profile(e, d), eta, 1e-4)
        try:
            step = np.linalg.solve(H, g)
        except np.linalg.LinAlgError:
            break
        if not np.isfinite(_profile(eta - step, d)) or _profile(eta - step, d) > _profile(
            eta, d
        ) + 1e-9:
            break
        eta = eta - step
    eta = _newton_polish(d, eta)
    grad = optimize.approx_fprime(eta, _profile, 1e-7, d)
    sw, om = _omega(eta)
    B = _gls(d, sw, om)
    tau = om[1, 1]
    bx = om[0, 1] / tau
    s2e = om[0, 0] - om[0, 1] ** 2 / tau
    a, c = B[0, 1], B[1:, 1]
    b0 = B[0, 0] - bx * a
    bz = B[1:, 0] - bx * c
    Z = data.z
    mu_z = Z.mean(axis=0)
    s_zz = (Z - mu_z).T @ (Z - mu_z) / G
    s_zx = s_zz @ c
    at_bound = bool(tau < _BOUND_TOL * max(np.var(xbar), 1e-300)
                    or s2e < _BOUND_TOL * max(np.var(y), 1e-300))
    return TwoLevelFit(
        b0=float(b0), b_z=bz, b_xi=float(bx), sigma2_e=float(s2e), sigma_w=sw,
        mu_z=mu_z, s_zz=s_zz, s_zx=s_zx, s_xx=float(tau + c @ s_zx),
        mu_x=float(a + c @ mu_z), loglik=-float(_profile(eta, d)),
        converged=bool(np.max(np.abs(grad)) < 1e-3 and np.isfinite(opt.fun)),
        grad_max=float(np.max(np.abs(grad))), at_bound=at_bound,
    )


def _newton_polish(d: _Data, eta: np.ndarray) -> np.ndarray:
    """Newton steps with the closed-form derivatives of the full likelihood from the BFGS
    solution to the optimum at machine precision.

    BFGS on finite-difference gradients stops where their rounding noise (about 1e-6)
    dominates, which leaves weakly determined directions (a small Var(x^B)) off by up
    to 1e-3. The polished point replaces the BFGS one only when Newton converged inside
    the parameter space (Omega positive definite) and the likelihood is not lower.
    """
    sw, om = _omega(eta)
    try:
        B = _gls(d, sw, om)
    except np.linalg.LinAlgError:
        return eta
    s = _class_stats(d.u[None], d.X[None], d.sizes[None], np.array([d.ssw]))
    psi0 = np.concatenate([[sw, om[0, 0], om[0, 1], om[1, 1]], B[:, 0], B[:, 1]])
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        psi, conv = _newton_batch(s, psi0[None])
    sw, o00, o01, tau = psi[0, :4]
    if not conv[0] or not (sw > 0 and tau > 0 and o00 * tau > o01**2):
        return eta
    new = np.array([np.log(sw), 0.5 * np.log(tau), o01 / np.sqrt(tau),
                    0.5 * np.log(o00 - o01**2 / tau)])
    f_old, f_new = _profile(eta, d), _profile(new, d)
    return new if f_new <= f_old + 1e-12 * abs(f_old) else eta


def _fd_hessian(f, x: np.ndarray, h: float) -> np.ndarray:
    """Central-difference Hessian with relative steps."""
    k = len(x)
    H = np.empty((k, k))
    steps = h * np.maximum(1.0, np.abs(x))
    for i in range(k):
        for j in range(i, k):
            ei = np.zeros(k)
            ej = np.zeros(k)
            ei[i] = steps[i]
            ej[j] = steps[j]
            H[i, j] = H[j, i] = (
                f(x + ei + ej) - f(x + ei - ej) - f(x - ei + ej) + f(x - ei - ej)
            ) / (4 * steps[i] * steps[j])
    return H


def _z_loglik(z: np.ndarray, mu_z: np.ndarray, s_zz: np.ndarray) -> float:
    """Normal log-likelihood of the groups' z (constant dropped)."""
    if z.shape[1] == 0:
        return 0.0
    sign, logdet = np.linalg.slogdet(s_zz)
    if sign <= 0:
        return -np.inf
    D = z - mu_z
    return float(-0.5 * (len(z) * logdet + np.sum(D @ np.linalg.inv(s_zz) * D)))


def _with_moments(theta: np.ndarray, fit: TwoLevelFit) -> TwoLevelFit:
    """A copy of ``fit`` whose moments of z and x^B are taken from the tail of theta."""
    q = len(fit.b_z)
    i = 4 + q
    mu_z = theta[i : i + q]
    i += q
    iu = np.triu_indices(q)
    s_zz = np.zeros((q, q))
    s_zz[iu] = theta[i : i + len(iu[0])]
    s_zz = s_zz + np.triu(s_zz, 1).T
    i += len(iu[0])
    s_zx = theta[i : i + q]
    i += q
    return replace(fit, mu_z=mu_z, s_zz=s_zz, s_zx=s_zx, s_xx=float(theta[i]),
                   mu_x=float(theta[i + 1]))


def observed_information(data: Dataset, fit: TwoLevelFit, *, fixed_x: bool = True) -> np.ndarray:
    """Negative Hessian of the log-likelihood (extrapolated central differences).

    Parameters
    ----------
    fixed_x : bool
        True (lavaan's default): only sigma_w, b0, b_z, b_xi, sigma2_e are free; the
        moments of z and x^B are held fixed. False (lavaan ``fixed.x = FALSE``): those
        moments are free parameters too (appended in the order mu_z, Var(z) upper
        triangle, Cov(z, x^B), Var(x^B), mean of x^B) and the likelihood includes z.
    """
    d = _prepare(data)
    z = data.z

    def negll(theta: np.ndarray) -> float:
        f = fit if fixed_x else _with_moments(theta, fit)
        sw, om, B = _conditional_from_free(theta, f)
        if sw <= 0:
            return np.inf
        ll = _loglik_parts(d, sw, om, B)
        if not fixed_x:
            ll += _z_loglik(z, f.mu_z, f.s_zz)
        return -ll

    theta = fit.free()
    if not fixed_x:
        iu = np.triu_indices(len(fit.b_z))
        theta = np.concatenate(
            [theta, fit.mu_z, fit.s_zz[iu], fit.s_zx, [fit.s_xx, fit.mu_x]]
        )
    # Richardson extrapolation of central differences (steps h and 2h, error O(h^4)):
    # plain central differences with h = 1e-4 are off by up to ~1e-5 in the SEs of
    # weakly determined fits (rounding at smaller, truncation at larger steps)
    h = 5e-4
    return (4 * _fd_hessian(negll, theta, h) - _fd_hessian(negll, theta, 2 * h)) / 3


# ---------------------------------------------------------------------- batch (fast engine)

#: The fast path hands a replication to the reference fit when a between variance is
#: within this relative distance of the zero bound (ten times the bound tolerance), so
#: verdicts near the bound are the reference's.
_FAST_MARGIN = 10 * _BOUND_TOL


@dataclass(frozen=True, eq=False)
class _BatchStats:
    """Sufficient statistics of R replications, pooled over groups of equal size.

    Groups of one size share Sigma_g, so the likelihood needs per size class only the
    count and the moment matrix of (y, xbar, 1, z); C classes (1 for balanced data).
    """

    count: np.ndarray  # (R, C) groups of each size
    inv_n: np.ndarray  # (R, C) 1 / size
    M: np.ndarray  # (R, C, 2 + k, 2 + k): sum over the class of [u, X]' [u, X]
    ssw: np.ndarray  # (R,) within sum of squares
    n_within: np.ndarray  # (R,) N - G
    n_groups: int


def _class_stats(u: np.ndarray, X: np.ndarray, sizes: np.ndarray, ssw: np.ndarray
                 ) -> _BatchStats:
    """Pool (R, G) group data (u: y, xbar; X: 1, z) into size classes."""
    R, G, k = X.shape
    sizes = np.asarray(sizes, dtype=int)
    lo = int(sizes.min())
    C = int(sizes.max()) - lo + 1
    onehot = (sizes[:, :, None] == lo + np.arange(C)).astype(float)  # (R, G, C)
    V = np.concatenate([u, X], axis=2)
    outer = (V[:, :, :, None] * V[:, :, None, :]).reshape(R, G, -1)
    M = (onehot.transpose(0, 2, 1) @ outer).reshape(R, C, 2 + k, 2 + k)
    return _BatchStats(
        count=onehot.sum(axis=1), inv_n=np.broadcast_to(1.0 / (lo + np.arange(C)), (R, C)),
        M=M, ssw=np.asarray(ssw, dtype=float), n_within=sizes.sum(axis=1) - float(G),
        n_groups=G,
    )


def _batch_stats(batch: Batch) -> tuple[_BatchStats, np.ndarray, np.ndarray]:
    """Class statistics of a batch, and Var(y), Var(xbar) per replication."""
    xbar = batch.xbar
    dev = np.where(batch.mask, batch.x - xbar[:, :, None], 0.0)
    R, G = batch.y.shape
    X = np.concatenate([np.ones((R, G, 1)), batch.z], axis=2)
    s = _class_stats(np.stack([batch.y, xbar], axis=2), X, batch.sizes,
                     np.einsum("rgm,rgm->r", dev, dev))
    return s, batch.y.var(axis=1), xbar.var(axis=1)


def _subset(s: _BatchStats, idx: np.ndarray) -> _BatchStats:
    return _BatchStats(s.count[idx], s.inv_n[idx], s.M[idx], s.ssw[idx], s.n_within[idx],
                       s.n_groups)


def _residual_moments(s: _BatchStats, B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per class sum of r r' (R, C, 2, 2) and of x r' (R, C, k, 2), r = u - B' x."""
    Muu, Mux, Mxx = s.M[..., :2, :2], s.M[..., :2, 2:], s.M[..., 2:, 2:]
    Bc = B[:, None]  # (R, 1, k, 2)
    P = Mux.swapaxes(-1, -2) - Mxx @ Bc
    Q = Muu - Mux @ Bc - (Mux @ Bc).swapaxes(-1, -2) + Bc.swapaxes(-1, -2) @ Mxx @ Bc
    return Q, P


def _batch_derivs(s: _BatchStats, psi: np.ndarray) -> tuple[np.ndarray, ...]:
    """Negative log-likelihood, gradient and Hessian (closed forms) for every replication.

    ``psi`` (R, 4 + 2k) holds sigma_w, Omega_yy, Omega_yx, Omega_xx, then the columns of
    B (y, then xbar). The likelihood is :func:`_loglik_parts`: the within part plus, per
    group, a bivariate normal with covariance Sigma_g = Omega + diag(0, sigma_w / n_g),
    which is linear in the covariance parameters; the derivatives are the textbook ones
    of a normal model (d W = -W dSigma W, W = Sigma_g^-1), summed per size class with
    Q = sum r r', P = sum x r' (e.g. sum_g r' W S_i W S_j W r = tr(W S_i W S_j W Q)).
    The log-likelihood is NaN outside the reference's parameter space (sigma_w > 0,
    Omega positive definite).
    """
    R, C = s.count.shape
    k = s.M.shape[-1] - 2
    sw, o00, o01, o11 = (psi[:, i, None] for i in range(4))
    B = np.stack([psi[:, 4 : 4 + k], psi[:, 4 + k :]], axis=2)  # (R, k, 2)
    d = o11 + sw * s.inv_n
    det = np.where(s.count > 0, o00 * d - o01**2, 1.0)
    bad = ((psi[:, 0] <= 0) | np.any(det <= 0, axis=1) | (psi[:, 3] <= 0)
           | (psi[:, 1] * psi[:, 3] <= psi[:, 2] ** 2))  # Omega not positive definite
    with np.errstate(divide="ignore", invalid="ignore"):
        W = np.empty((R, C, 2, 2))
        W[..., 0, 0] = d / det
        W[..., 0, 1] = W[..., 1, 0] = -o01 / det
        W[..., 1, 1] = o00 / det
        Q, P = _residual_moments(s, B)
        swv = psi[:, 0]
        negll = 0.5 * (s.n_within * np.log(swv) + s.ssw / swv) + 0.5 * (
            (s.count * np.log(det)).sum(axis=1) + np.einsum("rcab,rcba->r", W, Q))
        # dSigma / d(sigma_w, O_yy, O_yx, O_xx), shape (4, R, C, 2, 2)
        S = np.zeros((4, R, C, 2, 2))
        S[0, ..., 1, 1] = s.inv_n
        S[1, ..., 0, 0] = 1.0
        S[2, ..., 0, 1] = S[2, ..., 1, 0] = 1.0
        S[3, ..., 1, 1] = 1.0
        A = W @ S  # W S_j
        AW = A @ W  # W S_j W
        WQ = W @ Q
        WQW = WQ @ W
        Pk = P @ W  # sum_g x v'
        grad = np.empty((R, 4 + 2 * k))
        hess = np.empty((R, 4 + 2 * k, 4 + 2 * k))
        trA = np.einsum("jrcaa,rc->jr", A, s.count)
        grad[:, :4] = 0.5 * (trA - np.einsum("jrcab,rcba->jr", S, WQW)).T
        grad[:, 0] += 0.5 * (s.n_within / swv - s.ssw / swv**2)
        grad[:, 4:] = -Pk.sum(axis=1).swapaxes(1, 2).reshape(R, 2 * k)
        hess[:, :4, :4] = 0.5 * (
            -np.einsum("ircab,jrcba,rc->rij", A, A, s.count)
            + 2 * np.einsum("ircab,jrcbd,rcda->rij", A, A, WQ))
        hess[:, 0, 0] += 0.5 * (-s.n_within / swv**2 + 2 * s.ssw / swv**3)
        hbp = np.einsum("rcka,jrcab->rbkj", P, AW).reshape(R, 2 * k, 4)
        hess[:, 4:, :4] = hbp
        hess[:, :4, 4:] = hbp.transpose(0, 2, 1)
        hess[:, 4:, 4:] = np.einsum("rcab,rckl->rakbl", W, s.M[..., 2:, 2:]).reshape(
            R, 2 * k, 2 * k)
    negll[bad] = np.nan
    return negll, grad, hess


def _start_batch(s: _BatchStats, *, clamp: bool = False) -> np.ndarray:
    """Closed-form start (the balanced-data ML): ANOVA within variance, OLS of (y, xbar)
    on [1, z], residual covariance minus diag(0, sigma_w mean(1/n)). ``clamp`` keeps
    Omega positive definite (its variances at least 5% of the residual ones)."""
    R, C = s.count.shape
    k = s.M.shape[-1] - 2
    sw = s.ssw / s.n_within
    M = s.M.sum(axis=1)
    B = np.linalg.solve(M[:, 2:, 2:], M[:, 2:, :2])  # (R, k, 2)
    Q, _ = _residual_moments(s, B)
    S = Q.sum(axis=1) / s.n_groups
    psi = np.empty((R, 4 + 2 * k))
    psi[:, 0] = sw
    psi[:, 1] = S[:, 0, 0]
    psi[:, 2] = S[:, 0, 1]
    psi[:, 3] = S[:, 1, 1] - sw * (s.count * s.inv_n).sum(axis=1) / s.n_groups
    if clamp:
        psi[:, 3] = np.maximum(psi[:, 3], 0.05 * S[:, 1, 1])
        psi[:, 1] = np.maximum(psi[:, 1], psi[:, 2] ** 2 / psi[:, 3] + 0.05 * S[:, 0, 0])
    psi[:, 4 : 4 + k] = B[:, :, 0]
    psi[:, 4 + k :] = B[:, :, 1]
    return psi


def _newton_batch(s: _BatchStats, psi: np.ndarray, *, max_iter: int = 60,
                  step_tol: float = 1e-11) -> tuple[np.ndarray, np.ndarray]:
    """Newton's method on the full likelihood, all replications at once.

    Far from the optimum (Newton decrement g' H^-1 g above 1e-6) steps are halved until
    the likelihood increases; closer in, full steps are taken (the quadratic region,
    where likelihood differences are at rounding level). Converged where the largest
    step, relative to 1 + |psi|, falls below ``step_tol``; a replication whose Hessian is
    not positive definite along the Newton direction, or whose Omega leaves the positive
    definite cone, stops unconverged.
    """
    R = psi.shape[0]
    psi = psi.copy()
    f, g, H = _batch_derivs(s, psi)
    conv = np.zeros(R, dtype=bool)
    active = np.isfinite(f)
    for _ in range(max_iter):
        idx = np.flatnonzero(active & ~conv)
        if not len(idx):
            break
        step = np.full(g[idx].shape, np.nan)
        fin = np.all(np.isfinite(H[idx]), axis=(1, 2))
        if fin.any():
            step[fin] = _solve(H[idx][fin], g[idx][fin])
        dec = np.einsum("rp,rp->r", g[idx], step)
        good = np.isfinite(dec) & (dec >= 0)
        active[idx[~good]] = False
        idx, step, dec = idx[good], step[good], dec[good]
        t = np.ones(len(idx))
        strict = dec >= 1e-6
        for _h in range(40):
            if not len(idx):
                break
            trial = psi[idx] - t[:, None] * step
            ft, gt, Ht = _batch_derivs(_subset(s, idx), trial)
            ok = np.isfinite(ft) & (~strict | (ft <= f[idx]))
            acc = idx[ok]
            small = np.max(np.abs(t[ok, None] * step[ok]) / (1 + np.abs(psi[acc])), axis=1)
            psi[acc], f[acc], g[acc], H[acc] = trial[ok], ft[ok], gt[ok], Ht[ok]
            conv[acc[small < step_tol]] = True
            idx, step, t, strict = idx[~ok], step[~ok], t[~ok] / 2, strict[~ok]
        active[idx] = False  # no admissible point along the Newton direction
    return psi, conv


def _solve(H: np.ndarray, g: np.ndarray) -> np.ndarray:
    """H^-1 g for a stack of matrices; NaN where H is singular."""
    out = np.full(g.shape, np.nan)
    try:
        return np.linalg.solve(H, g[:, :, None])[:, :, 0]
    except np.linalg.LinAlgError:
        for i in range(len(g)):  # rare: find the singular ones
            try:
                out[i] = np.linalg.solve(H[i], g[i])
            except np.linalg.LinAlgError:
                pass
    return out


def _fit_batch_two_level(batch: Batch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ML estimates and observed-information SEs (``fixed_x=True``) of every replication.

    Returns params (R, k), SEs (R, k) and a mask of the replications the batch solution
    covers: an interior optimum (both between variances clear of the zero bound by
    :data:`_FAST_MARGIN`, relative), a converged Newton solve and a positive definite
    information. The others go through the reference fit.
    """
    s, var_y, var_xbar = _batch_stats(batch)
    R, k = batch.n_reps, len(batch.terms) - 1
    q = k - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        psi = _start_batch(s, clamp=not batch.balanced)
        if batch.balanced:  # the start is the ML (every Sigma_g is the same)
            f, g, H = _batch_derivs(s, psi)
            conv = np.isfinite(f)
        else:
            psi, conv = _newton_batch(s, psi)
            f, g, H = _batch_derivs(s, psi)
        o00, o01, tau = psi[:, 1], psi[:, 2], psi[:, 3]
        bx = o01 / tau
        s2e = o00 - o01 * bx
        By, Bx = psi[:, 4 : 4 + k], psi[:, 4 + k :]
        params = np.concatenate([By - bx[:, None] * Bx, bx[:, None]], axis=1)
        inside = (tau >= _FAST_MARGIN * var_xbar) & (s2e >= _FAST_MARGIN * var_y)
        ok = conv & inside & (s.n_within > 0) & np.all(np.isfinite(params), axis=1)
        # theta = (sigma_w, b0, b_z, b_xi, sigma2_e) -> psi, with the moments of z and
        # x^B (the xbar column of B and Omega_xx) fixed: J = d psi / d theta
        P, T = 4 + 2 * k, 4 + q
        J = np.zeros((R, P, T))
        J[:, 0, 0] = 1.0
        J[:, 4 : 4 + k, 1 : 1 + k] = np.eye(k)
        J[:, 1, 1 + k] = 2 * bx * tau
        J[:, 2, 1 + k] = tau
        J[:, 4 : 4 + k, 1 + k] = Bx
        J[:, 1, 2 + k] = 1.0
        info = np.einsum("rpa,rpq,rqb->rab", J, H, J)
        info[:, 1 + k, 1 + k] += 2 * tau * g[:, 1]  # curvature of Omega_yy in b_xi
        info[~ok] = np.eye(T)
        var = np.diagonal(np.linalg.inv(info), axis1=1, axis2=2)
        ok &= np.all(np.isfinite(var) & (var > 0), axis=1)
        se = np.sqrt(np.where(ok[:, None], var, np.nan))[:, 1 : 2 + k]
    return params, se, ok


# ---------------------------------------------------------------------- several x (reference)


@dataclass(frozen=True, eq=False)
class _DataMulti:
    """Sufficient statistics for p >= 1 x, pooled over groups of equal size.

    u_g = (y_g, xbar_g) has m = 1 + p entries and X_g = (1, z_g) k; per size class the
    count and the moment matrix of [u, X]; the pooled within scatter of x (p x p).
    """

    count: np.ndarray  # (C,)
    inv_n: np.ndarray  # (C,)
    M: np.ndarray  # (C, m + k, m + k)
    scatter: np.ndarray  # (p, p)
    n_within: float  # N - G
    m: int
    k: int


def _prepare_multi(data: Dataset) -> _DataMulti:
    xbar = data.xbar
    dev = data.x - np.repeat(xbar, data.sizes, axis=0)
    V = np.column_stack([data.y, xbar, np.ones(data.n_groups), data.z])
    sizes, cls = np.unique(data.sizes, return_inverse=True)
    onehot = np.zeros((data.n_groups, len(sizes)))
    onehot[np.arange(data.n_groups), cls] = 1.0
    return _DataMulti(
        count=onehot.sum(axis=0), inv_n=1.0 / sizes, M=np.einsum("gc,ga,gb->cab", onehot, V, V),
        scatter=dev.T @ dev, n_within=float(data.n_persons - data.n_groups),
        m=1 + data.n_x, k=1 + data.n_z,
    )


def _sigma_classes(d: _DataMulti, sw: np.ndarray, om: np.ndarray) -> np.ndarray:
    """Sigma_c = Omega + blockdiag(0, Sigma_w / n_c) per size class, (C, m, m)."""
    S = np.broadcast_to(om, (len(d.count), d.m, d.m)).copy()
    S[:, 1:, 1:] += sw[None] * d.inv_n[:, None, None]
    return S


def _moments_multi(d: _DataMulti, B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per class Q = sum r r' (C, m, m) and P = sum x r' (C, k, m), r = u - B' x."""
    m = d.m
    Muu, Mux, Mxx = d.M[:, :m, :m], d.M[:, :m, m:], d.M[:, m:, m:]
    P = Mux.transpose(0, 2, 1) - Mxx @ B
    Q = Muu - Mux @ B - (Mux @ B).transpose(0, 2, 1) + B.T @ Mxx @ B
    return Q, P


def _gls_multi(d: _DataMulti, W: np.ndarray) -> np.ndarray:
    """GLS coefficients B (k x m) given the per-class inverse covariances W (C, m, m)."""
    m, k = d.m, d.k
    A = np.einsum("cjl,cab->jalb", W, d.M[:, m:, m:]).reshape(m * k, m * k)
    b = np.einsum("cau,cuj->ja", d.M[:, m:, :m], W).reshape(m * k)
    return np.linalg.solve(A, b).reshape(m, k).T


def _negll_multi(d: _DataMulti, sw: np.ndarray, om: np.ndarray, B: np.ndarray) -> float:
    """Negative log-likelihood of the persons' x and the groups' y given z (no constant):
    the within part (N - G df, covariance Sigma_w) plus, per group, a normal for u_g."""
    sign_w, logdet_w = np.linalg.slogdet(sw)
    S = _sigma_classes(d, sw, om)
    sign, logdet = np.linalg.slogdet(S)
    if sign_w <= 0 or np.any(sign <= 0) or np.linalg.eigvalsh(om)[0] <= 0:
        return np.inf
    Q, _ = _moments_multi(d, B)
    within = d.n_within * logdet_w + np.trace(np.linalg.solve(sw, d.scatter))
    between = d.count @ logdet + np.einsum("cab,cba->", np.linalg.inv(S), Q)
    return float(0.5 * (within + between))


def _tri(a: int) -> tuple[np.ndarray, np.ndarray]:
    return np.tril_indices(a)


def _from_eta(eta: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray]:
    """Sigma_w and Omega (order y, x_1..x_p) from Cholesky factors with log diagonals;
    Omega's factor is taken in the order (x_1..x_p, y), so its first p x p block is the
    factor of Var(x^B | z) and its last diagonal entry the residual SD of y."""
    m = p + 1
    nw = p * (p + 1) // 2
    Lw = np.zeros((p, p), dtype=eta.dtype)  # complex for the complex-step Jacobian
    Lw[_tri(p)] = eta[:nw]
    Lw[np.diag_indices(p)] = np.exp(np.diag(Lw))
    Lo = np.zeros((m, m), dtype=eta.dtype)
    Lo[_tri(m)] = eta[nw:]
    Lo[np.diag_indices(m)] = np.exp(np.diag(Lo))
    perm = np.r_[p, np.arange(p)]  # (x.., y) -> (y, x..)
    om = (Lo @ Lo.T)[np.ix_(perm, perm)]
    return Lw @ Lw.T, om


def _to_eta(sw: np.ndarray, om: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_from_eta` (both matrices positive definite)."""
    p = sw.shape[0]
    perm = np.r_[np.arange(1, p + 1), 0]
    out = []
    for L in (np.linalg.cholesky(sw), np.linalg.cholesky(om[np.ix_(perm, perm)])):
        L = L.copy()
        L[np.diag_indices(len(L))] = np.log(np.diag(L))
        out.append(L[_tri(len(L))])
    return np.concatenate(out)


def _profile_multi(eta: np.ndarray, d: _DataMulti) -> float:
    sw, om = _from_eta(eta, d.m - 1)
    try:
        B = _gls_multi(d, np.linalg.inv(_sigma_classes(d, sw, om)))
    except np.linalg.LinAlgError:
        return np.inf
    f = _negll_multi(d, sw, om, B)
    return f if np.isfinite(f) else np.inf


def _profile_grad_multi(eta: np.ndarray, d: _DataMulti) -> np.ndarray:
    """Analytic gradient of :func:`_profile_multi`: the gradient of the full likelihood in
    the covariance parameters at the GLS B (envelope theorem), times the Jacobian of
    (vech Sigma_w, vech Omega) in eta (complex step, exact to rounding)."""
    p = d.m - 1
    sw, om = _from_eta(eta, p)
    try:
        B = _gls_multi(d, np.linalg.inv(_sigma_classes(d, sw, om)))
        f, g, _ = _derivs_multi(d, _psi_multi(sw, om, B), hessian=False)
    except np.linalg.LinAlgError:
        return np.full(len(eta), np.nan)
    iw, io = np.triu_indices(p), np.triu_indices(p + 1)
    J = np.empty((len(iw[0]) + len(io[0]), len(eta)))
    for i in range(len(eta)):
        e = eta.astype(complex)
        e[i] += 1e-30j
        swc, omc = _from_eta(e, p)
        J[:, i] = np.concatenate([swc[iw].imag, omc[io].imag]) / 1e-30
    return J.T @ g[: J.shape[0]]


def _sym_basis(a: int) -> np.ndarray:
    """Symmetric unit matrices E_ij (i <= j, row-major upper triangle), (a(a+1)/2, a, a)."""
    iu = np.triu_indices(a)
    E = np.zeros((len(iu[0]), a, a))
    E[np.arange(len(iu[0])), iu[0], iu[1]] = 1.0
    E[np.arange(len(iu[0])), iu[1], iu[0]] = 1.0
    return E


def _psi_multi(sw: np.ndarray, om: np.ndarray, B: np.ndarray) -> np.ndarray:
    """(vech Sigma_w, vech Omega (upper triangles, row-major), vec B (column-major))."""
    return np.concatenate([sw[np.triu_indices(len(sw))], om[np.triu_indices(len(om))],
                           B.T.reshape(-1)])


def _unpsi_multi(psi: np.ndarray, d: _DataMulti) -> tuple[np.ndarray, ...]:
    p, m, k = d.m - 1, d.m, d.k
    nw, no = p * (p + 1) // 2, m * (m + 1) // 2
    sw = _unvech(psi[:nw], p)
    om = _unvech(psi[nw : nw + no], m)
    return sw, om, psi[nw + no :].reshape(m, k).T


def _derivs_multi(d: _DataMulti, psi: np.ndarray, *, hessian: bool = True
                  ) -> tuple[float, np.ndarray, np.ndarray | None]:
    """Negative log-likelihood, gradient and Hessian (None unless ``hessian``) in ``psi``
    (:func:`_psi_multi`).

    Sigma_c is linear in the covariance parameters (dSigma_c / dtheta_j = S_j); with
    W = Sigma_c^-1 and, per class, Q = sum r r', P = sum x r' (the textbook normal-model
    derivatives, as in :func:`_batch_derivs` for p = 1).
    """
    p, m, k = d.m - 1, d.m, d.k
    sw, om, B = _unpsi_multi(psi, d)
    f = _negll_multi(d, sw, om, B)
    C = len(d.count)
    Ew, Eo = _sym_basis(p), _sym_basis(m)
    nw, no = len(Ew), len(Eo)
    S = np.zeros((nw + no, C, m, m))
    S[:nw, :, 1:, 1:] = Ew[:, None] * d.inv_n[None, :, None, None]
    S[nw:] = Eo[:, None]
    W = np.linalg.inv(_sigma_classes(d, sw, om))
    Q, P = _moments_multi(d, B)
    A = W @ S  # (j, C, m, m): W S_j
    WQ = W @ Q
    WQW = WQ @ W
    npar = nw + no + m * k
    g = np.empty(npar)
    H = np.zeros((npar, npar))
    g[: nw + no] = 0.5 * (np.einsum("jcaa,c->j", A, d.count)
                          - np.einsum("jcab,cba->j", S, WQW))
    Wi = np.linalg.inv(sw)
    Aw = Wi @ Ew  # (j, p, p)
    g[:nw] += 0.5 * (d.n_within * np.einsum("jaa->j", Aw)
                     - np.einsum("jab,ba->j", Aw @ Wi, d.scatter))
    g[nw + no :] = -(P @ W).sum(axis=0).T.reshape(-1)
    if not hessian:
        return f, g, None
    H[: nw + no, : nw + no] = 0.5 * (-np.einsum("icab,jcba,c->ij", A, A, d.count)
                                     + 2 * np.einsum("icab,jcbd,cda->ij", A, A, WQ))
    H[:nw, :nw] += 0.5 * (-d.n_within * np.einsum("iab,jba->ij", Aw, Aw)
                          + 2 * np.einsum("iab,jbc,ca->ij", Aw, Aw, Wi @ d.scatter))
    HB = np.einsum("cka,jcab->jbk", P, A @ W).reshape(nw + no, m * k)  # P W S_j W
    H[nw + no :, : nw + no] = HB.T
    H[: nw + no, nw + no :] = HB
    H[nw + no :, nw + no :] = np.einsum("cjl,cab->jalb", W, d.M[:, m:, m:]).reshape(
        m * k, m * k)
    return f, g, H


def _newton_multi(d: _DataMulti, psi: np.ndarray, *, max_iter: int = 60,
                  step_tol: float = 1e-11) -> tuple[np.ndarray, bool]:
    """Newton's method on the full likelihood (step halving far from the optimum, as
    :func:`_newton_batch`); False when the Hessian is not positive definite along the
    Newton direction or no admissible point lies along it."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        f, g, H = _derivs_multi(d, psi)
        for _ in range(max_iter):
            try:
                step = np.linalg.solve(H, g)
            except np.linalg.LinAlgError:
                return psi, False
            dec = g @ step
            if not np.isfinite(dec) or dec < 0:
                return psi, False
            t = 1.0
            for _h in range(40):
                trial = psi - t * step
                ft = _negll_multi(d, *_unpsi_multi(trial, d))
                if np.isfinite(ft) and (dec < 1e-6 or ft <= f):
                    break
                t /= 2
            else:
                return psi, False
            small = np.max(np.abs(t * step) / (1 + np.abs(trial))) < step_tol
            psi = trial
            f, g, H = _derivs_multi(d, psi)
            if small:
                return psi, bool(np.isfinite(f))
    return psi, False


@dataclass(frozen=True)
class TwoLevelFitMulti:
    """ML solution of the two-level model with p >= 1 x (lavaan's parameters and the
    fixed ones).

    Attributes
    ----------
    b0 : float
    b_z : ndarray (q,)
    b_x : ndarray (p,)
        Coefficients of the between parts of the x.
    sigma2_e : float
    sigma_w : ndarray (p, p)
        Within covariance of x.
    mu_z, s_zz, s_zx, s_xx, mu_x : the (fixed) moments of z and x^B, shapes (q,), (q, q),
        (q, p), (p, p), (p,).
    loglik, converged, grad_max : as :class:`TwoLevelFit`.
    reason : Reason or None
        None for an interior solution; ``negative_variance`` when a between variance (of
        some x^B given z, or of e) is at the zero bound, ``not_positive_definite`` when
        the between (or within) covariance is singular with positive variances.
    """

    b0: float
    b_z: np.ndarray
    b_x: np.ndarray
    sigma2_e: float
    sigma_w: np.ndarray
    mu_z: np.ndarray
    s_zz: np.ndarray
    s_zx: np.ndarray
    s_xx: np.ndarray
    mu_x: np.ndarray
    loglik: float
    converged: bool
    grad_max: float
    reason: Reason | None

    def free(self) -> np.ndarray:
        """lavaan's free parameters: vech Sigma_w, b0, b_z, b_x, sigma2_e."""
        return np.concatenate([self.sigma_w[np.triu_indices(len(self.b_x))], [self.b0],
                               self.b_z, self.b_x, [self.sigma2_e]])

    def moments(self) -> np.ndarray:
        """The moments of z and x^B: mu_z, vech s_zz, s_zx (row-major), vech s_xx, mu_x."""
        q, p = len(self.b_z), len(self.b_x)
        return np.concatenate([self.mu_z, self.s_zz[np.triu_indices(q)], self.s_zx.ravel(),
                               self.s_xx[np.triu_indices(p)], self.mu_x])


def _unvech(v: np.ndarray, a: int) -> np.ndarray:
    M = np.zeros((a, a))
    M[np.triu_indices(a)] = v
    return M + np.triu(M, 1).T


def _conditional_multi(theta: np.ndarray, q: int, p: int, moments: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Sigma_w, Omega, B) of the conditional model from lavaan's free parameters and the
    moments of z and x^B (:meth:`TwoLevelFitMulti.free`, :meth:`~TwoLevelFitMulti.moments`)."""
    nw = p * (p + 1) // 2
    sw = _unvech(theta[:nw], p)
    b0 = theta[nw]
    bz = theta[nw + 1 : nw + 1 + q]
    bx = theta[nw + 1 + q : nw + 1 + q + p]
    s2e = theta[nw + 1 + q + p]
    i = q
    mu_z = moments[:q]
    s_zz = _unvech(moments[i : i + q * (q + 1) // 2], q)
    i += q * (q + 1) // 2
    s_zx = moments[i : i + q * p].reshape(q, p)
    i += q * p
    s_xx = _unvech(moments[i : i + p * (p + 1) // 2], p)
    mu_x = moments[i + p * (p + 1) // 2 :]
    c = np.linalg.solve(s_zz, s_zx) if q else np.zeros((0, p))
    a = mu_x - c.T @ mu_z
    tau = s_xx - s_zx.T @ c
    tb = tau @ bx
    om = np.empty((p + 1, p + 1))
    om[0, 0] = bx @ tb + s2e
    om[0, 1:] = om[1:, 0] = tb
    om[1:, 1:] = tau
    B = np.empty((1 + q, 1 + p))
    B[0, 0] = b0 + bx @ a
    B[1:, 0] = bz + c @ bx
    B[0, 1:] = a
    B[1:, 1:] = c
    return sw, om, B


def fit_two_level_multi(data: Dataset) -> TwoLevelFitMulti:
    """ML fit of the two-level model with p >= 1 x (any group sizes, q >= 0 z).

    BFGS on the likelihood profiled over B, in Cholesky factors of Sigma_w and Omega (so
    the solution stays in the parameter space), from the ANOVA moments; then Newton steps
    with the analytic derivatives (:func:`_derivs_multi`) where the optimum is interior.
    """
    d = _prepare_multi(data)
    G, N, p = data.n_groups, data.n_persons, data.n_x
    if N <= G:
        raise ValueError("the two-level model needs some groups with more than one member")
    var_u = np.var(np.column_stack([data.y, data.xbar]), axis=0)
    # start: ANOVA within covariance, OLS of u on [1, z], residual covariance minus the
    # within part; Var(x^B | z) clamped to >= 5% of the residual covariance of xbar (in
    # its own metric) and the residual variance of y to >= 5% of its OLS one
    mse = d.scatter / d.n_within
    m = d.m
    Mt = d.M.sum(axis=0)
    B0 = np.linalg.solve(Mt[m:, m:], Mt[m:, :m])
    Q0, _ = _moments_multi(d, B0)
    S0 = Q0.sum(axis=0) / G
    tau0 = S0[1:, 1:] - mse * (d.count @ d.inv_n) / G
    L = np.linalg.cholesky(S0[1:, 1:])
    ev, U = np.linalg.eigh(np.linalg.solve(L, np.linalg.solve(L, tau0).T))
    tau0 = L @ (U * np.maximum(ev, 0.05)) @ U.T @ L.T
    om0 = S0.copy()
    om0[1:, 1:] = tau0
    s_yx = S0[0, 1:]
    om0[0, 0] = s_yx @ np.linalg.solve(tau0, s_yx) + max(
        S0[0, 0] - s_yx @ np.linalg.solve(tau0, s_yx), 0.05 * S0[0, 0])
    eta0 = _to_eta(mse, om0)
    from scipy import optimize  # lazy, as in the one-x path

    opt = optimize.minimize(_profile_multi, eta0, args=(d,), jac=_profile_grad_multi,
                            method="BFGS", options={"gtol": 1e-9, "maxiter": 5000})
    eta = opt.x
    # polish an interior optimum by Newton with the analytic Hessian
    sw, om = _from_eta(eta, p)
    B = _gls_multi(d, np.linalg.inv(_sigma_classes(d, sw, om)))
    psi, conv = _newton_multi(d, _psi_multi(sw, om, B))
    sw1, om1, _ = _unpsi_multi(psi, d)
    if conv and np.linalg.eigvalsh(om1)[0] > 0 and np.linalg.eigvalsh(sw1)[0] > 0:
        new = _to_eta(sw1, om1)
        f_old, f_new = _profile_multi(eta, d), _profile_multi(new, d)
        if f_new <= f_old + 1e-12 * abs(f_old):
            eta = new
    grad = _profile_grad_multi(eta, d)
    sw, om = _from_eta(eta, p)
    B = _gls_multi(d, np.linalg.inv(_sigma_classes(d, sw, om)))
    tau = om[1:, 1:]
    bx = np.linalg.solve(tau, om[1:, 0])
    s2e = float(om[0, 0] - om[0, 1:] @ bx)
    a, c = B[0, 1:], B[1:, 1:]
    Z = data.z
    mu_z = Z.mean(axis=0)
    s_zz = (Z - mu_z).T @ (Z - mu_z) / G
    s_zx = s_zz @ c
    reason = _verdict_multi(tau, s2e, sw, var_y=float(var_u[0]), var_xbar=var_u[1:])
    return TwoLevelFitMulti(
        b0=float(B[0, 0] - bx @ a), b_z=B[1:, 0] - c @ bx, b_x=bx, sigma2_e=s2e, sigma_w=sw,
        mu_z=mu_z, s_zz=s_zz, s_zx=s_zx, s_xx=tau + c.T @ s_zx, mu_x=a + c.T @ mu_z,
        loglik=-float(_profile_multi(eta, d)),
        converged=bool(np.max(np.abs(grad)) < 1e-3 and np.isfinite(opt.fun)),
        grad_max=float(np.max(np.abs(grad))), reason=reason,
    )


def _verdict_multi(tau: np.ndarray, s2e: float, sw: np.ndarray, *, var_y: float,
                   var_xbar: np.ndarray) -> Reason | None:
    """Admissibility of a solution with several x (None when interior).

    "negative variance": a variance of x^B given z, or Var(e), below :data:`_BOUND_TOL`
    times Var(xbar_j) or Var(y) (the zero bound; the unrestricted solution would need a
    negative one). "not positive definite": otherwise, Var(x^B | z) standardized by
    Var(xbar), or Sigma_w standardized by its diagonal, has an eigenvalue below
    :data:`_BOUND_TOL`. A singular between covariance Omega of (y, x^B) whose null vector
    involves y is the first case (Var(e) = 0, typically with huge b_x).
    """
    vx = np.maximum(var_xbar, 1e-300)
    if np.any(np.diag(tau) < _BOUND_TOL * vx) or not s2e >= _BOUND_TOL * max(var_y, 1e-300):
        return Reason.NEGATIVE_VARIANCE
    dw = np.sqrt(np.maximum(np.diag(sw), 1e-300))
    if (np.linalg.eigvalsh(tau / np.sqrt(np.outer(vx, vx)))[0] < _BOUND_TOL
            or np.linalg.eigvalsh(sw / np.outer(dw, dw))[0] < _BOUND_TOL):
        return Reason.NOT_POSITIVE_DEFINITE
    return None


def observed_information_multi(data: Dataset, fit: TwoLevelFitMulti, *,
                               fixed_x: bool = True) -> np.ndarray:
    """Negative Hessian of the log-likelihood in lavaan's free parameters
    (:meth:`TwoLevelFitMulti.free`, then with ``fixed_x=False`` the moments of z and x^B,
    :meth:`~TwoLevelFitMulti.moments`, and the likelihood includes z); extrapolated
    central differences as in :func:`observed_information`."""
    d = _prepare_multi(data)
    q, p = data.n_z, data.n_x
    nf = len(fit.free())

    def negll(theta: np.ndarray) -> float:
        mom = fit.moments() if fixed_x else theta[nf:]
        try:
            sw, om, B = _conditional_multi(theta[:nf], q, p, mom)
        except np.linalg.LinAlgError:
            return np.inf
        f = _negll_multi(d, sw, om, B)
        if not fixed_x and q:
            i = q + q * (q + 1) // 2
            f -= _z_loglik(data.z, mom[:q], _unvech(mom[q:i], q))
        return f

    theta = fit.free() if fixed_x else np.concatenate([fit.free(), fit.moments()])
    h = 5e-4
    return (4 * _fd_hessian(negll, theta, h) - _fd_hessian(negll, theta, 2 * h)) / 3


class SEM2Level(Estimator):
    """Two-level SEM: latent between part of x, y and z between-only (any group sizes).

    One-step, p >= 1 x (each with its own latent group mean; full within and between
    covariance), any number of z. Terms: intercept, each z, each x. Model-based
    ("classical") SEs from the observed information, normal-based. One x uses
    :func:`fit_two_level` (and the fast batch engine), several x
    :func:`fit_two_level_multi` (reference path only; a batch holds a single x).

    Options
    -------
    fixed_x : bool
        True (default, lavaan's default): SEs hold the moments of z and of the between
        part of x fixed, which ignores the estimation error of Var(x^B) and so gives
        smaller SEs for b_xi than the single-step SEM. False: those moments are free
        parameters (lavaan ``fixed.x = FALSE``); the estimates are the same.

    A between variance at the zero bound (the unrestricted solution would need a negative
    one) is flagged "negative variance"; with several x, a singular between covariance of
    x^B given z whose variances are positive "not positive definite"; a large gradient at
    the end of the optimization "not converged".

    Reference: R ``lavaan::sem('level: 1 / x ~~ x / level: 2 / y ~ z + x',
    cluster = 'group')``; several x: ``level: 1 / x1 ~~ x1 + x2; x2 ~~ x2 / level: 2 /
    y ~ z + x1 + x2``.
    """

    name = "sem_2level"
    description = "two-level SEM on long data (ML, latent group mean of x)"
    options = {
        "fixed_x": Option(True, "bool", "SEs hold the moments of z and x^B fixed (lavaan's "
                                        "default information) or free them"),
    }
    max_x = None
    batch_designs = ("balanced", "unbalanced")  # a Batch holds one x; several x use fit()

    def _fit(self, data: Dataset) -> FitResult:
        if data.n_x > 1:
            return self._fit_multi(data)
        fit = fit_two_level(data)
        q = data.n_z
        params = np.concatenate([[fit.b0], fit.b_z, [fit.b_xi]])
        extras = {
            "sigma_w": fit.sigma_w, "sigma2_e": fit.sigma2_e, "var_xb": fit.s_xx,
            "cov_z_xb": fit.s_zx, "loglik": fit.loglik, "grad_max": fit.grad_max,
        }
        reasons = []
        if not fit.converged:
            reasons.append(Reason.NOT_CONVERGED)
        if fit.at_bound:
            reasons.append(Reason.NEGATIVE_VARIANCE)
        bse: dict[str, np.ndarray] = {}
        if not reasons:
            info = observed_information(data, fit, fixed_x=bool(self.params["fixed_x"]))
            try:
                cov = np.linalg.inv(info)
                var = np.diag(cov)
                if np.any(var <= 0) or not np.all(np.isfinite(var)):
                    raise np.linalg.LinAlgError("information not positive definite")
                idx = np.concatenate([[1], 2 + np.arange(q), [2 + q]])
                bse = {"classical": np.sqrt(var[idx])}
            except np.linalg.LinAlgError:
                reasons.append(Reason.NOT_POSITIVE_DEFINITE)
        return FitResult(
            method=self.label, terms=data.terms, params=params, bse=bse, df_resid=None,
            converged=fit.converged,
            admissible=not (set(reasons) - {Reason.NOT_CONVERGED}),
            flags=tuple(flag(r) for r in reasons), extras=extras,
        )

    def _fit_multi(self, data: Dataset) -> FitResult:
        """Several x: :func:`fit_two_level_multi`, SEs from
        :func:`observed_information_multi`. Collinear x within groups (a singular pooled
        within covariance) leave the likelihood unbounded: no estimates, "not positive
        definite"."""
        dev = data.x - np.repeat(data.xbar, data.sizes, axis=0)
        scatter = dev.T @ dev
        dw = np.sqrt(np.diag(scatter))
        if (not np.all(dw > 0)
                or np.linalg.eigvalsh(scatter / np.outer(dw, dw))[0] < _BOUND_TOL):
            return FitResult.failed(self.label, data.terms, flag(Reason.NOT_POSITIVE_DEFINITE))
        fit = fit_two_level_multi(data)
        q, p = data.n_z, data.n_x
        params = np.concatenate([[fit.b0], fit.b_z, fit.b_x])
        extras = {
            "sigma_w": fit.sigma_w, "sigma2_e": fit.sigma2_e, "var_xb": fit.s_xx,
            "cov_z_xb": fit.s_zx, "loglik": fit.loglik, "grad_max": fit.grad_max,
        }
        reasons = [] if fit.converged else [Reason.NOT_CONVERGED]
        if fit.reason:
            reasons.append(fit.reason)
        bse: dict[str, np.ndarray] = {}
        if not reasons:
            info = observed_information_multi(data, fit, fixed_x=bool(self.params["fixed_x"]))
            try:
                var = np.diag(np.linalg.inv(info))
                if np.any(var <= 0) or not np.all(np.isfinite(var)):
                    raise np.linalg.LinAlgError("information not positive definite")
                nw = p * (p + 1) // 2
                bse = {"classical": np.sqrt(var[nw : nw + 1 + q + p])}
            except np.linalg.LinAlgError:
                reasons.append(Reason.NOT_POSITIVE_DEFINITE)
        return FitResult(
            method=self.label, terms=data.terms, params=params, bse=bse, df_resid=None,
            converged=fit.converged,
            admissible=not (set(reasons) - {Reason.NOT_CONVERGED}),
            flags=tuple(flag(r) for r in reasons), extras=extras,
        )

    def _fit_batch(self, batch: Batch) -> BatchResult:
        """All replications at once (:func:`_fit_batch_two_level`: closed form for
        balanced groups, batched Newton otherwise, analytic observed information); a
        replication near the zero bound, not converged or otherwise degenerate goes
        through :meth:`fit`, as does every replication with ``fixed_x=False``."""
        R, k = batch.n_reps, len(batch.terms)
        params = np.full((R, k), np.nan)
        se = np.full((R, k), np.nan)
        conv = np.ones(R, dtype=bool)
        adm = np.ones(R, dtype=bool)
        fallback = np.ones(R, dtype=bool)
        if self.params["fixed_x"]:
            p, s, ok = _fit_batch_two_level(batch)
            params[ok], se[ok] = p[ok], s[ok]
            fallback = ~ok
        return self.one_step_result(batch, params, se, conv, adm, no_flags(R), fallback)
