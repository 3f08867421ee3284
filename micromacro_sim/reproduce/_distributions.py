"""Whole-distribution comparisons of this run's estimates with a study's saved ones:
quantiles and a two-sample Kolmogorov-Smirnov test per method and term, and robust
location (median, 10% trimmed mean) with bootstrap MCSEs for heavy-tailed methods."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from micromacro_sim.reproduce._verdicts import BOOT_REPS, PCT_MARGIN, Margin, judge, robust_location

__all__ = [
    "HEAVY_KURTOSIS",
    "QUANTILES",
    "distribution_table",
    "heavy_tailed",
    "pct_mean_mcse",
    "robust_table",
]

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
#: A method-term is heavy-tailed when either sample's excess kurtosis exceeds this
#: (a t distribution with 6 df has 3; the normal 0).
HEAVY_KURTOSIS = 2.0


def _values(frame: pd.DataFrame, method: str, term: str) -> np.ndarray:
    v = frame.loc[(frame["method"] == method) & (frame["term"] == term), "estimate"]
    v = v.to_numpy(dtype=float)
    return v[np.isfinite(v)]


def _kurtosis(v: np.ndarray) -> float:
    return float(stats.kurtosis(v)) if v.size >= 4 and np.ptp(v) > 0 else math.nan


def _pairs(theirs: pd.DataFrame) -> list[tuple[str, str]]:
    return list(theirs[["method", "term"]].drop_duplicates().itertuples(index=False, name=None))


def distribution_table(ours: pd.DataFrame, theirs: pd.DataFrame, *,
                       label: str = "published", own: str = "this run") -> pd.DataFrame:
    """Mean, quantiles and excess kurtosis of both samples per method and term, with a
    two-sample Kolmogorov-Smirnov test.

    Parameters
    ----------
    ours, theirs : DataFrame
        Long tables with columns method, term, estimate (``theirs``: the study's saved
        per-replication estimates; its method-terms define the rows).
    label, own : str
        ``source`` of the study's rows and of this run's rows.

    Returns
    -------
    DataFrame
        Two rows per method and term (this run, then the study): method, term, source,
        k, mean, q05 ... q95, kurt; ks_D and ks_p on this run's row.
    """
    rows = []
    for method, term in _pairs(theirs):
        a, b = _values(ours, method, term), _values(theirs, method, term)
        ks = stats.ks_2samp(a, b) if a.size >= 2 and b.size >= 2 else None
        for source, v in ((own, a), (label, b)):
            row = {"method": method, "term": term, "source": source, "k": v.size,
                   "mean": float(v.mean()) if v.size else math.nan}
            for q in QUANTILES:
                row[f"q{round(100 * q):02d}"] = float(np.quantile(v, q)) if v.size else math.nan
            row["kurt"] = round(_kurtosis(v), 2)
            first = source == own and ks is not None
            row["ks_D"] = float(ks.statistic) if first else math.nan
            row["ks_p"] = float(ks.pvalue) if first else math.nan
            rows.append(row)
    return pd.DataFrame(rows)


def heavy_tailed(ours: pd.DataFrame, theirs: pd.DataFrame,
                 threshold: float = HEAVY_KURTOSIS) -> list[tuple[str, str]]:
    """Method-terms whose excess kurtosis exceeds ``threshold`` in either sample."""
    out = []
    for method, term in _pairs(theirs):
        k = [_kurtosis(_values(f, method, term)) for f in (ours, theirs)]
        if any(np.isfinite(x) and x > threshold for x in k):
            out.append((method, term))
    return out


def pct_mean_mcse(values: np.ndarray, theta: float) -> tuple[float, float]:
    """Percent bias of the mean of ``values`` and its MCSE, 100 SD/(sqrt(K) |theta|)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size < 2 or not theta:
        return math.nan, math.nan
    return (100 * (v.mean() / theta - 1),
            100 * v.std(ddof=1) / (math.sqrt(v.size) * abs(theta)))


def robust_table(ours: pd.DataFrame, theirs: pd.DataFrame, theta: dict[str, float], *,
                 pairs: list[tuple[str, str]] | None = None, margin: Margin = PCT_MARGIN,
                 key: str = "", reps: int = BOOT_REPS) -> pd.DataFrame:
    """Median and 10% trimmed mean as percent bias, this run vs the study, with verdicts.

    Parameters
    ----------
    ours, theirs : DataFrame
        Long tables (method, term, estimate).
    theta : dict
        True value per term.
    pairs : list of (method, term), optional
        Rows to compare (default: :func:`heavy_tailed`).
    margin : Margin
        Practical margin, in percentage points.
    key : str
        Prefix of the bootstrap streams (the cell): each sample's stream is seeded by
        key/side/method/term, so MCSEs are deterministic and order-free.
    reps : int
        Bootstrap resamples.

    Returns
    -------
    DataFrame
        method, term, stat ("median" / "trim10"), published, mcse_pub, this_run, mcse, k,
        diff, se_diff, verdict (see :func:`~._verdicts.judge`).
    """
    pairs = heavy_tailed(ours, theirs) if pairs is None else pairs
    rows = []
    for method, term in pairs:
        th = theta.get(term, math.nan)
        a, b = _values(ours, method, term), _values(theirs, method, term)
        ra = robust_location(a, key=f"{key}/ours/{method}/{term}", reps=reps)
        rb = robust_location(b, key=f"{key}/theirs/{method}/{term}", reps=reps)
        for stat, col in (("median", "median"), ("trim10", "trimmed")):
            pct = [100 * (r[col] / th - 1) if th else math.nan for r in (ra, rb)]
            se = [100 * r[f"{col}_mcse"] / abs(th) if th else math.nan for r in (ra, rb)]
            rows.append({"method": method, "term": term, "stat": stat, "published": pct[1],
                         "mcse_pub": se[1], "this_run": pct[0], "mcse": se[0], "k": a.size,
                         **judge(pct[0], se[0], pct[1], se[1], margin.value)})
    return pd.DataFrame(rows)
