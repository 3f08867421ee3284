"""Two-level ML with p >= 1 x: the per-dataset statistics, the profile likelihood with its
analytic gradient, and the derivatives in the natural parameters (the pieces that the solver
in :mod:`.twolevel_multi` and :mod:`.twolevel_lavaan` share)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from micromacro_sim.generate.dataset import Dataset


@dataclass(frozen=True, eq=False)
class DataMulti:
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


def prepare_multi(data: Dataset) -> DataMulti:
    xbar = data.xbar
    dev = data.x - np.repeat(xbar, data.sizes, axis=0)
    V = np.column_stack([data.y, xbar, np.ones(data.n_groups), data.z])
    sizes, cls = np.unique(data.sizes, return_inverse=True)
    onehot = np.zeros((data.n_groups, len(sizes)))
    onehot[np.arange(data.n_groups), cls] = 1.0
    return DataMulti(
        count=onehot.sum(axis=0), inv_n=1.0 / sizes, M=np.einsum("gc,ga,gb->cab", onehot, V, V),
        scatter=dev.T @ dev, n_within=float(data.n_persons - data.n_groups),
        m=1 + data.n_x, k=1 + data.n_z,
    )


def sigma_classes(d: DataMulti, sw: np.ndarray, om: np.ndarray) -> np.ndarray:
    """Sigma_c = Omega + blockdiag(0, Sigma_w / n_c) per size class, (C, m, m)."""
    S = np.broadcast_to(om, (len(d.count), d.m, d.m)).copy()
    S[:, 1:, 1:] += sw[None] * d.inv_n[:, None, None]
    return S


def moments_multi(d: DataMulti, B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per class Q = sum r r' (C, m, m) and P = sum x r' (C, k, m), r = u - B' x."""
    m = d.m
    Muu, Mux, Mxx = d.M[:, :m, :m], d.M[:, :m, m:], d.M[:, m:, m:]
    P = Mux.transpose(0, 2, 1) - Mxx @ B
    Q = Muu - Mux @ B - (Mux @ B).transpose(0, 2, 1) + B.T @ Mxx @ B
    return Q, P


def gls_multi(d: DataMulti, W: np.ndarray) -> np.ndarray:
    """GLS coefficients B (k x m) given the per-class inverse covariances W (C, m, m)."""
    m, k = d.m, d.k
    A = np.einsum("cjl,cab->jalb", W, d.M[:, m:, m:]).reshape(m * k, m * k)
    b = np.einsum("cau,cuj->ja", d.M[:, m:, :m], W).reshape(m * k)
    return np.linalg.solve(A, b).reshape(m, k).T


def negll_multi(d: DataMulti, sw: np.ndarray, om: np.ndarray, B: np.ndarray) -> float:
    """Negative log-likelihood of the persons' x and the groups' y given z (no constant):
    the within part (N - G df, covariance Sigma_w) plus, per group, a normal for u_g."""
    sign_w, logdet_w = np.linalg.slogdet(sw)
    S = sigma_classes(d, sw, om)
    sign, logdet = np.linalg.slogdet(S)
    if sign_w <= 0 or np.any(sign <= 0) or np.linalg.eigvalsh(om)[0] <= 0:
        return np.inf
    Q, _ = moments_multi(d, B)
    within = d.n_within * logdet_w + np.trace(np.linalg.solve(sw, d.scatter))
    between = d.count @ logdet + np.einsum("cab,cba->", np.linalg.inv(S), Q)
    return float(0.5 * (within + between))


def _tri(a: int) -> tuple[np.ndarray, np.ndarray]:
    return np.tril_indices(a)


def from_eta(eta: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray]:
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


def to_eta(sw: np.ndarray, om: np.ndarray) -> np.ndarray:
    """Inverse of :func:`from_eta` (both matrices positive definite)."""
    p = sw.shape[0]
    perm = np.r_[np.arange(1, p + 1), 0]
    out = []
    for L in (np.linalg.cholesky(sw), np.linalg.cholesky(om[np.ix_(perm, perm)])):
        L = L.copy()
        L[np.diag_indices(len(L))] = np.log(np.diag(L))
        out.append(L[_tri(len(L))])
    return np.concatenate(out)


def profile_multi(eta: np.ndarray, d: DataMulti) -> float:
    sw, om = from_eta(eta, d.m - 1)
    try:
        B = gls_multi(d, np.linalg.inv(sigma_classes(d, sw, om)))
    except np.linalg.LinAlgError:
        return np.inf
    f = negll_multi(d, sw, om, B)
    return f if np.isfinite(f) else np.inf


def profile_grad_multi(eta: np.ndarray, d: DataMulti) -> np.ndarray:
    """Analytic gradient of :func:`profile_multi`: the gradient of the full likelihood in
    the covariance parameters at the GLS B (envelope theorem), times the Jacobian of
    (vech Sigma_w, vech Omega) in eta (complex step, exact to rounding)."""
    p = d.m - 1
    sw, om = from_eta(eta, p)
    try:
        B = gls_multi(d, np.linalg.inv(sigma_classes(d, sw, om)))
        f, g, _ = derivs_multi(d, psi_multi(sw, om, B), hessian=False)
    except np.linalg.LinAlgError:
        return np.full(len(eta), np.nan)
    iw, io = np.triu_indices(p), np.triu_indices(p + 1)
    J = np.empty((len(iw[0]) + len(io[0]), len(eta)))
    for i in range(len(eta)):
        e = eta.astype(complex)
        e[i] += 1e-30j
        swc, omc = from_eta(e, p)
        J[:, i] = np.concatenate([swc[iw].imag, omc[io].imag]) / 1e-30
    return J.T @ g[: J.shape[0]]


def _sym_basis(a: int) -> np.ndarray:
    """Symmetric unit matrices E_ij (i <= j, row-major upper triangle), (a(a+1)/2, a, a)."""
    iu = np.triu_indices(a)
    E = np.zeros((len(iu[0]), a, a))
    E[np.arange(len(iu[0])), iu[0], iu[1]] = 1.0
    E[np.arange(len(iu[0])), iu[1], iu[0]] = 1.0
    return E


def psi_multi(sw: np.ndarray, om: np.ndarray, B: np.ndarray) -> np.ndarray:
    """(vech Sigma_w, vech Omega (upper triangles, row-major), vec B (column-major))."""
    return np.concatenate([sw[np.triu_indices(len(sw))], om[np.triu_indices(len(om))],
                           B.T.reshape(-1)])


def unpsi_multi(psi: np.ndarray, d: DataMulti) -> tuple[np.ndarray, ...]:
    p, m, k = d.m - 1, d.m, d.k
    nw, no = p * (p + 1) // 2, m * (m + 1) // 2
    sw = unvech(psi[:nw], p)
    om = unvech(psi[nw : nw + no], m)
    return sw, om, psi[nw + no :].reshape(m, k).T


def derivs_multi(d: DataMulti, psi: np.ndarray, *, hessian: bool = True
                  ) -> tuple[float, np.ndarray, np.ndarray | None]:
    """Negative log-likelihood, gradient and Hessian (None unless ``hessian``) in ``psi``
    (:func:`psi_multi`).

    Sigma_c is linear in the covariance parameters (dSigma_c / dtheta_j = S_j); with
    W = Sigma_c^-1 and, per class, Q = sum r r', P = sum x r' (the textbook normal-model
    derivatives, as in :func:`batch_derivs` for p = 1).
    """
    p, m, k = d.m - 1, d.m, d.k
    sw, om, B = unpsi_multi(psi, d)
    f = negll_multi(d, sw, om, B)
    C = len(d.count)
    Ew, Eo = _sym_basis(p), _sym_basis(m)
    nw, no = len(Ew), len(Eo)
    S = np.zeros((nw + no, C, m, m))
    S[:nw, :, 1:, 1:] = Ew[:, None] * d.inv_n[None, :, None, None]
    S[nw:] = Eo[:, None]
    W = np.linalg.inv(sigma_classes(d, sw, om))
    Q, P = moments_multi(d, B)
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


def unvech(v: np.ndarray, a: int) -> np.ndarray:
    M = np.zeros((a, a))
    M[np.triu_indices(a)] = v
    return M + np.triu(M, 1).T
