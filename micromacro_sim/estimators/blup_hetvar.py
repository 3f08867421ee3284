"""Random intercept with a residual variance per member position, then OLS.

The seed study fitted glmmTMB's ``x ~ (1 | group) + diag(0 + item | group)`` with
``item`` the member position within the group (a factor). With one observation per
(group, item) the item effect and the residual are confounded: the model is

    x_gj = mu + u_g + e_gj,   u_g ~ N(0, tau2),   e_gj ~ N(0, s2_j),

where ``s2_j`` (item variance plus residual variance; only the sum is identified) is the
variance of position ``j``. It is a one-factor model with unit loadings, fitted here by
ML (glmmTMB's default) with Fisher scoring on ``(log tau2, log s2_j)`` and the GLS mean
profiled out, using the Sherman-Morrison forms per group (``a_g = sum_j 1/s2_j``,
``b_g = sum_j (x_gj - mu)/s2_j``, ``c_g = 1 + tau2 a_g``, sums over the positions group g
has). The score is the conditional mode of the intercept,

    u_g = tau2 b_g / c_g,

the deviation from mu, as glmmTMB's ``ranef()`` reports it. Groups of any size are
allowed (positions 0..n_g-1).

Fast engine (:meth:`BlupHetVar.scores_batch`): :func:`hetvar_ml_batch` runs the same
Fisher scoring on all replications at once (same start, step cap, step halving, stopping,
boundary and convergence rules), each replication stopping on its own.

Reference: R ``glmmTMB::glmmTMB(x ~ (1 | group) + diag(0 + item | group))``,
``ranef(fit)$cond$group[, "(Intercept)"]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..batch import Batch
from ..dataset import Dataset
from ..results import BatchScores, Scores
from ..status import Reason, add_flags, flag, no_flags
from .base import NotApplicable, TwoStepEstimator

__all__ = ["BlupHetVar", "HetVarBatch", "HetVarFit", "hetvar_ml", "hetvar_ml_batch"]

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
#: Reason of a replication the model cannot be fitted to.
NOT_APPLICABLE = "needs at least 3 groups and some groups with 2+ members"


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


class _Wide:
    """The first x as a G x J matrix with a mask of the positions each group has."""

    def __init__(self, data: Dataset, j: int = 0) -> None:
        G, J = data.n_groups, int(data.sizes.max())
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
    wide = _Wide(data, j)
    x = data.x[:, j]
    G, N = data.n_groups, data.n_persons
    xbar = data.xbar[:, j]
    n = data.sizes.astype(float)
    mse = float(np.sum((x - np.repeat(xbar, data.sizes)) ** 2) / max(N - G, 1))
    mu0 = float(x.mean())
    msa = float(n @ (xbar - mu0) ** 2 / (G - 1))
    n0 = (N - float(np.sum(n**2)) / N) / (G - 1)
    J = wide.X.shape[1]
    d = np.full(J, mse if mse > 0 else float(np.var(x)) or 1.0)
    tau2 = max((msa - mse) / n0, 0.05 * d[0])
    mu = wide.gls_mu(tau2, d)
    ll = wide.loglik(mu, tau2, d)
    free = np.ones(J + 1, dtype=bool)  # tau2 leaves the free set when it reaches 0
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007
        if free[0] and tau2 < BOUNDARY_TOL * (tau2 + float(np.mean(d))):
            # The optimum is on the boundary: continue with tau2 = 0 exactly.
            free[0] = False
            tau2 = 0.0
            mu = wide.gls_mu(tau2, d)
            ll = wide.loglik(mu, tau2, d)
        grad, info, _ = wide.score_info(mu, tau2, d)
        g, inf = grad[free], info[np.ix_(free, free)]
        try:
            step = np.linalg.solve(inf, g)
        except np.linalg.LinAlgError:
            step = np.linalg.lstsq(inf, g, rcond=None)[0]
        big = float(np.max(np.abs(step)))
        if big > 5.0:  # cap the step, keeping its (ascent) direction
            step *= 5.0 / big
        log_theta = np.log(np.concatenate([[max(tau2, 1e-300)], d]))
        scale = 1.0
        improved = False
        for _ in range(40):
            cand = log_theta.copy()
            cand[free] += scale * step
            t2 = float(np.exp(cand[0])) if free[0] else 0.0
            dd = np.exp(cand[1:])
            mu_c = wide.gls_mu(t2, dd)
            ll_c = wide.loglik(mu_c, t2, dd)
            small = scale * min(big, 5.0) <= SMALL_STEP
            if np.isfinite(ll_c) and (ll_c >= ll or small and ll_c >= ll - LL_NOISE * abs(ll)):
                improved = True
                break
            scale *= 0.5
        if not improved:
            break
        tau2, d, mu, ll = t2, dd, mu_c, ll_c
        if scale * big < tol:
            break
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


# ---------------------------------------------------------------------- batch (fast engine)
@dataclass(frozen=True)
class HetVarBatch:
    """:func:`hetvar_ml` results of many replications (leading axis R).

    ``s2`` is (R, J) with J the largest group size of the batch; positions a replication
    does not have are NaN.
    """

    mu: np.ndarray
    tau2: np.ndarray
    s2: np.ndarray
    modes: np.ndarray
    loglik: np.ndarray
    iterations: np.ndarray
    grad_max: np.ndarray
    converged: np.ndarray
    boundary: np.ndarray


class _WideBatch:
    """:class:`_Wide` of many replications, in sufficient statistics per group.

    x is centred at each replication's grand mean (the model is location equivariant) and
    held as (R, G, J) with zeros where a group lacks a position. Group g has positions
    0..n_g-1, so with ``v_j = 1 / s2_j``: ``a_g = sum_{j < n_g} v_j`` (a prefix sum),
    ``s1 = X v`` and ``s2 = X^2 v`` give ``b = s1 - mu a`` and ``sum_j w R^2 = s2 - 2 mu s1
    + mu^2 a``; sums over groups having position j are sums over groups with ``n_g > j``
    (suffix sums over sizes). Positions a replication does not have keep ``s2_j = 1`` and
    are not parameters.
    """

    def __init__(self, X: np.ndarray, X2: np.ndarray, n: np.ndarray) -> None:
        self.X, self.X2, self.n = X, X2, n
        R, G, J = X.shape
        self.N = n.sum(axis=1).astype(float)
        self._bins = (np.arange(R)[:, None] * (J + 1) + n).ravel()
        self.nj = self.upper(np.ones((R, G)))  # groups having each position, (R, J)
        self.present = self.nj > 0
        self.n_present = self.present.sum(axis=1)
        self.colx2 = X2.sum(axis=1)

    def take(self, i: np.ndarray) -> _WideBatch:
        """The replications ``i``."""
        return _WideBatch(self.X[i], self.X2[i], self.n[i])

    def upper(self, vals: np.ndarray) -> np.ndarray:
        """``sum_{g: n_g > j} vals_g`` for every position j, shape (R, J)."""
        R, _, J = self.X.shape
        per_size = np.bincount(self._bins, weights=vals.ravel(), minlength=R * (J + 1))
        return np.cumsum(per_size.reshape(R, J + 1)[:, ::-1], axis=1)[:, ::-1][:, 1:]

    def prefix(self, v: np.ndarray) -> np.ndarray:
        """``sum_{j < n_g} v_j`` for every group, shape (R, G)."""
        cv = np.concatenate([np.zeros((v.shape[0], 1)), np.cumsum(v, axis=1)], axis=1)
        return np.take_along_axis(cv, self.n, axis=1)

    def mean_d(self, d: np.ndarray) -> np.ndarray:
        """Mean of the variances of the positions each replication has."""
        return np.where(self.present, d, 0.0).sum(axis=1) / self.n_present

    def mu_loglik(self, tau2: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """GLS intercepts and the log-likelihoods there."""
        v = 1.0 / d
        a = self.prefix(v)
        s1 = np.matmul(self.X, v[:, :, None])[:, :, 0]
        s2 = np.matmul(self.X2, v[:, :, None])[:, :, 0]
        c = 1.0 + tau2[:, None] * a
        mu = (s1 / c).sum(axis=1) / (a / c).sum(axis=1)
        m = mu[:, None]
        b = s1 - m * a
        quad = (s2 - 2.0 * m * s1 + m * m * a).sum(axis=1) - (tau2[:, None] * b * b / c).sum(1)
        logdet = (self.nj * np.log(d)).sum(axis=1) + np.log(c).sum(axis=1)
        return mu, -0.5 * (self.N * np.log(2 * np.pi) + logdet + quad)

    def _ab(self, mu: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        v = 1.0 / d
        a = self.prefix(v)
        return v, a, np.matmul(self.X, v[:, :, None])[:, :, 0] - mu[:, None] * a

    def kkt(self, mu: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Derivative of the log-likelihood in tau2 at tau2 = 0, times the mean s2."""
        _, a, b = self._ab(mu, d)
        return 0.5 * (b * b - a).sum(axis=1) * self.mean_d(d)

    def score_info(self, mu: np.ndarray, tau2: np.ndarray, d: np.ndarray):
        """Gradients (R, J+1), expected informations (R, J+1, J+1) and modes (R, G)."""
        v, a, b = self._ab(mu, d)
        c = 1.0 + tau2[:, None] * a
        t = tau2[:, None] / c
        m = t * b
        g_tau = 0.5 * ((b / c) ** 2 - a / c).sum(axis=1)
        h = mu[:, None] + m  # fitted value of each group
        mt = self.upper(t)  # sum over groups having position j of t
        sq = self.colx2 - 2.0 * np.matmul(h[:, None, :], self.X)[:, 0, :] + self.upper(h * h)
        v2 = v * v
        g_d = 0.5 * (v2 * (sq + mt) - self.nj * v)
        k, J = d.shape
        info = np.empty((k, J + 1, J + 1))
        info[:, 0, 0] = 0.5 * ((a / c) ** 2).sum(axis=1)
        info[:, 0, 1:] = info[:, 1:, 0] = 0.5 * v2 * self.upper(1.0 / c**2)
        pos = np.arange(J)
        block = self.upper(t * t)[:, np.maximum.outer(pos, pos)]  # groups having i and j
        block *= v2[:, :, None] * v2[:, None, :]
        block[:, pos, pos] += v2 * self.nj - 2.0 * v2 * v * mt
        info[:, 1:, 1:] = 0.5 * block
        theta = np.concatenate([tau2[:, None], d], axis=1)
        grad = np.concatenate([g_tau[:, None], g_d], axis=1) * theta
        return grad, info * theta[:, :, None] * theta[:, None, :], m


def _solve_steps(info: np.ndarray, grad: np.ndarray, free: np.ndarray) -> np.ndarray:
    """Fisher steps on the free parameters (fixed ones get identity rows: step 0)."""
    both = free[:, :, None] & free[:, None, :]
    eye = np.broadcast_to(np.eye(info.shape[1], dtype=bool), info.shape)
    A = np.where(both, info, eye.astype(float))
    g = np.where(free, grad, 0.0)
    try:
        return np.linalg.solve(A, g[:, :, None])[:, :, 0]
    except np.linalg.LinAlgError:  # rare: solve one by one as the reference does
        step = np.zeros_like(g)
        for r in range(g.shape[0]):
            f = free[r]
            inf, gr = info[r][np.ix_(f, f)], grad[r][f]
            try:
                step[r, f] = np.linalg.solve(inf, gr)
            except np.linalg.LinAlgError:
                step[r, f] = np.linalg.lstsq(inf, gr, rcond=None)[0]
        return step


def hetvar_ml_batch(
    batch: Batch, *, reps: np.ndarray | None = None, max_iter: int = 500, tol: float = 1e-12
) -> HetVarBatch:
    """:func:`hetvar_ml` for the replications ``reps`` of a batch, all at once.

    Fisher scoring vectorized over replications with the reference's start, step cap
    (5 in the log parameters), step halving (up to 40 times, until the likelihood does not
    fall, with the same rounding allowance for tiny steps), stopping rule (no acceptable
    step, or a step below ``tol``), switch to ``tau2 = 0`` near the boundary, and
    gradient/KKT convergence check; a replication leaves the iteration when its own rule
    stops it.
    """
    reps = np.arange(batch.n_reps) if reps is None else np.asarray(reps)
    M = batch.mask[reps]
    sizes = batch.sizes[reps]
    n = sizes.astype(float)
    N = n.sum(axis=1)
    R, G = n.shape
    mu0 = batch.x[reps].sum(axis=(1, 2)) / N
    X = np.where(M, batch.x[reps] - mu0[:, None, None], 0.0)
    full = _WideBatch(X, X * X, sizes)
    xbar = batch.xbar[reps] - mu0[:, None]
    resid = np.where(M, X - xbar[:, :, None], 0.0)
    mse = np.einsum("rgi,rgi->r", resid, resid) / np.maximum(N - G, 1)
    msa = np.einsum("rg,rg,rg->r", n, xbar, xbar) / (G - 1)
    n0 = (N - (n**2).sum(axis=1) / N) / (G - 1)
    var = full.colx2.sum(axis=1) / N
    d_start = np.where(mse > 0, mse, np.where(var != 0, var, 1.0))
    d = np.where(full.present, d_start[:, None], 1.0)
    tau2 = np.maximum((msa - mse) / n0, 0.05 * d_start)
    mu, ll = full.mu_loglik(tau2, d)
    free0 = np.ones(R, dtype=bool)
    iterations = np.zeros(R, dtype=int)
    active = np.arange(R)
    wide = full
    for it in range(1, max_iter + 1):
        if active.size == 0:
            break
        A = active
        iterations[A] = it
        hit = free0[A] & (tau2[A] < BOUNDARY_TOL * (tau2[A] + wide.mean_d(d[A])))
        if hit.any():  # the optimum is on the boundary: continue with tau2 = 0 exactly
            free0[A[hit]] = False
            tau2[A[hit]] = 0.0
            mu_h, ll_h = wide.take(np.flatnonzero(hit)).mu_loglik(tau2[A[hit]], d[A[hit]])
            mu[A[hit]], ll[A[hit]] = mu_h, ll_h
        grad, info, _ = wide.score_info(mu[A], tau2[A], d[A])
        free = np.concatenate([free0[A][:, None], wide.present], axis=1)
        step = np.where(free, _solve_steps(info, grad, free), 0.0)
        big = np.max(np.abs(step), axis=1)
        capped = np.minimum(big, 5.0)
        step *= (capped / np.where(big > 0, big, 1.0))[:, None]
        log_theta = np.log(np.concatenate([np.maximum(tau2[A], 1e-300)[:, None], d[A]], axis=1))
        ll_a = ll[A]
        scale = np.ones(A.size)
        improved = np.zeros(A.size, dtype=bool)
        new_t2, new_d, new_mu, new_ll = tau2[A].copy(), d[A].copy(), mu[A].copy(), ll_a.copy()
        pending = np.arange(A.size)
        sub = wide
        for _ in range(40):
            cand = log_theta[pending] + scale[pending, None] * step[pending]
            t2 = np.where(free0[A[pending]], np.exp(cand[:, 0]), 0.0)
            dd = np.exp(cand[:, 1:])
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                mu_c, ll_c = sub.mu_loglik(t2, dd)
            ll_p = ll_a[pending]
            small = scale[pending] * capped[pending] <= SMALL_STEP
            ok = np.isfinite(ll_c) & (
                (ll_c >= ll_p) | small & (ll_c >= ll_p - LL_NOISE * np.abs(ll_p))
            )
            acc = pending[ok]
            improved[acc] = True
            new_t2[acc], new_d[acc], new_mu[acc], new_ll[acc] = t2[ok], dd[ok], mu_c[ok], ll_c[ok]
            if ok.all():
                break
            pending = pending[~ok]
            sub = sub.take(np.flatnonzero(~ok))
            scale[pending] *= 0.5
        up = A[improved]
        tau2[up], d[up] = new_t2[improved], new_d[improved]
        mu[up], ll[up] = new_mu[improved], new_ll[improved]
        keep = improved & ~(scale * big < tol)
        active = A[keep]
        if not keep.all():
            wide = wide.take(np.flatnonzero(keep))
    grad, _, modes = full.score_info(mu, tau2, d)
    free = np.concatenate([free0[:, None], full.present], axis=1)
    grad_max = np.max(np.where(free, np.abs(grad), -np.inf), axis=1)
    at0 = np.flatnonzero(~free0)
    if at0.size:
        # Karush-Kuhn-Tucker at tau2 = 0: the likelihood must not rise into tau2 > 0.
        grad_max[at0] = np.maximum(grad_max[at0], full.take(at0).kkt(mu[at0], d[at0]))
    total = tau2 + full.mean_d(d)
    small_var = BOUNDARY_TOL * total
    boundary = (tau2 < small_var) | np.any(full.present & (d < small_var[:, None]), axis=1)
    return HetVarBatch(
        mu=mu + mu0, tau2=tau2, s2=np.where(full.present, d, np.nan), modes=modes, loglik=ll,
        iterations=iterations, grad_max=grad_max, converged=grad_max <= GRAD_TOL,
        boundary=boundary,
    )


class BlupHetVar(TwoStepEstimator):
    """Conditional modes of a random intercept with per-position residual variances.

    Reference: R ``glmmTMB(x ~ (1 | group) + diag(0 + item | group))`` (ML), ``ranef()``;
    the second step as ``lm(y ~ z + score)`` with ``sandwich::vcovHC`` SEs.
    """

    name = "blup_hetvar"
    description = "OLS on random-intercept modes with a residual variance per member position"
    batch_designs = ("balanced", "unbalanced")

    def check_applicable(self, data: Dataset) -> None:
        super().check_applicable(data)
        if data.n_groups < 3 or int(data.sizes.max()) < 2:
            raise NotApplicable(Reason.TOO_FEW_MEMBERS, NOT_APPLICABLE)

    def scores(self, data: Dataset) -> Scores:
        fit = hetvar_ml(data)
        flags = (flag(Reason.BOUNDARY),) if fit.boundary else ()
        if not fit.converged:
            flags += (flag(Reason.NOT_CONVERGED),)
        return Scores(
            values=fit.modes,
            converged=fit.converged,
            admissible=not fit.boundary,
            flags=flags,
            extras={
                "tau2": fit.tau2,
                "s2": fit.s2,
                "mu": fit.mu,
                "loglik": fit.loglik,
                "iterations": fit.iterations,
                "grad_max": fit.grad_max,
            },
        )

    def scores_batch(self, batch: Batch) -> BatchScores:
        """Scores of every replication at once (fast engine, :func:`hetvar_ml_batch`)."""
        values = np.full(batch.y.shape, np.nan)
        ok = (batch.sizes.max(axis=1) >= 2) & (batch.n_groups >= 3)
        converged = np.zeros(ok.size, dtype=bool)
        admissible = np.zeros(ok.size, dtype=bool)
        flags = no_flags(ok.size)
        add_flags(flags, ~ok, flag(Reason.TOO_FEW_MEMBERS, NOT_APPLICABLE))
        reps = np.flatnonzero(ok)
        if reps.size:
            fit = hetvar_ml_batch(batch, reps=reps)
            values[reps] = fit.modes
            converged[reps] = fit.converged
            admissible[reps] = ~fit.boundary
            rows = np.zeros(ok.size, dtype=bool)
            rows[reps[fit.boundary]] = True
            add_flags(flags, rows, flag(Reason.BOUNDARY))
            rows[:] = False
            rows[reps[~fit.converged]] = True
            add_flags(flags, rows, flag(Reason.NOT_CONVERGED))
        return BatchScores(values=values, converged=converged, admissible=admissible,
                           flags=flags)
