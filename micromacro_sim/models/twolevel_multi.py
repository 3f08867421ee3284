"""Two-level ML with p >= 1 x: the per-dataset reference (any group sizes, q >= 0 z).

u_g = (y_g, xbar_g) of length 1 + p, covariance Omega + blockdiag(0, Sigma_w / n_g), the
pooled within scatter of x (N - G df) for Sigma_w. For one x it reproduces
:func:`.twolevel.fit_two_level`.

Length: about 430 lines, over the package's 400-line guide on purpose. It is one solver
(profile likelihood, its analytic gradient, a Newton polish in the natural parameters and
the conditional moments) whose pieces share the private ``_DataMulti`` statistics; a split
would make those internals a public interface between two modules.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..dataset import Dataset
from ..status import Reason
from .twolevel import GRAD_TOL
from .twolevel_batch import _BOUND_TOL

__all__ = ["TwoLevelFitMulti", "fit_two_level_multi"]


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

    opt = optimize.minimize(lambda e: _profile_multi(e, d) / N, eta0, method="BFGS",
                            jac=lambda e: _profile_grad_multi(e, d) / N,
                            options={"gtol": 1e-10, "maxiter": 5000})
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
    grad = _profile_grad_multi(eta, d) / N  # per person: scale-free
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
        converged=bool(np.max(np.abs(grad)) < GRAD_TOL and np.isfinite(opt.fun)),
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
