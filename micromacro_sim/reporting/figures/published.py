"""Published values beside this run's, one row per compared number.

For reproductions: this run's value is a filled point with +/- 2 MCSE; the published
value an open diamond, with +/- 2 of its own Monte Carlo SE where it is known (a
published simulation result over K_pub datasets) and a bar of its rounding otherwise.

Call it with a comparison table as the reproductions build them, e.g.::

    from micromacro_sim.reporting.figures.published import plot_published
    plot_published(tables["percent_bias"], out / "percent_bias.png",
                   label_columns=("method", "term"), xlabel="percent bias")

The table needs the columns named by ``ours``, ``published`` and ``label_columns``;
``ours_mcse``, ``published_mcse`` and ``rounding`` are used when present (a
reproduction's ``mcse_pub`` column is read as the published MCSE). ``facet`` draws one
panel per level of a column (e.g. the term), each with its own x axis, so a term with
a large bias does not squash the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from micromacro_sim.core.errors import MicroMacroError
from micromacro_sim.reporting.figures.common import (
    MAX_WIDTH,
    Z_MCSE,
    finish,
    require_matplotlib,
    save,
)

__all__ = ["PUBLISHED_MCSE_NAMES", "plot_published"]

OURS, THEIRS = "#3b75af", "#d1495b"


#: Names a comparison table may give the published value's Monte Carlo SE.
PUBLISHED_MCSE_NAMES = ("mcse_published", "mcse_pub")
#: Text columns never added to a row's label (see :func:`_unique_names`).
_NOT_LABELS = frozenset({"verdict", "role", "published_label", "source"})


def _column(frame: pd.DataFrame, name: str | None) -> np.ndarray:
    if name is None or name not in frame.columns:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float)


def _labels(frame: pd.DataFrame, names: list[str]) -> list[str]:
    if not names:
        return [str(i) for i in frame.index]
    return [" ".join(str(v) for v in row if str(v) and str(v) != "nan")
            for row in frame[names].itertuples(index=False)]


def _unique_names(frame: pd.DataFrame, names: list[str], facet: str | None) -> list[str]:
    """``names`` plus, while two rows share a label, the next text column of ``frame``."""
    extra = [c for c in frame.columns if c not in names and c != facet and c not in _NOT_LABELS
             and not pd.api.types.is_numeric_dtype(frame[c])]
    names = list(names)
    by = [facet] if facet is not None and facet in frame.columns else []
    while names and extra and frame.duplicated(subset=by + names).any():
        names.append(extra.pop(0))
    return names


def _panel(ax: Any, frame: pd.DataFrame, labels: list[str], cols: dict[str, Any],
           reference: float | None) -> list[Any]:
    """One panel: a row per compared number, this run below the published value."""
    y = np.arange(len(frame), dtype=float)
    a, a_se = _column(frame, cols["ours"]), _column(frame, cols["ours_mcse"])
    b, b_se = _column(frame, cols["published"]), _column(frame, cols["published_mcse"])
    rounding = cols["rounding"]
    rnd = (_column(frame, rounding) if isinstance(rounding, str)
           else np.full(len(frame), np.nan if rounding is None else float(rounding)))
    b_bar = np.where(np.isfinite(b_se), Z_MCSE * b_se, rnd)
    if reference is not None:
        ax.axvline(reference, color="0.4", lw=0.9)
    h1 = ax.errorbar(a, y - 0.14, xerr=np.where(np.isfinite(a_se), Z_MCSE * a_se, 0.0),
                     fmt="o", ms=4.5, color=OURS, elinewidth=1.2, capsize=0, lw=0)
    h2 = ax.errorbar(b, y + 0.14, xerr=np.where(np.isfinite(b_bar), b_bar, 0.0), fmt="D",
                     ms=4.5, mfc="white", color=THEIRS, elinewidth=1.2, capsize=0, lw=0)
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_ylim(len(frame) - 0.5, -0.5)
    ax.grid(axis="x", color="0.92", lw=0.8)
    ax.set_axisbelow(True)
    ax.tick_params(labelsize=8)
    return [h1, h2]


def plot_published(frame: pd.DataFrame, path: str | Path, *,
                   label_columns: Sequence[str] = ("cell", "method", "term"),
                   ours: str = "this_run", ours_mcse: str | None = "mcse",
                   published: str = "published", published_mcse: str | None = "mcse_published",
                   rounding: float | str | None = None, xlabel: str = "value",
                   title: str | None = None, reference: float | None = None,
                   facet: str | None = None, published_label: str = "published",
                   note: str | None = None) -> Path:
    """Dot plot of published values beside this run's.

    Parameters
    ----------
    frame : DataFrame
        One row per compared number.
    path : path
        PNG file to write.
    label_columns : sequence of str
        Columns naming a row (those absent are skipped); while two rows share a label,
        the table's next text column is added to it.
    ours, ours_mcse : str
        This run's value and its Monte Carlo SE.
    published, published_mcse : str
        The published value and, where known, its Monte Carlo SE (NaN: unknown). When
        ``published_mcse`` is the default and absent, ``mcse_pub`` is read instead.
    rounding : float or str, optional
        Half a unit of the published value's last digit (a number, or a column): drawn
        as the published bar where its MCSE is unknown.
    xlabel, title : str
    reference : float, optional
        A vertical reference line (e.g. 0 for bias, .95 for coverage).
    facet : str, optional
        Column whose levels get a panel each (own x axis), in order of appearance.
    published_label : str
        Legend entry of the published values (e.g. "analytic limit").
    note : str, optional
        Replaces the note under the figure (the bars' meaning).

    Returns
    -------
    Path

    Raises
    ------
    MicroMacroError
        The table lacks ``ours`` or ``published``, or has no row with both.
    """
    for col in (ours, published):
        if col not in frame.columns:
            raise MicroMacroError(f"plots: the comparison table has no column {col!r}")
    if published_mcse == PUBLISHED_MCSE_NAMES[0] and published_mcse not in frame.columns:
        published_mcse = PUBLISHED_MCSE_NAMES[1]
    keep = np.isfinite(_column(frame, ours)) | np.isfinite(_column(frame, published))
    frame = frame[keep].reset_index(drop=True)
    if frame.empty:
        raise MicroMacroError("plots: no row of the comparison table has a value")
    plt = require_matplotlib()
    names = _unique_names(frame, [c for c in label_columns if c in frame.columns and c != facet],
                          facet)
    groups = ([(str(k), g.reset_index(drop=True))
               for k, g in frame.groupby(facet, sort=False)]
              if facet is not None and facet in frame.columns else [("", frame)])
    labels = [_labels(g, names) for _, g in groups]
    label_w = 0.35 + 0.062 * max(len(s) for part in labels for s in part)
    sizes = [len(g) for _, g in groups]
    height = 0.3 * sum(sizes) + 0.45 * len(groups) + 1.3
    fig, axes = plt.subplots(len(groups), 1, squeeze=False,
                             figsize=(min(MAX_WIDTH, label_w + 6.0), height),
                             gridspec_kw={"height_ratios": [n + 1.2 for n in sizes]})
    cols = {"ours": ours, "ours_mcse": ours_mcse, "published": published,
            "published_mcse": published_mcse, "rounding": rounding}
    handles: list[Any] = []
    for i, (ax, (level, g), lab) in enumerate(zip(axes[:, 0], groups, labels, strict=True)):
        handles = _panel(ax, g, lab, cols, reference)
        head = [title] if title and i == 0 else []
        head += [f"{facet} = {level}"] if level else []
        if head:
            ax.set_title(": ".join(head), fontsize=9, loc="left")
    axes[-1, 0].set_xlabel(xlabel, fontsize=9)
    finish(fig, handles, ["this run", published_label],
           note if note is not None else
           f"bars: +/- {Z_MCSE:g} Monte Carlo SE (published: its own MCSE where known, "
           "else half a unit of its last printed digit)")
    return save(fig, plt, path)
