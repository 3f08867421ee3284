"""Full-information ML of the parallel measurement model with absent members (batched).

The model behind ``sem`` and the measurement part of ``zcond_score`` when groups are
unbalanced or members are absent. Member positions are the indicators of a latent group
mean with loadings 1 and one residual variance, the latent regressed on Z; for ``sem``
the outcome y joins (conditionally on Z; Z's own mean and covariance are saturated and
estimated by their sample values, so they separate from the rest of the likelihood)::

    x_gi = nu_i + Gamma' Z_g + r_g + e_gi     (i in O_g, the observed positions)
    y_g  = c + delta' Z_g + beta r_g + eps_g  (sem only)
    r_g ~ N(0, psi), e_gi ~ N(0, v), eps_g ~ N(0, sigma2)

With k_g observed members, the x block's covariance is ``v I + psi 11'`` (compound
symmetric): its inverse and determinant have closed forms, so a group's likelihood splits
into a within part (the k_g - 1 contrasts, variance v, depending on nu only) and a
between part in (xbar_g - mean of nu over O_g - Gamma'Z_g, y_g) with a 2 x 2 covariance
that depends on k_g only. The mean parameters m = (nu, Gamma, c, delta) enter linearly:
for fixed covariance parameters s = (v, psi, beta, sigma2) they are a generalised least
squares solution (:func:`gls`), and Newton's method runs on the profile likelihood of s
(:mod:`micromacro_sim.models.parallel_fiml_fit`). Derivatives in s are complex-step
derivatives of the log-likelihood (exact to rounding); second derivatives in s are
central differences of those.

Every array has a leading replication axis R; a replication's numbers do not depend on
the others in the stack (elementwise operations, sums inside one replication, stacked
LAPACK solves). All replications of one call have the same number of positions K, every
position observed in some group.

Reference: R ``lavaan::sem(..., missing = "fiml")`` on the wide data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from micromacro_sim.models.linalg import solve_batch

__all__ = ["ParallelData", "cross_hessian", "gls", "loglik", "loglik_at", "mean_score", "prepare",
           "residual_stats", "score_at"]

LOG_2PI = float(np.log(2 * np.pi))


@dataclass(frozen=True, eq=False)
class ParallelData:
    """The arrays the likelihood needs, computed once per fit.

    Attributes
    ----------
    u : ndarray (R, G, K)
        Members' x at their positions, 0 where absent.
    mask : ndarray of float (R, G, K)
        1 where observed.
    k : ndarray (R, G)
        Observed members per group (at least 1).
    ubar : ndarray (R, G)
        Group means of the observed members.
    z : ndarray (R, G, q)
    y : ndarray (R, G) or None
        The outcome (``sem``), None for the measurement model alone.
    J : ndarray (R, G, d, P)
        Each group's between-part design: row 0 (mask/k, Z, 0, 0) for the x mean, row 1
        (0, 0, 1, Z) for y; d = 2 with y, 1 without.
    obs : ndarray (R, G, d)
        (ubar, y) or (ubar,).
    within_a, within_b : ndarray (R, K, K), (R, K)
        Sum over groups of the within projection ``diag(M) - M M'/k`` and of its
        product with the members' x (the within part of the normal equations, times v).
    n_within : ndarray (R,)
        Sum of (k_g - 1): the within degrees of freedom.
    """

    u: np.ndarray
    mask: np.ndarray
    k: np.ndarray
    ubar: np.ndarray
    z: np.ndarray
    y: np.ndarray | None
    J: np.ndarray
    obs: np.ndarray
    within_a: np.ndarray
    within_b: np.ndarray
    n_within: np.ndarray

    @property
    def n_positions(self) -> int:
        """K."""
        return self.u.shape[2]

    @property
    def n_z(self) -> int:
        """q."""
        return self.z.shape[2]

    @property
    def n_mean(self) -> int:
        """Number of mean parameters P: K + q, and 1 + q more with y."""
        return self.J.shape[3]

    def take(self, rows: np.ndarray) -> ParallelData:
        """The replications ``rows`` (a stack of their own)."""
        return ParallelData(*(None if a is None else a[rows] for a in (
            self.u, self.mask, self.k, self.ubar, self.z, self.y, self.J, self.obs,
            self.within_a, self.within_b, self.n_within)))


def prepare(x: np.ndarray, mask: np.ndarray, z: np.ndarray,
            y: np.ndarray | None = None) -> ParallelData:
    """Check the inputs and build :class:`ParallelData`.

    Parameters
    ----------
    x : ndarray (R, G, K)
        Members' x at their positions (anything where ``mask`` is False).
    mask : ndarray of bool (R, G, K)
        Observed members; every group has one, every position is observed somewhere.
    z : ndarray (R, G, q)
    y : ndarray (R, G), optional
    """
    M = np.asarray(mask, dtype=bool)
    if M.ndim != 3:
        raise ValueError(f"mask: expected an (R, G, K) array, got shape {M.shape}")
    if not (M.any(axis=2).all() and M.any(axis=1).all()):
        raise ValueError("every group needs an observed member and every position an "
                         "observed group")
    Mf = M.astype(float)
    u = np.where(M, np.asarray(x, dtype=float), 0.0)
    R, G, K = u.shape
    z = np.asarray(z, dtype=float).reshape(R, G, -1)
    q = z.shape[2]
    k = Mf.sum(axis=2)
    ubar = u.sum(axis=2) / k
    share = Mf / k[:, :, None]
    d = 1 if y is None else 2
    J = np.zeros((R, G, d, K + q + (0 if y is None else 1 + q)))
    J[:, :, 0, :K] = share
    J[:, :, 0, K:K + q] = z
    obs = ubar[:, :, None]
    if y is not None:
        y = np.asarray(y, dtype=float).reshape(R, G)
        J[:, :, 1, K + q] = 1.0
        J[:, :, 1, K + q + 1:] = z
        obs = np.stack([ubar, y], axis=2)
    eye = np.eye(K)
    within_a = (Mf[:, :, :, None] * eye - Mf[:, :, :, None] * share[:, :, None, :]).sum(axis=1)
    within_b = (Mf * (u - ubar[:, :, None])).sum(axis=1)
    return ParallelData(u=u, mask=Mf, k=k, ubar=ubar, z=z, y=y, J=J, obs=obs,
                        within_a=within_a, within_b=within_b, n_within=(k - 1).sum(axis=1))


def _between(s: np.ndarray, data: ParallelData) -> tuple[np.ndarray, np.ndarray]:
    """Each group's between-part precision Q (R, G, d, d) and log-determinant (R, G).

    ``s`` (R, 2 or 4) may be complex (complex-step derivatives). The log-determinant is
    that of the x block's between direction and, with y, of y given the members' x:
    together with ``(k - 1) log v`` the log-determinant of the group's covariance.
    """
    v, psi = s[:, 0, None], s[:, 1, None]
    k = data.k
    D = v + k * psi  # k * Var(xbar_g | Z): positive in a proper solution
    if data.y is None:
        Q = (k / D)[:, :, None, None]
        return Q, np.log(D)
    beta, sigma2 = s[:, 2, None], s[:, 3, None]
    rho = beta * psi * k / D  # regression of y's residual on the xbar residual
    cond = sigma2 + beta * beta * psi * v / D  # Var(y | members' x)
    Q = np.empty(k.shape + (2, 2), dtype=np.result_type(s, float))
    Q[..., 0, 0] = k / D + rho * rho / cond
    Q[..., 0, 1] = Q[..., 1, 0] = -rho / cond
    Q[..., 1, 1] = 1.0 / cond
    return Q, np.log(D) + np.log(cond)


def _within(m: np.ndarray, data: ParallelData) -> np.ndarray:
    """Within sums of squares W_g (R, G): the members' x around their group mean, after
    removing the position intercepts nu."""
    K = data.n_positions
    dev = (data.u - m[:, None, :K]) * data.mask
    dbar = dev.sum(axis=2) / data.k
    return (dev * dev).sum(axis=2) - data.k * dbar * dbar


def _residuals(m: np.ndarray, data: ParallelData) -> np.ndarray:
    """Between residuals (R, G, d): obs - J m."""
    return data.obs - np.matmul(data.J, m[:, None, :, None])[..., 0]


def residual_stats(m: np.ndarray, data: ParallelData) -> tuple[np.ndarray, np.ndarray]:
    """What the log-likelihood needs of the mean parameters: each group's between
    residuals (R, G, d) and the within sum of squares (R,)."""
    return _residuals(m, data), _within(m, data).sum(axis=1)


def _group_terms(s: np.ndarray, res: np.ndarray, data: ParallelData):
    """Per group: D = v + k psi, and with y rho, c (Var(y | x)) and t = e_y - rho e_x."""
    v, psi = s[:, 0, None], s[:, 1, None]
    k = data.k
    D = v + k * psi
    if data.y is None:
        return D, None, None, None
    beta, sigma2 = s[:, 2, None], s[:, 3, None]
    rho = beta * psi * k / D
    c = sigma2 + beta * beta * psi * v / D
    return D, rho, c, res[:, :, 1] - rho * res[:, :, 0]


def loglik_at(s: np.ndarray, stats: tuple[np.ndarray, np.ndarray],
              data: ParallelData) -> np.ndarray:
    """Log-likelihood (R,) at covariance parameters ``s`` (may be complex) and the mean
    parameters behind ``stats`` (:func:`residual_stats`).

    A group contributes ``log D + k e_x^2 / D`` (x: D = v + k psi, e_x the between
    residual of its members' mean) and, with y, ``log c + t^2 / c`` (y given x); the
    within part is ``(k - 1) log v + W / v``.
    """
    res, within = stats
    D, rho, c, t = _group_terms(s, res, data)
    e0 = res[:, :, 0]
    per = np.log(D) + data.k * e0 * e0 / D
    if c is not None:
        per = per + np.log(c) + t * t / c
    v = s[:, 0]
    n_obs = data.k.sum(axis=1) + (0 if data.y is None else data.k.shape[1])
    return -0.5 * (n_obs * LOG_2PI + data.n_within * np.log(v) + within / v
                   + per.sum(axis=1))


def score_at(s: np.ndarray, stats: tuple[np.ndarray, np.ndarray],
             data: ParallelData) -> np.ndarray:
    """Gradient (R, ns) of :func:`loglik_at` in ``s`` (analytic; ``s`` may be complex)."""
    res, within = stats
    k, e0 = data.k, res[:, :, 0]
    D, rho, c, t = _group_terms(s, res, data)
    v, psi = s[:, 0, None], s[:, 1, None]
    a1 = 1 / D - k * e0 * e0 / (D * D)
    parts = [a1, a1 * k]
    if c is not None:
        beta = s[:, 2, None]
        a2 = 1 / c - t * t / (c * c)
        a3 = -2 * t * e0 / c
        D2 = D * D
        parts[0] = parts[0] + a2 * beta * beta * k * psi * psi / D2 - a3 * beta * psi * k / D2
        parts[1] = parts[1] + a2 * beta * beta * v * v / D2 + a3 * beta * k * v / D2
        parts.append(a2 * 2 * beta * psi * v / D + a3 * psi * k / D)
        parts.append(a2)
    out = np.stack([p.sum(axis=1) for p in parts], axis=1)
    vv = s[:, 0]
    out[:, 0] += data.n_within / vv - within / (vv * vv)
    return -0.5 * out


def _derivatives(s: np.ndarray, data: ParallelData) -> list[tuple[np.ndarray, ...]]:
    """Per covariance parameter j: the derivatives (R, G) of D, rho and c in s_j."""
    v, psi = s[:, 0, None], s[:, 1, None]
    k = data.k
    D = v + k * psi
    zero = np.zeros_like(D)
    if data.y is None:
        return [(np.ones_like(D), zero, zero), (k + zero, zero, zero)]
    beta = s[:, 2, None]
    D2 = D * D
    return [(np.ones_like(D), -beta * psi * k / D2, beta * beta * k * psi * psi / D2),
            (k + zero, beta * k * v / D2, beta * beta * v * v / D2),
            (zero, psi * k / D + zero, 2 * beta * psi * v / D),
            (zero, zero, np.ones_like(D))]


def cross_hessian(m: np.ndarray, s: np.ndarray, data: ParallelData) -> np.ndarray:
    """Derivative (R, P, ns) of the score in m with respect to s (analytic, real ``s``)."""
    res = _residuals(m, data)
    D, rho, c, _ = _group_terms(s, res, data)
    k = data.k
    R, G, d, P = data.J.shape
    Jt = np.swapaxes(data.J.reshape(R, G * d, P), 1, 2)
    K = data.n_positions
    out = np.empty((R, P, s.shape[1]))
    for j, (dD, drho, dc) in enumerate(_derivatives(s, data)):
        dq00 = -k * dD / (D * D)
        if c is None:
            w = (dq00 * res[:, :, 0])[:, :, None]
        else:
            dq00 = dq00 + 2 * rho * drho / c - rho * rho * dc / (c * c)
            dq01 = -drho / c + rho * dc / (c * c)
            dq11 = -dc / (c * c)
            w = np.stack([dq00 * res[:, :, 0] + dq01 * res[:, :, 1],
                          dq01 * res[:, :, 0] + dq11 * res[:, :, 1]], axis=2)
        out[:, :, j] = np.matmul(Jt, w.reshape(R, G * d, 1))[:, :, 0]
    v = s[:, 0]
    nu = m[:, :K]
    within = data.within_b - np.matmul(data.within_a, nu[:, :, None])[:, :, 0]
    out[:, :K, 0] -= within / (v * v)[:, None]
    return out


def loglik(m: np.ndarray, s: np.ndarray, data: ParallelData) -> np.ndarray:
    """Log-likelihood (R,) of the members' x (and y) given Z; ``s`` may be complex."""
    return loglik_at(s, residual_stats(m, data), data)


def _normal_equations(s: np.ndarray, data: ParallelData) -> tuple[np.ndarray, np.ndarray]:
    """A (R, P, P) and b (R, P) with ``A m = b`` the GLS equations for given ``s``.

    Stacked matrix products: each replication's product is computed on its own.
    """
    Q, _ = _between(s, data)
    R, G, d, P = data.J.shape
    QJ = np.matmul(Q, data.J).reshape(R, G * d, P)
    Jt = np.swapaxes(data.J.reshape(R, G * d, P), 1, 2)
    A = np.matmul(Jt, QJ)
    b = np.matmul(np.swapaxes(QJ, 1, 2), data.obs.reshape(R, G * d, 1))[:, :, 0]
    K = data.n_positions
    v = s[:, 0]
    A[:, :K, :K] += data.within_a / v[:, None, None]
    b[:, :K] += data.within_b / v[:, None]
    return A, b


def gls(s: np.ndarray, data: ParallelData) -> tuple[np.ndarray, np.ndarray]:
    """The mean parameters maximising the likelihood for covariance parameters ``s``.

    Returns
    -------
    m : ndarray (R, P)
        NaN where the equations are singular.
    A : ndarray (R, P, P)
        The information of m (minus the Hessian of the log-likelihood in m).
    """
    A, b = _normal_equations(s, data)
    m, _ = solve_batch(A, b)
    return m, A


def mean_score(m: np.ndarray, s: np.ndarray, data: ParallelData) -> np.ndarray:
    """Gradient (R, P) of the log-likelihood in m (``s`` may be complex)."""
    A, b = _normal_equations(s, data)
    return b - (A * m[:, None, :]).sum(axis=2)
