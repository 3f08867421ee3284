"""Random intercept with a residual variance per member position: the per-dataset
reference. Its batch partner is :mod:`.hetvar_batch`; their equivalence is tested in
``tests/test_kernels_mixed.py``.

The model (glmmTMB's ``x ~ (1 | group) + diag(0 + item | group)`` with ``item`` the member
position; with one observation per (group, item) the item effect and the residual are
confounded) is

    x_gj = mu + u_g + e_gj,   u_g ~ N(0, tau2),   e_gj ~ N(0, s2_j),

where ``s2_j`` is the variance of position ``j``. It is a one-factor model with unit
loadings, fitted by ML with Fisher scoring on ``(log tau2, log s2_j)`` and the GLS mean
profiled out, using the Sherman-Morrison forms per group (``a_g = sum_j 1/s2_j``,
``b_g = sum_j (x_gj - mu)/s2_j``, ``c_g = 1 + tau2 a_g``, sums over the positions group g
has). The conditional mode of the intercept is ``u_g = tau2 b_g / c_g``. Groups of any
size are allowed (positions 0..n_g-1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from micromacro_sim.generate.dataset import Dataset

__all__ = ["BOUNDARY_TOL", "GRAD_TOL", "HetVarFit", "WideLayout", "hetvar_ml", "moment_start"]

#: Largest |gradient| of the log-likelihood in the log-variance parameters accepted as an
#: optimum (the gradient is a sum over groups of O(1) terms, so this is very tight).
GRAD_TOL = 1e-6
#: A variance below this fraction of the total variance counts as being on the boundary 0.
BOUNDARY_TOL = 1e-6
#: Near the optimum a Fisher step changes the log-likelihood by less than its rounding
#: error, so a step whose largest log-parameter change is below SMALL_STEP is accepted when
#: the log-likelihood does not fall by more than LL_NOISE (relative). Without this the
#: iteration could stop wherever rounding happened to reject a step, with a gradient just
#: above GRAD_TOL.
SMALL_STEP = 1e-6
LL_NOISE = 1e-12
#: Largest step in the log parameters (the direction is kept) and step halvings per step.
MAX_STEP = 5.0
HALVINGS = 40


@dataclass(frozen=True)
class HetVarFit:
    """ML estimates of the heteroscedastic random-intercept model.

    Attributes
    ----------
    mu, tau2 : float
        Fixed intercept and random-intercept variance.
    s2 : ndarray (J,)
        Residual variance of each member position 0..J-1.
    modes : ndarray (G,)
        Conditional modes of the random intercepts.
    loglik : float
        Maximized log-likelihood.
    iterations : int
        Fisher-scoring iterations used.
    grad_max : float
        Largest |gradient| in the log-variance parameters at the solution.
    converged, boundary : bool
        Convergence (gradient within :data:`GRAD_TOL`) and a variance at 0.
    """

    mu: float
    tau2: float
    s2: np.ndarray
    modes: np.ndarray
    loglik: float
    iterations: int
    grad_max: float
    converged: bool
    boundary: bool


class WideLayout:
    """The first x as a G x J matrix with a mask of the positions each group has."""

    def __init__(self, data: Dataset, j: int = 0) -> None:
        G, J = data.n_groups, data.n_positions
        self.X = np.zeros((G, J))
        self.M = np.zeros((G, J))
        self.X[data.group, data.position] = data.x[:, j]
        self.M[data.group, data.position] = 1.0
        self.N = float(data.n_persons)

    def pieces(self, mu: float, tau2: float, d: np.ndarray):
        """w, residuals, a, b, c for the given parameters."""
        w = self.M / d
        R = (self.X - mu) * self.M
        a = w.sum(axis=1)
        b = (w * R).sum(axis=1)
        c = 1.0 + tau2 * a
        return w, R, a, b, c

    def gls_mu(self, tau2: float, d: np.ndarray) -> float:
        """GLS intercept for given variances: sum_g 1'V^-1 x / sum_g 1'V^-1 1."""
        w = self.M / d
        a = w.sum(axis=1)
        c = 1.0 + tau2 * a
        return float(np.sum((w * self.X).sum(axis=1) / c) / np.sum(a / c))

    def loglik(self, mu: float, tau2: float, d: np.ndarray) -> float:
        """Marginal log-likelihood."""
        w, R, a, b, c = self.pieces(mu, tau2, d)
        logdet = float((self.M * np.log(d)).sum() + np.log(c).sum())
        quad = float((w * R * R).sum() - (tau2 * b * b / c).sum())
        return -0.5 * (self.N * np.log(2 * np.pi) + logdet + quad)

    def score_info(self, mu: float, tau2: float, d: np.ndarray):
        """Gradient and expected information in (log tau2, log d_1..d_J)."""
        w, R, a, b, c = self.pieces(mu, tau2, d)
        m = tau2 * b / c
        v = tau2 / c
        g_tau = 0.5 * float(np.sum((b / c) ** 2 - a / c))
        E = (R - m[:, None]) ** 2 + v[:, None]
        g_d = 0.5 * (self.M * (E / d**2 - 1.0 / d)).sum(axis=0)
        t = tau2 / c
        J = d.size
        info = np.empty((J + 1, J + 1))
        info[0, 0] = 0.5 * float(np.sum((a / c) ** 2))
        info[0, 1:] = info[1:, 0] = 0.5 * ((w / c[:, None]) ** 2).sum(axis=0)
        w2 = w * w
        block = (w2 * (t**2)[:, None]).T @ w2
        block[np.diag_indices(J)] += (w2 - 2.0 * t[:, None] * w2 * w).sum(axis=0)
        info[1:, 1:] = 0.5 * block
        theta = np.concatenate([[tau2], d])
        grad = np.concatenate([[g_tau], g_d]) * theta
        return grad, info * np.outer(theta, theta), m


def moment_start(data: Dataset, wide: WideLayout, j: int) -> tuple[float, np.ndarray]:
    """ANOVA moment start: tau2 (floored at 5% of s2) and a common s2 for every position."""
    x = data.x[:, j]
    G, N = data.n_groups, data.n_persons
    xbar = data.xbar[:, j]
    n = data.sizes.astype(float)
    mse = float(np.sum((x - np.repeat(xbar, data.sizes)) ** 2) / max(N - G, 1))
    mu0 = float(x.mean())
    msa = float(n @ (xbar - mu0) ** 2 / (G - 1))
    n0 = (N - float(np.sum(n**2)) / N) / (G - 1)
    d = np.full(wide.X.shape[1], mse if mse > 0 else float(np.var(x)) or 1.0)
    return max((msa - mse) / n0, 0.05 * d[0]), d


def _fisher_step(wide: WideLayout, mu: float, tau2: float, d: np.ndarray, free: np.ndarray):
    """The capped Fisher-scoring step on the free log parameters and its uncapped size;
    None where the information is not finite (a member variance has reached 0 with tau2
    at 0: a position observed in a single group, whose likelihood is unbounded there)."""
    with np.errstate(over="ignore", invalid="ignore"):
        grad, info, _ = wide.score_info(mu, tau2, d)
    g, inf = grad[free], info[np.ix_(free, free)]
    if not (np.all(np.isfinite(inf)) and np.all(np.isfinite(g))):
        return None
    try:
        step = np.linalg.solve(inf, g)
    except np.linalg.LinAlgError:
        step = np.linalg.lstsq(inf, g, rcond=None)[0]
    big = float(np.max(np.abs(step)))
    if big > MAX_STEP:  # cap the step, keeping its (ascent) direction
        step *= MAX_STEP / big
    return step, big


def _line_search(wide: WideLayout, tau2: float, d: np.ndarray, ll: float, free: np.ndarray,
                 step: np.ndarray, big: float):
    """Halve the step until the likelihood does not fall (rounding allowance for tiny
    steps). Returns (tau2, d, mu, ll, scale) of the accepted point, or None."""
    log_theta = np.log(np.concatenate([[max(tau2, 1e-300)], d]))
    scale = 1.0
    for _ in range(HALVINGS):
        cand = log_theta.copy()
        cand[free] += scale * step
        t2 = float(np.exp(cand[0])) if free[0] else 0.0
        dd = np.exp(cand[1:])
        mu_c = wide.gls_mu(t2, dd)
        ll_c = wide.loglik(mu_c, t2, dd)
        small = scale * min(big, MAX_STEP) <= SMALL_STEP
        if np.isfinite(ll_c) and (ll_c >= ll or small and ll_c >= ll - LL_NOISE * abs(ll)):
            return t2, dd, mu_c, ll_c, scale
        scale *= 0.5
    return None


def hetvar_ml(
    data: Dataset, *, j: int = 0, max_iter: int = 500, tol: float = 1e-12
) -> HetVarFit:
    """ML fit of the heteroscedastic random-intercept model by Fisher scoring.

    Parameters
    ----------
    data : Dataset
    j : int
        Which x variable.
    max_iter : int
        Iteration limit.
    tol : float
        Stop when the largest log-parameter step is below ``tol``.
    """
    wide = WideLayout(data, j)
    tau2, d = moment_start(data, wide, j)
    mu = wide.gls_mu(tau2, d)
    ll = wide.loglik(mu, tau2, d)
    free = np.ones(d.size + 1, dtype=bool)  # tau2 leaves the free set when it reaches 0
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007
        if free[0] and tau2 < BOUNDARY_TOL * (tau2 + float(np.mean(d))):
            # The optimum is on the boundary: continue with tau2 = 0 exactly.
            free[0] = False
            tau2 = 0.0
            mu = wide.gls_mu(tau2, d)
            ll = wide.loglik(mu, tau2, d)
        fisher = _fisher_step(wide, mu, tau2, d, free)
        if fisher is None:  # on the boundary with an unbounded likelihood: stop there
            break
        step, big = fisher
        accepted = _line_search(wide, tau2, d, ll, free, step, big)
        if accepted is None:
            break
        tau2, d, mu, ll, scale = accepted
        if scale * big < tol:
            break
    with np.errstate(over="ignore", invalid="ignore"):
        grad, _, modes = wide.score_info(mu, tau2, d)
    grad_max = float(np.max(np.abs(grad[free])))
    if not free[0]:
        # Karush-Kuhn-Tucker at tau2 = 0: the likelihood must not rise into tau2 > 0.
        _, _, a, b, _ = wide.pieces(mu, 0.0, d)
        kkt = 0.5 * float(np.sum(b**2 - a)) * float(np.mean(d))
        grad_max = max(grad_max, kkt)
    total = tau2 + float(np.mean(d))
    boundary = bool(tau2 < BOUNDARY_TOL * total or np.any(d < BOUNDARY_TOL * total))
    return HetVarFit(
        mu=mu, tau2=tau2, s2=d, modes=modes, loglik=ll, iterations=it,
        grad_max=grad_max, converged=grad_max <= GRAD_TOL, boundary=boundary,
    )
