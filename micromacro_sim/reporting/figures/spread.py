"""Distribution of one term's estimates per method, one panel per scenario (box or violin).

Heavy-tailed panels are cut at the pooled 0.5% and 99.5% quantiles (widened by 20%),
with the number of estimates beyond each edge written at it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from micromacro_sim.core.errors import MicroMacroError
from micromacro_sim.design.fields import true_value
from micromacro_sim.reporting.figures.common import (
    colors,
    require_matplotlib,
    save,
    truth_lines,
    wrap,
)
from micromacro_sim.summaries.factors import cell_labels

__all__ = ["plot_estimates"]


_LABEL_BOX = {"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85}


def _clip_tails(ax: Any, data: list[np.ndarray], truth: list[float]) -> bool:
    """Cut the y axis of a heavy-tailed panel and count what lies beyond; True if cut."""
    pooled = np.concatenate([d for d in data if d.size]) if any(d.size for d in data) else None
    if pooled is None or pooled.size < 20:
        return False
    q_lo, q_hi = np.quantile(pooled, [0.005, 0.995])
    shown = [t for t in truth if np.isfinite(t)]
    if shown:
        q_lo, q_hi = min(q_lo, *shown), max(q_hi, *shown)
    pad = 0.2 * (q_hi - q_lo) if q_hi > q_lo else 1.0
    lo, hi = q_lo - pad, q_hi + pad
    full = max(pooled.max(), hi) - min(pooled.min(), lo)
    if full <= 1.5 * (hi - lo):  # tails do not squash the boxes: keep every point
        return False
    ax.set_ylim(lo, hi)
    for i, d in enumerate(data):
        above, below = int((d > hi).sum()), int((d < lo).sum())
        if above:
            ax.annotate(f"{above}\u2191", (i, hi), xytext=(0, -2), textcoords="offset points",
                        ha="center", va="top", fontsize=7, color="0.25", bbox=_LABEL_BOX)
        if below:
            ax.annotate(f"{below}\u2193", (i, lo), xytext=(0, 2), textcoords="offset points",
                        ha="center", va="bottom", fontsize=7, color="0.25", bbox=_LABEL_BOX)
    return True


def plot_estimates(estimates: pd.DataFrame, scenarios: pd.DataFrame, path: str | Path, *,
                   term: str = "xi", methods: Sequence[str] | None = None,
                   kind: str = "box", include_flagged: bool = False,
                   truth: Mapping[tuple[str, str], float] | None = None) -> Path:
    """Distribution of one term's estimates per method, one panel per scenario.

    Parameters
    ----------
    estimates : DataFrame
        Per-replication estimates (:func:`micromacro_sim.run.storage.read_table`).
    scenarios : DataFrame
        The run's ``scenarios.parquet`` (``scenario``, ``label`` and true values).
    path : path
        PNG file to write.
    term : str
        Term to draw (default ``xi``).
    methods : sequence of str, optional
        Methods in display order (default: order of appearance).
    kind : {"box", "violin"}
    include_flagged : bool
        Also draw flagged fits (default: only converged, admissible, finite estimates,
        as :func:`~micromacro_sim.summaries.summarize.summarize_run` uses).
    truth : mapping, optional
        (scenario, method) -> the value the method is scored against (a summary's
        ``theta`` column: each method's estimand, docs/estimands.md). Default: the
        scenarios table's latent-scale value for every method.

    Returns
    -------
    Path
    """
    if kind not in ("box", "violin"):
        raise ValueError(f"kind: expected 'box' or 'violin', got {kind!r}")
    plt = require_matplotlib()
    est = estimates[estimates["term"] == term]
    finite = np.isfinite(est["estimate"].to_numpy(dtype=float))
    if not include_flagged:
        finite &= ((est["status"] == "ok") if "status" in est.columns
                   else (est["converged"] & est["admissible"])).to_numpy(dtype=bool)
    est = est[finite]
    keys = [k for k in scenarios["scenario"] if k in set(est["scenario"])]
    if not keys:
        raise MicroMacroError(f"plots: no finite estimates of term {term!r}")
    methods = list(methods) if methods is not None else list(dict.fromkeys(est["method"]))
    scen = scenarios.set_index("scenario")
    labels = cell_labels(scenarios[scenarios["scenario"].isin(keys)])
    ncols = min(len(keys), 4)
    nrows = math.ceil(len(keys) / ncols)
    w = max(2.8, 0.55 * len(methods) + 1.2)
    fig, axes = plt.subplots(nrows, ncols, figsize=(w * ncols, 3.3 * nrows), squeeze=False)
    cmap = colors(plt, len(methods))
    cut = False
    for ax, key in zip(axes.flat, keys, strict=False):
        sub = est[est["scenario"] == key]
        data = [sub.loc[sub["method"] == m, "estimate"].to_numpy(dtype=float) for m in methods]
        pos = [i for i, d in enumerate(data) if d.size]
        shown = [data[i] for i in pos]
        if kind == "box":
            art = ax.boxplot(shown, positions=pos, widths=0.6, patch_artist=True,
                             medianprops={"color": "black"},
                             flierprops={"marker": ".", "ms": 3, "alpha": 0.5})
            for patch, i in zip(art["boxes"], pos, strict=True):
                patch.set_facecolor(cmap[i])
                patch.set_alpha(0.6)
        else:
            art = ax.violinplot(shown, positions=pos, widths=0.7, showmedians=True)
            for body, i in zip(art["bodies"], pos, strict=True):
                body.set_facecolor(cmap[i])
                body.set_alpha(0.6)
        for i, d in enumerate(data):
            if not d.size:
                ax.text(i, 0.5, "no estimates", rotation=90, ha="center", va="center",
                        fontsize=7, color="0.4", transform=ax.get_xaxis_transform())
        values = [_truth(truth, scen, key, m, term) for m in methods]
        truth_lines(ax, values)
        cut |= _clip_tails(ax, data, values)
        ax.set_xticks(range(len(methods)))
        rotate = max(len(m) for m in methods) * 0.075 > 0.8 * w / len(methods)
        ax.set_xticklabels(methods, rotation=35 if rotate else 0,
                           ha="right" if rotate else "center", fontsize=8)
        ax.set_xlim(-0.6, len(methods) - 0.4)
        ax.set_title(labels[key], fontsize=9)
        ax.grid(axis="y", color="0.92", lw=0.8)
        ax.set_axisbelow(True)
    for ax in axes.flat[len(keys):]:
        ax.set_visible(False)
    for r in range(nrows):
        axes[r, 0].set_ylabel(f"estimate of {term}", fontsize=9)
    note = ("boxes: quartiles, whiskers 1.5 IQR" if kind == "box" else "violins"
            ) + "; dashed: true value"
    if cut:
        note += ("; heavy-tailed panels are cut at the pooled 0.5% and 99.5% quantiles "
                 "(widened by 20%): "
                 "numbers at an edge count the estimates beyond it")
    note = wrap(note, fig.get_size_inches()[0])
    h = fig.get_size_inches()[1]
    fig.tight_layout(rect=(0, (0.1 + 0.15 * (note.count("\n") + 1)) / h, 1, 1))
    fig.text(0.5, 0.004, note, ha="center", va="bottom", fontsize=8, color="0.3")
    return save(fig, plt, path)


def _truth(truth: Mapping[tuple[str, str], float] | None, scen: pd.DataFrame, key: str,
           method: str, term: str) -> float:
    """The value drawn for ``method`` in cell ``key``."""
    if truth is not None:
        return float(truth.get((key, method), np.nan))
    try:
        return true_value(scen.loc[key], term)
    except KeyError:  # no field holds this term's true value
        return float("nan")
