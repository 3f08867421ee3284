"""Two-level ML with p >= 1 x: the per-dataset reference (any group sizes, q >= 0 z).

u_g = (y_g, xbar_g) of length 1 + p, covariance Omega + blockdiag(0, Sigma_w / n_g), the
pooled within scatter of x (N - G df) for Sigma_w. For one x it reproduces
:func:`.twolevel.fit_two_level`.
The statistics and the profile likelihood are in :mod:`.twolevel_multi_lik`; this module
holds the Newton polish, the conditional moments, the fit and its verdict.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from micromacro_sim.core.status import Reason
from micromacro_sim.generate.dataset import Dataset
from micromacro_sim.models.twolevel import GRAD_TOL
from micromacro_sim.models.twolevel_batch import BOUND_TOL
from micromacro_sim.models.twolevel_multi_lik import (
    DataMulti,
    derivs_multi,
    from_eta,
    gls_multi,
    moments_multi,
    negll_multi,
    prepare_multi,
    profile_grad_multi,
    profile_multi,
    psi_multi,
    sigma_classes,
    to_eta,
    unpsi_multi,
    unvech,
)

__all__ = ["TwoLevelFitMulti", "fit_two_level_multi"]


def _newton_multi(d: DataMulti, psi: np.ndarray, *, max_iter: int = 60,
                  step_tol: float = 1e-11) -> tuple[np.ndarray, bool]:
    """Newton's method on the full likelihood (step halving far from the optimum, as
    :func:`newton_batch`); False when the Hessian is not positive definite along the
    Newton direction or no admissible point lies along it."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        f, g, H = derivs_multi(d, psi)
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
                ft = negll_multi(d, *unpsi_multi(trial, d))
                if np.isfinite(ft) and (dec < 1e-6 or ft <= f):
                    break
                t /= 2
            else:
                return psi, False
            small = np.max(np.abs(t * step) / (1 + np.abs(trial))) < step_tol
            psi = trial
            f, g, H = derivs_multi(d, psi)
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


def conditional_multi(theta: np.ndarray, q: int, p: int, moments: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Sigma_w, Omega, B) of the conditional model from lavaan's free parameters and the
    moments of z and x^B (:meth:`TwoLevelFitMulti.free`, :meth:`~TwoLevelFitMulti.moments`)."""
    nw = p * (p + 1) // 2
    sw = unvech(theta[:nw], p)
    b0 = theta[nw]
    bz = theta[nw + 1 : nw + 1 + q]
    bx = theta[nw + 1 + q : nw + 1 + q + p]
    s2e = theta[nw + 1 + q + p]
    i = q
    mu_z = moments[:q]
    s_zz = unvech(moments[i : i + q * (q + 1) // 2], q)
    i += q * (q + 1) // 2
    s_zx = moments[i : i + q * p].reshape(q, p)
    i += q * p
    s_xx = unvech(moments[i : i + p * (p + 1) // 2], p)
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
    with the analytic derivatives (:func:`derivs_multi`) where the optimum is interior.
    """
    d = prepare_multi(data)
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
    Q0, _ = moments_multi(d, B0)
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
    eta0 = to_eta(mse, om0)
    from scipy import optimize  # lazy, as in the one-x path

    opt = optimize.minimize(lambda e: profile_multi(e, d) / N, eta0, method="BFGS",
                            jac=lambda e: profile_grad_multi(e, d) / N,
                            options={"gtol": 1e-10, "maxiter": 5000})
    eta = opt.x
    # polish an interior optimum by Newton with the analytic Hessian
    sw, om = from_eta(eta, p)
    B = gls_multi(d, np.linalg.inv(sigma_classes(d, sw, om)))
    psi, conv = _newton_multi(d, psi_multi(sw, om, B))
    sw1, om1, _ = unpsi_multi(psi, d)
    if conv and np.linalg.eigvalsh(om1)[0] > 0 and np.linalg.eigvalsh(sw1)[0] > 0:
        new = to_eta(sw1, om1)
        f_old, f_new = profile_multi(eta, d), profile_multi(new, d)
        if f_new <= f_old + 1e-12 * abs(f_old):
            eta = new
    grad = profile_grad_multi(eta, d) / N  # per person: scale-free
    sw, om = from_eta(eta, p)
    B = gls_multi(d, np.linalg.inv(sigma_classes(d, sw, om)))
    tau = om[1:, 1:]
    bx = np.linalg.solve(tau, om[1:, 0])
    s2e = float(om[0, 0] - om[0, 1:] @ bx)
    a, c = B[0, 1:], B[1:, 1:]
    Z = data.z
    mu_z = Z.mean(axis=0)
    s_zz = (Z - mu_z).T @ (Z - mu_z) / G
    s_zx = s_zz @ c
    reason = verdict_multi(tau, s2e, sw, var_y=float(var_u[0]), var_xbar=var_u[1:])
    return TwoLevelFitMulti(
        b0=float(B[0, 0] - bx @ a), b_z=B[1:, 0] - c @ bx, b_x=bx, sigma2_e=s2e, sigma_w=sw,
        mu_z=mu_z, s_zz=s_zz, s_zx=s_zx, s_xx=tau + c.T @ s_zx, mu_x=a + c.T @ mu_z,
        loglik=-float(profile_multi(eta, d)),
        converged=bool(np.max(np.abs(grad)) < GRAD_TOL and np.isfinite(opt.fun)),
        grad_max=float(np.max(np.abs(grad))), reason=reason,
    )


def verdict_multi(tau: np.ndarray, s2e: float, sw: np.ndarray, *, var_y: float,
                   var_xbar: np.ndarray) -> Reason | None:
    """Admissibility of a solution with several x (None when interior).

    "negative variance": a variance of x^B given z, or Var(e), below :data:`BOUND_TOL`
    times Var(xbar_j) or Var(y) (the zero bound; the unrestricted solution would need a
    negative one). "not positive definite": otherwise, Var(x^B | z) standardized by
    Var(xbar), or Sigma_w standardized by its diagonal, has an eigenvalue below
    :data:`BOUND_TOL`. A singular between covariance Omega of (y, x^B) whose null vector
    involves y is the first case (Var(e) = 0, typically with huge b_x).
    """
    vx = np.maximum(var_xbar, 1e-300)
    if np.any(np.diag(tau) < BOUND_TOL * vx) or not s2e >= BOUND_TOL * max(var_y, 1e-300):
        return Reason.NEGATIVE_VARIANCE
    dw = np.sqrt(np.maximum(np.diag(sw), 1e-300))
    if (np.linalg.eigvalsh(tau / np.sqrt(np.outer(vx, vx)))[0] < BOUND_TOL
            or np.linalg.eigvalsh(sw / np.outer(dw, dw))[0] < BOUND_TOL):
        return Reason.NOT_POSITIVE_DEFINITE
    return None
