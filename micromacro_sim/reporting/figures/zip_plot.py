"""Zip plot of coverage (Morris, White & Crowther 2019, Stat Med 38:2074, Figure 3).

Every replication's confidence interval is a horizontal line, ranked (vertical axis)
by the fractional centile of ``|z| = |estimate - theta| / SE``; intervals that miss the
true value (vertical line) are drawn in a second colour. The horizontal line at
``100 (1 - alpha)`` is where the non-covering intervals should start for a method with
nominal coverage; the grey band around it is that centile's Monte Carlo 95% interval.
By default each method's intervals use its default SE type (the model SE of a one-step
method, HC3 for the two-step methods, HC2 for croon), named in its panels' titles.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from micromacro_sim.core.errors import MicroMacroError
from micromacro_sim.core.results import SE_COLUMNS
from micromacro_sim.reporting.figures.common import (
    MAX_WIDTH,
    cell_names,
    cell_order,
    require_matplotlib,
    save,
    tag,
    wrap,
)
from micromacro_sim.reporting.se_types import (
    measure_column,
    method_se_labels,
    method_se_types,
)

__all__ = ["plot_zip", "zip_cells"]

COVER, MISS = "#3b75af", "#d1495b"


def zip_cells(summary: Any, term: str, se_type: str | None = None, n: int = 4) -> list[str]:
    """The ``n`` cells (keys) with the lowest coverage of ``term`` over methods, in cell
    order; every cell when there are at most ``n`` (``se_type`` None: each method's
    default SE type)."""
    perf = summary.performance
    col = measure_column("cover", se_type)
    sub = perf[perf["term"] == term]
    order = [k for k in cell_order(summary) if k in set(sub["scenario"])]
    if len(order) <= n or col not in sub.columns:
        return order[:n]
    worst = sub.groupby("scenario")[col].min().sort_values(kind="stable")
    chosen = set(worst.index[:n])
    return [k for k in order if k in chosen]


def _intervals(rows: pd.DataFrame, theta: float, se_col: str, alpha: float):
    from scipy import stats

    est = rows["estimate"].to_numpy(dtype=float)
    se = rows[se_col].to_numpy(dtype=float)
    df = rows["df_resid"].to_numpy(dtype=float) if "df_resid" in rows else np.full(len(est), np.nan)
    ok = np.isfinite(est) & np.isfinite(se) & (se > 0)
    est, se, df = est[ok], se[ok], df[ok]
    crit = np.where(np.isfinite(df), stats.t.ppf(1 - alpha / 2, np.where(np.isfinite(df), df, 1)),
                    stats.norm.ppf(1 - alpha / 2))
    lo, hi = est - crit * se, est + crit * se
    own = _own_intervals(rows, ok)
    if own is not None:  # the method's own (credible) intervals
        lo, hi = own
    z = np.abs(est - theta) / se
    order = np.argsort(z, kind="stable")
    k = len(z)
    centile = 100 * (np.arange(1, k + 1) - 0.5) / max(k, 1)
    lo, hi = lo[order], hi[order]
    covers = (lo <= theta) & (theta <= hi)
    return lo, hi, centile, covers


def _own_intervals(rows: pd.DataFrame, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The method's own interval limits of the rows kept (None when it reports none)."""
    if "ci_level" not in rows or not np.isfinite(rows["ci_level"].to_numpy(float)).any():
        return None
    return (rows["ci_low"].to_numpy(dtype=float)[ok], rows["ci_high"].to_numpy(dtype=float)[ok])


def _panel(ax: Any, rows: pd.DataFrame, method: str, head: str, theta: float, se_col: str,
           alpha: float) -> None:
    """One method's intervals in one cell, titled ``head`` (also when there are none)."""
    from matplotlib.collections import LineCollection

    lo, hi, cent, covers = _intervals(rows, theta, se_col, alpha)
    k = len(cent)
    target = 100 * (1 - alpha)
    if k:
        half = 100 * 1.96 * np.sqrt(alpha * (1 - alpha) / k)
        ax.axhspan(target - half, min(100, target + half), color="0.88", lw=0)
        segs = np.stack([np.column_stack([lo, cent]), np.column_stack([hi, cent])], 1)
        ax.add_collection(tag(LineCollection(segs, colors=np.where(covers, COVER, MISS),
                                             linewidths=0.6 if k > 300 else 1.0), method))
        ax.set_xlim(np.nanmin(lo), np.nanmax(hi))
        ax.set_title(f"{head}: coverage {covers.mean():.3f} (K={k})", fontsize=8)
    else:
        ax.set_title(head, fontsize=8)
        finite = np.isfinite(rows["estimate"].to_numpy(dtype=float)).any()
        ax.text(0.5, 0.5, "no standard errors" if finite else "no estimates", ha="center",
                transform=ax.transAxes)
    ax.axvline(theta, color="0.1", lw=1)
    ax.axhline(target, color="0.3", lw=0.8, ls="--")
    ax.set_ylim(0, 100)
    ax.tick_params(labelsize=7)


def plot_zip(estimates: pd.DataFrame, summary: Any, path: str | Path, *, term: str,
             se_type: str | None = None, cells: Sequence[str] | None = None,
             methods: Sequence[str] | None = None, alpha: float = 0.05,
             include_flagged: bool = False) -> Path:
    """Zip plots of ``term``'s intervals: rows of panels per method, columns per cell.

    Parameters
    ----------
    estimates : DataFrame
        Per-replication estimates of the run.
    summary : RunSummary
        Its summary (true values, cell names, order).
    path : path
        PNG file to write.
    term : str
    se_type : str, optional
        SE type of the intervals of every method (default: each method's default type,
        named in the panel titles).
    cells : sequence of str, optional
        Scenario keys (default :func:`zip_cells`: the four with the lowest coverage).
    methods : sequence of str, optional
    alpha : float
    include_flagged : bool
        Also draw flagged fits that have estimates.

    Returns
    -------
    Path
    """
    plt = require_matplotlib()
    est = estimates[estimates["term"] == term]
    if not include_flagged and "status" in est.columns:
        est = est[est["status"] == "ok"]
    if est.empty:
        raise MicroMacroError(f"plots: no estimates of term {term!r}")
    cells = list(cells) if cells is not None else zip_cells(summary, term, se_type)
    methods = list(methods) if methods is not None else list(dict.fromkeys(est["method"]))
    rows = summary.performance[summary.performance["term"] == term]
    theta = {(k, m): float(t) for k, m, t in zip(rows["scenario"], rows["method"],
                                                 rows["theta"], strict=True)}
    types = method_se_types(summary.performance)
    labels = method_se_labels(summary.performance, se_type)
    names = cell_names(summary)
    ncols = len(cells)
    fig, axes = plt.subplots(len(methods), ncols, squeeze=False, sharey=True,
                             figsize=(MAX_WIDTH, 2.5 * len(methods) + 1.2))
    target = 100 * (1 - alpha)
    for c, key in enumerate(cells):
        for r, m in enumerate(methods):
            ax = axes[r, c]
            se = se_type or types.get(m, "classical")
            _panel(ax, est[(est["scenario"] == key) & (est["method"] == m)], m,
                   f"{m} ({labels.get(m, se)} SE)", theta.get((key, m), np.nan), SE_COLUMNS[se],
                   alpha)
            if c == 0:
                ax.set_ylabel("centile of |z|", fontsize=8)
        axes[0, c].annotate(wrap(names.get(key, key), MAX_WIDTH / ncols * 0.9),
                            (0.5, 1.22), xycoords="axes fraction",
                            ha="center", va="bottom", fontsize=8, fontweight="bold")
    which = f"{se_type} SE" if se_type else "each method's default SE (in the panel titles)"
    note = wrap(f"Zip plot of term {term}, {which} intervals, ranked by |z|; red: "
                f"intervals missing the true value (vertical line); dashed: the "
                f"{target:g}th centile, grey: its Monte Carlo 95% interval.", MAX_WIDTH)
    strip = 0.1 + 0.15 * (note.count("\n") + 1)
    h = fig.get_size_inches()[1]
    fig.tight_layout(rect=(0, strip / h, 1, 1 - 0.45 / h))
    fig.text(0.5, 0.004, note, ha="center", va="bottom", fontsize=8, color="0.3")
    return save(fig, plt, path)
