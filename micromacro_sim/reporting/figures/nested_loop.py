"""Nested-loop plot (Ruecker & Schwarzer 2014, BMC Med Res Methodol 14:129).

All cells of the grid lie along one axis, sorted by the design factors (the first
varying slowest). Each measure is a panel with a step line per method; beneath, each
design factor is drawn as a step line of its levels, so the reader sees which factor
moves a measure. Works for any number of cells.

Panels of bias, RMSE and empirical SE have robust axes: a few cells where a method blows
up do not stretch them; values beyond the cut are triangles at the edge with their value
(:mod:`micromacro_sim.reporting.figures.offscale`). Coverage and rejection use each
method's default SE type (named in the legend) unless an SE type is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from micromacro_sim.core.errors import MicroMacroError
from micromacro_sim.reporting.figures.common import (
    MAX_WIDTH,
    cell_order,
    colors,
    finish,
    require_matplotlib,
    rows_for,
    save,
    tag,
)
from micromacro_sim.reporting.figures.offscale import FENCE, draw_offscale, robust_limits
from micromacro_sim.reporting.se_types import legend_labels, measure_column
from micromacro_sim.summaries.factors import factor_levels

__all__ = ["NESTED_MEASURES", "ROBUST_MEASURES", "plot_nested_loop"]

#: Measures a nested-loop panel can show: name -> (column pattern, axis label); ``{t}``
#: is the SE type (the bare column, each method's default type, when none is given).
NESTED_MEASURES = {
    "bias": ("bias", "bias"), "pct_bias": ("pct_bias", "percent bias"),
    "median_bias": ("median_bias", "median bias"),
    "rmse": ("rmse", "RMSE"), "empse": ("empse", "empirical SE"),
    "cover": ("cover_{t}", "coverage ({t})"), "reject": ("reject_{t}", "rejection ({t})"),
}
_USES_SE = ("cover", "reject")

STYLES = ("-", "--", "-.", ":")

#: Measures whose panels get robust axes (rates are bounded by 0 and 1).
ROBUST_MEASURES = frozenset({"bias", "pct_bias", "median_bias", "rmse", "empse"})


def _reference(ax: Any, measure: str, alpha: float) -> None:
    if measure in ("bias", "pct_bias", "median_bias"):
        ax.axhline(0, color="0.3", lw=0.9)
    elif measure == "cover":
        ax.axhline(1 - alpha, color="0.3", lw=0.9)
    elif measure == "reject":
        ax.axhline(alpha, color="0.3", lw=0.9)
        ax.axhline(0.8, color="0.3", lw=0.9, ls="--")


def _measure_panel(ax: Any, perf: Any, methods: list[str], keys: list[str], measure: str,
                   col: str, cmap: list[Any], alpha: float) -> tuple[list[Any], int]:
    """One measure's step line per method over the cells; robust axis for bias-like ones.

    Returns the line handles and the number of values marked off the scale.
    """
    _reference(ax, measure, alpha)
    ys = []
    for m in methods:
        sub = perf[perf["method"] == m].set_index("scenario")[col]
        ys.append(np.array([sub.get(k, np.nan) for k in keys], dtype=float))
    limits = robust_limits(ys) if measure in ROBUST_MEASURES else None
    edges = np.arange(len(keys) + 1) + 0.5
    handles, n_off = [], 0
    for j, (m, y) in enumerate(zip(methods, ys, strict=True)):
        shown = y if limits is None else np.clip(y, limits.low, limits.high)
        handles.append(tag(ax.stairs(shown, edges, baseline=None, color=cmap[j], lw=1.2,
                                     ls=STYLES[j % len(STYLES)], label=m), m))
        n_off += draw_offscale(ax, np.arange(len(keys)) + 1.0, y, limits, axis="y",
                               color=cmap[j], suffix="%" if measure == "pct_bias" else "",
                               gid=f"offscale:{m}")
    if limits is not None:
        ax.set_ylim(limits.low, limits.high)
    ax.tick_params(labelsize=7.5)
    ax.grid(axis="y", color="0.93", lw=0.8)
    return handles, n_off


def _factor_panel(ax: Any, levels: list, keys: list[str]) -> None:
    n = len(levels)
    for i, (name, lv, text) in enumerate(levels):
        base = (n - 1 - i) * 1.4
        idx = np.array([lv.index(text[k]) for k in keys], dtype=float)
        y = base + (idx / max(len(lv) - 1, 1)) * 0.9
        ax.stairs(y, np.arange(len(keys) + 1) + 0.5, baseline=None, color="0.2", lw=1.1)
        ax.text(-0.02, base + 0.45, f"{name}: {', '.join(lv)}", transform=ax.get_yaxis_transform(),
                ha="right", va="center", fontsize=7.5)
    ax.set_ylim(-0.3, (n - 1) * 1.4 + 1.2)
    ax.set_yticks([])
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)


def plot_nested_loop(summary: Any, path: str | Path, *, term: str,
                     measures: Sequence[str] = ("bias", "rmse", "cover", "reject"),
                     se_type: str | None = None, alpha: float = 0.05,
                     methods: Sequence[str] | None = None) -> Path:
    """Nested-loop plot of ``measures`` of ``term`` across every cell.

    Parameters
    ----------
    summary : RunSummary
    path : path
        PNG file to write.
    term : str
    measures : sequence of str
        Panels, from :data:`NESTED_MEASURES` (default bias, RMSE, coverage, rejection).
    se_type : str, optional
        SE type of coverage and rejection for every method (default: each method's
        default type, named in the legend).
    alpha : float
        Nominal level (reference lines: 1 - alpha for coverage; alpha and .80 for
        rejection, which is a Type I error where the true value is 0 and power elsewhere).
    methods : sequence of str, optional

    Returns
    -------
    Path
    """
    bad = [m for m in measures if m not in NESTED_MEASURES]
    if bad:
        raise MicroMacroError(f"plots: unknown measure {bad[0]!r} "
                              f"(known: {', '.join(NESTED_MEASURES)})")
    plt = require_matplotlib()

    perf = rows_for(summary.performance, term, list(methods) if methods else None)
    methods = list(dict.fromkeys(perf["method"]))
    keys = [k for k in cell_order(summary) if k in set(perf["scenario"])]
    scen = summary.scenarios
    levels = factor_levels(scen[scen["scenario"].isin(keys)]) if scen is not None else []
    cols = [(m, measure_column(m, se_type) if m in _USES_SE else NESTED_MEASURES[m][0],
             NESTED_MEASURES[m][1].format(t=se_type or "default SE")) for m in measures]
    cols = [c for c in cols if c[1] in perf.columns]
    heights = [1.6] * len(cols) + ([0.3 + 0.32 * len(levels)] if levels else [])
    fig, axes = plt.subplots(len(heights), 1, sharex=True, squeeze=False,
                             figsize=(MAX_WIDTH, sum(heights) + 1.0),
                             gridspec_kw={"height_ratios": heights})
    axes = axes[:, 0]
    cmap = colors(plt, len(methods))
    breaks = ([i + 0.5 for i in range(1, len(keys))
               if levels[0][2][keys[i]] != levels[0][2][keys[i - 1]]] if levels else [])
    handles: list[Any] = []
    n_off = 0
    for ax, (measure, col, label) in zip(axes, cols, strict=False):
        handles, off = _measure_panel(ax, perf, methods, keys, measure, col, cmap, alpha)
        n_off += off
        for b in breaks:
            ax.axvline(b, color="0.85", lw=0.8, zorder=0)
        ax.set_ylabel(label, fontsize=8)
    if levels:
        _factor_panel(axes[-1], levels, keys)
    axes[-1].set_xlim(0.5, len(keys) + 0.5)
    from matplotlib.ticker import MaxNLocator

    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[-1].set_xlabel(f"cell (1 to {len(keys)}), sorted by the design factors below",
                        fontsize=8)
    uses_se = any(m in _USES_SE for m, _, _ in cols)
    finish(fig, handles, legend_labels(methods, perf) if uses_se and se_type is None
           else methods,
           f"Nested-loop plot of term {term} (Ruecker & Schwarzer 2014): every cell along the "
           "x axis; beneath, each design factor's level as a step (lowest to highest level, "
           "listed left). Reference lines: 0 (bias), nominal coverage, alpha and .80 "
           "(rejection: Type I error where the true value is 0, power elsewhere)"
           + (f". Off the scale: {n_off} value(s) farther from 0 than {FENCE:g} times the "
              "methods' typical size in their panel, drawn as triangles at the edge with the "
              "value written beside." if n_off else "."))
    # room on the left for the factor names
    fig.subplots_adjust(left=max(fig.subplotpars.left, 0.2 if levels else 0.08))
    return save(fig, plt, path)
