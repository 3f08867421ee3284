"""Croon & van Veldhoven (2007) adjusted group means, then OLS (SPEC section 3.1).

The adjusted group mean is the best linear predictor of the latent group mean xi_g
given the observed group mean xbar_g *and* the group covariates Z_g, with every
moment replaced by its ANOVA estimate. Regressing y on [1, Z, xtilde] removes the
attenuation of the xi coefficient and the leak of xi's effect into Z's coefficients.
"""

from __future__ import annotations

import numpy as np

from ..batch import Batch
from ..dataset import Dataset
from ..models.linalg import is_pd, solve_batch
from ..reliability import anova
from ..results import BatchScores, Scores
from ..status import Reason, add_flags, flag, no_flags
from .base import TwoStepEstimator

__all__ = ["Croon", "croon_scores", "croon_scores_batch"]

def croon_scores(data: Dataset) -> Scores:
    """CV adjusted group means of ``data`` (SPEC section 3.1, matrix form).

    Parameters
    ----------
    data : Dataset
        Any number p of x, any number q >= 0 of Z, any group sizes (N > G >= 2).

    Returns
    -------
    Scores
        ``values`` (G, p) adjusted means; all NaN with ``admissible=False`` and flag
        ``S_xixi_nonpositive`` or ``R_nonpositive`` when S_xixi or R is not positive
        definite.
        ``extras``: ``S_xixi`` (p, p), ``R`` (p, p), ``MSE`` (p, p), ``MSA`` (p, p),
        ``n0``, ``mu_x`` (p,), ``W`` (the weights P_g: (G,) for one x, else (G, p, p);
        NaN when inadmissible).
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

    extras = {
        "S_xixi": s_xixi, "R": r, "MSE": mse, "MSA": a.msa, "n0": a.n0, "mu_x": mu_x,
    }
    bad = None
    if not is_pd(s_xixi):
        bad = flag(Reason.S_XIXI_NONPOSITIVE)
    elif not is_pd(r):
        bad = flag(Reason.R_NONPOSITIVE)
    if bad:
        w_nan = np.full((G,) if p == 1 else (G, p, p), np.nan)
        return Scores(
            values=np.full((G, p), np.nan), admissible=False, flags=(bad,),
            extras={**extras, "W": w_nan},
        )

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
    return Scores(values=values, extras={**extras, "W": w})


def croon_scores_batch(batch: Batch) -> BatchScores:
    """CV adjusted group means of every replication of a one-x batch (vectorised).

    The same computation as :func:`croon_scores` (one x, any q, any group sizes) with
    padded members masked out.

    Returns
    -------
    BatchScores
        ``values`` (R, G); NaN with ``admissible=False`` and flag ``S_xixi_nonpositive``
        or ``R_nonpositive`` exactly as the reference; ``fallback`` marks the
        replications the reference path would reject with an exception (N <= G, a
        singular V_ZZ), whose entries are placeholders.
    """
    R, G = batch.y.shape
    q = batch.z.shape[2]
    n = batch.sizes.astype(float)
    N = n.sum(axis=1)
    x, mask, xbar = batch.x, batch.mask, batch.xbar
    fallback = (N <= G) | (G < 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        mu = np.where(mask, x, 0.0).sum(axis=(1, 2)) / N
        within = np.where(mask, x - xbar[:, :, None], 0.0)
        mse = np.einsum("rgi,rgi->r", within, within) / (N - G)
        dev = xbar - mu[:, None]
        msa = np.einsum("rg,rg,rg->r", n, dev, dev) / (G - 1)
        n0 = (N - np.sum(n**2, axis=1) / N) / (G - 1)
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
        flags = no_flags(R)
        bad_s = ~(np.isfinite(s_xixi) & (s_xixi > 0))
        bad_r = ~bad_s & ~(np.isfinite(r_var) & (r_var > 0))
        add_flags(flags, bad_s, flag(Reason.S_XIXI_NONPOSITIVE))
        add_flags(flags, bad_r, flag(Reason.R_NONPOSITIVE))
        ok = ~bad_s & ~bad_r
        w = r_var[:, None] / (r_var[:, None] + mse[:, None] / n)
        values = np.where(ok[:, None], xbar * w + pred * (1 - w), np.nan)
    return BatchScores(values=values, converged=np.ones(R, bool), admissible=ok,
                       flags=flags, fallback=fallback)


class Croon(TwoStepEstimator):
    """Croon & van Veldhoven adjusted group means as the score, then OLS.

    First step exactly as SPEC section 3.1 (ANOVA moments from
    :func:`micromacro_sim.reliability.anova`; covariances of [Z, xbar] with
    denominator G - 1; per-group weights P_g = (R + MSE/n_g)^-1 R). Works for any
    number of x, any number of Z (including none: the adjustment is then the plain
    shrinkage BLUP mu_x + W_g (xbar_g - mu_x)) and any group sizes.

    Second step: OLS of y on [1, Z, xtilde] with classical and HC0-HC3 standard
    errors. CV's own "corrected" standard error is the HC2 sandwich
    (``result.se("HC2")``). All SEs treat the adjusted means as known (first-step
    uncertainty is ignored).

    An inadmissible first step (S_xixi or R = S_xixi - V_xZ V_ZZ^-1 V_Zx not
    positive definite) is never divided through: the result has no estimates,
    ``admissible=False`` and flag ``S_xixi_nonpositive`` or ``R_nonpositive``.

    Reference: Croon & van Veldhoven (2007), Psychological Methods 12(1), 45-57. The
    R package MicroMacroMultilevel does not implement this algorithm correctly and is
    not a reference.
    """

    name = "croon"
    description = "Croon & van Veldhoven adjusted group means, OLS (CV's SE: HC2)"
    max_x = None
    batch_designs = ("balanced", "unbalanced")

    def scores(self, data: Dataset) -> Scores:
        return croon_scores(data)

    def scores_batch(self, batch: Batch) -> BatchScores:
        return croon_scores_batch(batch)
