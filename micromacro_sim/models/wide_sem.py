"""The single-step SEM on the wide data in closed form, with its expected information.

The model (lavaan syntax, members x1..xn as indicators)::

    lv =~ 1*x1 + ... + 1*xn        # loadings fixed at 1
    x1 ~~ v*x1; ...; xn ~~ v*xn     # equal residual variances
    lv ~~ z
    y ~ z + lv                      # with intercepts (meanstructure)

fitted by ML. Because z covaries with the latent variable, lavaan does not treat z as a
fixed exogenous covariate here (``fixed.x`` has no effect): the mean and variance of z
are free parameters, estimated by their sample values. Writing each row of x as its mean
xbar_g plus n - 1 orthonormal contrasts, the contrasts carry only v (and the free item
intercepts) and the joint law of (z, xbar, y) is saturated in the remaining parameters.
So the ML solution, when it is admissible, is

* v the residual variance of the equal-loading one-factor model
  (:func:`~micromacro_sim.models.cfa_equal.equal_loading_ml`),
* the moments of (z, xbar, y) with denominator G, Var(lv) = Var(xbar) - v / n,
  Cov(lv, z) = Cov(xbar, z),
* (b_z, b_xi) the regression of y on (z, lv) computed from those moments, residual
  variance likewise, intercept mean(y) - b_z mean(z) (lv has mean 0),

as SPEC section 3.1 (last paragraph) states. Standard errors are lavaan's default for
this model: the inverse of the expected (structured) information of the joint normal
likelihood of (x1..xn, y, z) in all free parameters, evaluated at the estimates. The
per-dataset :func:`sem_closed_form` / :func:`sem_expected_information` (derivatives by
central differences) and the batched :func:`sem_batch` (derivatives in closed form) sit
side by side.

Reference: R ``lavaan::sem(model, data = wide, meanstructure = TRUE)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from micromacro_sim.core.status import Flag, Reason, add_flags, flag, no_flags
from micromacro_sim.models.cfa_equal import equal_loading_ml

__all__ = ["SEMSolution", "sem_batch", "sem_closed_form", "sem_expected_information",
           "sem_se"]


@dataclass(frozen=True)
class SEMSolution:
    """Closed-form ML solution of the single-step SEM (one z or several).

    Attributes
    ----------
    nu : ndarray (n,)
        Item intercepts (sample means of the columns).
    b0 : float
        Intercept of y.
    b_z : ndarray (q,)
        Coefficients of z.
    b_xi : float
        Coefficient of lv.
    v : float
        Common residual variance of the indicators.
    phi : float
        Var(lv).
    c : ndarray (q,)
        Cov(lv, z).
    sigma2 : float
        Residual variance of y.
    mu_z : ndarray (q,)
        Mean of z (its sample mean).
    s_zz : ndarray (q, q)
        Covariance of z (sample covariance, denominator G).
    """

    nu: np.ndarray
    b0: float
    b_z: np.ndarray
    b_xi: float
    v: float
    phi: float
    c: np.ndarray
    sigma2: float
    mu_z: np.ndarray
    s_zz: np.ndarray

    @property
    def residual_phi(self) -> float:
        """Residual variance of lv given z: phi - c' S_zz^-1 c."""
        return float(self.phi - self.c @ np.linalg.solve(self.s_zz, self.c))

    def problems(self) -> tuple[Flag, ...]:
        """Flags of a solution that is not a proper ML solution (empty when admissible)."""
        if not (self.v > 0 and self.phi > 0 and self.residual_phi > 0 and self.sigma2 > 0):
            return (flag(Reason.NEGATIVE_VARIANCE),)
        return ()


def sem_closed_form(wide: np.ndarray, y: np.ndarray, z: np.ndarray) -> SEMSolution:
    """ML estimates of the single-step SEM from the moments of the wide data.

    Parameters
    ----------
    wide : ndarray (G, n)
        Members' x, one row per group.
    y : ndarray (G,)
    z : ndarray (G, q)

    Returns
    -------
    SEMSolution
        The unconstrained stationary point; check :meth:`SEMSolution.problems`.
    """
    X = np.asarray(wide, dtype=float)
    G, n = X.shape
    z = np.asarray(z, dtype=float).reshape(G, -1)
    y = np.asarray(y, dtype=float)
    nu, xbar, v = equal_loading_ml(X)
    v = float(v)
    W = np.column_stack([z, xbar, y])
    mw = W.mean(axis=0)
    D = W - mw
    M = D.T @ D / G
    q = z.shape[1]
    sxx = M[: q + 1, : q + 1].copy()
    sxx[q, q] -= v / n  # Var(lv)
    sxy = M[: q + 1, q + 1]
    beta = np.linalg.solve(sxx, sxy)
    sigma2 = float(M[q + 1, q + 1] - sxy @ beta)
    mu_z = mw[:q]
    return SEMSolution(
        nu=nu,
        b0=float(mw[q + 1] - beta[:q] @ mu_z),
        b_z=beta[:q],
        b_xi=float(beta[q]),
        v=v,
        phi=float(sxx[q, q]),
        c=sxx[:q, q].copy(),
        sigma2=sigma2,
        mu_z=mu_z,
        s_zz=M[:q, :q].copy(),
    )


def _implied(sol: SEMSolution, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of (x1..xn, y, z) implied by a solution."""
    q = len(sol.b_z)
    k = n + 1 + q
    # (lv, z) covariance and the loadings of every observed variable on (lv, z)
    C = np.zeros((q + 1, q + 1))
    C[0, 0] = sol.phi
    C[0, 1:] = C[1:, 0] = sol.c
    C[1:, 1:] = sol.s_zz
    L = np.zeros((k, q + 1))
    L[:n, 0] = 1.0
    L[n, 0] = sol.b_xi
    L[n, 1:] = sol.b_z
    L[n + 1 :, 1:] = np.eye(q)
    sigma = L @ C @ L.T
    sigma[np.arange(n), np.arange(n)] += sol.v
    sigma[n, n] += sol.sigma2
    mu = np.concatenate([sol.nu, [sol.b0 + sol.b_z @ sol.mu_z], sol.mu_z])
    return mu, sigma


def _pack(sol: SEMSolution) -> np.ndarray:
    iu = np.triu_indices(len(sol.mu_z))
    return np.concatenate(
        [sol.nu, [sol.b0], sol.b_z, [sol.b_xi, sol.v, sol.phi], sol.c, [sol.sigma2],
         sol.mu_z, sol.s_zz[iu]]
    )


def _unpack(theta: np.ndarray, template: SEMSolution) -> SEMSolution:
    n, q = len(template.nu), len(template.b_z)
    i = 0
    nu = theta[i : i + n]
    i += n
    b0 = theta[i]
    i += 1
    b_z = theta[i : i + q]
    i += q
    b_xi, v, phi = theta[i : i + 3]
    i += 3
    c = theta[i : i + q]
    i += q
    sigma2 = theta[i]
    i += 1
    mu_z = theta[i : i + q]
    i += q
    iu = np.triu_indices(q)
    s_zz = np.zeros((q, q))
    s_zz[iu] = theta[i : i + len(iu[0])]
    s_zz = s_zz + np.triu(s_zz, 1).T
    return SEMSolution(
        nu=nu, b0=float(b0), b_z=b_z, b_xi=float(b_xi), v=float(v), phi=float(phi), c=c,
        sigma2=float(sigma2), mu_z=mu_z, s_zz=s_zz,
    )


def sem_expected_information(sol: SEMSolution, n: int, n_groups: int) -> np.ndarray:
    """Expected information of the free parameters (order of ``_pack``), all G groups.

    The free parameters are nu, b0, b_z, b_xi, v, phi, Cov(lv, z), sigma2, the mean of z
    and the upper triangle of Var(z).

    I_ab = G [ tr(Sigma^-1 dSigma_a Sigma^-1 dSigma_b) / 2 + dmu_a' Sigma^-1 dmu_b ],
    with the model-implied moments (lavaan's ``information = "expected"``,
    ``h1.information = "structured"``). The implied moments are polynomial in the
    parameters, so their derivatives are taken by exact-enough central differences.
    """
    theta = _pack(sol)
    k = len(theta)
    mu0, sigma0 = _implied(sol, n)
    inv = np.linalg.inv(sigma0)
    dmu = np.empty((k, len(mu0)))
    dsig = np.empty((k, *sigma0.shape))
    for a in range(k):
        h = 1e-4 * max(1.0, abs(theta[a]))
        tp, tm = theta.copy(), theta.copy()
        tp[a] += h
        tm[a] -= h
        mp, sp = _implied(_unpack(tp, sol), n)
        mm, sm = _implied(_unpack(tm, sol), n)
        dmu[a] = (mp - mm) / (2 * h)
        dsig[a] = (sp - sm) / (2 * h)
    m = np.einsum("ij,ajk->aik", inv, dsig)
    info = 0.5 * np.einsum("aij,bji->ab", m, m) + dmu @ inv @ dmu.T
    return n_groups * info


def sem_se(sol: SEMSolution, n: int, n_groups: int) -> np.ndarray:
    """SEs of (b0, b_z, b_xi) from :func:`sem_expected_information` (an admissible solution)."""
    q = len(sol.b_z)
    cov = np.linalg.inv(sem_expected_information(sol, n, n_groups))
    idx = np.concatenate([[n], n + 1 + np.arange(q), [n + 1 + q]])
    return np.sqrt(np.diag(cov)[idx])


def sem_batch(
    wide: np.ndarray, y: np.ndarray, z: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Closed-form estimates and expected-information SEs for R replications at once.

    The same solution as :func:`sem_closed_form` and the same information as
    :func:`sem_expected_information`, with the derivatives of the implied moments in
    closed form instead of central differences: with Sigma = L C L' + diag(v 1_n,
    sigma2, 0), C = Cov(lv, z) and L the loadings of (x, y, z) on (lv, z), a parameter
    of L gives dL C L' + L C dL', one of C gives L dC L', and the mean of y is
    b0 + b_z' mu_z.

    Parameters
    ----------
    wide : ndarray (R, G, n)
    y : ndarray (R, G)
    z : ndarray (R, G, q)

    Returns
    -------
    params : ndarray (R, 2 + q)
        b0, b_z, b_xi.
    se : ndarray (R, 2 + q)
        NaN where the solution is inadmissible.
    admissible : ndarray of bool (R,)
        Var(lv), Var(lv | z), v and sigma2 all > 0.
    flags : ndarray of object (R,)
        ``negative_variance`` where not admissible.

    Raises
    ------
    numpy.linalg.LinAlgError
        When a moment matrix of some replication is singular (callers fall back to the
        per-dataset path for those).
    """
    X = np.asarray(wide, dtype=float)
    R, G, n = X.shape
    q = z.shape[2]
    nu, xbar, v = equal_loading_ml(X)
    W = np.concatenate([z, xbar[:, :, None], y[:, :, None]], axis=2)
    mw = W.mean(axis=1)
    D = W - mw[:, None, :]
    M = np.einsum("rgi,rgj->rij", D, D) / G
    sxx = M[:, : q + 1, : q + 1].copy()
    sxx[:, q, q] -= v / n
    sxy = M[:, : q + 1, q + 1]
    beta = np.linalg.solve(sxx, sxy[:, :, None])[:, :, 0]
    sigma2 = M[:, q + 1, q + 1] - np.sum(sxy * beta, axis=1)
    mu_z = mw[:, :q]
    b_z, b_xi = beta[:, :q], beta[:, q]
    b0 = mw[:, q + 1] - np.sum(b_z * mu_z, axis=1)
    params = np.concatenate([b0[:, None], b_z, b_xi[:, None]], axis=1)
    phi, c, s_zz = sxx[:, q, q], sxx[:, q, :q], M[:, :q, :q]
    if q:
        residual_phi = phi - np.sum(c * np.linalg.solve(s_zz, c[:, :, None])[:, :, 0], axis=1)
    else:
        residual_phi = phi
    admissible = (v > 0) & (phi > 0) & (residual_phi > 0) & (sigma2 > 0)
    se = np.full(params.shape, np.nan)
    ok = np.flatnonzero(admissible)
    if len(ok):
        se[ok] = _sem_se_batch(n, G, nu[ok], b_z[ok], b_xi[ok], v[ok], phi[ok], c[ok],
                               sigma2[ok], mu_z[ok], s_zz[ok])
    flags = no_flags(R)
    add_flags(flags, ~admissible, flag(Reason.NEGATIVE_VARIANCE))
    return params, se, admissible, flags


def _sem_se_batch(n: int, G: int, nu: np.ndarray, b_z: np.ndarray, b_xi: np.ndarray,
                  v: np.ndarray, phi: np.ndarray, c: np.ndarray, sigma2: np.ndarray,
                  mu_z: np.ndarray, s_zz: np.ndarray) -> np.ndarray:
    """SEs of (b0, b_z, b_xi) from the expected information, parameters in ``_pack`` order."""
    R, q = b_z.shape
    p = n + 1 + q
    iy = n
    C = np.zeros((R, q + 1, q + 1))
    C[:, 0, 0] = phi
    C[:, 0, 1:] = C[:, 1:, 0] = c
    C[:, 1:, 1:] = s_zz
    L = np.zeros((R, p, q + 1))
    L[:, :n, 0] = 1.0
    L[:, iy, 0] = b_xi
    L[:, iy, 1:] = b_z
    L[:, n + 1 :, 1:] = np.eye(q)
    sigma = L @ C @ L.transpose(0, 2, 1)
    sigma[:, np.arange(n), np.arange(n)] += v[:, None]
    sigma[:, iy, iy] += sigma2
    A = np.linalg.inv(sigma)
    iu = np.triu_indices(q)
    K = n + 1 + q + 3 + q + 1 + q + len(iu[0])
    dmu = np.zeros((R, K, p))
    # Only the parameters of Sigma have dSigma != 0 (b_z, b_xi, v, phi, Cov(lv, z),
    # sigma2, Var(z)): A dSigma_a is formed for those alone (the others are exact zeros).
    # The trace products still run over all K rows, zeros included: a product of other
    # shapes would round differently, and the numbers must not change.
    active = np.concatenate([n + 1 + np.arange(q + 1 + 1 + 1 + q + 1),
                             K - len(iu[0]) + np.arange(len(iu[0]))])
    slot = np.full(K, -1)
    slot[active] = np.arange(len(active))
    dsig = np.zeros((R, len(active), p, p))
    LC = L @ C  # (R, p, q + 1)

    def via_l(a: int, col: int) -> None:  # dL has a single 1 at (y, col)
        t = np.zeros((R, p, p))
        t[:, iy, :] = LC[:, :, col]
        dsig[:, slot[a]] = t + t.transpose(0, 2, 1)

    def via_c(a: int, i: int, j: int) -> None:  # dC = E_ij + E_ji (E_ii on the diagonal)
        out = L[:, :, i, None] * L[:, None, :, j]
        dsig[:, slot[a]] = out + out.transpose(0, 2, 1) if i != j else out

    a = 0
    for i in range(n):  # nu
        dmu[:, a, i] = 1.0
        a += 1
    dmu[:, a, iy] = 1.0  # b0
    a += 1
    for j in range(q):  # b_z
        dmu[:, a, iy] = mu_z[:, j]
        via_l(a, 1 + j)
        a += 1
    via_l(a, 0)  # b_xi
    a += 1
    dsig[:, slot[a], np.arange(n), np.arange(n)] = 1.0  # v
    a += 1
    via_c(a, 0, 0)  # phi
    a += 1
    for j in range(q):  # Cov(lv, z_j)
        via_c(a, 0, 1 + j)
        a += 1
    dsig[:, slot[a], iy, iy] = 1.0  # sigma2
    a += 1
    for j in range(q):  # mu_z
        dmu[:, a, iy] = b_z[:, j]
        dmu[:, a, n + 1 + j] = 1.0
        a += 1
    for i, j in zip(*iu, strict=True):  # Var(z) upper triangle
        via_c(a, 1 + i, 1 + j)
        a += 1
    m = A[:, None] @ dsig  # (R, K_active, p, p): A dSigma_a
    k_act = len(active)
    rows = np.zeros((R, K, p * p))  # A dSigma_a, flattened, for every parameter
    rows[:, active] = m.reshape(R, k_act, p * p)
    rows_t = np.zeros((R, K, p * p))  # the same, transposed
    rows_t[:, active] = m.transpose(0, 1, 3, 2).reshape(R, k_act, p * p)
    del m
    trace = rows @ rows_t.transpose(0, 2, 1)
    info = 0.5 * trace + dmu @ A @ dmu.transpose(0, 2, 1)
    cov = np.linalg.inv(G * info)
    idx = np.concatenate([[n], n + 1 + np.arange(q), [n + 1 + q]])
    return np.sqrt(np.diagonal(cov, axis1=1, axis2=2)[:, idx])


