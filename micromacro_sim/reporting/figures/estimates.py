"""Every replication's estimate per method, one panel per cell (as rsimsum's
``autoplot(type = "est")``): jittered points over a box of the quartiles, the true value
marked.

The tails are shown, not cut. When a few estimates lie far from the bulk, every panel
plots the estimation error (estimate - true value) on a symmetric-log axis: linear
within the bulk (:func:`bulk_scale`), logarithmic beyond it, so a blow-up and the
spread of the other methods are both readable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from micromacro_sim.core.errors import MicroMacroError
from micromacro_sim.reporting.figures.common import (
    MAX_WIDTH,
    cell_names,
    cell_order,
    colors,
    require_matplotlib,
    save,
    tag,
    truth_lines,
    wrap,
)
from micromacro_sim.reporting.figures.offscale import typical_extent

__all__ = ["HEAVY", "bulk_scale", "estimate_cells", "plot_estimate_strips"]

#: A panel is heavy-tailed when an estimate lies farther from the true value than this
#: many bulk scales.
HEAVY = 4.0
_PANEL_W, _PANEL_H = MAX_WIDTH / 4, 2.7


def _used(estimates: pd.DataFrame, term: str, include_flagged: bool) -> pd.DataFrame:
    est = estimates[estimates["term"] == term]
    keep = np.isfinite(est["estimate"].to_numpy(dtype=float))
    if not include_flagged:
        ok = (est["status"] == "ok") if "status" in est.columns else (
            est["converged"] & est["admissible"])
        keep &= ok.to_numpy(dtype=bool)
    return est[keep]


def bulk_scale(errors: Sequence[np.ndarray]) -> float:
    """Half-width of the bulk of the estimation errors of one cell.

    Twice the :func:`~micromacro_sim.reporting.figures.offscale.typical_extent` of the
    errors (its upper quartile of ``|estimate - true value|`` per method): one exploding
    method does not widen it, nor do a few wild estimates of every method.
    """
    s = 2.0 * typical_extent(errors, q=0.75)
    return s if s > 0 else 1.0


def _nice(x: float) -> float:
    """The smallest of 1, 2, 5 (times a power of ten) at least ``x``."""
    base = 10.0 ** math.floor(math.log10(x))
    return next(base * m for m in (1, 2, 5, 10) if base * m >= x * (1 - 1e-12))


def _symlog_ticks(ax: Any, lin: float) -> None:
    """Ticks at 0, +/- lin / 2, +/- lin and every decade beyond, inside the view."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    lo, hi = ax.get_ylim()
    top = max(abs(lo), abs(hi), lin)
    decades = [10.0 ** k for k in range(math.floor(math.log10(lin)) + 1,
                                        math.ceil(math.log10(top)) + 1)]
    mags = [lin / 2, lin, *(d for d in decades if d >= 3 * lin)]
    ticks = sorted({0.0, *mags, *(-m for m in mags)})
    ax.yaxis.set_major_locator(FixedLocator([t for t in ticks if lo <= t <= hi]))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_locator(NullLocator())


def _errors(est: pd.DataFrame, key: str, methods: list[str],
            theta: dict[str, float]) -> list[np.ndarray]:
    """Each method's estimation errors in cell ``key`` (against its own estimand)."""
    sub = est[est["scenario"] == key]
    return [sub.loc[sub["method"] == m, "estimate"].to_numpy(dtype=float)
            - theta.get(m, np.nan) for m in methods]


def estimate_cells(estimates: pd.DataFrame, summary: Any, term: str, n: int = 8, *,
                   include_flagged: bool = False) -> list[str]:
    """The ``n`` cells (keys, in cell order) whose tails reach farthest, in bulk scales;
    every cell when there are at most ``n``."""
    est = _used(estimates, term, include_flagged)
    theta = _theta(summary, term)
    order = [k for k in cell_order(summary) if k in set(est["scenario"]) and k in theta]
    if len(order) <= n:
        return order
    methods = list(dict.fromkeys(est["method"]))
    reach = {}
    for k in order:
        errs = _errors(est, k, methods, theta[k])
        pooled = np.concatenate(errs)
        reach[k] = float(np.abs(pooled).max() / bulk_scale(errs)) if pooled.size else 0.0
    chosen = set(sorted(order, key=lambda k: -reach[k])[:n])
    return [k for k in order if k in chosen]


def _theta(summary: Any, term: str) -> dict[str, dict[str, float]]:
    """Cell -> method -> the true value the method is scored against (its estimand)."""
    perf = summary.performance
    rows = perf[perf["term"] == term]
    out: dict[str, dict[str, float]] = {}
    for key, method, theta in zip(rows["scenario"], rows["method"], rows["theta"],
                                  strict=True):
        out.setdefault(key, {})[method] = float(theta)
    return out


def _strip(ax: Any, errs: list[np.ndarray], cmap: list[Any], theta: dict[str, float],
           heavy: bool, rng: np.random.Generator, methods: list[str]) -> None:
    """Points and quartile boxes of one cell; the true values as dashed lines."""
    shifts = [0.0 if heavy else theta.get(m, np.nan) for m in methods]
    data = [e + s for e, s in zip(errs, shifts, strict=True)]
    pos = [i for i, d in enumerate(data) if d.size]
    if pos:
        art = ax.boxplot([data[i] for i in pos], positions=pos, widths=0.55, whis=(5, 95),
                         showfliers=False, patch_artist=True, medianprops={"color": "black"},
                         zorder=2)
        for patch in art["boxes"]:
            patch.set_facecolor("none")
    for i, d in enumerate(data):
        if not d.size:
            ax.text(i, 0.5, "no estimates", rotation=90, ha="center", va="center", fontsize=7,
                    color="0.4", transform=ax.get_xaxis_transform())
            continue
        size = 6 if d.size <= 200 else 3
        tag(ax.scatter(i + rng.uniform(-0.22, 0.22, d.size), d, s=size, color=cmap[i],
                       alpha=0.45, lw=0, zorder=3, rasterized=d.size > 2000), methods[i])
    truth_lines(ax, shifts)
    if heavy:
        lin = _nice(bulk_scale(errs))
        ax.set_yscale("symlog", linthresh=lin, linscale=2.0)
        pooled = np.concatenate([d for d in data if d.size] or [np.zeros(1)])
        tr = ax.yaxis.get_transform()
        a, b = tr.transform(np.array([min(pooled.min(), 0.0), max(pooled.max(), 0.0)]))
        pad = 0.06 * (b - a) if b > a else 1.0
        ax.set_ylim(*tr.inverted().transform(np.array([a - pad, b + pad])))
        _symlog_ticks(ax, lin)


def plot_estimate_strips(estimates: pd.DataFrame, summary: Any, path: str | Path, *,
                         term: str, cells: Sequence[str] | None = None,
                         methods: Sequence[str] | None = None,
                         include_flagged: bool = False) -> Path:
    """Each replication's estimate of ``term`` per method, one panel per cell.

    Parameters
    ----------
    estimates : DataFrame
        Per-replication estimates of the run.
    summary : RunSummary
        Its summary (true values, cell names and order).
    path : path
        PNG file to write.
    term : str
    cells : sequence of str, optional
        Scenario keys (default :func:`estimate_cells`: the eight whose tails reach
        farthest, or every cell when there are at most eight).
    methods : sequence of str, optional
    include_flagged : bool
        Also draw flagged fits that have estimates (default: the proper fits the
        summary uses).

    Returns
    -------
    Path
    """
    plt = require_matplotlib()
    est = _used(estimates, term, include_flagged)
    if est.empty:
        raise MicroMacroError(f"plots: no finite estimates of term {term!r}")
    theta = _theta(summary, term)
    cells = list(cells) if cells is not None else estimate_cells(
        estimates, summary, term, include_flagged=include_flagged)
    methods = list(methods) if methods is not None else list(dict.fromkeys(est["method"]))
    errs = {k: _errors(est, k, methods, theta[k]) for k in cells}
    heavy = any(np.abs(np.concatenate(e)).max(initial=0.0) > HEAVY * bulk_scale(e)
                for e in errs.values())
    ncols = min(len(cells), 4)
    nrows = math.ceil(len(cells) / ncols)
    fig, axes = plt.subplots(nrows, ncols, squeeze=False,
                             figsize=(_PANEL_W * ncols, _PANEL_H * nrows + 0.9))
    cmap, names, rng = colors(plt, len(methods)), cell_names(summary), np.random.default_rng(0)
    rotate = max(len(m) for m in methods) * 0.075 > 0.8 * _PANEL_W / len(methods)
    for ax, key in zip(axes.flat, cells, strict=False):
        _strip(ax, errs[key], cmap, theta[key], heavy, rng, methods)
        ax.set_xticks(range(len(methods)))
        ax.set_xticklabels(methods, rotation=35 if rotate else 0,
                           ha="right" if rotate else "center", fontsize=7.5)
        ax.set_xlim(-0.6, len(methods) - 0.4)
        ax.set_title(wrap(names.get(key, key), _PANEL_W * 0.9), fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="y", color="0.92", lw=0.8)
        ax.set_axisbelow(True)
    for ax in axes.flat[len(cells):]:
        ax.set_visible(False)
    for r in range(nrows):
        axes[r, 0].set_ylabel(f"{term}: estimate - true value" if heavy
                              else f"estimate of {term}", fontsize=8)
    _note(fig, term, heavy, len(cells), len(theta))
    return save(fig, plt, path)


def _note(fig: Any, term: str, heavy: bool, shown: int, total: int) -> None:
    note = (f"Term {term}: every replication's estimate (points, jittered), box: quartiles, "
            "whiskers: 5% and 95%; dashed: the true value (each method's estimand)")
    if heavy:
        note += ("; heavy tails: the axis is the estimation error on a symmetric-log scale, "
                 "linear within twice the methods' typical upper-quartile error, "
                 "logarithmic beyond")
    if shown < total:
        note += f"; the {shown} of {total} cells whose tails reach farthest"
    text = wrap(note, fig.get_size_inches()[0])
    h = fig.get_size_inches()[1]
    fig.tight_layout(rect=(0, (0.1 + 0.15 * (text.count("\n") + 1)) / h, 1, 1))
    fig.text(0.5, 0.004, text, ha="center", va="bottom", fontsize=8, color="0.3")
