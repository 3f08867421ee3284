"""Gibbs sampler of the micro-macro latent covariate model (method ``bayes``).

The model, its priors and their reasons are in :mod:`.bayes_model` (and docs/bayes.md):
``b0, b_z, b_xi, gamma0, gamma ~ N(0, 1e6)``, ``sigma2 ~ IG(0.001, 0.001)``, ``s2e`` flat
(``IG(-1, 0)``) and ``tau2 ~ IG(1, t0)`` with ``t0`` the residual mean square of the
observed group means on ``[1, Z]`` (Zitzmann, Helm & Hecht's slightly informative prior
for the group-level variance of the predictor, in conjugate form).

Sampler
-------
One iteration

1. draws from their conjugate full conditionals ``(gamma0, gamma) | xi, tau2``,
   ``tau2 | xi, gamma``, ``(b0, b_z, b_xi) | xi, s2e``, ``s2e | b, xi``, ``sigma2 | xi``;
2. makes 5 random-walk Metropolis moves on ``(tau2, b, s2e)`` with ``xi`` integrated out
   (:func:`~.bayes_model.ridge_log_target`), holding ``b0 + b_xi gamma0`` and
   ``b_z + b_xi gamma`` fixed;
3. draws ``(gamma0, gamma)`` and then ``(b0, b_z)`` from their normal conditionals with
   ``xi`` integrated out (:func:`~.bayes_model.collapsed_gamma`,
   :func:`~.bayes_model.collapsed_coef`);
4. draws ``xi | everything``.

Steps 2-4 update the block ``(tau2, b, s2e, gamma, xi)`` given ``sigma2``: kernels that
keep the marginal posterior of the parameters (``xi`` integrated out), then ``xi`` from
its conditional, so the chain keeps the joint posterior exactly. They are there because
the plain Gibbs steps crawl when ``tau2`` is weakly identified (few groups, low
reliability of the group means): along the ridge where a smaller ``tau2`` goes with a
larger ``b_xi`` and a smaller ``s2e``, and in ``gamma`` and ``(b0, b_z)``, which the
noisy ``xi`` tie down too tightly. In the move's coordinates ``(log tau2, b_xi tau2,
log(b_xi^2 tau2 + s2e))`` (covariances of the group means and outcomes) the posterior is
close to normal. The moves' proposal covariance is ``2.38^2 / 3`` times the chain's own
covariance of those coordinates over the warm-up windows ``[0, W/4)``, ``[W/4, W/2)`` and
``[W/2, W)``, used from ``W/4``, ``W/2`` and ``W`` on (frozen after warm-up; a window
shorter than 20 iterations leaves the proposal as it was; no moves before the first).

Chains start from the group means jittered by their sampling error, and from data-based
``tau2`` and ``s2e`` times ``exp(N(0, 1))``.

Reproducibility contract: replication ``r`` draws every random number from its own
``Generator(PCG64(seeds[r]))``: the chains' starting jitter ``(chains, G + 2)``, then per
block of ``block`` iterations the standard normals ``(block, chains, G + 4q + 20)`` and
the standard gamma variates ``(block, chains, 8)`` (full blocks, also past the last
iteration, so a longer run extends a shorter one). Every other operation is elementwise,
a sum along a contiguous last axis, or a small Cholesky factor written out elementwise,
so a replication's draws are bitwise the same alone or in any batch, at any position, and
for any ``max_batch``. They depend on ``chains``, ``warmup`` (the adaptation) and
``block``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from micromacro_sim.models.bayes_model import (
    GibbsData,
    GibbsPriors,
    collapsed_coef,
    collapsed_gamma,
    draw_inverse_gamma,
    draw_regression,
    draw_xi,
    param_names,
    ridge_log_target,
)
from micromacro_sim.models.linalg import cholesky_small
from micromacro_sim.models.mcmc_diagnostics import posterior_summary

__all__ = [
    "DEFAULT_BLOCK",
    "DEFAULT_CHAINS",
    "DEFAULT_DRAWS",
    "DEFAULT_THIN",
    "DEFAULT_WARMUP",
    "GibbsData",
    "GibbsPriors",
    "gibbs",
    "gibbs_summary",
    "param_names",
    "posterior_summary",
]

#: Default sampler settings (docs/bayes.md: bulk ESS >= 400 and R-hat <= 1.01 on b0, b_z
#: and b_xi in nearly all replications at G = 100, n = 10, ICC .1).
DEFAULT_CHAINS = 2
DEFAULT_WARMUP = 500
DEFAULT_DRAWS = 1000
DEFAULT_THIN = 1
#: Iterations whose random numbers are drawn in one call per replication.
DEFAULT_BLOCK = 50
#: Bytes of random numbers held at once per sub-batch of replications.
_BLOCK_BYTES = 32 * 2**20
#: Shortest warm-up window the Metropolis proposal is estimated from.
_MIN_WINDOW = 20
#: Random-walk scale factor 2.38^2 / d for the d = 3 coordinates of the move.
_RW_SCALE = 2.38**2 / 3
#: Metropolis moves per iteration.
_MOVES = 5


@dataclass(frozen=True, eq=False)
class _Setup:
    """One sub-batch's data, shaped to broadcast over chains (axis 1), and its constants."""

    n: np.ndarray  # (Rb, 1, G)
    xsum: np.ndarray
    xbar: np.ndarray
    y: np.ndarray
    z: np.ndarray  # (Rb, 1, q, G)
    ssw: np.ndarray  # (Rb, 1)
    wtw: np.ndarray  # (Rb, 1, k1, k1): [1, Z]'[1, Z]
    wty: np.ndarray  # (Rb, 1, k1)
    tau2_scale: np.ndarray  # (Rb, 1)
    shapes: np.ndarray  # (Rb, 3 + moves): shapes of tau2, s2e, sigma2; 1s (exponentials)

    @classmethod
    def build(cls, data: GibbsData, priors: GibbsPriors) -> _Setup:
        G = data.n_groups
        w = np.concatenate([np.ones((data.n_reps, 1, G)), data.z.transpose(0, 2, 1)], axis=1)
        wtw = (w[:, :, None, :] * w[:, None, :, :]).sum(axis=-1)
        wty = (w * data.y[:, None, :]).sum(axis=-1)
        shapes = np.column_stack([
            np.full(data.n_reps, priors.tau2_shape + 0.5 * G),
            np.full(data.n_reps, priors.s2e_shape + 0.5 * G),
            priors.sigma2_shape + 0.5 * data.n.sum(axis=1),
            *[np.ones(data.n_reps)] * _MOVES,
        ])
        if np.any(shapes <= 0):
            raise ValueError("improper posterior: a variance's posterior shape is <= 0")
        return cls(
            n=data.n[:, None], xsum=data.xsum[:, None], xbar=(data.xsum / data.n)[:, None],
            y=data.y[:, None], z=np.ascontiguousarray(data.z.transpose(0, 2, 1)[:, None]),
            ssw=data.ssw[:, None], wtw=wtw[:, None], wty=wty[:, None],
            tau2_scale=priors.tau2_scale(data)[:, None], shapes=shapes,
        )

    def zpart(self, coef: np.ndarray) -> np.ndarray:
        """``coef[0] + sum_j coef[1 + j] Z_j`` per group, (Rb, C, G)."""
        q = self.z.shape[2]
        if q == 0:
            return np.broadcast_to(coef[..., 0:1], (*coef.shape[:-1], self.xsum.shape[-1]))
        out = coef[..., 1, None] * self.z[:, :, 0, :] + coef[..., 0:1]
        for j in range(1, q):
            out += coef[..., 1 + j, None] * self.z[:, :, j, :]
        return out


@dataclass
class _State:
    """A sub-batch's chains: ``xi`` (Rb, C, G), variances (Rb, C, 1), coefficients."""

    xi: np.ndarray
    tau2: np.ndarray
    s2e: np.ndarray
    sigma2: np.ndarray | None = None
    gamma: np.ndarray | None = None
    b: np.ndarray | None = None

    def coords(self) -> np.ndarray:
        """The Metropolis move's coordinates (Rb, C, 3)."""
        b_xi = self.b[..., -1:]
        cov = b_xi * self.tau2
        return np.concatenate([np.log(self.tau2), cov, np.log(cov * b_xi + self.s2e)], -1)


def _gibbs_steps(s: _Setup, p: GibbsPriors, st: _State, u: np.ndarray,
                 g: np.ndarray) -> np.ndarray:
    """The conjugate draws of gamma, tau2, b, s2e and sigma2 given xi; returns m = W gamma."""
    xi = st.xi
    G, k1 = xi.shape[-1], s.wtw.shape[-1]
    wxi = np.concatenate([xi.sum(axis=-1)[..., None],
                          (s.z * xi[:, :, None, :]).sum(axis=-1)], axis=-1)
    wtw = np.broadcast_to(s.wtw, (*xi.shape[:2], k1, k1))
    st.gamma = draw_regression(wtw, wxi, st.tau2[..., 0], p.gamma_var, u[..., G:G + k1])
    m = s.zpart(st.gamma)
    dev = xi - m
    st.tau2 = draw_inverse_gamma(s.tau2_scale, (dev * dev).sum(axis=-1), g[..., 0])[..., None]
    xtx = np.empty((*xi.shape[:2], k1 + 1, k1 + 1))
    xtx[..., :k1, :k1] = wtw
    xtx[..., :k1, k1] = xtx[..., k1, :k1] = wxi
    xtx[..., k1, k1] = (xi * xi).sum(axis=-1)
    xty = np.concatenate([np.broadcast_to(s.wty, wxi.shape),
                          (xi * s.y).sum(axis=-1)[..., None]], axis=-1)
    st.b = draw_regression(xtx, xty, st.s2e[..., 0], p.coef_var, u[..., G + k1:G + 2 * k1 + 1])
    res = s.y - s.zpart(st.b) - st.b[..., k1:] * xi
    st.s2e = draw_inverse_gamma(p.s2e_scale, (res * res).sum(axis=-1), g[..., 1])[..., None]
    dx = s.xbar - xi
    ss = s.ssw + (s.n * dx * dx).sum(axis=-1)
    st.sigma2 = draw_inverse_gamma(p.sigma2_scale, ss, g[..., 2])[..., None]
    return m


def _ridge_moves(s: _Setup, p: GibbsPriors, st: _State, m: np.ndarray, chol: np.ndarray,
                 u: np.ndarray, e: np.ndarray) -> None:
    """Metropolis moves on (tau2, b, s2e) with xi integrated out (in place), one per
    column of ``e`` (standard exponentials); ``u`` holds 3 standard normals per move."""
    k1 = s.wtw.shape[-1]
    b_xi = st.b[..., k1:]
    pi = st.b[..., :k1] + b_xi * st.gamma
    d1 = s.xbar - m
    d2 = s.y - s.zpart(pi)
    e2 = st.sigma2 / s.n
    c2 = d2 * d2
    sq = (d1 * d1, -2.0 * d1 * d2, c2, e2 * c2)
    cur = ridge_log_target(st.tau2, st.b, st.s2e, sq, e2, p, s.tau2_scale)
    for k in range(e.shape[-1]):
        z = u[..., 3 * k:3 * k + 3]
        step = [sum(chol[..., i, j] * z[..., j] for j in range(i + 1)) for i in range(3)]
        b_xi = st.b[..., k1:]
        cov = b_xi * st.tau2
        tau2_n = st.tau2 * np.exp(step[0][..., None])
        cov_n = cov + step[1][..., None]
        v_n = (cov * b_xi + st.s2e) * np.exp(step[2][..., None])
        b_xi_n = cov_n / tau2_n
        b_n = np.concatenate([pi - b_xi_n * st.gamma, b_xi_n], axis=-1)
        s2e_n = v_n - cov_n * b_xi_n
        new = ridge_log_target(tau2_n, b_n, s2e_n, sq, e2, p, s.tau2_scale)
        ok = new - cur > -e[..., k]
        cur = np.where(ok, new, cur)
        ok = ok[..., None]
        st.tau2 = np.where(ok, tau2_n, st.tau2)
        st.s2e = np.where(ok, s2e_n, st.s2e)
        st.b = np.where(ok, b_n, st.b)


def _weighted_draw(s: _Setup, w: np.ndarray, h: np.ndarray, prior_var: float,
                   u: np.ndarray) -> np.ndarray:
    """Coefficients on ``W = [1, Z]`` with precision ``sum_g w_g W_g W_g' + I/prior_var``
    and mean ``precision^{-1} sum_g W_g h_g`` (w, h: (Rb, C, G))."""
    k1 = s.wtw.shape[-1]
    ws = [np.ones_like(w)] + [np.broadcast_to(s.z[:, :, j, :], w.shape) for j in range(k1 - 1)]
    xtx = np.empty((*w.shape[:2], k1, k1))
    for i in range(k1):
        wi = w * ws[i]
        for j in range(i + 1):
            xtx[..., i, j] = xtx[..., j, i] = (wi * ws[j]).sum(axis=-1)
    xtv = np.stack([(h * wj).sum(axis=-1) for wj in ws], axis=-1)
    return draw_regression(xtx, xtv, np.ones(w.shape[:2]), prior_var, u)


def _collapsed_moves(s: _Setup, p: GibbsPriors, st: _State, u: np.ndarray) -> np.ndarray:
    """Draw (gamma0, gamma), then (b0, b_z), from their conditionals with xi integrated
    out (:func:`~.bayes_model.collapsed_gamma`, :func:`~.bayes_model.collapsed_coef`);
    returns ``W gamma``."""
    k1 = s.wtw.shape[-1]
    b_xi = st.b[..., k1:]
    e2 = st.sigma2 / s.n
    r = s.y - s.zpart(st.b[..., :k1])
    w, h = collapsed_gamma(s.xbar, r, e2, st.tau2, b_xi, st.s2e)
    st.gamma = _weighted_draw(s, w, h, p.gamma_var, u[..., :k1])
    m = s.zpart(st.gamma)
    w, t = collapsed_coef(s.xbar, s.y, m, e2, st.tau2, b_xi, st.s2e)
    st.b = np.concatenate([_weighted_draw(s, w, w * t, p.coef_var, u[..., k1:]), b_xi], -1)
    return m


def _proposal(hist: np.ndarray, old: np.ndarray | None) -> np.ndarray | None:
    """Cholesky factor of the scaled covariance of a warm-up window (Rb, C, 3, T)."""
    if hist.shape[-1] < _MIN_WINDOW:
        return old
    c = hist - hist.mean(axis=-1, keepdims=True)
    cov = (c[..., :, None, :] * c[..., None, :, :]).sum(axis=-1) / (hist.shape[-1] - 1)
    cov = _RW_SCALE * cov + 1e-12 * np.eye(3)
    L = cholesky_small(cov)
    bad = ~np.isfinite(L).all(axis=(-2, -1))[..., None, None]
    fallback = np.zeros_like(L) if old is None else old
    return np.where(bad, fallback, L)


def _start(data: GibbsData, rngs: list[np.random.Generator], chains: int) -> _State:
    """Starting xi, tau2 and s2e from each replication's stream."""
    G = data.n_groups
    jitter = np.stack([rng.standard_normal((chains, G + 2)) for rng in rngs])
    se = np.sqrt(data.sigma2_guess()[:, None] / data.n)[:, None]
    xi = (data.xsum / data.n)[:, None] + se * jitter[..., :G]
    tau2 = data.tau2_guess()[:, None, None] * np.exp(jitter[..., G:G + 1])
    s2e = data.s2e_guess()[:, None, None] * np.exp(jitter[..., G + 1:])
    return _State(xi, tau2, s2e)


def _run(data: GibbsData, priors: GibbsPriors, rngs: list[np.random.Generator], chains: int,
         warmup: int, draws: int, thin: int, block: int) -> np.ndarray:
    """Draws (Rb, chains, draws, P) of one sub-batch."""
    s = _Setup.build(data, priors)
    Rb, G, q = data.n_reps, data.n_groups, data.q
    width = G + 4 * q + 5 + 3 * _MOVES
    out = np.empty((Rb, chains, draws, 2 * q + 6))
    st = _start(data, rngs, chains)
    marks = (warmup // 4, warmup // 2, warmup)
    hist = np.empty((Rb, chains, 3, warmup))
    chol = None
    u = np.empty((block, Rb, chains, width))
    g = np.empty((block, Rb, chains, 3 + _MOVES))
    for t in range(warmup + draws * thin):
        i = t % block
        if i == 0:
            for r, rng in enumerate(rngs):
                u[:, r] = rng.standard_normal((block, chains, width))
                g[:, r] = rng.standard_gamma(s.shapes[r], size=(block, chains, 3 + _MOVES))
        if t in marks:
            k = marks.index(t)
            chol = _proposal(hist[..., (marks[k - 1] if k else 0):t], chol)
        m = _gibbs_steps(s, priors, st, u[i], g[i])
        if chol is not None:
            _ridge_moves(s, priors, st, m, chol, u[i, ..., width - 3 * _MOVES:], g[i, ..., 3:])
        m = _collapsed_moves(s, priors, st, u[i, ..., G + 2 * q + 3:G + 4 * q + 5])
        r_y = s.y - s.zpart(st.b[..., :q + 1])
        st.xi = draw_xi(s.n, s.xsum, m, r_y, st.tau2, st.sigma2, st.b[..., q + 1:], st.s2e,
                        u[i, ..., :G])
        if t < warmup:
            hist[..., t] = st.coords()
        kept = t - warmup + 1
        if kept > 0 and kept % thin == 0:
            d = out[:, :, kept // thin - 1]
            d[..., :q + 2] = st.b
            d[..., q + 2] = st.tau2[..., 0]
            d[..., q + 3] = st.sigma2[..., 0]
            d[..., q + 4] = st.s2e[..., 0]
            d[..., q + 5:] = st.gamma
    return out


def gibbs(data: GibbsData, priors: GibbsPriors | None = None, *,
          chains: int = DEFAULT_CHAINS, warmup: int = DEFAULT_WARMUP,
          draws: int = DEFAULT_DRAWS, seeds: Sequence[np.random.SeedSequence | int],
          block: int = DEFAULT_BLOCK, thin: int = DEFAULT_THIN,
          max_batch: int | None = None) -> np.ndarray:
    """Posterior draws of the latent covariate model for R replications.

    Parameters
    ----------
    data : GibbsData
    priors : GibbsPriors, optional
        Default: ``GibbsPriors()``.
    chains, warmup, draws : int
        Chains per replication, discarded (adaptation) iterations, kept draws per chain.
    seeds : sequence of SeedSequence (or int), length R
        Replication ``r`` draws from ``Generator(PCG64(seeds[r]))`` only.
    block : int
        Iterations whose random numbers are drawn per call (part of the stream's layout).
    thin : int
        Keep every ``thin``-th iteration after warm-up (``warmup + draws * thin``
        iterations in all).
    max_batch : int, optional
        Replications sampled together (memory bound); default: as many as keep the
        random-number block under 32 MiB. Never changes the draws.

    Returns
    -------
    ndarray (R, chains, draws, 2 q + 6)
        Draws of :func:`param_names` ``(q)``, in that order.
    """
    priors = GibbsPriors() if priors is None else priors
    seeds = list(seeds)
    if len(seeds) != data.n_reps:
        raise ValueError("gibbs needs one seed per replication")
    if chains < 1 or warmup < 0 or draws < 1 or thin < 1 or block < 1:
        raise ValueError("chains, draws, thin and block must be >= 1 and warmup >= 0")
    width = data.n_groups + 4 * data.q + 28
    if max_batch is None:
        max_batch = max(1, _BLOCK_BYTES // (8 * block * chains * width))
    out = np.empty((data.n_reps, chains, draws, 2 * data.q + 6))
    for lo in range(0, data.n_reps, max_batch):
        hi = min(lo + max_batch, data.n_reps)
        rngs = [np.random.Generator(np.random.PCG64(sd)) for sd in seeds[lo:hi]]
        out[lo:hi] = _run(data.take(slice(lo, hi)), priors, rngs, chains, warmup, draws,
                          thin, block)
    return out


def gibbs_summary(data: GibbsData, priors: GibbsPriors | None = None, *,
                  seeds: Sequence[np.random.SeedSequence | int], point: str = "median",
                  level: float = 0.95, max_batch: int = 256,
                  **settings: int) -> dict[str, np.ndarray]:
    """:func:`posterior_summary` of :func:`gibbs`, each entry (R, P), sampling
    ``max_batch`` replications at a time so that only their draws are held in memory.
    ``settings``: ``chains, warmup, draws, block, thin`` as in :func:`gibbs`."""
    seeds = list(seeds)
    parts = []
    for lo in range(0, data.n_reps, max_batch):
        hi = min(lo + max_batch, data.n_reps)
        d = gibbs(data.take(slice(lo, hi)), priors, seeds=seeds[lo:hi], **settings)
        parts.append(posterior_summary(d, point=point, level=level))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
