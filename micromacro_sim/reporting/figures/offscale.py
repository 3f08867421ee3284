"""Robust axis limits: the bulk of the values decides the axis, blow-ups are marked.

A few cells where one method blows up (a percent bias of -2000 or 7000) would stretch
a linear axis until the contrast between the other methods shrinks to a dot. Here the
axis is cut at :data:`FENCE` times the *typical extent* of the values (see
:func:`typical_extent`), and every value beyond the cut is drawn as a triangle at the
edge with its value written beside it (:func:`draw_offscale`). Error bars set the axis up
to :data:`BAR_FENCE` typical extents; longer ones run off it.

The typical extent is measured per group (per method): a method that blows up in most of
its cells still leaves the other methods' extents, and hence the axis, alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

__all__ = ["BAR_FENCE", "FENCE", "Limits", "clip_to", "draw_offscale", "offscale_note",
           "robust_limits", "typical_extent", "value_text"]

#: Values farther from 0 than this many typical extents are off the scale.
FENCE = 10.0
#: Error bars set the axis up to this many typical extents (longer ones run off it).
BAR_FENCE = 3.0
_PAD = 0.06  # share of the span added on each side
_PAD_MARKED = 0.2  # on a side with off-scale markers (room for the written values)
_LABEL_BOX = {"boxstyle": "round,pad=0.12", "fc": "white", "ec": "none", "alpha": 0.85}


class Limits(NamedTuple):
    """Axis limits and the cut beyond which a value is off the scale."""

    low: float
    high: float
    cut: float


def _finite(x: Any) -> np.ndarray:
    a = np.asarray(x, dtype=float).ravel()
    return a[np.isfinite(a)]


def typical_extent(groups: Sequence[Any], q: float = 0.9) -> float:
    """A scale of ``|x|`` that a minority of blown-up values does not move.

    The larger of (a) the lower median, over groups, of each group's ``q`` quantile of
    ``|x|`` and (b) the median of ``|x|`` over every group. With two groups (a) is the
    smaller group's extent, so (b) keeps a precise reference method from setting the
    scale alone.

    Parameters
    ----------
    groups : sequence of array-like
        Values per group (for example per method); non-finite values are ignored.
    q : float
        Quantile of ``|x|`` within a group (default 0.9).

    Returns
    -------
    float
        0 when there are no finite values.
    """
    per = [np.quantile(np.abs(g), q) for g in map(_finite, groups) if g.size]
    if not per:
        return 0.0
    low_median = float(np.sort(per)[(len(per) - 1) // 2])
    pooled = float(np.median(np.abs(np.concatenate([_finite(g) for g in groups]))))
    return max(low_median, pooled)


def robust_limits(groups: Sequence[Any], errors: Sequence[Any] | None = None, *,
                  fence: float = FENCE, bar_fence: float = BAR_FENCE) -> Limits | None:
    """Axis limits from the bulk of ``groups``, or None when the bulk is the whole.

    Values with ``|x| > fence * typical_extent(groups)`` are off the scale. The limits
    span 0 and the other values with their error bars, each bar counted up to
    ``bar_fence`` typical extents (a longer bar runs off the axis), padded; a side with
    off-scale values gets extra room for the written values. None (let the axis scale
    itself) when no value is off the scale and the full range, bars included, is at
    most a quarter wider.

    Parameters
    ----------
    groups : sequence of array-like
        Values per group (per method).
    errors : sequence of array-like, optional
        Half-widths of the error bars, aligned with ``groups``.
    fence : float
        Values beyond this many typical extents are off the scale (default
        :data:`FENCE`).
    bar_fence : float
        Error bars count up to this many typical extents (default :data:`BAR_FENCE`).

    Returns
    -------
    Limits or None
        ``low``, ``high`` and ``cut`` (the fence times the typical extent).
    """
    typical = typical_extent(groups)
    cut = fence * typical
    pooled = np.concatenate([np.asarray(g, dtype=float).ravel() for g in groups])
    if errors is None:
        err = np.zeros_like(pooled)
    else:
        err = np.abs(np.nan_to_num(np.concatenate(
            [np.asarray(e, dtype=float).ravel() for e in errors])))
    ok = np.isfinite(pooled)
    if cut <= 0 or not ok.any():
        return None
    inside = ok & (np.abs(pooled) <= cut)
    x, e = pooled[inside], np.minimum(err[inside], bar_fence * typical)
    lo, hi = min(0.0, float((x - e).min())), max(0.0, float((x + e).max()))
    below, above = (pooled[ok] < -cut).any(), (pooled[ok] > cut).any()
    full = (max(0.0, float((pooled[ok] + err[ok]).max()))
            - min(0.0, float((pooled[ok] - err[ok]).min())))
    span = hi - lo if hi > lo else max(cut, 1e-12)
    if not (below or above) and full <= 1.25 * span:
        return None
    return Limits(lo - span * (_PAD_MARKED if below else _PAD),
                  hi + span * (_PAD_MARKED if above else _PAD), cut)


def clip_to(values: Any, limits: Limits | None) -> np.ndarray:
    """``values`` with those beyond ``limits`` replaced by NaN (not drawn)."""
    v = np.asarray(values, dtype=float).copy()
    if limits is not None:
        v[(v < limits.low) | (v > limits.high)] = np.nan
    return v


def value_text(v: float, suffix: str = "") -> str:
    """A short text of an off-scale value: ``7,012%``, ``-2,310%``, ``0.0412``."""
    return (f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}") + suffix


def draw_offscale(ax: Any, pos: Any, values: Any, limits: Limits | None, *,
                  axis: str = "x", color: Any = "0.2", suffix: str = "",
                  gid: str = "offscale") -> int:
    """Mark values beyond ``limits`` by triangles at the axis edge, their value beside.

    Parameters
    ----------
    ax : matplotlib Axes
    pos : array-like
        Position of each value on the other axis (a row for ``axis="x"``).
    values : array-like
    limits : Limits or None
        The value axis limits (None: nothing to mark).
    axis : {"x", "y"}
        The axis that carries the values.
    color
        Colour of the triangles and texts.
    suffix : str
        Appended to the written values (for example ``%``).
    gid : str
        Group id of the triangle artist (so it can be found in a drawn figure).

    Returns
    -------
    int
        The number of values marked.
    """
    if limits is None:
        return 0
    v = np.asarray(values, dtype=float)
    p = np.asarray(pos, dtype=float)
    lo, hi = limits.low, limits.high
    inset = 0.012 * (hi - lo)
    n = 0
    for side, mask in ((1, np.isfinite(v) & (v > hi)), (-1, np.isfinite(v) & (v < lo))):
        if not mask.any():
            continue
        edge = (hi - inset) if side > 0 else (lo + inset)
        if axis == "x":
            marker = ">" if side > 0 else "<"
            ax.plot(np.full(mask.sum(), edge), p[mask], ls="none", marker=marker, ms=6,
                    color=color, mec="black", mew=0.5, zorder=5, clip_on=False, gid=gid)
        else:
            marker = "^" if side > 0 else "v"
            ax.plot(p[mask], np.full(mask.sum(), edge), ls="none", marker=marker, ms=6,
                    color=color, mec="black", mew=0.5, zorder=5, clip_on=False, gid=gid)
        for pi, vi in zip(p[mask], v[mask], strict=True):
            text = value_text(float(vi), suffix)
            if axis == "x":
                ax.annotate(text, (edge, pi), xytext=(-6 * side, 0), textcoords="offset points",
                            ha="right" if side > 0 else "left", va="center", fontsize=6.5,
                            color=color, bbox=_LABEL_BOX, zorder=6)
            else:
                ax.annotate(text, (pi, edge), xytext=(0, -6 * side), textcoords="offset points",
                            ha="center", va="top" if side > 0 else "bottom", fontsize=6.5,
                            color=color, bbox=_LABEL_BOX, zorder=6)
        n += int(mask.sum())
    return n


def offscale_note(n: int, limits: Limits | None, suffix: str = "") -> str:
    """The note of a figure with robust ``limits`` and ``n`` off-scale values (empty when
    the axis scaled itself)."""
    if limits is None:
        return ""
    note = "; the axis is set by the bulk of the values (longer error bars run off it)"
    if n:
        note += (f"; off the scale: {n} value(s) farther than {value_text(limits.cut, suffix)} "
                 f"from 0 ({FENCE:g} times the methods' typical size), drawn as triangles at "
                 "the edge with the value written beside")
    return note
