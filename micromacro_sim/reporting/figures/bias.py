"""Percent bias with +/- 2 MCSE, faceted by two design factors.

Facet rows are the levels of one factor, facet columns those of another; inside a facet
each row is a combination of the remaining factors, with a point per method. A term
whose true value is 0 in every cell has no percent bias: the bias is drawn instead.
Cells with a true value of 0 among others are left out (they have no percent bias) and
the note says how many.

The bias is the mean's (default) or the median's (``stat="median"``, see
:mod:`micromacro_sim.reporting.bias_stat`). The axis is robust: a few cells where a
method blows up do not stretch it; values beyond the cut are triangles at the edge with
their value written beside (:mod:`micromacro_sim.reporting.figures.offscale`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from micromacro_sim.core.errors import MicroMacroError
from micromacro_sim.reporting.bias_stat import bias_columns
from micromacro_sim.reporting.figures.common import (
    MAX_WIDTH,
    Z_MCSE,
    cell_order,
    colors,
    finish,
    method_markers,
    require_matplotlib,
    rows_for,
    save,
    tag,
)
from micromacro_sim.reporting.figures.offscale import (
    Limits,
    clip_to,
    draw_offscale,
    offscale_note,
    robust_limits,
)
from micromacro_sim.summaries.factors import factor_levels

__all__ = ["plot_percent_bias"]

ROW_INCHES = 0.2


def _facets(summary: Any, keys: list[str], facets: Sequence[str] | None):
    """(row factor, column factor, rest) where each factor is (name, levels, text)."""
    scen = summary.scenarios
    levels = factor_levels(scen[scen["scenario"].isin(keys)]) if scen is not None else []
    by_name = {name: lv for lv in levels for name in [lv[0]]}
    if facets is not None:
        bad = [f for f in facets if f not in by_name]
        if bad or len(facets) > 2:
            raise MicroMacroError(f"plots: facets must be up to two design factors of the run "
                                  f"({', '.join(by_name) or 'none'}), got {list(facets)!r}")
        chosen = [by_name[f] for f in facets]
    else:  # keep at least one factor for the rows inside a facet
        chosen = levels[:max(0, min(2, len(levels) - 1))]
    rest = [lv for lv in levels if lv not in chosen]
    while len(chosen) < 2:
        chosen.append(None)
    return chosen[0], chosen[1], rest


def _limits(perf: pd.DataFrame, methods: list[str], col: str, mcse: str,
            keys: list[str]) -> Limits | None:
    """Robust axis limits over the shown cells, the methods as groups."""
    shown = perf[perf["scenario"].isin(keys)]
    groups = [shown.loc[shown["method"] == m, col].to_numpy(dtype=float) for m in methods]
    errs = [Z_MCSE * shown.loc[shown["method"] == m, mcse].to_numpy(dtype=float)
            for m in methods]
    return robust_limits(groups, errs)


def plot_percent_bias(summary: Any, path: str | Path, *, term: str,
                      facets: Sequence[str] | None = None,
                      methods: Sequence[str] | None = None, stat: str = "mean",
                      estimates: pd.DataFrame | None = None) -> Path:
    """Percent bias of ``term`` by method, +/- 2 MCSE, faceted by two factors.

    Parameters
    ----------
    summary : RunSummary
    path : path
        PNG file to write.
    term : str
    facets : sequence of str, optional
        Names of the row and column factors (as in :func:`factor_levels`, e.g. ``G``,
        ``n``, ``ICC``, ``beta_z``); default the first two design factors (with two
        factors, only the first; with one, none).
    methods : sequence of str, optional
    stat : {"mean", "median"}
        Bias of the mean estimate (default) or of the median estimate.
    estimates : DataFrame, optional
        Per-replication estimates: the MCSE of a median from their order statistics
        (without them, the normal approximation).

    Returns
    -------
    Path
    """
    plt = require_matplotlib()
    perf = rows_for(summary.performance, term, list(methods) if methods else None)
    include = bool((summary.provenance or {}).get("include_flagged", False))
    perf = bias_columns(perf, stat, estimates, include_flagged=include)
    methods = list(dict.fromkeys(perf["method"]))
    use_pct = bool(np.isfinite(perf["shown_pct_bias"].to_numpy(dtype=float)).any())
    col, mcse = (("shown_pct_bias", "shown_pct_bias_mcse") if use_pct
                 else ("shown_bias", "shown_bias_mcse"))
    order = [k for k in cell_order(summary) if k in set(perf["scenario"])]
    shown = [k for k in order
             if np.isfinite(perf.loc[perf["scenario"] == k, col].to_numpy(dtype=float)).any()]
    fr, fc, rest = _facets(summary, shown, facets)

    def rest_text(k: str) -> str:
        return " ".join(f"{n}={t[k]}" for n, _, t in rest) if rest else "all cells"

    rows_lv, cols_lv = (fr[1] if fr else [""]), (fc[1] if fc else [""])
    inner = list(dict.fromkeys(rest_text(k) for k in shown))
    label_w = 0.35 + 0.062 * max(len(s) for s in inner)
    panel_w = max(1.6, (MAX_WIDTH - label_w) / len(cols_lv))
    panel_h = len(inner) * ROW_INCHES + 0.45
    fig, axes = plt.subplots(len(rows_lv), len(cols_lv), squeeze=False, sharex=True,
                             sharey=True, figsize=(label_w + panel_w * len(cols_lv),
                                                   panel_h * len(rows_lv) + 1.1))
    limits = _limits(perf, methods, col, mcse, shown)
    ypos = {s: i for i, s in enumerate(inner)}
    what = f"{stat} bias"
    xlabel = f"percent {what}" if use_pct else f"{what} (true value 0)"
    handles: list[Any] = []
    n_off = 0
    for r, rv in enumerate(rows_lv):
        for c, cv in enumerate(cols_lv):
            keys = [k for k in shown if (not fr or fr[2][k] == rv) and (not fc or fc[2][k] == cv)]
            handles, off = _panel(plt, axes[r, c], perf, methods, keys, ypos, rest_text,
                                  (col, mcse), limits, "%" if use_pct else "")
            n_off += off
            title = " ".join(p for p in (f"{fr[0]}={rv}" if fr else "",
                                         f"{fc[0]}={cv}" if fc else "") if p)
            _style(axes[r, c], title or term, inner, first_col=c == 0,
                   xlabel=xlabel if r == len(rows_lv) - 1 else "")
    if limits is not None:
        axes[0, 0].set_xlim(limits.low, limits.high)
    note = _note(term, use_pct, stat, len(order) - len(shown), exact=estimates is not None)
    finish(fig, handles, methods, note + offscale_note(n_off, limits, "%" if use_pct else ""))
    return save(fig, plt, path)


def _panel(plt: Any, ax: Any, perf: pd.DataFrame, methods: list[str], keys: list[str],
           ypos: dict[str, int], rest_text: Any, cols: tuple[str, str],
           limits: Limits | None, suffix: str) -> tuple[list[Any], int]:
    """One facet: a point with +/- 2 MCSE per method and cell; off-scale values marked."""
    col, mcse = cols
    cmap, marks = colors(plt, len(methods)), method_markers(len(methods))
    offs = (np.arange(len(methods)) - (len(methods) - 1) / 2) * min(0.6 / len(methods), 0.22)
    ax.axvline(0, color="0.25", lw=0.9, zorder=1)
    handles, n_off = [], 0
    for j, m in enumerate(methods):
        sub = perf[(perf["method"] == m) & perf["scenario"].isin(keys)]
        y = np.array([ypos[rest_text(k)] + offs[j] for k in sub["scenario"]], dtype=float)
        v = sub[col].to_numpy(dtype=float)
        e = Z_MCSE * sub[mcse].to_numpy(dtype=float)
        handles.append(tag(ax.errorbar(clip_to(v, limits), y,
                                       xerr=np.where(np.isfinite(e), e, 0.0), fmt=marks[j],
                                       ms=3.5, color=cmap[j], lw=0, elinewidth=1, capsize=0,
                                       zorder=3, label=m), m))
        n_off += draw_offscale(ax, y, v, limits, axis="x", color=cmap[j], suffix=suffix,
                               gid=f"offscale:{m}")
    return handles, n_off


def _style(ax: Any, title: str, inner: list[str], *, first_col: bool, xlabel: str) -> None:
    ax.set_title(title, fontsize=9)
    ax.set_ylim(len(inner) - 0.5, -0.5)
    ax.set_yticks(range(len(inner)))
    ax.grid(axis="x", color="0.92", lw=0.8)
    ax.set_axisbelow(True)
    ax.tick_params(labelsize=7.5)
    if first_col:
        ax.set_yticklabels(inner, fontsize=7.5)
    if xlabel:
        ax.set_xlabel(xlabel, fontsize=8)


def _note(term: str, use_pct: bool, stat: str, dropped: int, *, exact: bool) -> str:
    what = f"{stat} bias"
    note = f"Term {term}: {'percent ' + what if use_pct else what}, bars +/- {Z_MCSE:g} MCSE"
    if stat == "median":
        note += (" (MCSE of the median from the order statistics of the estimates)" if exact
                 else " (MCSE of the median by the normal approximation)")
    if dropped:
        note += f"; {dropped} cell(s) with true value 0 have no percent bias and are left out"
    return note
