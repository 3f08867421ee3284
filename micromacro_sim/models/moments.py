"""Moment estimators of the equal-loading, equal-residual one-factor model (balanced data).

The ML moments behind ``sam`` and ``zcond_score`` (and the closed-form SEM): the
residual variance is the within variance of member-position-centred x over G(n - 1),
the factor variance ``Var_ML(xbar) - v/n``; and the Z-conditional regression factor
scores built from them. Reference and batch versions side by side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from micromacro_sim.generate.batch import Batch
from micromacro_sim.generate.dataset import Dataset
from micromacro_sim.models.linalg import solve_batch

__all__ = ["ZConditional", "ZConditionalBatch", "ml_moments", "ml_moments_batch",
           "zcond_scores", "zcond_scores_batch"]


def ml_moments(data: Dataset) -> dict[str, np.ndarray | float]:
    """Unbounded ML of the equal-loading, equal-residual one-factor model (balanced data).

    Returns
    -------
    dict
        ``n`` members per group, ``v`` ML residual variance (the within variance of
        member-position-centred x over G(n-1)), ``psi`` ML factor variance
        ``Var_ML(xbar) - v/n``, ``mu_x`` grand mean, ``xbar`` (G,), ``a`` = 1'S1/n,
        ``var_items`` ML variances of the n member positions.
    """
    X = data.wide(0)
    G, n = X.shape
    if n < 2:
        raise ValueError("the measurement model needs at least 2 members per group")
    xc = X - X.mean(axis=0)
    xbar = X.mean(axis=1)
    tot = n * np.sum((xbar - xbar.mean()) ** 2) / G  # 1'S1/n with S the ML covariance
    v = (np.sum(xc**2) / G - tot) / (n - 1)
    return {"n": n, "v": float(v), "psi": float((tot - v) / n), "mu_x": float(xbar.mean()),
            "xbar": xbar, "a": float(tot), "var_items": np.sum(xc**2, axis=0) / G}


def ml_moments_batch(batch: Batch) -> dict[str, np.ndarray | int]:
    """:func:`ml_moments` of every replication of a balanced batch (arrays over R)."""
    X = batch.x  # (R, G, n)
    R, G, n = X.shape
    xc = X - X.mean(axis=1, keepdims=True)
    xbar = X.mean(axis=2)
    tot = n * np.sum((xbar - xbar.mean(axis=1, keepdims=True)) ** 2, axis=1) / G
    var_items = np.sum(xc**2, axis=1) / G  # (R, n)
    v = (var_items.sum(axis=1) - tot) / (n - 1)
    return {"n": n, "v": v, "psi": (tot - v) / n, "mu_x": xbar.mean(axis=1), "xbar": xbar,
            "a": tot, "var_items": var_items}


@dataclass(frozen=True)
class ZConditional:
    """Z-conditional factor scores of one dataset.

    Attributes
    ----------
    values : ndarray (G,)
        ``m_g + W (xbar_g - m_g)`` with ``m_g = mu_x + Gamma'(Z_g - mean Z)``; NaN when
        ``negative``.
    negative : bool
        psi_r <= 0 or v <= 0 (a negative variance; no scores).
    v, psi_r, psi, w : float
        ML residual variance, residual factor variance Var_ML(xbar | Z) - v/n, ML
        factor variance, and the weight psi_r / (psi_r + v/n) (NaN when ``negative``).
    gamma : ndarray (q,)
        OLS slope of xbar on Z.
    """

    values: np.ndarray
    negative: bool
    v: float
    psi_r: float
    psi: float
    w: float
    gamma: np.ndarray


def zcond_scores(data: Dataset) -> ZConditional:
    """Regression factor scores of the measurement model with ``lv ~ Z`` (balanced, one x).

    Closed-form ML: v from :func:`ml_moments`, Gamma the OLS slope of xbar on Z (least
    squares, minimum norm when Z'Z is singular), psi_r = Var_ML(xbar | Z) - v/n.
    """
    mm = ml_moments(data)
    n, v, xbar, mu = mm["n"], mm["v"], mm["xbar"], mm["mu_x"]
    G, q = data.n_groups, data.n_z
    if q:
        zc = data.z - data.z.mean(axis=0)
        gamma = np.linalg.lstsq(zc, xbar - xbar.mean(), rcond=None)[0]
    else:
        zc, gamma = np.zeros((G, 0)), np.zeros(0)
    m = mu + zc @ gamma
    resid = xbar - m
    psi_r = float(np.sum(resid**2) / G - v / n)
    common = dict(v=v, psi_r=psi_r, psi=mm["psi"], gamma=gamma)
    if not psi_r > 0 or not v > 0:
        return ZConditional(values=np.full(G, np.nan), negative=True, w=np.nan, **common)
    w = psi_r / (psi_r + v / n)
    return ZConditional(values=m + w * resid, negative=False, w=w, **common)


@dataclass(frozen=True)
class ZConditionalBatch:
    """Z-conditional factor scores of a batch: ``values`` (R, G), ``negative`` (R,)
    as :class:`ZConditional`, and ``fallback`` (R,) marking the replications left to
    the reference (a singular Z'Z, fewer than 2 members; placeholders)."""

    values: np.ndarray
    negative: np.ndarray
    fallback: np.ndarray


def zcond_scores_batch(batch: Batch) -> ZConditionalBatch:
    """:func:`zcond_scores` of every replication of a balanced one-x batch.

    Gamma from the normal equations; a replication with a singular Z'Z (where the
    reference's least squares takes the minimum-norm solution) is left to the reference.
    """
    R, G = batch.y.shape
    q = batch.z.shape[2]
    if batch.x.shape[2] < 2:  # the reference raises for every replication
        return ZConditionalBatch(np.full((R, G), np.nan), np.zeros(R, bool), np.ones(R, bool))
    mm = ml_moments_batch(batch)
    n, v, xbar, mu = mm["n"], mm["v"], mm["xbar"], mm["mu_x"]
    fallback = np.zeros(R, dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        if q:
            zc = batch.z - batch.z.mean(axis=1, keepdims=True)
            xc = xbar - xbar.mean(axis=1, keepdims=True)
            gamma, fallback = solve_batch(np.einsum("rgi,rgj->rij", zc, zc),
                                          np.einsum("rgi,rg->ri", zc, xc))
            m = mu[:, None] + np.einsum("rgi,ri->rg", zc, gamma)
        else:
            m = np.broadcast_to(mu[:, None], (R, G))
        resid = xbar - m
        psi_r = np.sum(resid**2, axis=1) / G - v / n
        ok = (psi_r > 0) & (v > 0)
        w = psi_r / (psi_r + v / n)
        values = np.where(ok[:, None], m + w[:, None] * resid, np.nan)
    return ZConditionalBatch(values=values, negative=~ok, fallback=fallback)
