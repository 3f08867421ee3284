"""Terminal tables that fit the window.

:func:`render_table` is the one renderer of every printed table (``summarize``,
``reproduce``): it formats numbers by column (:func:`number_format`), and when the table
is wider than the window it splits the columns into blocks, each repeating the row's
identifying columns, so no line is wider than the window. Tables are laid out by rich.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from micromacro_sim.reporting.wrap import terminal_width, wrap_text

__all__ = ["number_format", "render_table", "terminal_width", "wrap_text"]

#: Format of a column by the measure it holds (matched on the name's first word, see
#: :func:`number_format`); everything else numeric gets ``DEFAULT_FORMAT``.
FORMATS: dict[str, str] = {
    "cover": ".3f", "becover": ".3f", "reject": ".3f", "rate": ".3f", "flag_rate": ".3f",
    "redraw_rate": ".3f", "power": ".3f", "icc": ".3f", "reliability": ".3f", "alpha": ".3f",
    "pct_bias": ".2f", "%bias": ".2f", "relerr": ".1f", "z": ".2f",
}
DEFAULT_FORMAT = ".4f"
_GAP = 2  # characters between two columns


def number_format(column: str) -> str:
    """Format spec of a numeric column, from the measure it holds.

    ``cover_HC3``, ``cover HC3``, ``reject`` and other rates: three decimals; percent
    bias two; relative error of the model SE one; other real numbers four.
    """
    name = str(column).strip().lower().replace(" ", "_")
    for key in sorted(FORMATS, key=len, reverse=True):
        if name == key or name.startswith(key + "_") or name.startswith(key + "."):
            return FORMATS[key]
    return DEFAULT_FORMAT


def _cell(v: Any, spec: str) -> str:
    if v is None or v is pd.NA:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        if not np.isfinite(v):
            return "" if np.isnan(v) else str(v)
        if float(v).is_integer() and spec == "d":
            return str(int(v))
        return format(float(v), spec)
    return str(v)


def _strings(frame: pd.DataFrame, formats: Mapping[str, str] | None) -> pd.DataFrame:
    out = {}
    for col in frame.columns:
        s = frame[col]
        if pd.api.types.is_integer_dtype(s) or pd.api.types.is_bool_dtype(s):
            spec = "d"
        else:
            spec = (formats or {}).get(col) or number_format(col)
        out[col] = [_cell(v, spec) for v in s.tolist()]
    return pd.DataFrame(out, columns=frame.columns)


def _width(col: str, cells: pd.Series) -> int:
    header = len(str(col))
    body = int(cells.map(len).max()) if len(cells) else 0
    return max(header, min(body, 40), 1)


def _blocks(widths: list[int], n_keep: int, width: int) -> list[list[int]]:
    """Groups of column indices (after the ``n_keep`` kept ones) that fit ``width``."""
    base = sum(widths[:n_keep]) + _GAP * n_keep
    blocks: list[list[int]] = []
    current: list[int] = []
    used = base
    for i in range(n_keep, len(widths)):
        need = widths[i] + _GAP
        if current and used + need > width:
            blocks.append(current)
            current, used = [], base
        current.append(i)
        used += need
    if current or not blocks:
        blocks.append(current)
    return blocks


def _rich(frame: pd.DataFrame, width: int, numeric: set[str], title: str | None) -> str:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, title=title,
                  title_justify="left", padding=(0, 1), collapse_padding=True)
    for col in frame.columns:
        table.add_column(str(col), justify="right" if col in numeric else "left",
                         overflow="fold")
    for row in frame.itertuples(index=False):
        table.add_row(*[str(v) for v in row])
    buf = io.StringIO()
    Console(file=buf, width=width, color_system=None, force_terminal=False,
            legacy_windows=False, highlight=False, emoji=False, markup=False).print(table)
    return "\n".join(line.rstrip() for line in buf.getvalue().splitlines())


def render_table(frame: pd.DataFrame, *, width: int | None = None,
                 keep: Sequence[str] | None = None, title: str | None = None,
                 formats: Mapping[str, str] | None = None,
                 right: Sequence[str] = ()) -> str:
    """Render a table as text no wider than ``width``.

    Parameters
    ----------
    frame : DataFrame
        Cells may be numbers (formatted per column) or text (shown as is).
    width : int, optional
        Window width (default :func:`terminal_width`).
    keep : sequence of str, optional
        Columns that identify a row, repeated in every block when the table is split
        (default: the leading non-numeric columns, at most three).
    title : str, optional
        Line above the (first) block.
    formats : mapping, optional
        Column -> format spec, overriding :func:`number_format`.
    right : sequence of str
        Text columns to right-align (numeric columns always are).

    Returns
    -------
    str
        One block, or several separated by a blank line.
    """
    width = width or terminal_width()
    if frame.empty:
        return f"{title}\n(none)" if title else "(none)"
    numeric = {c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])
               and not pd.api.types.is_bool_dtype(frame[c])}
    text = _strings(frame.reset_index(drop=True), formats)
    if keep is None:
        lead = []
        for c in frame.columns:
            if c in numeric or len(lead) == 3:
                break
            lead.append(c)
        keep = lead
    cols = list(keep) + [c for c in frame.columns if c not in keep]
    text = text[cols]
    widths = [_width(c, text[c]) for c in cols]
    n_keep = len(keep)
    if sum(widths[:n_keep]) + _GAP * n_keep > width // 2:  # ids too wide to repeat
        n_keep = min(n_keep, 1)
        cols = cols[:n_keep] + [c for c in cols[n_keep:]]
    out = []
    for j, block in enumerate(_blocks(widths, n_keep, width)):
        sub = text[cols[:n_keep] + [cols[i] for i in block]]
        out.append(_rich(sub, width, numeric | set(right), title if j == 0 else None))
    return "\n\n".join(out)
