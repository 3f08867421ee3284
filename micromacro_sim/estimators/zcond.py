"""Z-conditional factor scores: the latent group mean predicted from xbar *and* Z, then OLS."""

from __future__ import annotations

import numpy as np

from ..batch import Batch
from ..dataset import Dataset
from ..models.linalg import solve_batch
from ..models.moments import ml_moments, ml_moments_batch
from ..results import BatchScores, Scores
from ..status import Reason, add_flags, flag, no_flags
from .base import TwoStepEstimator

__all__ = ["ZConditionalScore"]


class ZConditionalScore(TwoStepEstimator):
    """Regression factor scores of a measurement model in which the latent is regressed on Z.

    First step: the SEM measurement model of the CV design (members as indicators,
    loadings fixed to 1, one residual variance v) extended with ``lv ~ Z``, fitted by
    ML (closed form in balanced data: v is the within variance of member-position-
    centred x over G(n - 1); Gamma is the OLS slope of xbar on Z; the residual factor
    variance is psi_r = Var_ML(xbar | Z) - v/n). The score is the regression
    (posterior-mean) factor score given the members' x and Z:

        score_g = m_g + W (xbar_g - m_g),  m_g = mu_x + Gamma'(Z_g - mean Z),
        W = psi_r / (psi_r + v/n).

    Second step: OLS of y on [1, Z, score] with all SE types (first-step uncertainty
    ignored). Scores equal ``lavPredict()`` of ``lavaan::sem('lv =~ 1*x1 + ...;
    x1 ~~ v*x1; ...; lv ~ z')`` up to an additive constant (lavaan fixes the latent
    intercept at 0), so slopes agree exactly and the intercept is on the x scale.

    How it differs from ``croon``: the same predictor (the CV adjustment is the BLUP of
    xi given xbar and Z), but with ML moments (denominator G, position-centred within
    variance) instead of ANOVA moments (denominator G - 1, MSE over N - G, n0), and
    balanced data only. Consequence: in balanced data its xi coefficient equals the ML
    SEM's point estimate exactly (and the local SAM's), while croon's differs by the
    moment definitions. Plain factor scores (``lv`` not regressed on Z) shrink toward
    the grand mean instead of toward Gamma'Z and leave Z's coefficient biased.

    Inadmissible: psi_r <= 0 gives NaN scores with flag ``negative_variance``.

    Fast engine (balanced): the same closed form vectorised over replications; Gamma
    from the normal equations (a replication with a singular Z cross-product, where the
    reference's least squares takes the minimum-norm solution, runs the reference).
    """

    name = "zcond_score"
    description = "Z-conditional regression factor scores (lv ~ Z), OLS"
    needs_balanced = True
    max_x = 1
    batch_designs = ("balanced",)

    def scores(self, data: Dataset) -> Scores:
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
        extras = {"v": v, "psi_r": psi_r, "gamma": gamma, "psi": mm["psi"]}
        if not psi_r > 0 or not v > 0:
            return Scores(values=np.full(G, np.nan), admissible=False,
                          flags=(flag(Reason.NEGATIVE_VARIANCE),),
                          extras={**extras, "W": np.nan})
        w = psi_r / (psi_r + v / n)
        return Scores(values=m + w * resid, extras={**extras, "W": w})

    def scores_batch(self, batch: Batch) -> BatchScores:
        R, G = batch.y.shape
        q = batch.z.shape[2]
        if batch.x.shape[2] < 2:  # the reference raises for every replication
            return BatchScores.ok(np.full((R, G), np.nan), fallback=np.ones(R, bool))
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
        flags = no_flags(R)
        add_flags(flags, ~ok, flag(Reason.NEGATIVE_VARIANCE))
        return BatchScores(values, np.ones(R, bool), ok, flags, fallback=fallback)
