"""The profiled one-factor ML discrepancy: value, exact gradient and Hessian, the Newton
step, reconstruction.

With the sample covariance S = L L' and the residual variances Psi fixed, the best
rank-one term phi lambda lambda' of Sigma = Psi + phi lambda lambda' lies along one
eigenvector of the whitened residual matrix and sets that eigenvalue to 1, so the ML
discrepancy F = log|Sigma| + tr(S Sigma^-1) - log|S| - n is a sum over the other
eigenvalues (Joreskog 1967). Two charts of the residual variances are used, both linear:

- the psi chart, p = psi: K = L^-1 Psi L^-T (eigenvalues mu), f(mu) = log mu + 1/mu - 1;
- the w chart, p = w = 1/psi: K = L' W L (eigenvalues g = 1/mu), f(g) = g - log g - 1.

In both, the smallest eigenvalue of K = B diag(p) B' (B = L^-1 or L') is dropped and
F(p) = sum over the others of f. Dropping the smallest mu is the positive factor variance
branch, dropping the smallest g the negative one; where one residual variance is negative
(a Heywood case of the positive branch) both charts drop the same, negative, eigenvalue and
agree. The w chart is analytic through w_j = 0 (psi_j infinite), where the negative branch
meets the positive branch's psi_j -> -infinity, so a run crosses between the branches
there instead of ending at infinity.

By congruence K has as many negative eigenvalues as p has negative entries, so F is
defined (the kept eigenvalues positive) exactly when at most one p_j is not positive.

Gradient and Hessian by eigenvalue perturbation (u_k the eigenvectors, z_k = B' u_k,
x_k the eigenvalues, 0 the dropped index): dx_k/dp_j = z_kj^2,
dF/dp_j = sum_{k>0} f'(x_k) z_kj^2 and
d2F/dp_i dp_j = sum_{k,l} Gamma_kl z_ki z_kj z_li z_lj, with Gamma_kk = f''(x_k),
Gamma_kl = (f'(x_k) - f'(x_l)) / (x_k - x_l) for two kept indices and
Gamma_k0 = f'(x_k) / (x_k - x_0). The divided differences of f' have rank 3 (psi chart)
or 1 (w chart), so the Hessian is a sum of Hadamard products of n x n matrices: O(n^3).

Reference: Joreskog, K. G. (1967). Some contributions to maximum likelihood factor
analysis. Psychometrika 32, 443-482.
"""

from __future__ import annotations

import numpy as np

from micromacro_sim.models.linalg import cholesky_stack, inv_stack, solve_stack

__all__ = ["Profile", "bases", "evaluate", "gradient_hessian", "newton_step", "reconstruct",
           "row_sum"]

#: Eigenvalues of an indefinite Hessian are floored at this fraction of the largest.
EIG_FLOOR = 1e-12
_QUIET = {"invalid": "ignore", "over": "ignore", "divide": "ignore", "under": "ignore"}


class Profile:
    """The eigen-decomposition of K at a point of either chart (arrays over problems).

    Attributes
    ----------
    f : ndarray (N,)
        The profiled discrepancy F (NaN where undefined).
    ev : ndarray (N, n)
        Eigenvalues of K, ascending (index 0 is the dropped one).
    U : ndarray (N, n, n) or None
        Eigenvectors of K in the columns (None when not computed).
    """

    __slots__ = ("U", "ev", "f")

    def __init__(self, f: np.ndarray, ev: np.ndarray, U: np.ndarray | None) -> None:
        self.f, self.ev, self.U = f, ev, U


def bases(L: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The chart bases B of a stack of Cholesky factors: L^-1 (psi chart) and L' (w chart).

    Parameters
    ----------
    L : ndarray (R, n, n)
        Lower Cholesky factors of the sample covariances.

    Returns
    -------
    B_psi, B_w : ndarray (R, n, n)
    """
    B_psi, _ = inv_stack(L)
    return np.ascontiguousarray(B_psi), np.ascontiguousarray(L.transpose(0, 2, 1))


def row_sum(a: np.ndarray) -> np.ndarray:
    """Sum of each row of ``a`` (N, k), column by column in a fixed order.

    The order does not depend on how many rows share the array, so a row's sum is the
    same bits in any batch.
    """
    out = np.zeros(a.shape[0])
    for k in range(a.shape[1]):
        out = out + a[:, k]
    return out


def _by_chart(fw, fpsi, x: np.ndarray, wchart: np.ndarray) -> np.ndarray:
    """``fw`` on the w chart's rows of ``x``, ``fpsi`` on the others (elementwise, so each
    row is the same bits however the rows are split); only the charts present."""
    if wchart.all():
        return fw(x)
    if not wchart.any():
        return fpsi(x)
    return np.where(wchart[:, None], fw(x), fpsi(x))


def _f(x: np.ndarray, wchart: np.ndarray) -> np.ndarray:
    """f of each eigenvalue: log x + 1/x - 1 (psi chart) or x - log x - 1 (w chart)."""
    with np.errstate(**_QUIET):
        lx = np.log(x)
        return _by_chart(lambda x: x - lx - 1.0, lambda x: lx + 1.0 / x - 1.0, x, wchart)


def _f1(x: np.ndarray, wchart: np.ndarray) -> np.ndarray:
    """f': (x - 1) / x^2 (psi chart) or (x - 1) / x (w chart)."""
    with np.errstate(**_QUIET):
        return _by_chart(lambda x: (x - 1.0) / x, lambda x: (x - 1.0) / (x * x), x, wchart)


def evaluate(p: np.ndarray, wchart: np.ndarray, B: np.ndarray, *,
             vectors: bool = True) -> Profile:
    """The profiled discrepancy at p (each problem in its own chart).

    Parameters
    ----------
    p : ndarray (N, n)
        psi (psi chart) or 1/psi (w chart).
    wchart : ndarray of bool (N,)
        True where p is in the w chart.
    B : ndarray (N, n, n)
        The basis of each problem's chart (:func:`bases`).
    vectors : bool
        Compute the eigenvectors too (else ``U`` is None).

    Returns
    -------
    Profile
        F is NaN where a kept eigenvalue is not positive (or p is not finite).
    """
    finite = np.all(np.isfinite(p), axis=1)
    pf = p if finite.all() else np.where(finite[:, None], p, 1.0)
    K = np.matmul(np.ascontiguousarray(B * pf[:, None, :]), B.transpose(0, 2, 1))
    if vectors:
        ev, U = np.linalg.eigh(K)
    else:
        ev, U = np.linalg.eigvalsh(K), None
    fx = _f(ev, wchart)
    fx[:, 0] = 0.0
    f = row_sum(fx)
    f[~(finite & (ev[:, 1] > 0) & np.isfinite(f))] = np.nan
    return Profile(f, ev, U)


def _weighted(Zt: np.ndarray, v: np.ndarray, Z: np.ndarray) -> np.ndarray:
    """Z' diag(v) Z for stacks (Zt = Z' contiguous)."""
    return np.matmul(np.ascontiguousarray(Zt * v[:, None, :]), Z)


def gradient_hessian(prof: Profile, wchart: np.ndarray,
                     B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact gradient and Hessian of the profiled F in the chart's coordinates.

    With P(v) = Z' diag(v) Z (rows of Z the z_k, v zero at the dropped index),
    b = 1 / x, a = 1 / x^2 and c = f'(x) / (x - x_0): H = 2 P(b) o P(a) - P(b) o P(b)
    (psi chart) or P(b) o P(b) (w chart), plus 2 P(c) o z_0 z_0' (o: elementwise).

    Parameters
    ----------
    prof : Profile
        :func:`evaluate` at the point (finite F).
    wchart : ndarray of bool (N,)
    B : ndarray (N, n, n)

    Returns
    -------
    grad : ndarray (N, n)
    hess : ndarray (N, n, n)
        Non-finite where the two smallest eigenvalues coincide.
    """
    x = prof.ev
    Z = np.ascontiguousarray(np.matmul(prof.U.transpose(0, 2, 1), B))  # rows z_k = B' u_k
    Zt = np.ascontiguousarray(Z.transpose(0, 2, 1))
    Z2 = Z * Z
    with np.errstate(**_QUIET):
        fp = _f1(x, wchart)
        fp[:, 0] = 0.0
        grad = np.matmul(fp[:, None, :], Z2)[:, 0, :]
        beta = 1.0 / x
        beta[:, 0] = 0.0
        gamma = fp / (x - x[:, :1])
        gamma[:, 0] = 0.0
        Pb = _weighted(Zt, beta, Z)
        Pg = _weighted(Zt, gamma, Z)
        z0 = Z[:, 0, :]
        drop = 2.0 * Pg * (z0[:, :, None] * z0[:, None, :])
        Pb2 = Pb * Pb
        if wchart.all():
            hess = Pb2
        else:
            hess = (2.0 * Pb) * _weighted(Zt, beta * beta, Z) - Pb2
            if wchart.any():
                hess = np.where(wchart[:, None, None], Pb2, hess)
        hess += drop
    return grad, hess


def newton_step(g: np.ndarray, H: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Newton step, its decrement g' step and whether H is positive definite.

    A positive-definite H is solved as it is; otherwise its eigenvalues are replaced by
    their absolute values (floored at ``EIG_FLOOR`` of the largest). NaN where g or H is
    not finite.
    """
    N, n = g.shape
    ok = np.all(np.isfinite(g), axis=1) & np.all(np.isfinite(H), axis=(1, 2))
    if ok.all():
        Hs, gs = H, g
    else:
        Hs = np.where(ok[:, None, None], H, np.eye(n))
        gs = np.where(ok[:, None], g, 0.0)
    _, pd = cholesky_stack(Hs)
    pd &= ok
    step = np.full((N, n), np.nan)
    if pd.any():
        x, solved = solve_stack(Hs[pd], gs[pd][:, :, None])
        step[pd] = -x[:, :, 0]
        pd[np.flatnonzero(pd)[~solved]] = False
    rest = np.flatnonzero(ok & ~pd)
    if len(rest):
        lam, V = np.linalg.eigh(Hs[rest])
        top = np.max(np.abs(lam), axis=1, keepdims=True)
        lam_mod = np.maximum(np.abs(lam), EIG_FLOOR * top)
        with np.errstate(**_QUIET):
            Vg = np.matmul(V.transpose(0, 2, 1), gs[rest][:, :, None])
            step[rest] = -np.matmul(V, Vg / lam_mod[:, :, None])[:, :, 0]
    with np.errstate(**_QUIET):
        dec = row_sum(-gs * step)
    return step, dec, pd


def reconstruct(p: np.ndarray, wchart: np.ndarray, prof: Profile,
                L: np.ndarray) -> np.ndarray:
    """theta = (lambda, psi, phi) in lavaan's marker parametrization (first loading 1).

    The dropped eigenpair (x_0, u_0) of K gives a = L u_0 and
    phi lambda lambda' = (1 - mu_0) a a', with mu_0 = x_0 (psi chart) or 1 / x_0 (w chart):
    lambda = a / a_1, phi = (1 - mu_0) a_1^2.

    Parameters
    ----------
    p : ndarray (N, n)
    wchart : ndarray of bool (N,)
    prof : Profile
        :func:`evaluate` at p.
    L : ndarray (N, n, n)
        Cholesky factors of the sample covariances.

    Returns
    -------
    ndarray (N, 2n + 1)
        NaN rows where F is not finite.
    """
    with np.errstate(**_QUIET):
        x0 = prof.ev[:, 0]
        mu0 = np.where(wchart, 1.0 / x0, x0)
        a = np.matmul(L, np.ascontiguousarray(prof.U[:, :, :1]))[:, :, 0]
        a1 = a[:, :1]
        psi = np.where(wchart[:, None], 1.0 / p, p)
        theta = np.concatenate([a / a1, psi, (1.0 - mu0)[:, None] * a1 * a1], axis=1)
    theta[~np.isfinite(prof.f)] = np.nan
    return theta
