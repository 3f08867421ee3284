"""Two-level SEM on the long data (any group sizes, one x), by our own ML.

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

Reference: R ``lavaan::sem(model, data = long, cluster = "group")``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..batch import Batch
from ..dataset import Dataset
from .base import SE_TYPES, BatchResult, Estimator, FitResult

__all__ = ["SEM2Level", "TwoLevelFit", "fit_two_level"]

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


class SEM2Level(Estimator):
    """Two-level SEM: latent between part of x, y and z between-only (any group sizes).

    One-step, one x, any number of z. Terms: intercept, each z, xi. Model-based
    ("classical") SEs from the observed information, normal-based.

    Options
    -------
    fixed_x : bool
        True (default, lavaan's default): SEs hold the moments of z and of the between
        part of x fixed, which ignores the estimation error of Var(x^B) and so gives
        smaller SEs for b_xi than the single-step SEM. False: those moments are free
        parameters (lavaan ``fixed.x = FALSE``); the estimates are the same. A between variance at
    the zero bound (the unrestricted solution would need a negative one) is flagged
    "negative variance"; a large gradient at the end of the optimization "not converged".

    Reference: R ``lavaan::sem('level: 1 / x ~~ x / level: 2 / y ~ z + x',
    cluster = 'group')``.
    """

    name = "sem_2level"
    description = "two-level SEM on long data (ML, latent group mean of x)"
    options = {"fixed_x": True}
    max_x = 1

    def _fit(self, data: Dataset) -> FitResult:
        fit = fit_two_level(data)
        q = data.n_z
        params = np.concatenate([[fit.b0], fit.b_z, [fit.b_xi]])
        extras = {
            "sigma_w": fit.sigma_w, "sigma2_e": fit.sigma2_e, "var_xb": fit.s_xx,
            "cov_z_xb": fit.s_zx, "loglik": fit.loglik, "grad_max": fit.grad_max,
        }
        reasons = []
        if not fit.converged:
            reasons.append("not converged")
        if fit.at_bound:
            reasons.append("negative variance")
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
                reasons.append("not positive definite")
        return FitResult(
            method=self.label, terms=data.terms, params=params, bse=bse, df_resid=None,
            converged=fit.converged, admissible=not (set(reasons) - {"not converged"}),
            reason=", ".join(reasons), extras=extras,
        )

    @classmethod
    def has_batch(cls, balanced: bool) -> bool:
        return True

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
        reason = np.full(R, "", dtype=object)
        fallback = np.ones(R, dtype=bool)
        if self.params["fixed_x"]:
            p, s, ok = _fit_batch_two_level(batch)
            params[ok], se[ok] = p[ok], s[ok]
            fallback = ~ok
        for r in np.flatnonzero(fallback):
            res = self.fit(batch.datasets[r])
            params[r] = res.params
            se[r] = res.se()
            conv[r], adm[r], reason[r] = res.converged, res.admissible, res.reason
        nan = np.full((R, k), np.nan)
        return BatchResult(
            method=self.label, terms=batch.terms, params=params,
            bse={t: se if t == "classical" else nan.copy() for t in SE_TYPES},
            df_resid=np.full(R, np.nan), converged=conv, admissible=adm, reason=reason,
            two_step=False, engine="fast",
        )
