"""Heatmap of failed fits: scenario x method, colour = share of replications whose fit
was not ok (flagged, not applicable or an error), every tile annotated.

Rows are the scenarios where some method failed (in cell order; the note counts the
others), columns every method. The colour scale runs from 0 to 1 on a square-root
scale, so a failure rate of a few percent is visible beside one of 50%.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from micromacro_sim.reporting.figures.common import (
    MAX_WIDTH,
    cell_names,
    cell_order,
    require_matplotlib,
    save,
    tag,
    wrap,
)

__all__ = ["failure_shares", "plot_failure_heatmap"]

ROW_INCHES = 0.26


def failure_shares(summary: Any, methods: Sequence[str] | None = None):
    """(scenario keys, methods, shares): the share of replications not ok per scenario
    (rows: only scenarios with a failure, in cell order) and method (columns)."""
    f = summary.flags
    methods = list(methods) if methods is not None else list(dict.fromkeys(f["method"]))
    share = f.assign(share=f["n_flagged"] / f["n_reps"].where(f["n_reps"] > 0))
    wide = share.pivot_table(index="scenario", columns="method", values="share",
                             aggfunc="first", sort=False)
    order = [k for k in cell_order(summary) if k in wide.index]
    order += [k for k in wide.index if k not in order]
    wide = wide.reindex(index=order, columns=methods)
    keep = (wide.fillna(0) > 0).any(axis=1)
    return list(wide.index[keep]), methods, wide[keep].to_numpy(dtype=float)


def _tile_text(v: float) -> str:
    if not np.isfinite(v):
        return ""
    if v == 0:
        return "0"
    p = 100 * v
    return "<1%" if p < 1 else f"{p:.0f}%"


def plot_failure_heatmap(summary: Any, path: str | Path, *,
                         methods: Sequence[str] | None = None) -> Path | None:
    """Heatmap of the share of replications with a failed fit, scenario x method.

    Parameters
    ----------
    summary : RunSummary
    path : path
        PNG file to write.
    methods : sequence of str, optional
        Columns, in order (default: the run's methods).

    Returns
    -------
    Path or None
        None (nothing drawn) when no fit failed.
    """
    keys, methods, shares = failure_shares(summary, methods)
    if not keys:
        return None
    plt = require_matplotlib()
    from matplotlib.colors import PowerNorm

    names = cell_names(summary)
    labels = [names.get(k, k) for k in keys]
    label_w = min(4.5, 0.4 + 0.062 * max(len(s) for s in labels))
    width = min(MAX_WIDTH, label_w + 0.95 * len(methods) + 1.4)
    fig, ax = plt.subplots(figsize=(width, ROW_INCHES * len(keys) + 2.0))
    masked = np.ma.masked_where(~(shares > 0), shares)
    cmap = plt.get_cmap("YlOrRd").with_extremes(bad="white")
    img = ax.imshow(masked, aspect="auto", cmap=cmap, norm=PowerNorm(0.5, vmin=0, vmax=1),
                    interpolation="nearest")
    small = 7 if len(keys) <= 40 else 6
    for i in range(len(keys)):
        for j in range(len(methods)):
            v = shares[i, j]
            tag(ax.text(j, i, _tile_text(v), ha="center", va="center", fontsize=small,
                        color="white" if np.isfinite(v) and v > 0.45 else
                        ("0.55" if not v > 0 else "black")), methods[j])
    ax.set_xticks(range(len(methods)))
    rotate = max(len(m) for m in methods) > 10
    ax.set_xticklabels(methods, fontsize=8, rotation=35 if rotate else 0,
                       ha="right" if rotate else "center")
    ax.set_yticks(range(len(keys)))
    ax.set_yticklabels(labels, fontsize=7.5)
    ax.set_xticks(np.arange(len(methods) + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(len(keys) + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="0.85", lw=0.6)
    ax.tick_params(which="minor", length=0)
    bar = fig.colorbar(img, ax=ax, fraction=0.04, pad=0.02)
    bar.set_label("share of replications not ok", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    total = summary.flags["scenario"].nunique()
    note = ("Share of replications whose fit was flagged, not applicable or an error, per "
            "scenario and method (square-root colour scale; grey 0: no failure)")
    if len(keys) < total:
        note += f"; {total - len(keys)} of {total} scenarios without any failure are left out"
    text = wrap(note, width)
    fig.tight_layout(rect=(0, (0.1 + 0.15 * (text.count("\n") + 1)) / fig.get_size_inches()[1],
                           1, 1))
    fig.text(0.5, 0.004, text, ha="center", va="bottom", fontsize=8, color="0.3")
    return save(fig, plt, path)
