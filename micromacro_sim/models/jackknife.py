"""Delete-one-group jackknife: the variance formula and the OLS deletion downdate.

The jackknife standard error of a two-step method (Zitzmann, Weirich & Hecht 2023) refits
the whole estimator, both steps, without each group in turn. With G leave-one-out
estimates ``theta_(g)`` and their mean ``theta_(.)``,

    Var_JK = (G - 1) / G * sum_g (theta_(g) - theta_(.)) (theta_(g) - theta_(.))'

(Efron & Stein; Quenouille-Tukey). When a method's group scores do not change when another
group is deleted (group means, the true scores), the first step needs no refit and the
second step's leave-one-out estimates are a rank-one downdate of the full OLS,

    theta_(g) = theta - (X'X)^-1 x_g e_g / (1 - h_g),

with residual ``e_g`` and hat value ``h_g``: :func:`ols_deletions` computes all G of them
for a whole batch at once. The intercept is on the original location of the columns, as
:func:`~micromacro_sim.models.ols.ols_batch` reports it.
"""

from __future__ import annotations

import numpy as np

from micromacro_sim.models.ols import centre

__all__ = ["jackknife_cov", "jackknife_se", "ols_deletions"]


def jackknife_cov(deletions: np.ndarray) -> np.ndarray:
    """Jackknife covariance of leave-one-out estimates.

    Parameters
    ----------
    deletions : ndarray (..., G, k)
        ``theta_(g)``: the estimate without group g, for every group.

    Returns
    -------
    ndarray (..., k, k)
        ``(G - 1)/G * sum_g d_g d_g'`` with ``d_g = theta_(g) - theta_(.)``; NaN when any
        deletion is not finite (a jackknife needs every group's refit).
    """
    d = np.asarray(deletions, dtype=float)
    G = d.shape[-2]
    dev = d - d.mean(axis=-2, keepdims=True)
    cov = (G - 1) / G * np.einsum("...gi,...gj->...ij", dev, dev)
    bad = ~np.all(np.isfinite(d), axis=(-2, -1))
    cov[bad] = np.nan
    return cov


def jackknife_se(deletions: np.ndarray) -> np.ndarray:
    """Jackknife standard errors of leave-one-out estimates.

    Parameters
    ----------
    deletions : ndarray (..., G, k)

    Returns
    -------
    ndarray (..., k)
        ``sqrt((G - 1)/G * sum_g (theta_(g) - theta_(.))^2)`` per term; NaN for a stack
        with any non-finite deletion.
    """
    d = np.asarray(deletions, dtype=float)
    G = d.shape[-2]
    dev = d - d.mean(axis=-2, keepdims=True)
    se = np.sqrt((G - 1) / G * (dev * dev).sum(axis=-2))
    se[~np.all(np.isfinite(d), axis=(-2, -1))] = np.nan
    return se


def ols_deletions(y: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Leave-one-group-out OLS estimates of a batch by the rank-one downdate.

    Parameters
    ----------
    y : ndarray (R, G)
    X : ndarray (R, G, k)
        Second-step designs [1, Z, scores] whose scores do not depend on the other groups.

    Returns
    -------
    ndarray (R, G, k)
        Row g of replication r: the OLS of ``y`` on ``X`` without group g (intercept on the
        original location). A deletion that leaves the design singular (a hat value of 1)
        is not finite.
    """
    Xc, means = centre(np.asarray(X, dtype=float))
    y = np.asarray(y, dtype=float)
    Xt = Xc.transpose(0, 2, 1)
    inv = np.linalg.inv(Xt @ Xc)
    params = (inv @ (Xt @ y[:, :, None]))[:, :, 0]
    e = y - (Xc @ params[:, :, None])[:, :, 0]
    XA = Xc @ inv  # (R, G, k): row g is x_g' (X'X)^-1
    h = np.einsum("rgk,rgk->rg", XA, Xc)
    with np.errstate(divide="ignore", invalid="ignore"):
        step = XA * (e / (1.0 - h))[:, :, None]
    out = params[:, None, :] - step
    # the intercept at the original location: b0 = a - sum_j m_j b_j for any centring
    # constants m_j (the full data's column means serve every deletion)
    out[:, :, 0] -= np.einsum("rj,rgj->rg", means, out[:, :, 1:])
    bad = ~np.isfinite(h) | (np.abs(1.0 - h) <= 1e-12)
    out[bad] = np.nan
    return out
