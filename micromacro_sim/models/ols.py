"""OLS with classical and HC0-HC3 standard errors: one dataset (statsmodels) and a batch.

Also the second-step checks every two-step method applies before its OLS (finite scores,
enough groups, full column rank), written once for both paths.
"""

from __future__ import annotations

import numpy as np

from micromacro_sim.core.results import SE_TYPES
from micromacro_sim.core.status import Flag, Reason, add_flags, flag, no_flags

__all__ = ["design_problems", "ols", "ols_batch", "se_problems"]


def ols(y: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray], float]:
    """OLS with classical and HC0-HC3 standard errors (statsmodels).

    Returns
    -------
    params, bse, df_resid
    """
    import statsmodels.api as sm

    res = sm.OLS(np.asarray(y, dtype=float), np.asarray(X, dtype=float)).fit()
    bse = {
        "classical": np.asarray(res.bse),
        "HC0": np.asarray(res.HC0_se),
        "HC1": np.asarray(res.HC1_se),
        "HC2": np.asarray(res.HC2_se),
        "HC3": np.asarray(res.HC3_se),
    }
    return np.asarray(res.params), bse, float(res.df_resid)


def ols_batch(
    y: np.ndarray, X: np.ndarray
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """OLS of many replications at once, with classical and HC0-HC3 SEs.

    Parameters
    ----------
    y : ndarray (R, G)
    X : ndarray (R, G, k)

    Returns
    -------
    params : ndarray (R, k)
    bse : dict of SE type -> ndarray (R, k)
    df_resid : ndarray (R,)

    Notes
    -----
    HC0 is White's sandwich, HC1 = HC0 G / (G - k), HC2 weights squared residuals by
    1 / (1 - h), HC3 by 1 / (1 - h)^2, with h the hat values; the definitions of
    statsmodels and R ``sandwich::vcovHC`` (checked in the tests to 1e-10).
    """
    R, G, k = X.shape
    Xt = X.transpose(0, 2, 1)
    inv = np.linalg.inv(Xt @ X)
    params = (inv @ (Xt @ y[:, :, None]))[:, :, 0]
    e = y - (X @ params[:, :, None])[:, :, 0]
    df = G - k
    s2 = (e * e).sum(axis=1) / df
    bse = {"classical": np.sqrt(s2[:, None] * np.diagonal(inv, axis1=1, axis2=2))}
    XA = X @ inv  # (R, G, k): row g is x_g' (X'X)^-1
    h = np.einsum("rgk,rgk->rg", XA, X)
    XA2 = XA * XA
    e2 = e * e
    with np.errstate(divide="ignore", invalid="ignore"):
        weights = {"HC0": e2, "HC2": e2 / (1 - h), "HC3": e2 / (1 - h) ** 2}
    for name, w in weights.items():
        # diag of (X'X)^-1 X' W X (X'X)^-1 = column sums of w_g (x_g' (X'X)^-1)^2
        bse[name] = np.sqrt(np.einsum("rg,rgk->rk", w, XA2))
    bse["HC1"] = bse["HC0"] * np.sqrt(G / df)
    return params, {t: bse[t] for t in SE_TYPES}, np.full(R, float(df))


def design_problems(X: np.ndarray, finite: np.ndarray, has_reason: np.ndarray) -> np.ndarray:
    """Second-step checks of R designs before the OLS.

    Parameters
    ----------
    X : ndarray (R, G, k)
        Designs [1, Z, scores] (rows with non-finite scores hold placeholders).
    finite : ndarray of bool (R,)
        Whether each replication's scores are finite.
    has_reason : ndarray of bool (R,)
        Whether the first step already explains non-finite scores.

    Returns
    -------
    ndarray of object (R,)
        Flags per replication: ``non_finite`` (scores, unexplained by the first step),
        ``too_few_groups`` (G <= k) or ``rank_deficient`` (smallest singular value below
        numpy's ``matrix_rank`` tolerance).
    """
    R, G, k = X.shape
    out = no_flags(R)
    add_flags(out, ~finite & ~has_reason, flag(Reason.NON_FINITE, "non-finite scores"))
    if G <= k:
        add_flags(out, finite, flag(Reason.TOO_FEW_GROUPS,
                                    f"too few groups for the second step (G={G}, k={k})"))
        return out
    sv = np.linalg.svd(X, compute_uv=False)
    tol = sv[:, :1] * max(G, k) * np.finfo(float).eps
    deficient = finite & np.any(sv <= tol, axis=1)
    add_flags(out, deficient, flag(
        Reason.RANK_DEFICIENT,
        "rank-deficient second-step design (constant or collinear scores)"))
    return out


def se_problems(bse: dict[str, np.ndarray]) -> Flag | None:
    """The flag of one replication whose SEs are not all finite (a leverage of 1)."""
    bad = [t for t in SE_TYPES if t in bse and not np.all(np.isfinite(bse[t]))]
    if not bad:
        return None
    return flag(Reason.LEVERAGE_ONE,
                f"non-finite {', '.join(bad)} standard errors (a leverage of 1)")
