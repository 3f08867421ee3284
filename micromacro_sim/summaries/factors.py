"""The design factors of a run as typed columns, read from the field table.

A run's ``scenarios.parquet`` holds one column per scenario field (per-Z fields one
column per Z) and the derived values. Which of them are the *design factors* of the run
is not written anywhere: it is every field (:data:`~micromacro_sim.design.fields.FIELDS`) whose
value differs between the run's scenarios. A field that another field is an alternative
way to give (``sigma2_nu`` given through ``icc``) is left out when that other field
varies too, since it then carries no information of its own.

Group sizes are stored as a label (``10``, ``[5,30]``, ``U(5,15)``). In typed outputs a
field of kind :class:`~micromacro_sim.design.fields.Sizes` becomes four columns:
``<name>_kind`` (balanced / list / uniform), ``<name>_mean`` (expected members per
group, float), ``<name>_min`` and ``<name>_max`` (integers), plus ``<name>_label``
(the field's label prefix and the size label, ``n=10``: text in every reader, CSV too).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd

from micromacro_sim.design.fields import FIELDS, Field, Sizes, x_names, z_names
from micromacro_sim.design.groups import GroupSizes

__all__ = ["SIZE_PARTS", "cell_labels", "design_factors", "factor_columns", "factor_levels",
           "short_labels",
           "sizes_from_label", "typed_scenarios"]

#: Suffixes of the typed columns a group-size field becomes.
SIZE_PARTS = ("kind", "mean", "min", "max", "label")

_UNIFORM = re.compile(r"^U\((\d+),(\d+)\)$")
_LIST = re.compile(r"^\[(\d+(?:,\d+)*)\]$")
_POISSON = re.compile(r"^(\d+)\+Pois\(([0-9.eE+-]+)\)$")
_CHOICE = re.compile(r"^\{(\d+(?::[0-9.eE+-]+)?(?:,\d+(?::[0-9.eE+-]+)?)*)\}$")


def sizes_from_label(label: str) -> GroupSizes:
    """The :class:`GroupSizes` whose :meth:`~GroupSizes.label` is ``label``.

    Raises
    ------
    ValueError
        ``label`` is not a group-size label.
    """
    text = str(label).strip()
    if text.isdigit():
        return GroupSizes("balanced", int(text))
    m = _UNIFORM.match(text)
    if m:
        return GroupSizes("uniform", (int(m.group(1)), int(m.group(2))))
    m = _LIST.match(text)
    if m:
        return GroupSizes("list", tuple(int(v) for v in m.group(1).split(",")))
    m = _POISSON.match(text)
    if m:
        lo = int(m.group(1))
        return GroupSizes("poisson", lo, mean=lo + float(m.group(2)))
    m = _CHOICE.match(text)
    if m:
        parts = [t.split(":") for t in m.group(1).split(",")]
        sizes = tuple(int(t[0]) for t in parts)
        p = (tuple(float(t[1]) for t in parts) if all(len(t) == 2 for t in parts)
             else tuple(1.0 / len(sizes) for _ in sizes))
        return GroupSizes("choice", sizes, p=p)
    raise ValueError(f"group_size: not a group-size label: {label!r}")


def _size_parts(label: str, prefix: str) -> dict[str, object]:
    gs = sizes_from_label(label)
    if gs.kind == "balanced":
        lo = hi = int(gs.value)  # type: ignore[arg-type]
        mean = float(lo)
    elif gs.kind == "list":
        values = np.asarray(gs.value, dtype=float)
        lo, hi, mean = int(values.min()), int(values.max()), float(values.mean())
    elif gs.kind == "poisson":
        lo, hi, mean = gs.min_size, gs.max_size, float(gs.mean)
    elif gs.kind == "choice":
        values = np.asarray(gs.value, dtype=float)
        lo, hi = int(values.min()), int(values.max())
        mean = float(np.dot(values, gs.p))
    else:
        lo, hi = gs.value  # type: ignore[misc]
        mean = (lo + hi) / 2.0
    return {"kind": gs.kind, "mean": mean, "min": lo, "max": hi, "label": f"{prefix}{label}"}


def _stored_columns(f: Field, scen: pd.DataFrame) -> list[str]:
    """Columns of ``scen`` that hold field ``f`` (one per Z for a per-Z field)."""
    base = f.column or f.name
    n_xs = sorted({int(n) for n in scen["n_x"]}) if "n_x" in scen.columns else [1]
    xs = [x for n in n_xs for x in x_names(n)]
    if not f.per_z:
        cols = dict.fromkeys(base.format(x=x) for x in xs) if f.per_x else {base: None}
        return [c for c in cols if c in scen.columns]
    n_zs = sorted({int(n) for n in scen["n_z"]}) if "n_z" in scen.columns else [1]
    cols = dict.fromkeys(base.format(z=z, x=x) for n in n_zs for z in z_names(n) for x in xs)
    return [c for c in cols if c in scen.columns]


def _typed(f: Field, col: str) -> list[str]:
    if isinstance(f.kind, Sizes):
        return [f"{col}_{p}" for p in SIZE_PARTS]
    return [col]


def _fields(scen: pd.DataFrame) -> Iterator[tuple[Field, str]]:
    for f in FIELDS:
        for col in _stored_columns(f, scen):
            yield f, col


def typed_scenarios(scen: pd.DataFrame) -> pd.DataFrame:
    """The scenarios table with every field in typed columns.

    Parameters
    ----------
    scen : DataFrame
        A run's ``scenarios.parquet``.

    Returns
    -------
    DataFrame
        The same rows; each group-size column replaced by its typed columns
        (:data:`SIZE_PARTS`), integers as nullable ``Int64``.
    """
    out = scen.copy()
    for f, col in _fields(scen):
        if not isinstance(f.kind, Sizes):
            continue
        prefix = f.label.prefix if f.label is not None else f"{f.name}="
        parts = pd.DataFrame([_size_parts(v, prefix) for v in scen[col]], index=scen.index)
        at = list(out.columns).index(col)
        out = out.drop(columns=col)
        for j, p in enumerate(SIZE_PARTS):
            values = parts[p]
            if p in ("min", "max"):
                values = values.astype("Int64")
            elif p == "mean":
                values = values.astype(float)
            else:
                values = values.astype(str)
            out.insert(at + j, f"{col}_{p}", values)
    return out


def _varying(scen: pd.DataFrame) -> list[tuple[Field, str]]:
    """(field, stored column) of every design factor, in field-table order."""
    varying: dict[str, list[tuple[Field, str]]] = {}
    for f, col in _fields(scen):
        if scen[col].astype(str).nunique(dropna=False) > 1:
            varying.setdefault(f.name, []).append((f, col))
    for f in FIELDS:
        if f.derives is not None and f.name in varying:
            varying.pop(f.derives.target, None)
    return [fc for cols in varying.values() for fc in cols]


def factor_columns(scen: pd.DataFrame) -> list[str]:
    """Typed column names of the run's design factors, in field-table order.

    Parameters
    ----------
    scen : DataFrame
        A run's ``scenarios.parquet`` (one row per scenario).
    """
    return [c for f, col in _varying(scen) for c in _typed(f, col)]


def cell_labels(scen: pd.DataFrame) -> dict[str, str]:
    """Scenario key -> a short label naming every design factor's level.

    Fields that declare a label use its prefix (``G=``, ``n=``, ``ICC=``); the others
    are shown as ``column=value``. With a single scenario (no factor), the full label.
    """
    factors = _varying(scen)
    if not factors:
        return dict(zip(scen["scenario"], scen["label"].astype(str), strict=True))
    out = {}
    for _, row in scen.iterrows():
        parts = []
        for f, col in factors:
            lab = f.label if f.label is not None and not f.per_z else None
            prefix = lab.prefix if lab is not None else f"{col}="
            v = row[col]
            if isinstance(f.kind, Sizes) or isinstance(v, (str, int, np.integer)):
                text = str(v)
            elif pd.isna(v):
                text = "-"
            else:
                text = format(float(v), (lab.spec if lab is not None else "") or "g")
            parts.append(prefix + text)
        out[row["scenario"]] = " ".join(parts)
    return out


def factor_levels(scen: pd.DataFrame) -> list[tuple[str, list[str], dict[str, str]]]:
    """Each design factor as (short name, levels in run order, scenario key -> level).

    Names are the field's label prefix (``G``, ``n``, ``ICC``) or its column; levels are
    text, in the order they first appear among the run's scenarios (the grid order).
    """
    out = []
    for f, col in _varying(scen):
        lab = f.label if f.label is not None and not f.per_z else None
        name = lab.prefix.rstrip("=") if lab is not None else col
        text = {}
        for key, v in zip(scen["scenario"], scen[col], strict=True):
            if isinstance(v, (float, np.floating)):
                v = format(float(v), (lab.spec if lab is not None else "") or "g")
            text[key] = str(v)
        out.append((name, list(dict.fromkeys(text.values())), text))
    return out


def design_factors(scen: pd.DataFrame) -> pd.DataFrame:
    """``scenario`` plus the typed design-factor columns, one row per scenario."""
    typed = typed_scenarios(scen)
    return typed[["scenario", *factor_columns(scen)]].reset_index(drop=True)


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
