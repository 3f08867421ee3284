"""Figures of a run summary: percent bias, coverage and rejection, spread of the estimates.

Every function draws one PNG file and returns its path. matplotlib is an optional
dependency (``pip install 'micromacro-sim[plots]'``); it is imported inside the functions
and always with the non-interactive Agg backend, so the module imports without it and
figures can be drawn on a machine without a display.

Error bars are +/- 2 Monte Carlo SEs (MCSE, Morris, White & Crowther 2019). Coverage and
Type I error panels shade the Monte Carlo acceptance band around the nominal level,
``nominal +/- 2 sqrt(nominal (1 - nominal) / K)``: with K replications, a method whose
true rate is nominal lands outside it about 5% of the time.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import MicroMacroError
from .estimators import SE_TYPES
from .fields import true_value
from .summarize import RunSummary

__all__ = [
    "acceptance_band",
    "plot_coverage",
    "plot_estimates",
    "plot_percent_bias",
    "plot_rejection",
    "require_matplotlib",
    "short_labels",
]

Z_MCSE = 2.0  # error bars: +/- 2 MCSE
DPI = 110


def require_matplotlib() -> Any:
    """Import matplotlib with the Agg backend and return ``matplotlib.pyplot``.

    Raises
    ------
    MicroMacroError
        matplotlib is not installed; the message names the extra that installs it.
    """
    try:
        import matplotlib
    except ImportError:
        raise MicroMacroError(
            "plots: matplotlib is not installed; install it with "
            "pip install 'micromacro-sim[plots]'"
        ) from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def acceptance_band(nominal: float, k: int | np.ndarray) -> tuple[Any, Any]:
    """Monte Carlo acceptance band ``nominal +/- 2 sqrt(nominal (1 - nominal) / K)``.

    Parameters
    ----------
    nominal : float
        Nominal rate (coverage 1 - alpha, or the test level alpha).
    k : int or ndarray
        Replications behind the rate.

    Returns
    -------
    (low, high)
    """
    half = 2.0 * np.sqrt(nominal * (1.0 - nominal) / np.asarray(k, dtype=float))
    return nominal - half, nominal + half


def short_labels(labels: Sequence[str]) -> list[str]:
    """Scenario labels without the words every label shares (``G=100 n=10 ICC=0.1`` ...).

    A single label, or labels that share every word, are returned as they are.
    """
    words = [str(lab).split() for lab in labels]
    if len(words) < 2:
        return [str(lab) for lab in labels]
    common = set(words[0]).intersection(*map(set, words[1:]))
    out = [" ".join(w for w in ws if w not in common) for ws in words]
    if any(not s for s in out):
        return [str(lab) for lab in labels]
    return out


# ---------------------------------------------------------------------------- helpers
def _ordered(values: pd.Series) -> list[Any]:
    return list(dict.fromkeys(values.tolist()))


def _colors(plt: Any, n: int) -> list[Any]:
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def _layout(perf: pd.DataFrame) -> tuple[list[str], list[str], list[str], list[str]]:
    scenarios = _ordered(perf["scenario"])
    labels = perf.drop_duplicates("scenario").set_index("scenario").loc[scenarios, "label"]
    methods = _ordered(perf["method"])
    terms = _ordered(perf["term"])
    return scenarios, short_labels(list(labels)), methods, terms


def _offsets(n_methods: int) -> tuple[np.ndarray, float]:
    width = min(0.8, 0.16 * n_methods)
    step = width / n_methods
    return (np.arange(n_methods) - (n_methods - 1) / 2) * step, step


def _cell_axis(ax: Any, labels: list[str]) -> None:
    ax.set_xticks(np.arange(len(labels)))
    rotate = max(len(s) for s in labels) * len(labels) > 60
    ax.set_xticklabels(labels, rotation=30 if rotate else 0, ha="right" if rotate else "center",
                       fontsize=8)
    ax.set_xlim(-0.6, len(labels) - 0.4)
    for x in np.arange(len(labels) - 1) + 0.5:
        ax.axvline(x, color="0.9", lw=0.8, zorder=0)
    ax.grid(axis="y", color="0.92", lw=0.8)
    ax.set_axisbelow(True)


def _save(fig: Any, plt: Any, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _note(fig: Any, note: str) -> None:
    """A grey note along the bottom edge (wrapped to the figure width)."""
    fig.text(0.5, 0.004, note, ha="center", va="bottom", fontsize=8, color="0.3")


def _wrap(fig: Any, note: str) -> tuple[str, float]:
    """Wrap ``note`` to the figure width; return it and the strip height it needs (inches)."""
    width = max(20, int(fig.get_size_inches()[0] * 15))
    text = textwrap.fill(note, width)
    return text, 0.08 + 0.15 * (text.count("\n") + 1)


def _finish(fig: Any, handles: list[Any], labels: list[str], note: str) -> None:
    """Lay out the panels, then add the method legend on top and the note at the bottom."""
    ncol = min(len(labels), 6)
    rows = math.ceil(len(labels) / ncol)
    text, strip = _wrap(fig, note)
    _tight(fig, top_inches=0.1 + 0.25 * rows, bottom_inches=strip)
    fig.legend(handles, labels, loc="upper center", ncol=ncol, frameon=False, fontsize=9,
               bbox_to_anchor=(0.5, 1.0))
    _note(fig, text)


def _tight(fig: Any, top_inches: float = 0.35, bottom_inches: float = 0.25) -> None:
    """Tight layout leaving fixed strips for the legend (top) and the note (bottom)."""
    height = fig.get_size_inches()[1]
    fig.tight_layout(rect=(0, bottom_inches / height, 1, 1 - top_inches / height))


WIDE = 24  # points per panel above which panels are stacked in one column


def _panel_width(n_cells: int, n_methods: int) -> float:
    """Inches per panel: room for every method's point in every cell."""
    return float(min(16.0, max(3.2, 0.14 * n_cells * max(n_methods, 2) + 1.4)))


# ---------------------------------------------------------------------------- bias
def plot_percent_bias(summary: RunSummary, path: str | Path, *,
                      terms: Sequence[str] | None = None) -> Path:
    """Percent bias by method across scenario cells, +/- 2 MCSE, one panel per term.

    A term whose true value is 0 in every cell has no percent bias: its panel shows the
    bias instead. Cells with a true value of 0 among others are marked ``theta=0``.

    Parameters
    ----------
    summary : RunSummary
    path : path
        PNG file to write.
    terms : sequence of str, optional
        Terms to draw (default: all, in model order).

    Returns
    -------
    Path
        ``path``.
    """
    plt = require_matplotlib()
    perf = summary.performance
    scenarios, labels, methods, all_terms = _layout(perf)
    terms = list(terms) if terms is not None else all_terms
    wide = len(scenarios) * len(methods) > WIDE
    ncols = 1 if wide else min(len(terms), 3)
    w = _panel_width(len(scenarios), len(methods))
    nrows = math.ceil(len(terms) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(w * ncols, 3.4 * nrows), squeeze=False)
    colors = _colors(plt, len(methods))
    offs, _ = _offsets(len(methods))
    xpos = {s: i for i, s in enumerate(scenarios)}
    handles: list[Any] = []
    for ax, term in zip(axes.flat, terms, strict=False):
        sub = perf[perf["term"] == term]
        use_pct = bool(np.isfinite(sub["pct_bias"].to_numpy(dtype=float)).any())
        col, mcse = ("pct_bias", "pct_bias_mcse") if use_pct else ("bias", "bias_mcse")
        ax.axhline(0, color="0.2", lw=0.9)
        handles = []
        for j, m in enumerate(methods):
            rows = sub[sub["method"] == m]
            x = rows["scenario"].map(xpos).to_numpy(dtype=float) + offs[j]
            y = rows[col].to_numpy(dtype=float)
            e = Z_MCSE * rows[mcse].to_numpy(dtype=float)
            h = ax.errorbar(x, y, yerr=np.where(np.isfinite(e), e, 0.0), fmt="o", ms=4,
                            color=colors[j], ecolor=colors[j], elinewidth=1.2, capsize=2)
            handles.append(h)
        if use_pct:
            zero = sub.loc[sub["theta"] == 0, "scenario"].drop_duplicates()
            for s in zero:
                ax.annotate("theta=0", (xpos[s], 0), xytext=(0, 4), textcoords="offset points",
                            ha="center", fontsize=7, color="0.4")
        _cell_axis(ax, labels)
        if wide and term != terms[-1]:
            ax.set_xticklabels([])
        ax.set_title(term, fontsize=10)
        ax.set_ylabel("percent bias" if use_pct else "bias (true value 0)", fontsize=9)
    for ax in axes.flat[len(terms):]:
        ax.set_visible(False)
    _finish(fig, handles, methods,
            f"points: mean over replications; bars: +/- {Z_MCSE:g} Monte Carlo SE")
    return _save(fig, plt, Path(path))


# ---------------------------------------------------------------------------- rates
def _rates(summary: RunSummary, path: str | Path, *, measure: str, alpha: float,
           terms: Sequence[str] | None, se_types: Sequence[str] | None) -> Path:
    plt = require_matplotlib()
    perf = summary.performance
    scenarios, labels, methods, all_terms = _layout(perf)
    terms = list(terms) if terms is not None else all_terms
    se_types = [t for t in (se_types or SE_TYPES) if f"{measure}_{t}" in perf.columns]
    if not se_types:
        raise MicroMacroError(f"plots: the summary has no {measure} rates (no standard errors)")
    nominal = 1 - alpha if measure == "cover" else alpha
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Rectangle

    # small grids: rows = terms, columns = SE types; large grids: one wide panel per
    # (term, SE type), stacked
    wide = len(scenarios) * len(methods) > WIDE
    panels = [(t, se) for t in terms for se in se_types]
    if wide:
        nrows, ncols = len(panels), 1
        w, h = _panel_width(len(scenarios), len(methods)), 2.6
    else:
        nrows, ncols = len(terms), len(se_types)
        w, h = min(_panel_width(len(scenarios), len(methods)), 6.0), 3.0
    fig, axes = plt.subplots(nrows, ncols, figsize=(w * ncols, h * nrows), squeeze=False,
                             sharey="row" if not wide else False)
    colors = _colors(plt, len(methods))
    offs, step = _offsets(len(methods))
    xpos = {s: i for i, s in enumerate(scenarios)}
    handles: list[Any] = []
    any_target = False
    for n, (term, se) in enumerate(panels):
        r, c = (n, 0) if wide else divmod(n, ncols)
        ax = axes[r, c]
        sub = perf[perf["term"] == term]
        handles = []
        boxes, segs = [], []
        for j, m in enumerate(methods):
            rows = sub[sub["method"] == m]
            x = rows["scenario"].map(xpos).to_numpy(dtype=float) + offs[j]
            y = rows[f"{measure}_{se}"].to_numpy(dtype=float)
            e = Z_MCSE * rows[f"{measure}_{se}_mcse"].to_numpy(dtype=float)
            e = np.where(np.isfinite(e), e, 0.0)
            err = np.vstack([np.minimum(e, y), np.minimum(e, 1 - y)])  # rates lie in [0, 1]
            # the band applies where the nominal level is the target: always for
            # coverage, only under a true null (theta = 0) for rejection
            target = np.ones(len(rows), bool) if measure == "cover" else (
                rows["theta"].to_numpy(dtype=float) == 0)
            lo, hi = acceptance_band(nominal, rows["k"].to_numpy(dtype=float))
            lo, hi = np.clip(lo, 0, 1), np.clip(hi, 0, 1)
            any_target |= bool(target.any())
            for xc, a, b in zip(x[target], lo[target], hi[target], strict=True):
                boxes.append(Rectangle((xc - step / 2, a), step, b - a))
                segs.append(xc)
            handles.append(ax.errorbar(x, y, yerr=err, fmt="o", ms=4, color=colors[j],
                                       ecolor=colors[j], elinewidth=1.2, capsize=2,
                                       zorder=3))
        if boxes:
            ax.add_collection(PatchCollection(boxes, facecolor="0.85", edgecolor="none",
                                              zorder=0))
            xs = np.asarray(segs)
            ax.hlines(np.full(xs.size, nominal), xs - step / 2, xs + step / 2, color="0.35",
                      lw=1, zorder=1)
        _cell_axis(ax, labels)
        ylab = "coverage" if measure == "cover" else (
            "Type I error" if (sub["theta"] == 0).all() else
            "power" if (sub["theta"] != 0).all() else "rejection rate")
        if wide:
            ax.set_title(f"{term}, {se} SE", fontsize=10)
            ax.set_ylabel(ylab, fontsize=9)
            if r < nrows - 1:
                ax.set_xticklabels([])
        else:
            if r == 0:
                ax.set_title(se, fontsize=10)
            if c == 0:
                ax.set_ylabel(f"{term}\n{ylab}", fontsize=9)
            if r < nrows - 1:
                ax.set_xticklabels([])
    what = "coverage" if measure == "cover" else "rejection"
    note = (f"{what} of {100 * (1 - alpha):g}% intervals" if measure == "cover"
            else f"rejection at alpha = {alpha:g} (power where the true value is not 0)")
    note += f"; bars: +/- {Z_MCSE:g} MCSE"
    if any_target:
        note += f"; grey: nominal {nominal:g} +/- 2 sqrt({nominal:g}(1-{nominal:g})/K) band"
    else:
        note += "; no true value is 0 here, so no rejection rate has a nominal target"
    _finish(fig, handles, methods, note)
    return _save(fig, plt, Path(path))


def plot_coverage(summary: RunSummary, path: str | Path, *, alpha: float = 0.05,
                  terms: Sequence[str] | None = None,
                  se_types: Sequence[str] | None = None) -> Path:
    """Coverage of the (1 - alpha) intervals per SE type against the nominal level.

    One row of panels per term, one column per SE type; points +/- 2 MCSE and, per point,
    the nominal level with its Monte Carlo acceptance band (:func:`acceptance_band`).

    Parameters
    ----------
    summary : RunSummary
        Summarized with the same ``alpha``.
    path : path
        PNG file to write.
    alpha : float
        Nominal level of the intervals (coverage 1 - alpha).
    terms, se_types : sequence of str, optional
        Subsets to draw (default: all).

    Returns
    -------
    Path
    """
    return _rates(summary, path, measure="cover", alpha=alpha, terms=terms, se_types=se_types)


def plot_rejection(summary: RunSummary, path: str | Path, *, alpha: float = 0.05,
                   terms: Sequence[str] | None = None,
                   se_types: Sequence[str] | None = None) -> Path:
    """Rejection rate of H0: term = 0 per SE type.

    Where the true value is 0 the rate is a Type I error and is drawn against alpha with
    its acceptance band; elsewhere it is power and has no nominal target.

    Parameters
    ----------
    summary : RunSummary
    path : path
    alpha : float
        Level of the tests.
    terms, se_types : sequence of str, optional

    Returns
    -------
    Path
    """
    return _rates(summary, path, measure="reject", alpha=alpha, terms=terms, se_types=se_types)


# ---------------------------------------------------------------------------- spread
_LABEL_BOX = {"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85}


def _clip_tails(ax: Any, data: list[np.ndarray], truth: float) -> bool:
    """Cut the y axis of a heavy-tailed panel and count what lies beyond; True if cut."""
    pooled = np.concatenate([d for d in data if d.size]) if any(d.size for d in data) else None
    if pooled is None or pooled.size < 20:
        return False
    q_lo, q_hi = np.quantile(pooled, [0.005, 0.995])
    if np.isfinite(truth):
        q_lo, q_hi = min(q_lo, truth), max(q_hi, truth)
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
                   kind: str = "box", include_flagged: bool = False) -> Path:
    """Distribution of one term's estimates per method, one panel per scenario.

    Parameters
    ----------
    estimates : DataFrame
        Per-replication estimates (:func:`micromacro_sim.storage.read_table`).
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
        as :func:`~micromacro_sim.summarize.summarize_run` uses).

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
        finite &= (est["converged"] & est["admissible"]).to_numpy(dtype=bool)
    est = est[finite]
    keys = [k for k in scenarios["scenario"] if k in set(est["scenario"])]
    if not keys:
        raise MicroMacroError(f"plots: no finite estimates of term {term!r}")
    methods = list(methods) if methods is not None else _ordered(est["method"])
    scen = scenarios.set_index("scenario")
    labels = dict(zip(keys, short_labels(list(scen.loc[keys, "label"])), strict=True))
    ncols = min(len(keys), 4)
    nrows = math.ceil(len(keys) / ncols)
    w = max(2.8, 0.55 * len(methods) + 1.2)
    fig, axes = plt.subplots(nrows, ncols, figsize=(w * ncols, 3.3 * nrows), squeeze=False)
    colors = _colors(plt, len(methods))
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
                patch.set_facecolor(colors[i])
                patch.set_alpha(0.6)
        else:
            art = ax.violinplot(shown, positions=pos, widths=0.7, showmedians=True)
            for body, i in zip(art["bodies"], pos, strict=True):
                body.set_facecolor(colors[i])
                body.set_alpha(0.6)
        for i, d in enumerate(data):
            if not d.size:
                ax.text(i, 0.5, "no estimates", rotation=90, ha="center", va="center",
                        fontsize=7, color="0.4", transform=ax.get_xaxis_transform())
        try:
            truth = true_value(scen.loc[key], term)
        except KeyError:  # no field holds this term's true value
            truth = float("nan")
        if np.isfinite(truth):
            ax.axhline(truth, color="crimson", lw=1, ls="--", zorder=0)
        cut |= _clip_tails(ax, data, truth)
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
    note, strip = _wrap(fig, note)
    _tight(fig, top_inches=0.0, bottom_inches=strip)
    _note(fig, note)
    return _save(fig, plt, Path(path))
