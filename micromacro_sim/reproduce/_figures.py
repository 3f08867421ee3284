"""Figures of the reproductions: published values (or analytic limits, or nominal rates)
beside this run's, drawn by :meth:`Reproduction.write_figures`.

Each helper returns a function of the output path, so a study lists its figures without
importing matplotlib (optional) until they are drawn.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["cell_label", "clark2020_figures", "comparison", "rate_figure"]

Drawer = Callable[[Path], Path]
#: Short names of the design factors in a cell's label.
SHORT = {"n_groups": "G", "group_size": "n", "icc": "icc", "r_zxi": "r", "beta_z": "bz",
         "beta_xi": "bxi", "sigma2_nu": "s2nu", "reliability": "rel"}


def cell_label(frame: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    """A compact cell name per row, e.g. ``G=100 n=10 icc=0.1 r=0.3``."""
    parts = [frame[c].map(lambda v, c=c: f"{SHORT.get(c, c)}={_short(v)}") for c in columns]
    out = parts[0]
    for p in parts[1:]:
        out = out + " " + p
    return out


def _short(v: Any) -> str:
    if isinstance(v, (float, np.floating)):
        return f"{float(v):g}"
    return str(v)


def comparison(frame: pd.DataFrame, **kwargs: Any) -> Drawer:
    """Draw ``frame`` with :func:`~micromacro_sim.reporting.figures.published.plot_published`."""

    def draw(path: Path) -> Path:
        from micromacro_sim.reporting.figures.published import plot_published

        return plot_published(frame, path, **kwargs)

    return draw


def rate_figure(reject: pd.DataFrame, *, alpha: float = 0.05, power: float = 0.80,
                band: tuple[float, float] | None = None,
                se_types: Sequence[str] = ("classical", "HC0", "HC1", "HC2", "HC3")) -> Drawer:
    """Type I error and power of every method, term and SE type against the nominal lines.

    Parameters
    ----------
    reject : DataFrame
        Rejection table: method, term, test ("Type I" / "power"), ``reject_<SE>`` and
        ``reject_<SE>_mcse`` per cell.
    alpha, power : float
        Reference lines of the two panels.
    band : (float, float), optional
        A shaded band in the Type I panel (e.g. Bradley's [.025, .075]).
    se_types : sequence of str
        SE types drawn (one row each per method and term).
    """
    return partial(_draw_rates, reject, alpha=alpha, power=power, band=band,
                   se_types=tuple(se_types))


def _rows(reject: pd.DataFrame, test: str, se_types: tuple[str, ...]) -> pd.DataFrame:
    """Mean rate over cells with its MCSE, and every cell's rate, per row of the panel.

    Rows: term, then (power) the true value, then method, then SE type, each in the
    table's order.
    """
    rows = []
    sub = reject[reject["test"] == test]
    by = ["term", "theta", "method"] if test == "power" and "theta" in sub else ["term",
                                                                                "method"]
    order = {c: list(dict.fromkeys(sub[c])) for c in by}
    groups = sorted(sub.groupby(by, sort=False),
                    key=lambda kg: tuple(order[c].index(v) for c, v in zip(by, kg[0],
                                                                           strict=True)))
    for key, g in groups:
        head = (f"{key[0]}={_short(key[1])}  {key[2]}" if len(by) == 3
                else f"{key[0]}  {key[1]}")
        for se in se_types:
            col = f"reject_{se}"
            if col not in g.columns:
                continue
            v = g[col].to_numpy(dtype=float)
            m = (g[f"{col}_mcse"].to_numpy(dtype=float) if f"{col}_mcse" in g.columns
                 else np.full(v.size, np.nan))
            ok = np.isfinite(v)
            if not ok.any():
                continue
            rows.append({"label": f"{head}  {se}", "group": key, "mean": float(v[ok].mean()),
                         "mcse": float(np.sqrt(np.nansum(m[ok] ** 2)) / ok.sum()),
                         "cells": v[ok]})
    return pd.DataFrame(rows)


def _rate_panel(ax: Any, rows: pd.DataFrame, ref: float, band: tuple[float, float] | None,
                title: str, *, zoom: bool = False) -> list[Any]:
    from micromacro_sim.reporting.figures.common import Z_MCSE

    if band is not None:
        ax.axvspan(*band, color="0.9", zorder=0)
    ax.axvline(ref, color="0.3", lw=1.0, ls="--", zorder=1)
    rng = np.random.default_rng(0)  # jitter only: fixed, so the figure is reproducible
    h_cell = h_mean = None
    for i, r in enumerate(rows.itertuples(index=False)):
        y = i + rng.uniform(-0.22, 0.22, r.cells.size)
        h_cell = ax.scatter(r.cells, y, s=7, color="#9bb8d3", alpha=0.8, lw=0, zorder=2)
        h_mean = ax.errorbar(r.mean, i, xerr=Z_MCSE * r.mcse if np.isfinite(r.mcse) else 0,
                             fmt="o", ms=5, color="#1f4e79", elinewidth=1.6, capsize=2.5,
                             lw=0, zorder=3)
    groups = list(rows["group"])
    for i in range(1, len(groups)):
        if groups[i] != groups[i - 1]:
            ax.axhline(i - 0.5, color="0.75", lw=0.7, zorder=0)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(rows["label"], fontsize=8)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    if zoom:  # Type I: rates near alpha
        top = max(np.concatenate(list(rows["cells"])).max(), (band or (0, 0))[1], ref) * 1.15
        ax.set_xlim(-0.005, min(1.02, max(0.12, top)))
    else:
        ax.set_xlim(-0.02, 1.02)
    ax.grid(axis="x", color="0.92", lw=0.8)
    ax.set_axisbelow(True)
    ax.tick_params(labelsize=8)
    ax.set_title(title, fontsize=9, loc="left")
    ax.set_xlabel("rejection rate", fontsize=9)
    return [h_mean, h_cell]


def _draw_rates(reject: pd.DataFrame, path: Path, *, alpha: float, power: float,
                band: tuple[float, float] | None, se_types: tuple[str, ...]) -> Path:
    from micromacro_sim.core.errors import MicroMacroError
    from micromacro_sim.reporting.figures.common import MAX_WIDTH, finish, require_matplotlib, save

    panels = [(test, _rows(reject, test, se_types)) for test in ("Type I", "power")]
    panels = [(t, r) for t, r in panels if not r.empty]
    if not panels:
        raise MicroMacroError("plots: the rejection table has no rate")
    plt = require_matplotlib()
    n = max(len(r) for _, r in panels)
    fig, axes = plt.subplots(1, len(panels), squeeze=False, sharey=False,
                             figsize=(min(MAX_WIDTH, 5.5 * len(panels)), 0.32 * n + 1.9))
    handles: list[Any] = []
    for ax, (test, rows) in zip(axes[0], panels, strict=True):
        if test == "Type I":
            handles = _rate_panel(ax, rows, alpha, band, "Type I error (true value 0)",
                                  zoom=True)
        else:
            handles = _rate_panel(ax, rows, power, None, "power (true value != 0)")
    bradley = f", grey band: [{band[0]:g}, {band[1]:g}]" if band is not None else ""
    finish(fig, handles, ["this run: mean over cells", "this run: one cell"],
           f"dashed: alpha = {alpha:g} (Type I error{bradley}) and {power:.2f} (power); dark: "
           "mean rate over the cells +/- 2 MCSE (sqrt(sum mcse^2)/cells); light: each cell's "
           "rate. No published numbers: the lines are the nominal references.")
    return save(fig, plt, path)


_BARS = ("bars: +/- 2 MCSE; published: +/- 2 MCSE from Clark's saved estimates where they "
         "exist, else half a unit of the last printed digit")


def clark2020_figures(tables: dict[str, pd.DataFrame],
                      not_comparable: str) -> dict[str, Drawer]:
    """Clark (2020): the published numbers beside this run's: percent bias (both cells),
    robust location, reliability and the empirical SD. Rows whose verdict is
    ``not_comparable`` say so in their label."""
    b16 = tables["percent_bias"].assign(row=lambda f: f["method"])
    brel = tables["percent_bias_reliable"].assign(
        row=lambda f: f["method"] + " (sigma2_nu = 1)")
    bias = pd.concat([b16, brel], ignore_index=True)
    bias.loc[bias["verdict"] == not_comparable, "row"] += " (CV Adj: not comparable)"
    return {
        "percent_bias": comparison(
            bias, label_columns=("row",), facet="term", published_mcse="mcse_pub",
            rounding=5e-4, reference=0.0, xlabel="percent bias",
            title="Percent bias, row 16 (sigma2_nu = 9) and the reliable cell", note=_BARS),
        "robust": comparison(
            tables["robust"], label_columns=("method", "stat"), facet="term",
            published_mcse="mcse_pub", reference=0.0,
            xlabel="percent bias of the median / 10% trimmed mean",
            title="Robust location, row 16",
            note="bars: +/- 2 bootstrap MCSE on both sides"),
        "reliability": comparison(
            tables["reliability"], label_columns=("cell", "statistic"), rounding=5e-3,
            xlabel="standardized coefficient alpha", title="Reliability of the group means",
            note="bars: +/- 2 MCSE of this run's mean; published: half a unit of its last "
            "digit (its MCSE is unknown); the maximum has no MCSE"),
        "empirical_sd": comparison(
            tables["empirical_sd"], label_columns=("method",), published_mcse="mcse_pub",
            rounding=5e-4, xlabel="empirical SD of the xi estimate",
            title="Empirical SD of xi, row 16", note=_BARS),
    }
