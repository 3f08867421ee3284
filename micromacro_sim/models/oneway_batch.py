"""One-way random-intercept model for many replications at once: the batch partner of
:mod:`.oneway`.

Balanced batches use the closed forms of :func:`~.oneway.oneway_closed_form`; unbalanced
ones the optimum of :func:`~.oneway.oneway_profile`: the deviance on the same grid of
``gamma`` (from per-size sufficient statistics), the same boundary rule, and a batched
safeguarded Newton iteration on the derivative inside the bracketing cell (replications
without a bracket, or whose iteration does not settle, go through
:func:`~.oneway.oneway_profile` one by one). No MixedLM check.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from micromacro_sim.generate.batch import Batch
from micromacro_sim.generate.padding import width_groups
from micromacro_sim.models.oneway import PROFILE_GRID, oneway_profile

__all__ = ["NEWTON_MAX_ITER", "OneWayBatch", "oneway_batch"]

#: Newton iterations of the batched root search before a replication is handed to
#: :func:`~.oneway.oneway_profile` (Newton converges in well under 10 from inside the cell).
NEWTON_MAX_ITER = 60


@dataclass(frozen=True)
class OneWayBatch:
    """Estimates of the one-way model for many replications (arrays of shape (R,)).

    Attributes
    ----------
    mu, tau2, sigma2 : ndarray (R,)
    boundary : ndarray of bool (R,)
        ``tau2`` at 0.
    fallback : ndarray of bool (R,)
        Solved one by one by :func:`~.oneway.oneway_profile` (no bracket of the
        derivative's root, or the batched Newton iteration did not settle).
    modes : ndarray (R, G)
        Conditional modes of the random intercepts (deviations from mu).
    """

    mu: np.ndarray
    tau2: np.ndarray
    sigma2: np.ndarray
    boundary: np.ndarray
    fallback: np.ndarray
    modes: np.ndarray


def _batch_stats(batch: Batch, reps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group sizes (float), group means and SSE of the replications ``reps`` (each from
    its own, unpadded width: see :func:`width_groups`)."""
    sizes = batch.sizes[reps]
    xbar = batch.xbar[reps]  # padding-free sums over exactly each group's members
    sse = np.empty(reps.size)
    for J, rows in width_groups(sizes):
        x, mask = batch.x[reps[rows], :, :J], batch.mask[reps[rows], :, :J]
        resid = (x - xbar[rows][:, :, None]) * mask
        sse[rows] = np.einsum("rgi,rgi->r", resid, resid)
    return sizes.astype(float), xbar, sse


def _batch_gls(
    gamma: np.ndarray, n: np.ndarray, xbar: np.ndarray, sse: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """w, sum of w, GLS mean, deviations from it and Q at ``gamma`` (R,)."""
    w = n / (1.0 + n * gamma[:, None])
    sw = w.sum(axis=1)
    mu = np.einsum("rg,rg->r", w, xbar) / sw
    e = xbar - mu[:, None]
    q = sse + np.einsum("rg,rg,rg->r", w, e, e)
    return w, sw, mu, e, q


def _batch_dneg2ll(
    gamma: np.ndarray, n: np.ndarray, xbar: np.ndarray, sse: np.ndarray, reml: bool,
    *, second: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """First (and second) derivative of the profiled deviance in ``gamma``, per replication.

    With ``w_g = n_g / (1 + n_g gamma)`` (so ``w' = -w^2``), ``e = xbar - mu`` and the GLS
    mean profiled out: ``Q' = -sum w^2 e^2``, ``Q'' = 2 sum w^3 e^2 - 2 (sum w^2 e)^2 /
    sum w``, and ``d/dgamma sum log(1 + n gamma) = sum w``.
    """
    w, sw, _, e, q = _batch_gls(gamma, n, xbar, sse)
    c = n.sum(axis=1) - (1.0 if reml else 0.0)
    w2 = w * w
    dq = -np.einsum("rg,rg,rg->r", w2, e, e)
    dsw = -w2.sum(axis=1)
    d1 = c * dq / q + sw
    if reml:
        d1 = d1 + dsw / sw
    if not second:
        return d1, None
    w3 = w2 * w
    w2e = np.einsum("rg,rg->r", w2, e)
    d2q = 2.0 * np.einsum("rg,rg,rg->r", w3, e, e) - 2.0 * w2e**2 / sw
    d2 = c * (d2q / q - (dq / q) ** 2) + dsw
    if reml:
        d2 = d2 + 2.0 * w3.sum(axis=1) / sw - (dsw / sw) ** 2
    return d1, d2


def _grid_deviance(
    n: np.ndarray, xbar: np.ndarray, sse: np.ndarray, reml: bool
) -> np.ndarray:
    """Profiled deviance of every replication on :data:`~.oneway.PROFILE_GRID`, (R, T).

    Groups of equal size share ``w``, so the sums over groups are sums over the distinct
    sizes of per-size counts and sums of (centred) group means. The sums over sizes run in
    ascending size, one size at a time: sizes a replication lacks add exact zeros, so its
    deviance does not depend on the sizes its batch companions have.
    """
    R, T = n.shape[0], PROFILE_GRID.size
    sizes, inv = np.unique(n, return_inverse=True)
    K = sizes.size
    idx = (np.arange(R)[:, None] * K + inv.reshape(n.shape)).ravel()
    xc = (xbar - xbar.mean(axis=1, keepdims=True)).ravel()
    count = np.bincount(idx, minlength=R * K).reshape(R, K)
    s1 = np.bincount(idx, weights=xc, minlength=R * K).reshape(R, K)
    s2 = np.bincount(idx, weights=xc * xc, minlength=R * K).reshape(R, K)
    wk = sizes[:, None] / (1.0 + sizes[:, None] * PROFILE_GRID[None, :])  # (K, T)
    lk = np.log1p(sizes[:, None] * PROFILE_GRID[None, :])
    count = count.astype(float)
    sw, s1w, s2w, logdet = (np.zeros((R, T)) for _ in range(4))
    for k in range(K):
        sw += count[:, k : k + 1] * wk[k]
        s1w += s1[:, k : k + 1] * wk[k]
        s2w += s2[:, k : k + 1] * wk[k]
        logdet += count[:, k : k + 1] * lk[k]
    q = sse[:, None] + s2w - s1w**2 / sw
    N = n.sum(axis=1)[:, None]
    if reml:
        return (N - 1) * (np.log(2 * np.pi * q / (N - 1)) + 1) + logdet + np.log(sw)
    return N * (np.log(2 * np.pi * q / N) + 1) + logdet


def _closed_form(
    n: np.ndarray, xbar: np.ndarray, sse: np.ndarray, reml: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Balanced closed forms: mu, tau2, sigma2 and the boundary verdicts."""
    G = n.shape[1]
    N = n.sum(axis=1)
    size = n[:, 0]
    mu = xbar.mean(axis=1)
    ssa = size * np.einsum("rg,rg->r", xbar - mu[:, None], xbar - mu[:, None])
    mse = sse / (N - G)
    tau2 = (ssa / (G - 1 if reml else G) - mse) / size
    boundary = ~(tau2 > 0)
    sigma2 = np.where(boundary, (sse + ssa) / (N - 1 if reml else N), mse)
    tau2 = np.where(boundary, 0.0, tau2)
    return mu, tau2, sigma2, boundary


def _bracket(
    n: np.ndarray, xbar: np.ndarray, sse: np.ndarray, reml: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Boundary verdicts, the grid cell around the deviance's minimum, and which cells
    bracket the derivative's root (the rules of :func:`~.oneway.oneway_profile`)."""
    R = n.shape[0]
    grid = PROFILE_GRID
    with np.errstate(divide="ignore", invalid="ignore"):
        i = np.argmin(_grid_deviance(n, xbar, sse, reml), axis=1)
        d0, _ = _batch_dneg2ll(np.zeros(R), n, xbar, sse, reml)
        boundary = (i <= 1) & (d0 >= 0)
        i = np.maximum(i, 1)
        lo, hi = grid[i - 1], grid[np.minimum(i + 1, grid.size - 1)]
        dlo, _ = _batch_dneg2ll(lo, n, xbar, sse, reml)
        dhi, _ = _batch_dneg2ll(hi, n, xbar, sse, reml)
    return boundary, lo, hi, ~boundary & (dlo < 0) & (dhi > 0)


def _newton(
    n: np.ndarray, xbar: np.ndarray, sse: np.ndarray, reml: bool,
    lo: np.ndarray, hi: np.ndarray, todo: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Safeguarded Newton on the deviance's derivative inside [lo, hi] for the
    replications ``todo``; each replication stops on its own rule.

    Returns the roots (R,) and which replications settled.
    """
    gamma = np.zeros(n.shape[0])
    settled = np.zeros(n.shape[0], dtype=bool)
    lo, hi = lo[todo], hi[todo]
    g = np.where(lo > 0, np.sqrt(lo * hi), 0.5 * hi)
    for _ in range(NEWTON_MAX_ITER):
        if todo.size == 0:
            break
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            d1, d2 = _batch_dneg2ll(g, n[todo], xbar[todo], sse[todo], reml, second=True)
            lo = np.where(d1 < 0, g, lo)
            hi = np.where(d1 > 0, g, hi)
            newton = g - d1 / d2
        inside = (d2 > 0) & (newton > lo) & (newton < hi)
        new = np.where(inside, newton, 0.5 * (lo + hi))
        # A Newton step of 1e-12 relative leaves an error of order its square: done.
        done = (d1 == 0) | (np.abs(new - g) <= 1e-12 * g) | (hi - lo <= 4e-16 * hi)
        new = np.where(d1 == 0, g, new)
        gamma[todo[done]] = new[done]
        settled[todo[done]] = True
        keep = ~done
        todo, g, lo, hi = todo[keep], new[keep], lo[keep], hi[keep]
    return gamma, settled


def _profile(
    batch: Batch, reps: np.ndarray, n: np.ndarray, xbar: np.ndarray, sse: np.ndarray,
    reml: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Profile-likelihood optimum: mu, tau2, sigma2, boundary and fallback verdicts."""
    boundary, lo, hi, bracketed = _bracket(n, xbar, sse, reml)
    gamma, settled = _newton(n, xbar, sse, reml, lo, hi, np.flatnonzero(bracketed))
    fallback = ~boundary & ~settled
    _, _, mu, _, q = _batch_gls(gamma, n, xbar, sse)
    sigma2 = q / (n.sum(axis=1) - 1 if reml else n.sum(axis=1))
    tau2 = gamma * sigma2
    for r in np.flatnonzero(fallback):  # rare: no bracket (flat deviance) or no settling
        fit = oneway_profile(batch.datasets[reps[r]], reml=reml)
        mu[r], tau2[r], sigma2[r], boundary[r] = fit.mu, fit.tau2, fit.sigma2, fit.boundary
    return mu, tau2, sigma2, boundary, fallback


def oneway_batch(batch: Batch, *, reml: bool = True, reps: np.ndarray | None = None) -> OneWayBatch:
    """ML/REML estimates of the one-way model for the replications ``reps`` of a batch.

    Balanced replications (every group of the same size; decided per replication, as the
    reference decides per dataset) use the closed forms of
    :func:`~.oneway.oneway_closed_form`; the others the optimum of
    :func:`~.oneway.oneway_profile` (same grid, same boundary rule, the derivative's root
    in the bracketing cell by safeguarded Newton steps, to rounding error). No MixedLM
    check. The replications must have at least 2 groups and N > G.
    """
    reps = np.arange(batch.n_reps) if reps is None else np.asarray(reps)
    n, xbar, sse = _batch_stats(batch, reps)
    R = n.shape[0]
    mu, tau2, sigma2 = np.empty(R), np.empty(R), np.empty(R)
    boundary, fallback = np.zeros(R, dtype=bool), np.zeros(R, dtype=bool)
    balanced = np.all(n == n[:, :1], axis=1)
    for rows, closed in ((np.flatnonzero(balanced), True), (np.flatnonzero(~balanced), False)):
        if rows.size == 0:
            continue
        if closed:
            mu[rows], tau2[rows], sigma2[rows], boundary[rows] = _closed_form(
                n[rows], xbar[rows], sse[rows], reml)
        else:
            mu[rows], tau2[rows], sigma2[rows], boundary[rows], fallback[rows] = _profile(
                batch, reps[rows], n[rows], xbar[rows], sse[rows], reml)
    lam = tau2[:, None] * n
    with np.errstate(divide="ignore", invalid="ignore"):
        modes = lam / (sigma2[:, None] + lam) * (xbar - mu[:, None])
    return OneWayBatch(mu, tau2, sigma2, boundary, fallback, modes)
