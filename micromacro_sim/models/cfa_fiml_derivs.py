"""The one-factor FIML likelihood on wide data with missing cells, in O(K) per group.

The mathematics behind :mod:`micromacro_sim.models.cfa_fiml`. Group g observes the
indicators O_g; its implied covariance is Sigma_g = phi l l' + Theta restricted to O_g, a
diagonal plus rank one, so with w_j = 1 / psi_j, u_j = w_j l_j, e = x - nu (zero where
not observed) and the per-group sums

    a = sum_O u_j l_j,   b = sum_O u_j e_j,   s = sum_O w_j e_j^2,   c = 1 + phi a,

Sherman-Morrison gives Sigma_g^-1 = W - (phi / c) u u' and the matrix determinant lemma
log |Sigma_g| = sum_O log |psi_j| + log |c|. The group's -2 log-likelihood without the
2 pi constant is

    f_g = sum_O log |psi_j| + log |c| + s - phi b^2 / c,

a function h(a, b, s, phi) plus the log terms, so the gradient and the exact Hessian
follow from the chain rule through the three sums (whose second derivatives only couple
the loading, residual variance and intercept of one indicator).

As lavaan (which returns an infinite objective otherwise), F is defined where the full
K x K implied covariance is positive definite; every Sigma_g is then positive definite
too. With a and c summed over all K indicators, Sigma is positive definite exactly when
either no residual variance is negative and c > 0, or one is, phi > 0 and c < 0 (the
inertia of a diagonal matrix changes by at most one under a rank-one update; the sign
of det Sigma = c prod psi_j decides).

The parameters of a run are theta = (lambda (K), psi (K), phi, nu (K)); the objective is
F = sum_g f_g / N with N the number of groups that observe anything (empty groups add
nothing). Every quantity of a run comes from its own rows: sums over indicators and
groups are reductions inside the run's slice, and sums of outer products over groups are
stacked matrix products (one product per run), so a run's numbers do not depend on the
other runs in the stack.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Terms", "derivatives", "evaluate", "implied_pd", "information", "scores", "split"]

_QUIET = {"invalid": "ignore", "over": "ignore", "divide": "ignore", "under": "ignore"}


def split(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(lambda, psi, phi, nu) of theta (N, 3K + 1)."""
    K = (theta.shape[1] - 1) // 3
    return theta[:, :K], theta[:, K : 2 * K], theta[:, 2 * K], theta[:, 2 * K + 1 :]


@dataclass
class Terms:
    """The per-group sums of N runs at their points (arrays over runs and groups).

    Attributes
    ----------
    f : ndarray (N,)
        F = sum_g f_g / N_cases; NaN where the implied covariance is not positive
        definite or a parameter is not finite.
    w, u : ndarray (N, K)
        1 / psi and lambda / psi.
    e : ndarray (N, G, K)
        x - nu at the observed cells, 0 elsewhere.
    a, b, c : ndarray (N, G)
        sum_O u l, sum_O u e and 1 + phi a.
    """

    f: np.ndarray
    w: np.ndarray
    u: np.ndarray
    e: np.ndarray
    a: np.ndarray
    b: np.ndarray
    c: np.ndarray


def evaluate(theta: np.ndarray, x: np.ndarray, m: np.ndarray, n_cases: np.ndarray) -> Terms:
    """F and the per-group sums of every run.

    Parameters
    ----------
    theta : ndarray (N, 3K + 1)
    x : ndarray (N, G, K)
        Values, 0 at the cells not observed.
    m : ndarray (N, G, K)
        The mask as floats (1 observed, 0 not).
    n_cases : ndarray (N,)
        Groups with at least one observed cell.
    """
    lam, psi, phi, nu = split(theta)
    bad = ~np.all(np.isfinite(theta), axis=1) | np.any(psi == 0, axis=1)
    with np.errstate(**_QUIET):
        w = np.where(bad[:, None], 1.0, 1.0 / psi)
        u = w * lam
        e = (x - nu[:, None, :]) * m
        a = np.sum(m * (u * lam)[:, None, :], axis=2)
        b = np.sum(e * u[:, None, :], axis=2)
        s = np.sum(e * e * w[:, None, :], axis=2)
        logpsi = np.sum(m * np.log(np.abs(np.where(bad[:, None], 1.0, psi)))[:, None, :], axis=2)
        c = 1.0 + phi[:, None] * a
        fg = logpsi + np.log(np.abs(c)) + s - phi[:, None] * b * b / c
        f = np.sum(fg, axis=1) / n_cases
    pd = implied_pd(lam, psi, phi)
    f[bad | ~pd | ~np.isfinite(f)] = np.nan
    return Terms(f=f, w=w, u=u, e=e, a=a, b=b, c=c)


def implied_pd(lam: np.ndarray, psi: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Whether phi l l' + diag(psi) is positive definite, per run, in O(K)."""
    with np.errstate(**_QUIET):
        c = 1.0 + phi * np.sum(lam * lam / psi, axis=1)
    nneg = np.sum(psi < 0, axis=1)
    ok = np.all(np.isfinite(psi) & (psi != 0), axis=1) & np.isfinite(c)
    return ok & (((nneg == 0) & (c > 0)) | ((nneg == 1) & (phi > 0) & (c < 0)))


def _chain(t: Terms, phi: np.ndarray) -> dict[str, np.ndarray]:
    """First and second derivatives of h(a, b, s, phi) = log|c| + s - phi b^2 / c per
    group (with q = phi / c, the factor's posterior variance, and eta = q b, its posterior
    mean)."""
    c, a, b = t.c, t.a, t.b
    q = phi[:, None] / c
    eta = q * b
    c2 = c * c
    return dict(
        h_a=q + eta * eta, h_b=-2.0 * eta, h_phi=a / c - (b / c) ** 2,
        h_aa=-q * q - 2.0 * q * eta * eta, h_ab=2.0 * q * eta, h_bb=-2.0 * q,
        h_aphi=(1.0 + 2.0 * eta * b) / c2, h_bphi=-2.0 * b / c2,
        h_phiphi=a * (2.0 * b * b / c - a) / c2,
    )


def derivatives(theta: np.ndarray, t: Terms, m: np.ndarray,
                n_cases: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradient (N, P) and exact Hessian (N, P, P) of F, P = 3K + 1 in theta's order."""
    lam, psi, phi, nu = split(theta)
    N, G, K = m.shape
    h = _chain(t, phi)
    w, u, e = t.w[:, None, :], t.u[:, None, :], t.e
    ha, hb = h["h_a"][:, :, None], h["h_b"][:, :, None]
    # derivatives of the sums a and b (per group and indicator), blocks (lambda, psi, nu)
    ja = np.concatenate([2.0 * u * m, -u * u * m, np.zeros_like(m)], axis=2)
    jb = np.concatenate([w * e, -w * u * e, -u * m], axis=2)
    grad = np.empty((N, 3 * K + 1))
    gl = ha * ja[:, :, :K] + hb * jb[:, :, :K]
    gp = ha * ja[:, :, K : 2 * K] + hb * jb[:, :, K : 2 * K] - w * w * e * e + w * m
    gn = hb * jb[:, :, 2 * K :] - 2.0 * w * e
    grad[:, :K] = np.sum(gl, axis=1)
    grad[:, K : 2 * K] = np.sum(gp, axis=1)
    grad[:, 2 * K] = np.sum(h["h_phi"], axis=1)
    grad[:, 2 * K + 1 :] = np.sum(gn, axis=1)
    # the quadratic part: sum_g [ja jb] Hh [ja jb]', one stacked product per run
    t1 = h["h_aa"][:, :, None] * ja + h["h_ab"][:, :, None] * jb
    t2 = h["h_ab"][:, :, None] * ja + h["h_bb"][:, :, None] * jb
    jj = np.concatenate([ja, jb], axis=1)
    quad = np.swapaxes(jj, 1, 2) @ np.concatenate([t1, t2], axis=1)
    quad = 0.5 * (quad + np.swapaxes(quad, 1, 2))
    cross = np.sum(h["h_aphi"][:, :, None] * ja + h["h_bphi"][:, :, None] * jb, axis=1)
    # the second derivatives of the sums: one (lambda_j, psi_j, nu_j) block per indicator
    d_ll = np.sum(ha * 2.0 * w * m, axis=1)
    d_lp = np.sum(ha * (-2.0 * w * u * m) - hb * w * w * e, axis=1)
    d_ln = np.sum(-hb * w * m, axis=1)
    d_pp = np.sum(ha * 2.0 * w * u * u * m + hb * 2.0 * w * w * u * e
                  + 2.0 * w * w * w * e * e - w * w * m, axis=1)
    d_pn = np.sum(hb * w * u * m + 2.0 * w * w * e, axis=1)
    d_nn = np.sum(2.0 * w * m, axis=1)
    # assemble in theta's order (lambda, psi, phi, nu)
    order = np.concatenate([np.arange(2 * K), [3 * K], np.arange(2 * K, 3 * K)])
    big = np.zeros((N, 3 * K + 1, 3 * K + 1))
    big[:, : 3 * K, : 3 * K] = quad
    big[:, : 3 * K, 3 * K] = big[:, 3 * K, : 3 * K] = cross
    big[:, 3 * K, 3 * K] = np.sum(h["h_phiphi"], axis=1)
    i = np.arange(K)
    for r0, c0, d in ((0, 0, d_ll), (0, K, d_lp), (0, 2 * K, d_ln), (K, K, d_pp),
                      (K, 2 * K, d_pn), (2 * K, 2 * K, d_nn)):
        big[:, r0 + i, c0 + i] += d
        if r0 != c0:
            big[:, c0 + i, r0 + i] += d
    hess = big[:, order[:, None], order[None, :]]
    scale = 1.0 / n_cases
    return grad * scale[:, None], hess * scale[:, None, None]


def information(theta: np.ndarray, t: Terms, m: np.ndarray,
                n_cases: np.ndarray) -> np.ndarray:
    """Expected information of F (N, P, P) in theta's order.

    The covariance block is sum_g tr(A_g dSigma_a A_g dSigma_b), A_g = Sigma_g^-1, the
    intercept block sum_g 2 A_g, and the two blocks are orthogonal (per group, as for
    complete data). Each entry is a weighted sum over groups of the mask products
    m_gi m_gj, so the block comes from one stacked product per run.
    """
    lam, psi, phi, nu = split(theta)
    N, G, K = m.shape
    c, a = t.c, t.a
    q = phi[:, None] / c
    wts = np.stack([1.0 / (c * c), a * q / c, q / c, q * q, q], axis=2)  # (N, G, 5)
    mw = (m[:, :, None, :] * wts[:, :, :, None]).reshape(N, G, 5 * K)
    gram = (np.swapaxes(m, 1, 2) @ mw).reshape(N, K, 5, K)
    g_c2, g_aq, g_qc, g_q2, g_q = (gram[:, :, k, :] for k in range(5))
    sums = np.swapaxes(m, 1, 2) @ np.stack([a / c, 1.0 / c, a / (c * c), q,
                                            np.ones_like(c)], axis=2)  # (N, K, 5)
    s_ac, s_c, s_ac2, s_q, s_1 = (sums[:, :, k] for k in range(5))
    w, u = t.w, t.u
    uu = u[:, :, None] * u[:, None, :]
    ph = phi[:, None, None]
    eye = np.eye(K, dtype=bool)[None]
    out = np.zeros((N, 3 * K + 1, 3 * K + 1))
    ll = 2.0 * ph**2 * (uu * g_c2 - uu * g_aq + np.where(eye, (w * s_ac)[:, :, None], 0.0))
    lp = 2.0 * ph * (np.where(eye, (w * u * s_c)[:, :, None], 0.0)
                     - u[:, :, None] * (u * u)[:, None, :] * g_qc)
    pp = (np.where(eye, (w * w * s_1 - 2.0 * w * u * u * s_q)[:, :, None], 0.0)
          + uu * uu * g_q2)
    out[:, :K, :K] = ll
    out[:, :K, K : 2 * K] = lp
    out[:, K : 2 * K, :K] = np.swapaxes(lp, 1, 2)
    out[:, K : 2 * K, K : 2 * K] = pp
    out[:, :K, 2 * K] = out[:, 2 * K, :K] = 2.0 * phi[:, None] * u * s_ac2
    out[:, K : 2 * K, 2 * K] = out[:, 2 * K, K : 2 * K] = u * u * np.diagonal(g_c2, 0, 1, 2)
    out[:, 2 * K, 2 * K] = np.sum((a / c) ** 2, axis=1)
    out[:, 2 * K + 1 :, 2 * K + 1 :] = 2.0 * (np.where(eye, (w * s_1)[:, :, None], 0.0)
                                               - uu * g_q)
    return out / n_cases[:, None, None]


def scores(theta: np.ndarray, x: np.ndarray, m: np.ndarray, method: str) -> np.ndarray:
    """Factor scores (N, G) from each group's observed indicators only.

    Regression: phi l_O' Sigma_g^-1 (x_O - nu_O) = phi b / c. Bartlett:
    (l_O' Theta_O^-1 l_O)^-1 l_O' Theta_O^-1 (x_O - nu_O) = b / a. NaN for a group that
    observes nothing.
    """
    lam, psi, phi, nu = split(theta)
    with np.errstate(**_QUIET):
        u = lam / psi
        e = (x - nu[:, None, :]) * m
        a = np.sum(m * (u * lam)[:, None, :], axis=2)
        b = np.sum(e * u[:, None, :], axis=2)
        if method == "regression":
            out = phi[:, None] * b / (1.0 + phi[:, None] * a)
        elif method == "bartlett":
            out = b / a
        else:
            raise ValueError(f"method: expected 'regression' or 'bartlett', got {method!r}")
    out[~np.any(m > 0, axis=2)] = np.nan
    return out
