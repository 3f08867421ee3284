"""Croon & van Veldhoven (2007) adjusted group means: one dataset and a batch, side by side.

The adjusted group mean is the best linear predictor of the latent group mean xi_g given
the observed group mean xbar_g *and* the group covariates Z_g, with every moment replaced
by its ANOVA estimate (SPEC section 3.1). :func:`cv_adjustment` is the matrix form for any
number of x and Z and any group sizes; :func:`cv_adjustment_batch` the same computation
for a stack of one-x replications (balanced or padded unbalanced groups).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from micromacro_sim.core.status import Reason
from micromacro_sim.generate.batch import Batch
from micromacro_sim.generate.dataset import Dataset
from micromacro_sim.generate.padding import member_sums
from micromacro_sim.models.linalg import is_pd, solve_batch
from micromacro_sim.models.reliability import anova

__all__ = ["CVAdjustment", "CVAdjustmentBatch", "cv_adjustment", "cv_adjustment_batch"]


@dataclass(frozen=True)
class CVAdjustment:
    """The CV adjustment of one dataset.

    Attributes
    ----------
    values : ndarray (G, p)
        Adjusted means (NaN when ``reason`` is set).
    reason : Reason or None
        ``S_XIXI_NONPOSITIVE`` or ``R_NONPOSITIVE`` when S_xixi or R is not positive
        definite (nothing is divided through), else None.
    s_xixi, r, mse, msa : ndarray (p, p)
    n0 : float
    mu_x : ndarray (p,)
    w : ndarray
        The weights P_g: (G,) for one x, else (G, p, p); NaN when ``reason`` is set.
    """

    values: np.ndarray
    reason: Reason | None
    s_xixi: np.ndarray
    r: np.ndarray
    mse: np.ndarray
    msa: np.ndarray
    n0: float
    mu_x: np.ndarray
    w: np.ndarray


def cv_adjustment(data: Dataset) -> CVAdjustment:
    """CV adjusted group means of ``data`` (SPEC section 3.1, matrix form).

    Parameters
    ----------
    data : Dataset
        Any number p of x, any number q >= 0 of Z, any group sizes (N > G >= 2).

    Returns
    -------
    CVAdjustment

    Raises
    ------
    numpy.linalg.LinAlgError
        A singular V_ZZ (a constant or collinear Z).
    """
    G, p, q = data.n_groups, data.n_x, data.n_z
    a = anova(data)  # steps 1, 3, 4, 5
    xbar, z, n = data.xbar, data.z, data.sizes.astype(float)
    s_xixi, mse, mu_x = a.s_xixi, a.mse, a.mu_x

    # Step 2 and 6: covariance of [Z, xbar] over groups (G - 1) and R = Var(xi | Z).
    if q > 0:
        v = np.atleast_2d(np.cov(np.column_stack([z, xbar]), rowvar=False, ddof=1))
        v_zz, v_zx = v[:q, :q], v[:q, q:]
        b = np.linalg.solve(v_zz, v_zx)  # V_ZZ^-1 V_Zx, (q, p)
        r = s_xixi - v_zx.T @ b
        zc = z - z.mean(axis=0)
    else:
        b = np.zeros((0, p))
        r = s_xixi.copy()
        zc = np.zeros((G, 0))
    r = (r + r.T) / 2
    moments = dict(s_xixi=s_xixi, r=r, mse=mse, msa=a.msa, n0=a.n0, mu_x=mu_x)
    reason = None
    if not is_pd(s_xixi):
        reason = Reason.S_XIXI_NONPOSITIVE
    elif not is_pd(r):
        reason = Reason.R_NONPOSITIVE
    if reason is not None:
        return CVAdjustment(values=np.full((G, p), np.nan), reason=reason,
                            w=np.full((G,) if p == 1 else (G, p, p), np.nan), **moments)

    # Step 7: P_g = (R + MSE/n_g)^-1 R, Q_g = B (I - P_g),
    # xtilde_g' = xbar_g' P_g + mu_x' (I - P_g) + (Z_g - mu_Z)' Q_g.
    eye = np.eye(p)
    pg = np.linalg.solve(r[None, :, :] + mse[None, :, :] / n[:, None, None],
                         np.broadcast_to(r, (G, p, p)))
    i_minus = eye[None, :, :] - pg
    pred = mu_x[None, :] + zc @ b  # mu_x' + (Z_g - mu_Z)' B, (G, p)
    values = (np.einsum("gi,gij->gj", xbar, pg)
              + np.einsum("gi,gij->gj", pred, i_minus))
    w = pg[:, 0, 0].copy() if p == 1 else pg
    return CVAdjustment(values=values, reason=None, w=w, **moments)


@dataclass(frozen=True)
class CVAdjustmentBatch:
    """The CV adjustment of every replication of a one-x batch.

    Attributes
    ----------
    values : ndarray (R, G)
        Adjusted means; NaN where either flag below is set.
    s_nonpositive, r_nonpositive : ndarray of bool (R,)
        S_xixi <= 0 (or not finite); R <= 0 with S_xixi > 0. Exactly the reference's
        verdicts (``Reason.S_XIXI_NONPOSITIVE``, ``Reason.R_NONPOSITIVE``).
    fallback : ndarray of bool (R,)
        Replications the reference path rejects with an exception (N <= G, G < 2, a
        singular V_ZZ); their entries are placeholders.
    """

    values: np.ndarray
    s_nonpositive: np.ndarray
    r_nonpositive: np.ndarray
    fallback: np.ndarray


def _anova_batch(batch: Batch) -> tuple[np.ndarray, ...]:
    """Grand mean, MSE, MSA, n0 of every replication (sums over members padding-free)."""
    G = batch.n_groups
    n = batch.sizes.astype(float)
    N = n.sum(axis=1)
    x, xbar = batch.x, batch.xbar
    if batch.balanced:
        total = x.sum(axis=(1, 2))
        within = x - xbar[:, :, None]
        ss_within = np.einsum("rgi,rgi->r", within, within)
    else:  # never reduce over the padded axis: its width depends on the batch
        total = member_sums(x, batch.sizes).sum(axis=1)
        within = np.where(batch.mask, x - xbar[:, :, None], 0.0)
        ss_within = member_sums(within * within, batch.sizes).sum(axis=1)
    mu = total / N
    mse = ss_within / (N - G)
    dev = xbar - mu[:, None]
    msa = np.einsum("rg,rg,rg->r", n, dev, dev) / (G - 1)
    n0 = (N - np.sum(n**2, axis=1) / N) / (G - 1)
    return mu, mse, msa, n0


def cv_adjustment_batch(batch: Batch) -> CVAdjustmentBatch:
    """:func:`cv_adjustment` of every replication of a one-x batch (vectorised).

    The same computation (one x, any q, any group sizes) with padded members masked out.
    Every replication's numbers are independent of the other replications in the batch
    and of the width its groups are padded to.
    """
    R, G = batch.y.shape
    q = batch.z.shape[2]
    n = batch.sizes.astype(float)
    xbar = batch.xbar
    fallback = (n.sum(axis=1) <= G) | (G < 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        mu, mse, msa, n0 = _anova_batch(batch)
        s_xixi = (msa - mse) / n0
        if q > 0:
            zc = batch.z - batch.z.mean(axis=1, keepdims=True)
            xc = xbar - xbar.mean(axis=1, keepdims=True)
            v_zz = np.einsum("rgi,rgj->rij", zc, zc) / (G - 1)
            v_zx = np.einsum("rgi,rg->ri", zc, xc) / (G - 1)
            b, singular = solve_batch(v_zz, v_zx)
            fallback |= singular
            r_var = s_xixi - np.einsum("ri,ri->r", v_zx, b)
            pred = mu[:, None] + np.einsum("rgi,ri->rg", zc, b)
        else:
            r_var = s_xixi
            pred = np.broadcast_to(mu[:, None], (R, G))
        bad_s = ~(np.isfinite(s_xixi) & (s_xixi > 0))
        bad_r = ~bad_s & ~(np.isfinite(r_var) & (r_var > 0))
        ok = ~bad_s & ~bad_r
        w = r_var[:, None] / (r_var[:, None] + mse[:, None] / n)
        values = np.where(ok[:, None], xbar * w + pred * (1 - w), np.nan)
    return CVAdjustmentBatch(values=values, s_nonpositive=bad_s, r_nonpositive=bad_r,
                             fallback=fallback)
