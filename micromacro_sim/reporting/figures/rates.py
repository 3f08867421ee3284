"""Coverage, Type I error and power per cell as horizontal dot plots.

Every cell of the grid is one row, named by the level of every design factor (rows
sorted by the factors, the first varying slowest; a thin line separates the levels of
the first factor), one column of panels per SE type, methods told apart by colour and
marker. The first column (``default``) shows every method with its default SE type (the
model SE of a one-step method, HC3 for the two-step methods, HC2 for croon; the legend
says which), so that methods without robust SEs are compared too. Points carry +/- 2
MCSE bars. Coverage and Type I error panels shade the Monte Carlo acceptance band
``nominal +/- 2 sqrt(nominal (1 - nominal) / K)`` (K: the median replications of the
panel's cells); power panels draw the conventional .80 line. Type I error cells (true
value 0) and power cells are in separate panels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from micromacro_sim.core.errors import MicroMacroError
from micromacro_sim.core.results import DEFAULT_SE, SE_TYPES
from micromacro_sim.reporting.figures.common import (
    MAX_WIDTH,
    Z_MCSE,
    acceptance_band,
    cell_names,
    cell_order,
    colors,
    finish,
    method_markers,
    require_matplotlib,
    rows_for,
    save,
    tag,
)
from micromacro_sim.reporting.se_types import legend_labels, measure_column
from micromacro_sim.summaries.factors import factor_levels

__all__ = ["plot_coverage", "plot_rejection"]

ROW_INCHES = 0.21
POWER = 0.80


def _label_inches(labels: Sequence[str]) -> float:
    return 0.35 + 0.062 * max((len(s) for s in labels), default=4)


def _first_factor_breaks(summary: Any, keys: list[str]) -> list[float]:
    scen = summary.scenarios
    if scen is None:
        return []
    levels = factor_levels(scen[scen["scenario"].isin(keys)])
    if not levels:
        return []
    _, _, text = levels[0]
    return [i - 0.5 for i in range(1, len(keys)) if text[keys[i]] != text[keys[i - 1]]]


def _panel(ax: Any, sub: pd.DataFrame, keys: list[str], col: str, methods: list[str],
           style: dict[str, Any]) -> list[Any]:
    """One panel: a row per cell, a point (+/- 2 MCSE) per method."""
    ypos = {k: i for i, k in enumerate(keys)}
    n = len(methods)
    offs = (np.arange(n) - (n - 1) / 2) * min(0.6 / max(n, 1), 0.22)
    handles = []
    for j, m in enumerate(methods):
        rows = sub[(sub["method"] == m) & sub["scenario"].isin(keys)]
        y = rows["scenario"].map(ypos).to_numpy(dtype=float) + offs[j]
        x = rows[col].to_numpy(dtype=float)
        e = Z_MCSE * rows[f"{col}_mcse"].to_numpy(dtype=float) if f"{col}_mcse" in rows else 0
        e = np.where(np.isfinite(e), e, 0.0)
        err = np.vstack([np.minimum(e, x), np.minimum(e, 1 - x)])  # rates lie in [0, 1]
        handles.append(tag(ax.errorbar(x, y, xerr=err, fmt=style["markers"][j], ms=3.5,
                                       color=style["colors"][j], elinewidth=1, capsize=0,
                                       zorder=3, lw=0), m))
    for b in style["breaks"]:
        ax.axhline(b, color="0.75", lw=0.7, zorder=0)
    ax.set_ylim(len(keys) - 0.5, -0.5)
    ax.set_yticks(range(len(keys)))
    ax.grid(axis="x", color="0.92", lw=0.8)
    ax.set_axisbelow(True)
    ax.tick_params(axis="both", labelsize=7.5)
    return handles


def _reference(ax: Any, kind: str, nominal: float, k: float) -> None:
    if kind == "power":
        ax.axvline(POWER, color="0.3", lw=1, ls="--", zorder=1)
        return
    lo, hi = acceptance_band(nominal, k)
    ax.axvspan(max(lo, 0), min(hi, 1), color="0.88", zorder=0, lw=0)
    ax.axvline(nominal, color="0.3", lw=1, zorder=1)


def _draw(summary: Any, path: str | Path, *, measure: str, term: str, alpha: float,
          se_types: Sequence[str] | None, methods: Sequence[str] | None) -> Path:
    plt = require_matplotlib()
    perf = rows_for(summary.performance, term, list(methods) if methods else None)
    se_types = [t for t in (se_types or (DEFAULT_SE, *SE_TYPES))
                if _column(measure, t) in perf.columns]
    if not se_types:
        raise MicroMacroError(f"plots: the summary has no {measure} rates (no standard errors)")
    methods = list(dict.fromkeys(perf["method"]))
    order = [k for k in cell_order(summary) if k in set(perf["scenario"])]
    null = (perf["null"] if "null" in perf.columns else perf["theta"] == 0)
    null = null.groupby(perf["scenario"]).all()  # the term has no effect in the generator
    if measure == "cover":
        groups = [("coverage", order, 1 - alpha)]
    else:
        groups = [(name, ks, alpha) for name, ks in (
            ("Type I error", [k for k in order if null[k]]),
            ("power", [k for k in order if not null[k]])) if ks]
    names = cell_names(summary)
    label_w = _label_inches([names[k] for k in order])
    ncols = len(se_types)
    panel_w = max(1.45, (MAX_WIDTH - label_w) / ncols)
    heights = [max(len(ks), 2) * ROW_INCHES + 0.55 for _, ks, _ in groups]
    fig, axes = plt.subplots(len(groups), ncols, squeeze=False, sharey="row",
                             figsize=(label_w + panel_w * ncols, sum(heights) + 1.1),
                             gridspec_kw={"height_ratios": heights})
    style = {"colors": colors(plt, len(methods)), "markers": method_markers(len(methods))}
    handles: list[Any] = []
    for r, (kind, keys, nominal) in enumerate(groups):
        style["breaks"] = _first_factor_breaks(summary, keys)
        k_med = float(np.median(perf.loc[perf["scenario"].isin(keys), "k"]))
        for c, se in enumerate(se_types):
            ax = axes[r, c]
            _reference(ax, "power" if kind == "power" else "band", nominal, k_med)
            col = _column(measure, se)
            handles = _panel(ax, perf, keys, col, methods, style)
            if kind == "Type I error":
                top = np.nanmax(perf.loc[perf["scenario"].isin(keys), col])
                ax.set_xlim(0, max(0.15, 1.15 * float(top) if np.isfinite(top) else 0.15))
            elif kind == "power":
                ax.set_xlim(0, 1.02)
            name = "default SE" if se == DEFAULT_SE else f"{se} SE"
            ax.set_title(f"{kind}, {name}" if c == 0 or len(groups) > 1 else name,
                         fontsize=9)
            if c == 0:
                ax.set_yticklabels([names[k] for k in keys], fontsize=7.5)
            else:
                ax.tick_params(axis="y", labelleft=False)
    what = (f"coverage of {100 * (1 - alpha):g}% intervals" if measure == "cover" else
            f"rejection of H0: {term} = 0 at alpha = {alpha:g}")
    note = (f"Term {term}: {what}; bars +/- {Z_MCSE:g} MCSE; grey: nominal "
            "+/- 2 sqrt(p(1-p)/K) acceptance band (median K)")
    if any(kind == "power" for kind, _, _ in groups):
        note += f"; dashed: power {POWER:.2f}"
    labels = methods
    if DEFAULT_SE in se_types:
        note += "; default SE: each method's own, named in the legend"
        labels = legend_labels(methods, perf)
    finish(fig, handles, labels, note)
    return save(fig, plt, path)


def _column(measure: str, se: str) -> str:
    """The column of ``measure`` for an SE type, or the bare one for ``default``."""
    return measure_column(measure, None if se == DEFAULT_SE else se)


def plot_coverage(summary: Any, path: str | Path, *, term: str, alpha: float = 0.05,
                  se_types: Sequence[str] | None = None,
                  methods: Sequence[str] | None = None) -> Path:
    """Coverage of the (1 - alpha) intervals of ``term`` per cell and SE type.

    Parameters
    ----------
    summary : RunSummary
        Summarized with the same ``alpha``.
    path : path
        PNG file to write.
    term : str
    alpha : float
    se_types, methods : sequence of str, optional
        Subsets to draw (default: all). SE types are columns of panels; ``default`` is
        each method's default SE type (default: ``default``, then every SE type).

    Returns
    -------
    Path
    """
    return _draw(summary, path, measure="cover", term=term, alpha=alpha, se_types=se_types,
                 methods=methods)


def plot_rejection(summary: Any, path: str | Path, *, term: str, alpha: float = 0.05,
                   se_types: Sequence[str] | None = None,
                   methods: Sequence[str] | None = None) -> Path:
    """Rejection of H0: ``term`` = 0: Type I error cells and power cells in separate panels.

    Type I error (true value 0) is drawn against alpha with its acceptance band; power
    against the conventional .80 line. Parameters as :func:`plot_coverage`.
    """
    return _draw(summary, path, measure="reject", term=term, alpha=alpha, se_types=se_types,
                 methods=methods)
