"""The one-factor FIML likelihood on wide data with missing cells, in O(K) per group.

The mathematics behind :mod:`micromacro_sim.models.cfa_fiml`. Group g observes the
indicators O_g; Sigma_g = phi l l' + Theta restricted to O_g is diagonal plus rank one,
so with w = 1 / psi, u = w l, e = x - nu (0 where not observed) and the group sums
a = sum_O u l, b = sum_O u e, s = sum_O w e^2, c = 1 + phi a, Sherman-Morrison and the
determinant lemma give the group's -2 log-likelihood without the 2 pi constant

    f_g = sum_O log |psi_j| + log |c| + s - phi b^2 / c,

a function h(a, b, s, phi) plus the log terms: the gradient and the exact Hessian follow
by the chain rule through the sums, whose second derivatives only couple the loading,
residual variance and intercept of one indicator. As in lavaan (which returns an infinite
objective otherwise) F = sum_g f_g / N (N the groups that observe anything) is defined
where the full implied covariance is positive definite, which holds exactly when no
residual variance is negative and 1 + phi sum_j l_j^2 / psi_j > 0, or one is, phi > 0 and
that sum is negative (a rank-one update moves the inertia of a diagonal matrix by at most
one; the sign of the determinant decides).

A run's parameters are theta = (lambda (K), psi (K), phi, nu (K)). Sums over indicators
and groups are reductions inside a run's own slice or stacked matrix products (one per
run), so a run's numbers do not depend on the other runs in the stack.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from micromacro_sim.models.cfa_fit import MARKER_COND
from micromacro_sim.models.linalg import cholesky_stack, solve_stack

__all__ = ["Terms", "chart_jacobian", "coords", "derivatives", "evaluate", "from_chart",
           "implied_pd", "information", "marker_singular", "near_face", "newton_step", "point",
           "split", "to_chart", "to_first_marker"]

#: A far chart's points with |gamma| below this are not evaluated (theta is infinite).
GAMMA_MIN = 1e-12

_QUIET = {"invalid": "ignore", "over": "ignore", "divide": "ignore", "under": "ignore"}


def split(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(lambda, psi, phi, nu) of theta (N, 3K + 1)."""
    K = (theta.shape[1] - 1) // 3
    return theta[:, :K], theta[:, K : 2 * K], theta[:, 2 * K], theta[:, 2 * K + 1 :]


@dataclass
class Terms:
    """The sums of N runs: ``f`` (N,) F (NaN where the implied covariance is not positive
    definite or theta not finite); ``w``, ``u`` (N, K); ``e`` (N, G, K); ``a``, ``b``,
    ``c`` (N, G)."""

    f: np.ndarray
    w: np.ndarray
    u: np.ndarray
    e: np.ndarray
    a: np.ndarray
    b: np.ndarray
    c: np.ndarray

    def rows(self, i: np.ndarray) -> Terms:
        """The terms of runs ``i``."""
        return Terms(*(getattr(self, k)[i] for k in ("f", "w", "u", "e", "a", "b", "c")))


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
    """Gradient (N, P) and exact Hessian (N, P, P) of F, P = 3K + 1 in theta's order.

    Per group the derivatives of the sums a and b with respect to (lambda_i, psi_i, nu_i)
    are alpha_i m_gi and beta_i e_gi + gamma_i m_gi with alpha = (2u, -u^2, 0),
    beta = (w, -w u, 0), gamma = (0, 0, -u); so every sum over groups is a weighted sum
    of m, e or e^2, or a weighted Gram of m and e: two stacked products per run.
    """
    lam, psi, phi, nu = split(theta)
    N, G, K = m.shape
    h = _chain(t, phi)
    w, u, e = t.w, t.u, t.e
    # weighted sums over groups: rows h_a, h_b, 1, h_aphi, h_bphi; columns m, e, e^2
    wts = np.stack([h["h_a"], h["h_b"], np.ones_like(h["h_a"]), h["h_aphi"], h["h_bphi"]],
                   axis=1)
    sums = wts @ np.concatenate([m, e, e * e], axis=2)
    (am, _, _), (bm, be, _), (m1, e1, e2), (pam, _, _), (pbm, pbe, _) = (
        (sums[:, i, :K], sums[:, i, K : 2 * K], sums[:, i, 2 * K :]) for i in range(5))
    grad = np.empty((N, 3 * K + 1))
    grad[:, :K] = 2.0 * u * am + w * be
    grad[:, K : 2 * K] = -u * u * am - w * u * be - w * w * e2 + w * m1
    grad[:, 2 * K] = np.sum(h["h_phi"], axis=1)
    grad[:, 2 * K + 1 :] = -u * bm - 2.0 * w * e1
    # the quadratic part sum_g [da db] Hh [da db]': weighted Grams of m and e
    hm = [h[k][:, :, None] * m for k in ("h_aa", "h_ab", "h_bb")]
    he = [h[k][:, :, None] * e for k in ("h_ab", "h_bb")]
    gram = np.swapaxes(np.concatenate([m, e], axis=2), 1, 2) @ np.concatenate(hm + he, axis=2)
    mm_aa, mm_ab, mm_bb, me_ab, me_bb = (gram[:, :K, c * K : (c + 1) * K] for c in range(5))
    ee_bb, em_bb = gram[:, K:, 4 * K :], np.swapaxes(me_bb, 1, 2)
    o = lambda a, b: a[:, :, None] * b[:, None, :]  # noqa: E731
    a2 = np.concatenate([2.0 * u, -u * u], axis=1)  # alpha and beta of (lambda, psi);
    b2 = np.concatenate([w, -w * u], axis=1)  # gamma = -u of nu
    ab = o(a2, b2) * np.tile(me_ab, (1, 2, 2))
    H = np.empty((N, 3 * K + 1, 3 * K + 1))
    L, F, V = slice(0, 2 * K), 2 * K, slice(2 * K + 1, 3 * K + 1)
    H[:, L, L] = (o(a2, a2) * np.tile(mm_aa, (1, 2, 2)) + ab + np.swapaxes(ab, 1, 2)
                  + o(b2, b2) * np.tile(ee_bb, (1, 2, 2)))
    H[:, L, V] = o(a2, -u) * np.tile(mm_ab, (1, 2, 1)) + o(b2, -u) * np.tile(em_bb, (1, 2, 1))
    H[:, V, L] = np.swapaxes(H[:, L, V], 1, 2)
    H[:, V, V] = o(u, u) * mm_bb
    H[:, L, F] = np.concatenate([2.0 * u * pam + w * pbe, -u * u * pam - w * u * pbe], axis=1)
    H[:, V, F] = -u * pbm
    H[:, F, :] = H[:, :, F]
    H[:, F, F] = np.sum(h["h_phiphi"], axis=1)
    # the second derivatives of the sums: one (lambda_j, psi_j, nu_j) block per indicator
    diag = {(0, 0): 2.0 * w * am, (0, 1): -2.0 * w * u * am - w * w * be, (0, 2): -w * bm,
            (1, 1): 2.0 * w * u * u * am + 2.0 * w * w * u * be + 2.0 * w**3 * e2 - w * w * m1,
            (1, 2): w * u * bm + 2.0 * w * w * e1, (2, 2): 2.0 * w * m1}
    i = np.arange(K)
    at = (i, K + i, 2 * K + 1 + i)  # lambda_i, psi_i, nu_i in theta
    for (r0, c0), d in diag.items():
        H[:, at[r0], at[c0]] += d
        if r0 != c0:
            H[:, at[c0], at[r0]] += d
    scale = 1.0 / n_cases
    return grad * scale[:, None], 0.5 * (H + np.swapaxes(H, 1, 2)) * scale[:, None, None]


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


def to_first_marker(theta: np.ndarray) -> np.ndarray:
    """Rescale to the first loading 1 (phi lambda_1^2; NaN where lambda_1 is 0)."""
    K = (theta.shape[1] - 1) // 3
    lam1 = theta[:, :1]
    with np.errstate(**_QUIET):
        return np.concatenate([theta[:, :K] / lam1, theta[:, K : 2 * K],
                               theta[:, 2 * K : 2 * K + 1] * lam1**2, theta[:, 2 * K + 1 :]],
                              axis=1)


def marker_singular(theta: np.ndarray, x: np.ndarray, m: np.ndarray,
                    nc: np.ndarray) -> np.ndarray:
    """Whether the expected information of the covariance parameters, first loading
    fixed, is singular to double precision (or the solution is not a finite point)."""
    K = x.shape[2]
    t = evaluate(np.nan_to_num(theta), x, m, nc)
    out = ~np.all(np.isfinite(theta), axis=1) | ~np.isfinite(t.f)
    idx = np.flatnonzero(~out)
    if len(idx):
        info = information(theta[idx], t.rows(idx), m[idx], nc[idx])
        info = info[:, 1 : 2 * K + 1, 1 : 2 * K + 1]
        with np.errstate(**_QUIET):
            cond = np.linalg.cond(info)
        out[idx] = ~(cond < MARKER_COND)
    return out


# ------------------------------------------------------------------ the far chart
# A run whose residual variance psi_j runs away to +-infinity (a Heywood case at infinity,
# or a negative factor variance concentrated on one indicator) has, with indicator j as
# the marker, phi -> -+infinity while c_k = phi l_k (the covariances with x_j) and
# v = psi_j + phi (the variance of x_j) stay finite: Sigma_-j = Theta_-j + gamma c c' with
# gamma = 1 / phi. In the chart xi = (c, psi with psi_j -> v, gamma, nu) that point is
# gamma = 0, a regular point, and crossing it continues into the other branch. The chart
# has theta's layout (entry j of c is the fixed marker's and unused).


def to_chart(theta: np.ndarray, j: np.ndarray) -> np.ndarray:
    """xi of theta (marker j: lambda_j = 1) in the far chart of indicator j."""
    K = (theta.shape[1] - 1) // 3
    r = np.arange(len(theta))
    phi = theta[:, 2 * K]
    xi = theta.copy()
    xi[:, :K] = theta[:, :K] * phi[:, None]
    xi[r, j] = 1.0
    xi[r, K + j] = theta[r, K + j] + phi
    with np.errstate(**_QUIET):
        xi[:, 2 * K] = 1.0 / phi
    return xi


def near_face(xi: np.ndarray, chart: np.ndarray, tol: float) -> np.ndarray:
    """Runs in a far chart whose |gamma Sigma_jj| is below ``tol`` (about infinity)."""
    K = (xi.shape[1] - 1) // 3
    v = xi[np.arange(len(xi)), K + chart]
    return (chart >= 0) & (np.abs(xi[:, 2 * K] * v) < tol)


def from_chart(xi: np.ndarray, j: np.ndarray) -> np.ndarray:
    """theta (marker j) of a point xi of the far chart of indicator j."""
    K = (xi.shape[1] - 1) // 3
    r = np.arange(len(xi))
    gam = xi[:, 2 * K]
    theta = xi.copy()
    with np.errstate(**_QUIET):
        theta[:, :K] = xi[:, :K] * gam[:, None]
        theta[r, K + j] = xi[r, K + j] - 1.0 / gam
        theta[:, 2 * K] = 1.0 / gam
    theta[r, j] = 1.0
    return theta


def chart_jacobian(xi: np.ndarray, j: np.ndarray, g: np.ndarray, H: np.ndarray,
                   exact: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Gradient and Hessian (or, ``exact=False``, information) of F in the far chart,
    from those in theta: J' g and J' H J (plus the curvature of the map, sum_i g_i
    d2 theta_i, when ``exact``), J = d theta / d xi."""
    N, P = g.shape
    K = (P - 1) // 3
    r, k = np.arange(N), np.arange(K)
    gam, c = xi[:, 2 * K], xi[:, :K]
    J = np.broadcast_to(np.eye(P), (N, P, P)).copy()
    J[:, k, k] = gam[:, None]
    J[:, k, 2 * K] = c
    J[r, j, :] = 0.0
    J[:, 2 * K, 2 * K] = -1.0 / gam**2
    J[r, K + j, 2 * K] = 1.0 / gam**2
    Jt = np.swapaxes(J, 1, 2)
    gx = (Jt @ g[:, :, None])[:, :, 0]
    Hx = Jt @ H @ J
    if exact:
        gl = g[:, :K].copy()
        gl[r, j] = 0.0
        Hx[:, k, 2 * K] += gl
        Hx[:, 2 * K, k] += gl
        Hx[:, 2 * K, 2 * K] += 2.0 / gam**3 * (g[:, 2 * K] - g[r, K + j])
    return gx, 0.5 * (Hx + np.swapaxes(Hx, 1, 2))


# ------------------------------------------------------------------ a Newton step


def _free(a: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The free entries of a stack of vectors (N, P) or matrices (N, P, P)."""
    N, P = keep.shape
    if a.ndim == 2:
        return a[keep].reshape(N, P - 1)
    return a[keep[:, :, None] & keep[:, None, :]].reshape(N, P - 1, P - 1)


def _pd_solve(H: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """H^-1 g where H is positive definite (NaN elsewhere) and the PD mask."""
    _, pd = cholesky_stack(H)
    step = np.full(g.shape, np.nan)
    if pd.any():
        sol, ok = solve_stack(H[pd], g[pd][:, :, None])
        step[pd] = np.where(ok[:, None], sol[:, :, 0], np.nan)
        pd[np.flatnonzero(pd)[~ok]] = False
    return step, pd


def coords(theta: np.ndarray, chart: np.ndarray) -> np.ndarray:
    """The runs' coordinates: theta, or xi in their far chart (``chart`` >= 0)."""
    far = chart >= 0
    if not far.any():
        return theta
    out = theta.copy()
    out[far] = to_chart(theta[far], chart[far])
    return out


def point(xi: np.ndarray, chart: np.ndarray) -> np.ndarray:
    """theta of coordinates ``xi`` (NaN where a far chart's gamma is about 0)."""
    far = chart >= 0
    if not far.any():
        return xi
    out = xi.copy()
    out[far] = from_chart(xi[far], chart[far])
    K = (xi.shape[1] - 1) // 3
    out[far & ~(np.abs(xi[:, 2 * K]) > GAMMA_MIN)] = np.nan
    return out


def newton_step(theta: np.ndarray, keep: np.ndarray, chart: np.ndarray, x: np.ndarray,
                m: np.ndarray, n_cases: np.ndarray) -> tuple[np.ndarray, ...]:
    """The Newton step of N runs in their coordinates (the entries where ``keep``).

    Where the Hessian is not positive definite, the expected-information (scoring) step;
    where that fails too, the gradient. Returns the coordinates xi, the step (to be
    subtracted), the decrement g' step and the Hessian-PD mask.
    """
    t = evaluate(theta, x, m, n_cases)
    g, H = derivatives(theta, t, m, n_cases)
    far = np.flatnonzero(chart >= 0)
    xi = coords(theta, chart)
    g_th = g
    if len(far):
        g, H = g.copy(), H.copy()
        g[far], H[far] = chart_jacobian(xi[far], chart[far], g_th[far], H[far])
    gf = _free(g, keep)
    step, pd = _pd_solve(_free(H, keep), gf)
    sc = np.flatnonzero(~pd)
    if len(sc):
        info = information(theta[sc], t.rows(sc), m[sc], n_cases[sc])
        fs = np.flatnonzero(chart[sc] >= 0)
        if len(fs):
            s = sc[fs]
            info[fs] = chart_jacobian(xi[s], chart[s], g_th[s], info[fs], exact=False)[1]
        step[sc] = _pd_solve(_free(info, keep[sc]), gf[sc])[0]
        stuck = sc[np.isnan(step[sc, 0])]
        step[stuck] = gf[stuck]
    return xi, step, np.sum(gf * step, axis=1), pd
