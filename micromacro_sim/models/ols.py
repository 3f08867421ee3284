"""OLS with classical and HC0-HC3 standard errors: one dataset (statsmodels) and a batch.

Also the second-step checks every two-step method applies before its OLS (finite scores,
enough groups, full column rank), written once for both paths.
"""

from __future__ import annotations

import numpy as np

from micromacro_sim.core.results import OLS_SE_TYPES, SE_TYPES
from micromacro_sim.core.status import Flag, Reason, add_flags, flag, no_flags

__all__ = ["PERFECT_FIT_SHARE", "centre", "design_problems", "ols", "ols_batch", "ols_cov",
           "perfect_fit", "perfect_fit_flag", "se_problems"]


#: A second-step residual variance at or below this share of Var(y) is a perfect fit.
PERFECT_FIT_SHARE = 1e-12


def centre(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Designs [1, Z, scores] with every column but the constant centred on its mean.

    The slopes, residuals and hat values of the OLS do not change; the intercept does
    (see :func:`_intercept_row`). A location shift of a column (x measured around 1e7)
    then costs no precision and no rank.

    Parameters
    ----------
    X : ndarray (R, G, k)

    Returns
    -------
    Xc : ndarray (R, G, k)
    means : ndarray (R, k - 1)
    """
    # each replication's column sums over its own contiguous row of G values (pairwise
    # summation per row): the same bits whatever the batch size
    cols = np.ascontiguousarray(X[:, :, 1:].transpose(0, 2, 1))
    means = cols.sum(axis=-1) / X.shape[1]
    Xc = X.copy()
    Xc[:, :, 1:] -= means[:, None, :]
    return Xc, means


def _intercept_row(means: np.ndarray) -> np.ndarray:
    """t with b0 = t' b' (the intercept on the original location), per replication."""
    return np.concatenate([np.ones((len(means), 1)), -means], axis=1)


def ols(y: np.ndarray, X: np.ndarray
        ) -> tuple[np.ndarray, dict[str, np.ndarray], float, float]:
    """OLS with classical and HC0-HC3 standard errors (statsmodels), fitted on the centred
    design (:func:`centre`) and reported on the original location.

    Returns
    -------
    params, bse, df_resid, resid_var
    """
    import statsmodels.api as sm

    Xc, means = centre(np.asarray(X, dtype=float)[None])
    res = sm.OLS(np.asarray(y, dtype=float), Xc[0]).fit()
    t = _intercept_row(means)[0]
    covs = {"classical": res.cov_params(), "HC0": res.cov_HC0, "HC1": res.cov_HC1,
            "HC2": res.cov_HC2, "HC3": res.cov_HC3}
    bse = {}
    for name, cov in covs.items():
        se = np.sqrt(np.diagonal(np.asarray(cov))).copy()
        with np.errstate(invalid="ignore"):
            se[0] = np.sqrt(t @ np.asarray(cov) @ t)
        bse[name] = se
    params = np.asarray(res.params).copy()
    params[0] = t @ params
    return params, bse, float(res.df_resid), float(res.mse_resid)


def ols_batch(
    y: np.ndarray, X: np.ndarray
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray, np.ndarray]:
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
    resid_var : ndarray (R,)
        The residual variance (SSE / df).

    Notes
    -----
    HC0 is White's sandwich, HC1 = HC0 G / (G - k), HC2 weights squared residuals by
    1 / (1 - h), HC3 by 1 / (1 - h)^2, with h the hat values; the definitions of
    statsmodels and R ``sandwich::vcovHC`` (checked in the tests to 1e-10). The fit is
    on the centred design (:func:`centre`); the intercept and its SEs are transformed back
    to the original location with the full covariance (b0 = t' b', Var(b0) = t' V t).
    """
    R, G, k = X.shape
    X, means = centre(X)
    t = _intercept_row(means)
    Xt = X.transpose(0, 2, 1)
    inv = np.linalg.inv(Xt @ X)
    params = (inv @ (Xt @ y[:, :, None]))[:, :, 0]
    e = y - (X @ params[:, :, None])[:, :, 0]
    df = G - k
    s2 = (e * e).sum(axis=1) / df
    diag = np.diagonal(inv, axis1=1, axis2=2).copy()
    diag[:, 0] = (t * (inv @ t[:, :, None])[:, :, 0]).sum(axis=1)
    with np.errstate(invalid="ignore"):
        bse = {"classical": np.sqrt(s2[:, None] * diag)}
    XA = X @ inv  # (R, G, k): row g is x_g' (X'X)^-1
    h = np.einsum("rgk,rgk->rg", XA, X)
    XA2 = XA * XA
    u2 = (XA @ t[:, :, None])[:, :, 0] ** 2  # (x_g' (X'X)^-1 t)^2: the intercept's terms
    e2 = e * e
    with np.errstate(divide="ignore", invalid="ignore"):
        weights = {"HC0": e2, "HC2": e2 / (1 - h), "HC3": e2 / (1 - h) ** 2}
    for name, w in weights.items():
        # diag of (X'X)^-1 X' W X (X'X)^-1 = column sums of w_g (x_g' (X'X)^-1)^2
        var = np.einsum("rg,rgk->rk", w, XA2)
        var[:, 0] = (w * u2).sum(axis=1)
        with np.errstate(invalid="ignore"):
            bse[name] = np.sqrt(var)
    bse["HC1"] = bse["HC0"] * np.sqrt(G / df)
    params[:, 0] = (t * params).sum(axis=1)
    return params, {t_: bse[t_] for t_ in OLS_SE_TYPES}, np.full(R, float(df)), s2


def ols_cov(y: np.ndarray, X: np.ndarray, cov_type: str) -> np.ndarray:
    """Full (k, k) covariance of OLS estimates: classical or HC0-HC3 (statsmodels)."""
    import statsmodels.api as sm

    if cov_type not in OLS_SE_TYPES:
        raise ValueError(f"cov_type: expected one of {', '.join(OLS_SE_TYPES)}, got "
                         f"{cov_type!r}")
    res = sm.OLS(np.asarray(y, dtype=float), np.asarray(X, dtype=float)).fit()
    if cov_type == "classical":
        return np.asarray(res.cov_params())
    return np.asarray(getattr(res, f"cov_{cov_type}"))


def perfect_fit(y: np.ndarray, resid_var: np.ndarray) -> np.ndarray:
    """Whether each replication's second step fits y exactly: a residual variance at or
    below :data:`PERFECT_FIT_SHARE` of Var(y) (or a constant y). Slopes and SEs are then
    rounding noise (1e-16 with SEs of 6e-17), not estimates.

    Parameters
    ----------
    y : ndarray (R, G)
    resid_var : ndarray (R,)
    """
    var_y = np.var(y, axis=1, ddof=1)
    return (resid_var <= PERFECT_FIT_SHARE * var_y) | (var_y == 0)


def perfect_fit_flag() -> Flag:
    """The flag of :func:`perfect_fit`."""
    return flag(Reason.PERFECT_FIT)


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
    sv = np.linalg.svd(centre(X)[0], compute_uv=False)  # rank at any location of the columns
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
