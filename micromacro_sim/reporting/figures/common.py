"""Shared pieces of the figures: matplotlib import, colours, cell order, layout, saving.

matplotlib is a dependency of the package (since 0.3.0); it is imported inside the
functions (a run never loads it), always with the Agg backend, so figures draw without a
display.
Figures are sized for the report (at most :data:`MAX_WIDTH` inches wide at :data:`DPI`),
so that they are shown at their own size and 8-point text stays readable.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from micromacro_sim.core.errors import MicroMacroError
from micromacro_sim.summaries.factors import factor_levels

__all__ = ["DPI", "MAX_WIDTH", "Z_MCSE", "acceptance_band", "cell_order", "colors",
           "finish", "method_markers", "require_matplotlib", "save", "tag"]

Z_MCSE = 2.0  # error bars: +/- 2 MCSE
DPI = 110
MAX_WIDTH = 11.0  # inches: 1210 pixels, the report's column width
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def require_matplotlib() -> Any:
    """Import matplotlib with the Agg backend and return ``matplotlib.pyplot``.

    Raises
    ------
    MicroMacroError
        matplotlib is not installed (the message says how to install it).
    """
    try:
        import matplotlib
    except ImportError:
        raise MicroMacroError(
            "plots: matplotlib is not installed (a dependency of micromacro-sim); install it "
            "with pip install matplotlib"
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


def colors(plt: Any, n: int) -> list[Any]:
    """``n`` distinguishable colours (tab10, tab20 beyond ten)."""
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def method_markers(n: int) -> list[str]:
    """A marker per method, so methods differ in shape as well as colour."""
    return [MARKERS[i % len(MARKERS)] for i in range(n)]


def cell_order(summary: Any) -> list[str]:
    """Scenario keys sorted by the design factors, the first factor varying slowest.

    Levels keep their run (grid) order; without factors, the run order.
    """
    keys = list(dict.fromkeys(summary.performance["scenario"]))
    scen = summary.scenarios
    if scen is None or len(keys) < 2:
        return keys
    scen = scen[scen["scenario"].isin(keys)]
    levels = factor_levels(scen)
    if not levels:
        return keys
    rank = {k: i for i, k in enumerate(keys)}

    def sort_key(k: str) -> tuple[int, ...]:
        return (*(lv.index(text[k]) for _, lv, text in levels), rank[k])

    return sorted(keys, key=sort_key)


def cell_names(summary: Any) -> dict[str, str]:
    """Scenario key -> the cell label (every design factor's level)."""
    d = summary.datasets
    col = "cell" if "cell" in d.columns else "label"
    return dict(zip(d["scenario"], d[col].astype(str), strict=True))


def wrap(note: str, width_inches: float) -> str:
    """``note`` wrapped to a figure ``width_inches`` wide at 8 points."""
    return textwrap.fill(note, max(30, int(width_inches * 16)))


def finish(fig: Any, handles: list[Any], labels: list[str], note: str, *,
           legend_rows: int | None = None) -> None:
    """Method legend on top, a wrapped grey note at the bottom, panels in between.

    The strips are measured in inches, so tall and short figures get the same margins.
    """
    w, h = fig.get_size_inches()
    text = wrap(note, w) if note else ""
    n_lines = text.count("\n") + 1 if text else 0
    ncol = min(max(len(labels), 1), 6)
    rows = legend_rows or -(-max(len(labels), 1) // ncol)
    top = (0.12 + 0.24 * rows) if labels else 0.1
    bottom = 0.08 + 0.15 * n_lines
    fig.tight_layout(rect=(0, bottom / h, 1, 1 - top / h))
    if labels:
        fig.legend(handles, labels, loc="upper center", ncol=ncol, frameon=False, fontsize=9,
                   bbox_to_anchor=(0.5, 1.0))
    if text:
        fig.text(0.5, 0.004, text, ha="center", va="bottom", fontsize=8, color="0.3")


def save(fig: Any, plt: Any, path: str | Path) -> Path:
    """Write ``fig`` as PNG to ``path`` (folders created) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def rows_for(perf: pd.DataFrame, term: str, methods: list[str] | None) -> pd.DataFrame:
    """Rows of one term (and the chosen methods) of the performance table."""
    sub = perf[perf["term"] == term]
    if sub.empty:
        raise MicroMacroError(f"plots: the summary has no term {term!r}")
    if methods is not None:
        sub = sub[sub["method"].isin(methods)]
    return sub


def tag(artist: Any, method: str) -> Any:
    """Mark ``artist`` (or every child of a container) as drawn for ``method``
    (``gid`` ``method:<name>``), so that a figure can be checked method by method."""
    children = artist.get_children() if hasattr(artist, "get_children") and not hasattr(
        artist, "set_gid") else [artist]
    for child in children:
        if child is not None:
            child.set_gid(f"method:{method}")
    return artist


def truth_lines(ax: Any, values: list[float]) -> None:
    """One dashed line when every method has the same true value, else a dashed segment
    per method at its own (methods on different scales: docs/estimands.md)."""
    finite = [v for v in values if np.isfinite(v)]
    if finite and max(finite) == min(finite):
        ax.axhline(finite[0], color="crimson", lw=1, ls="--", zorder=1)
        return
    for i, v in enumerate(values):
        if np.isfinite(v):
            ax.hlines(v, i - 0.42, i + 0.42, color="crimson", lw=1, ls="--", zorder=1)
