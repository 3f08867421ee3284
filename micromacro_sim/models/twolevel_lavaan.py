"""lavaan's default two-level solution (``fixed.x = TRUE``) and the joint-ML standard errors.

lavaan treats z and the between part of x as exogenous at level 2 and, by default, fixes
their means, variances and covariances at its unrestricted (H1) two-level fit, which it
computes by EM (``lav_mvnorm_cluster_em_sat``: start Sigma_W = Sigma_B = I and zero means,
the moments of the between-only variables at their sample values, stop when the
log-likelihood gains less than 1e-4). That EM splits the grand mean of x between a within
and a between mean, while the model's within intercept is 0, and stops before the optimum;
the free parameters (Sigma_w, b0, b_z, b_x, Var(e)) are then the ML *given* those values,
so lavaan's default estimates are not the joint ML (they differ by up to 2.4e-2 at G = 25).
:func:`lavaan_h1_moments` reproduces the EM, :func:`fit_fixed_x` the conditional ML and its
observed information (moments held fixed), both for p >= 1 x. The conditional ML starts
from the joint ML; where that start stalls or sits on a bound (the joint ML can have
Var(e) = 0 while the conditional ML given lavaan's moments is interior), the caller
restarts from :func:`regression_start` and compares :func:`conditional_objective`.

:func:`joint_cov` gives the covariance of the joint ML (lavaan ``fixed.x = FALSE``): the
model is a reparametrization of the saturated conditional model psi (Sigma_w, Omega, B)
times the likelihood of z, whose parameters separate, and b depends on psi only, so at the
optimum the joint observed information gives Cov(b) = D H_psi^-1 D' with D = db/dpsi.
"""

from __future__ import annotations

import numpy as np

from micromacro_sim.generate.dataset import Dataset
from micromacro_sim.models.twolevel_multi import (
    DataMulti,
    conditional_multi,
    derivs_multi,
    psi_multi,
)

__all__ = ["conditional_objective", "fit_fixed_x", "joint_cov", "joint_se",
           "lavaan_h1_moments", "regression_start"]

#: lavaan's EM settings for the H1 two-level model (lavaan 0.6-14, ``lav_h1_implied_logl``).
_EM_TOL, _EM_MAX_ITER, _EM_MIN_VAR = 1e-4, 5000, 1e-5


def _h1_loglik(b, sizes, wscatter, n_within, mu, s_zz, s_yz, s_b, s_w) -> float:
    """Log-likelihood of the saturated two-level model (constants dropped)."""
    nz = s_zz.shape[0]
    om = np.zeros((len(sizes), len(mu), len(mu)))
    om[:, :nz, :nz] = s_zz
    om[:, nz:, :nz] = s_yz
    om[:, :nz, nz:] = s_yz.T
    om[:, nz:, nz:] = s_b + s_w / sizes[:, None, None]
    sign, logdet = np.linalg.slogdet(om)
    sw_sign, sw_logdet = np.linalg.slogdet(s_w)
    if np.any(sign <= 0) or sw_sign <= 0:
        return -np.inf
    r = b - mu
    quad = np.einsum("ga,ga->g", r, np.linalg.solve(om, r[:, :, None])[:, :, 0])
    within = n_within * sw_logdet + np.trace(np.linalg.solve(s_w, wscatter))
    return float(-0.5 * (logdet.sum() + quad.sum() + within))


def _estep(b, xbar, sizes, y1y1, mu_z, s_zz, s_yz, s_b, s_w, mu_w, mu_b):
    """One EM step of lavaan's ``lav_mvnorm_cluster_em_estepb`` (all groups at once)."""
    G, nz = len(sizes), s_zz.shape[0]
    N = sizes.sum()
    mu = np.concatenate([mu_z, mu_w + mu_b])
    s1 = np.hstack([s_yz, s_b])  # Cov(v, b_j), p x (nz + p)
    om = np.zeros((G, len(mu), len(mu)))
    om[:, :nz, :nz] = s_zz
    om[:, nz:, :nz] = s_yz
    om[:, :nz, nz:] = s_yz.T
    om[:, nz:, nz:] = s_b + s_w / sizes[:, None, None]
    K = np.linalg.solve(om, np.broadcast_to(s1.T, (G, *s1.T.shape))).transpose(0, 2, 1)
    ev = mu_b + np.einsum("gpa,ga->gp", K, b - mu)
    covv = s_b - K @ s1.T
    covv = (covv + covv.transpose(0, 2, 1)) / 2
    evv = covv + ev[:, :, None] * ev[:, None, :]
    yev = xbar[:, :, None] * ev[:, None, :]
    n = sizes[:, None, None]
    m_w = (sizes[:, None] * (xbar - ev)).sum(axis=0) / N
    m_b = ev.sum(axis=0) / G
    c_w = (y1y1 + (n * (evv - yev - yev.transpose(0, 2, 1))).sum(axis=0)) / N
    c_b = evv.sum(axis=0) / G
    a_s = b[:, :nz].T @ ev / G - np.outer(mu_z, m_b)
    return c_w - np.outer(m_w, m_w), c_b - np.outer(m_b, m_b), a_s.T, m_w, m_b


def lavaan_h1_moments(data: Dataset, origin: np.ndarray | None = None) -> np.ndarray:
    """The level-2 moments lavaan's default holds fixed: its EM fit of the H1 model.

    The EM starts at zero means, and the likelihood does not tell how the mean of x is
    split between the levels: the start sets it (for balanced groups of size n the first
    step puts n/(n + 1) of the grand mean in the between level, and it stays there), so
    these moments, like lavaan's, depend on where the zero of x lies.

    Parameters
    ----------
    data : Dataset
    origin : ndarray (1 + q + p,), optional
        Where the zero of the data as given to lavaan lies (y, z, then x) when ``data`` is
        a shifted copy of it (:func:`~.twolevel_batch.centre`: minus the means
        subtracted); the EM then starts there, which is lavaan's start in the shifted
        coordinates, and the moments are lavaan's, shifted alike. Default: zeros
        (``data`` as given).

    Returns
    -------
    ndarray
        mu_z, vech s_zz, s_zx (row-major), vech s_xx, mu_x (the layout of
        :meth:`~micromacro_sim.models.twolevel_multi.TwoLevelFitMulti.moments`).
    """
    q, p = data.n_z, data.n_x
    origin = np.zeros(1 + q + p) if origin is None else np.asarray(origin, dtype=float)
    sizes = data.sizes.astype(float)
    xbar = data.xbar
    b = np.column_stack([data.y, data.z, xbar])  # lavaan's between-only (y, z), then x
    nz = 1 + q
    dev = data.x - np.repeat(xbar, data.sizes, axis=0)
    wscatter, n_within = dev.T @ dev, float(data.n_persons - data.n_groups)
    y1y1 = data.x.T @ data.x
    s_w, s_b, mu_w, mu_b = np.eye(p), np.eye(p), np.zeros(p), origin[nz:].copy()
    s_yz = np.zeros((p, nz))
    fx_old = _h1_loglik(b, sizes, wscatter, n_within, origin, np.eye(nz), s_yz, s_b, s_w)
    mu_z = b[:, :nz].mean(axis=0)
    s_zz = np.atleast_2d(np.cov(b[:, :nz].T, ddof=0))
    for _ in range(_EM_MAX_ITER):
        s_w, s_b, s_yz, mu_w, mu_b = _estep(b, xbar, sizes, y1y1, mu_z, s_zz, s_yz, s_b,
                                            s_w, mu_w, mu_b)
        zero = np.diag(s_w) < _EM_MIN_VAR
        if zero.any():
            s_w[zero, :] = s_w[:, zero] = 0.0
            s_w[zero, zero] = _EM_MIN_VAR
        fx = _h1_loglik(b, sizes, wscatter, n_within, np.concatenate([mu_z, mu_w + mu_b]),
                        s_zz, s_yz, s_b, s_w)
        if not fx - fx_old >= _EM_TOL:  # also stops on a non-finite likelihood
            break
        fx_old = fx
    s_zx = s_yz[:, 1:].T  # (q, p)
    return np.concatenate([mu_z[1:], s_zz[1:, 1:][np.triu_indices(q)], s_zx.ravel(),
                           s_b[np.triu_indices(p)], mu_b])


def _jacobian(theta: np.ndarray, q: int, p: int, moments: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """d psi / d theta (psi: :func:`psi_multi`) and the curvature 2 tau of Omega_yy in b_x."""
    nw, m, k = p * (p + 1) // 2, p + 1, q + 1
    no = m * (m + 1) // 2
    sw, om, B = conditional_multi(theta, q, p, moments)
    tau = om[1:, 1:]
    bx = theta[nw + 1 + q : nw + 1 + q + p]
    a, c = B[0, 1:], B[1:, 1:]
    J = np.zeros((nw + no + m * k, len(theta)))
    J[:nw, :nw] = np.eye(nw)
    iO, iB = nw, nw + no
    J[iB : iB + k, nw : nw + k] = np.eye(k)  # b0, b_z -> the y column of B
    jx = nw + k + np.arange(p)
    J[iO, jx] = 2 * tau @ bx
    J[iO + 1 : iO + 1 + p, jx] = tau
    J[iB, jx] = a
    J[iB + 1 : iB + k, jx] = c
    J[iO, nw + k + p] = 1.0
    return J, 2 * tau


def regression_start(data: Dataset) -> np.ndarray:
    """An interior start for :func:`fit_fixed_x`: vech of the pooled within covariance of x,
    the OLS coefficients of y on (1, z, xbar) and their residual variance (divisor G).

    Unlike the joint ML, it never sits on the zero bound of Var(e) (unless y is an exact
    linear function of z and xbar), where Newton's method from the joint solution can stall
    although the conditional ML given lavaan's moments is interior.
    """
    p = data.n_x
    dev = data.x - np.repeat(data.xbar, data.sizes, axis=0)
    sw = dev.T @ dev / (data.n_persons - data.n_groups)
    X = np.column_stack([np.ones(data.n_groups), data.z, data.xbar])
    b = np.linalg.lstsq(X, data.y, rcond=None)[0]
    r = data.y - X @ b
    return np.concatenate([sw[np.triu_indices(p)], b, [r @ r / data.n_groups]])


def conditional_objective(d: DataMulti, moments: np.ndarray, theta: np.ndarray) -> float:
    """The negative log-likelihood :func:`fit_fixed_x` minimizes (moments held fixed)."""
    p, q = d.m - 1, d.k - 1
    with np.errstate(all="ignore"):
        sw, om, B = conditional_multi(theta, q, p, moments)
        return derivs_multi(d, psi_multi(sw, om, B), hessian=False)[0]


def fit_fixed_x(d: DataMulti, moments: np.ndarray, theta: np.ndarray, *,
                max_iter: int = 100) -> tuple[np.ndarray, bool, np.ndarray]:
    """ML of lavaan's free parameters with the level-2 moments held at ``moments``.

    Newton's method with step halving from ``theta`` (vech Sigma_w, b0, b_z, b_x,
    sigma2_e), the analytic derivatives of :func:`derivs_multi` through the Jacobian of
    :func:`_jacobian`. Returns theta, whether the relative step fell below 1e-11, and the
    observed information in theta (lavaan's default ``information = "observed"``).
    """
    p, q = d.m - 1, d.k - 1
    nw = p * (p + 1) // 2
    jx = slice(nw + 1 + q, nw + 1 + q + p)

    def derivs(t: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        sw, om, B = conditional_multi(t, q, p, moments)
        f, g, H = derivs_multi(d, psi_multi(sw, om, B))
        J, curv = _jacobian(t, q, p, moments)
        Ht = J.T @ H @ J
        Ht[jx, jx] += curv * g[nw]
        return f, J.T @ g, Ht

    with np.errstate(all="ignore"):
        f, g, H = derivs(theta)
        for _ in range(max_iter):
            try:
                step = np.linalg.solve(H, g)
            except np.linalg.LinAlgError:
                return theta, False, H
            if not (np.all(np.isfinite(step)) and g @ step >= 0):
                return theta, False, H
            t = 1.0
            for _h in range(40):
                trial = theta - t * step
                ft = derivs(trial)
                if np.isfinite(ft[0]) and ft[0] <= f + 1e-12 * abs(f):
                    break
                t /= 2
            else:
                return theta, False, H
            small = np.max(np.abs(t * step) / (1 + np.abs(trial))) < 1e-11
            theta, (f, g, H) = trial, ft
            if small:
                return theta, bool(np.isfinite(f)), H
    return theta, False, H


def _b_of_psi(psi: np.ndarray, p: int, q: int) -> np.ndarray:
    """(b0, b_z, b_x) from psi; complex-safe for the complex-step Jacobian."""
    nw, m, k = p * (p + 1) // 2, p + 1, q + 1
    no = m * (m + 1) // 2
    om = np.zeros((m, m), dtype=psi.dtype)
    om[np.triu_indices(m)] = psi[nw : nw + no]
    om = om + np.triu(om, 1).T
    B = psi[nw + no :].reshape(m, k).T
    bx = np.linalg.solve(om[1:, 1:], om[1:, 0])
    return np.concatenate([[B[0, 0] - B[0, 1:] @ bx], B[1:, 0] - B[1:, 1:] @ bx, bx])


def joint_cov(psi: np.ndarray, H: np.ndarray, p: int, q: int) -> np.ndarray | None:
    """Covariance D H^-1 D' of (b0, b_z, b_x) at the joint ML from the Hessian ``H`` of the
    negative log-likelihood in psi (D = db/dpsi by complex step); None when H is
    singular."""
    D = np.empty((1 + q + p, len(psi)))
    for i in range(len(psi)):
        e = psi.astype(complex)
        e[i] += 1e-30j
        D[:, i] = _b_of_psi(e, p, q).imag / 1e-30
    try:
        return D @ np.linalg.solve(H, D.T)
    except np.linalg.LinAlgError:
        return None


def joint_se(psi: np.ndarray, H: np.ndarray, p: int, q: int) -> np.ndarray | None:
    """SEs of (b0, b_z, b_x) from :func:`joint_cov`; None when H is not positive definite
    along D."""
    cov = joint_cov(psi, H, p, q)
    var = np.full(1 + q + p, np.nan) if cov is None else np.diag(cov)
    if not np.all(np.isfinite(var) & (var > 0)):
        return None
    return np.sqrt(var)
