"""Mean or median bias of a performance table, as the report shows it.

Mean bias is the summary's ``bias`` and ``pct_bias`` with their Monte Carlo SEs. Median
bias (``micromacro report --bias median``) is ``median - true value``; it is not moved by
the few replications in which a method blows up. Its Monte Carlo SE comes from the order
statistics of the estimates (the distribution-free 95% interval of a median, divided by
2 x 1.96) when the estimates are given, otherwise from the normal approximation
``sqrt(pi / 2) empSE / sqrt(K)``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from micromacro_sim.core.errors import ConfigError

__all__ = ["BIAS_STATS", "bias_columns", "check_stat", "median_mcse"]

BIAS_STATS = ("mean", "median")
_Z = 1.959963984540054


def check_stat(stat: str) -> str:
    """``stat`` when it is one of :data:`BIAS_STATS`; a :class:`ConfigError` otherwise."""
    if stat not in BIAS_STATS:
        raise ConfigError(f"bias: expected one of {', '.join(BIAS_STATS)}, got {stat!r}")
    return stat


def _order_mcse(x: np.ndarray) -> float:
    """MCSE of the median of ``x`` from its distribution-free 95% interval."""
    x = np.sort(x[np.isfinite(x)])
    k = x.size
    if k < 2:
        return float("nan")
    half = _Z * np.sqrt(k) / 2
    lo = int(np.clip(np.floor(k / 2 - half), 1, k)) - 1
    hi = int(np.clip(np.ceil(k / 2 + half) + 1, 1, k)) - 1
    return float((x[hi] - x[lo]) / (2 * _Z))


def median_mcse(estimates: pd.DataFrame, *, include_flagged: bool = False) -> pd.Series:
    """Monte Carlo SE of each median estimate, indexed by (scenario, method, term).

    Uses the estimates the summary uses: proper fits (status ``ok``, or converged and
    admissible in runs written before statuses were stored) unless ``include_flagged``,
    and finite estimates only.
    """
    est = estimates
    keep = np.isfinite(est["estimate"].to_numpy(dtype=float))
    if not include_flagged:
        ok = (est["status"] == "ok") if "status" in est.columns else (
            est["converged"] & est["admissible"])
        keep &= ok.to_numpy(dtype=bool)
    used = est.loc[keep, ["scenario", "method", "term", "estimate"]]
    if used.empty:
        return pd.Series(dtype=float)
    return used.groupby(["scenario", "method", "term"], sort=False)["estimate"].agg(
        lambda s: _order_mcse(s.to_numpy(dtype=float)))


def bias_columns(perf: pd.DataFrame, stat: str = "mean",
                 estimates: pd.DataFrame | None = None, *,
                 include_flagged: bool = False) -> pd.DataFrame:
    """``perf`` with the shown bias in ``shown_bias``, ``shown_bias_mcse``,
    ``shown_pct_bias`` and ``shown_pct_bias_mcse``.

    Parameters
    ----------
    perf : DataFrame
        The summary's performance table.
    stat : {"mean", "median"}
    estimates : DataFrame, optional
        Per-replication estimates, for the order-statistic MCSE of a median.
    include_flagged : bool
        The summary included flagged fits (the same estimates enter the MCSE).

    Returns
    -------
    DataFrame
        A copy of ``perf``; percent columns are NaN where the true value is 0.
    """
    check_stat(stat)
    out = perf.copy()
    if stat == "mean":
        out["shown_bias"], out["shown_bias_mcse"] = out["bias"], out["bias_mcse"]
        out["shown_pct_bias"] = out["pct_bias"]
        out["shown_pct_bias_mcse"] = out["pct_bias_mcse"]
        return out
    k = out["k"].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        mcse = np.sqrt(np.pi / 2) * out["empse"].to_numpy(dtype=float) / np.sqrt(k)
    if estimates is not None and not estimates.empty:
        exact = median_mcse(estimates, include_flagged=include_flagged)
        idx = pd.MultiIndex.from_frame(out[["scenario", "method", "term"]])
        found = exact.reindex(idx).to_numpy(dtype=float)
        mcse = np.where(np.isfinite(found), found, mcse)
    theta = out["theta"].to_numpy(dtype=float)
    out["shown_bias"] = out["median_bias"]
    out["shown_bias_mcse"] = mcse
    with np.errstate(divide="ignore", invalid="ignore"):
        pct = np.where(theta != 0, 100 * out["median_bias"].to_numpy(dtype=float) / theta,
                       np.nan)
        pct_se = np.where(theta != 0, 100 * mcse / np.abs(theta), np.nan)
    out["shown_pct_bias"], out["shown_pct_bias_mcse"] = pct, pct_se
    return out
