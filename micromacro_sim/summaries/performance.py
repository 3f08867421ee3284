"""Performance measures of one estimator's replications of one parameter, with Monte Carlo
SEs (Morris, White & Crowther 2019, Table 6): pure functions of arrays, no run folder.
"""

from __future__ import annotations

import numpy as np

__all__ = ["performance"]


def performance(
    est: np.ndarray,
    theta: float,
    ses: dict[str, np.ndarray] | None = None,
    df: np.ndarray | None = None,
    *,
    alpha: float = 0.05,
    trim: float = 0.1,
    ci: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, float]:
    """Every SPEC section 4 measure for K estimates of one parameter.

    Parameters
    ----------
    est : ndarray (K,)
        Estimates (NaN rows are dropped along with their SEs).
    theta : float
        True value.
    ses : dict of SE type -> ndarray (K,), optional
        Model standard errors for coverage, rejection and model-SE measures.
    df : ndarray (K,), optional
        Residual df per replication for t-based intervals (NaN: normal-based).
    alpha : float
        Nominal level of intervals and tests.
    trim : float
        Proportion cut from each tail for the trimmed mean.
    ci : (ndarray (K,), ndarray (K,)), optional
        The method's own interval limits per replication (a credible interval): adds
        ``cover_ci``, ``cover_ci_mcse``, ``becover_ci``, ``reject_ci`` (the interval
        excludes 0) and ``reject_ci_mcse`` over the replications with finite limits.

    Returns
    -------
    dict
        ``k``, mean, bias, bias_mcse, pct_bias, pct_bias_mcse, median, median_bias,
        trimmed_mean, trimmed_bias, empse, empse_mcse, mse, mse_mcse, rmse, rmse_mcse,
        and per SE type ``T``: modse_T (root mean squared SE), modse_T_mcse, meanse_T
        (mean SE, Mplus's "S.E. Average"), meanse_T_mcse, relerr_T, relerr_T_mcse, cover_T,
        cover_T_mcse, becover_T (bias-eliminated), reject_T, reject_T_mcse.
    """
    from scipy import stats  # lazy: a large import the CLI need not pay up front

    est = np.asarray(est, dtype=float)
    keep = np.isfinite(est)
    x = est[keep]
    k = int(x.size)
    out: dict[str, float] = {"k": k}
    if k == 0:
        return out
    out.update(_point_measures(x, theta, trim))
    if ci is not None:
        out.update(_interval_measures(np.asarray(ci[0], float)[keep],
                                      np.asarray(ci[1], float)[keep], theta, out["mean"]))
    if not ses:
        return out
    dfk = np.full(k, np.nan) if df is None else np.asarray(df, dtype=float)[keep]
    crit = np.where(
        np.isfinite(dfk), stats.t.ppf(1 - alpha / 2, np.where(np.isfinite(dfk), dfk, 1.0)),
        stats.norm.ppf(1 - alpha / 2),
    )
    for name, se_all in ses.items():
        se = np.asarray(se_all, dtype=float)[keep]
        ok = np.isfinite(se)
        if ok.any():
            out.update(_se_measures(name, x[ok], se[ok], crit[ok], theta, out["mean"],
                                    out["empse"], k))
    return out


def _point_measures(x: np.ndarray, theta: float, trim: float) -> dict[str, float]:
    """Bias, percent bias, median, trimmed mean, empirical SE and MSE with their MCSEs."""
    from scipy import stats

    k, nan = x.size, float("nan")
    mean = float(x.mean())
    sd = float(x.std(ddof=1)) if k > 1 else nan
    out = {"mean": mean, "bias": mean - theta, "bias_mcse": sd / np.sqrt(k)}
    if theta != 0:
        out.update(pct_bias=100 * (mean / theta - 1),
                   pct_bias_mcse=100 * out["bias_mcse"] / abs(theta))
    else:
        out.update(pct_bias=nan, pct_bias_mcse=nan)
    med = float(np.median(x))
    tmean = float(stats.trim_mean(x, trim))
    out.update(median=med, median_bias=med - theta, trimmed_mean=tmean,
               trimmed_bias=tmean - theta)
    sq = (x - theta) ** 2
    mse = float(sq.mean())
    mse_mcse = float(np.sqrt(np.sum((sq - mse) ** 2) / (k * (k - 1)))) if k > 1 else nan
    rmse = float(np.sqrt(mse))
    out.update(
        empse=sd,
        empse_mcse=sd / np.sqrt(2 * (k - 1)) if k > 1 else nan,
        mse=mse,
        mse_mcse=mse_mcse,
        rmse=rmse,
        rmse_mcse=mse_mcse / (2 * rmse) if rmse > 0 else nan,
    )
    return out


def _se_measures(name: str, xe: np.ndarray, s: np.ndarray, c: np.ndarray, theta: float,
                 mean: float, sd: float, k: int) -> dict[str, float]:
    """Model SE, its relative error, coverage and rejection for one SE type (Morris et al.
    2019, Table 6), over the ``m`` replications with a finite SE of that type."""
    m, nan = s.size, float("nan")
    v2 = s**2
    modse = float(np.sqrt(v2.mean()))
    var_v2 = float(v2.var(ddof=1)) if m > 1 else nan
    modse_mcse = float(np.sqrt(var_v2 / (4 * m * modse**2))) if modse > 0 else nan
    rel = 100 * (modse / sd - 1) if sd > 0 else nan
    rel_mcse = (
        100 * (modse / sd) * np.sqrt(var_v2 / (4 * m * modse**4) + 1 / (2 * (k - 1)))
        if sd > 0 and modse > 0 else nan
    )
    half = c * s
    cover = float(np.mean((xe - half <= theta) & (theta <= xe + half)))
    becover = float(np.mean((xe - half <= mean) & (mean <= xe + half)))
    reject = float(np.mean(np.abs(xe / s) >= c))
    return {
        f"modse_{name}": modse,
        f"modse_{name}_mcse": modse_mcse,
        f"meanse_{name}": float(s.mean()),
        f"meanse_{name}_mcse": float(s.std(ddof=1) / np.sqrt(m)) if m > 1 else nan,
        f"relerr_{name}": rel,
        f"relerr_{name}_mcse": rel_mcse,
        f"cover_{name}": cover,
        f"cover_{name}_mcse": float(np.sqrt(cover * (1 - cover) / m)),
        f"becover_{name}": becover,
        f"reject_{name}": reject,
        f"reject_{name}_mcse": float(np.sqrt(reject * (1 - reject) / m)),
    }


def _interval_measures(lo: np.ndarray, hi: np.ndarray, theta: float,
                       mean: float) -> dict[str, float]:
    """Coverage and rejection of the method's own intervals (finite limits only)."""
    ok = np.isfinite(lo) & np.isfinite(hi)
    m = int(ok.sum())
    if m == 0:
        return {}
    lo, hi = lo[ok], hi[ok]
    cover = float(np.mean((lo <= theta) & (theta <= hi)))
    reject = float(np.mean((lo > 0) | (hi < 0)))
    return {
        "cover_ci": cover, "cover_ci_mcse": float(np.sqrt(cover * (1 - cover) / m)),
        "becover_ci": float(np.mean((lo <= mean) & (mean <= hi))),
        "reject_ci": reject, "reject_ci_mcse": float(np.sqrt(reject * (1 - reject) / m)),
    }
