"""Turn a user's long-format table into a :class:`~micromacro_sim.dataset.Dataset`.

One row per member; the outcome and the group covariates must be constant within a
group. Rows with a missing x are dropped (counted); groups with a missing y or Z are
dropped (reported). Every problem is a :class:`~micromacro_sim.errors.DataError`
naming the column and the first offending group.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .dataset import Dataset
from .errors import DataError

__all__ = ["Prepared", "prepare", "read_table_file"]


@dataclass(frozen=True)
class Prepared:
    """A dataset built from user data, with what was dropped on the way."""

    data: Dataset
    notes: tuple[str, ...]


def read_table_file(path: str | Path) -> pd.DataFrame:
    """Read a CSV (or Parquet) file, with a one-line error when it cannot be read."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"DATA: file not found: {str(path)!r}")
    try:
        if p.suffix.lower() == ".parquet":
            return pd.read_parquet(p)
        frame = pd.read_csv(p)
        with open(p, newline="", encoding="utf-8", errors="replace") as fh:
            header = next(csv.reader(fh), [])
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"DATA: cannot read {str(path)!r}: {first}") from None
    twice = sorted({c for c in header if header.count(c) > 1})
    if twice:  # pandas would silently rename the second one (x -> x.1)
        raise DataError(f"{twice[0]}: column appears more than once in the header of "
                        f"{str(path)!r}")
    return frame


def _show(v: object) -> str:
    """A group label for messages: 7, 'team-7' (numpy scalars shown plainly)."""
    if isinstance(v, np.generic):
        v = v.item()
    return repr(v)


def _as_list(v: str | Sequence[str] | None) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        return [c for c in (s.strip() for s in v.split(",")) if c]
    return list(v)


def prepare(
    frame: pd.DataFrame,
    *,
    group: str,
    x: str | Sequence[str],
    y: str,
    z: str | Sequence[str] | None = None,
) -> Prepared:
    """Validate and convert a long DataFrame.

    Parameters
    ----------
    frame : DataFrame
        One row per member.
    group : str
        Group identifier column.
    x : str or list of str
        Member-level variable(s) to aggregate.
    y : str
        Group-level outcome (constant within group).
    z : str or list of str, optional
        Group-level covariates (constant within group).

    Returns
    -------
    Prepared

    Raises
    ------
    DataError
        Missing or non-numeric columns, non-constant group-level values, infinite
        values, too few groups, or no within-group replication.
    """
    xs, zs = _as_list(x), _as_list(z)
    if not xs:
        raise DataError("x: at least one member-level column is needed")
    cols = [group, *xs, y, *zs]
    dup = sorted({c for c in cols if cols.count(c) > 1})
    if dup:
        raise DataError(f"{dup[0]}: column used twice (group, x, y and z must differ)")
    for c in cols:
        if c not in frame.columns:
            raise DataError(f"{c}: no such column (have: {', '.join(map(str, frame.columns))})")
    notes: list[str] = []
    df = frame[cols].copy()
    if df[group].isna().any():
        n = int(df[group].isna().sum())
        df = df[df[group].notna()]
        notes.append(f"dropped {n} row(s) with a missing {group}")
    for c in [*xs, y, *zs]:
        if not pd.api.types.is_numeric_dtype(df[c]):
            coerced = pd.to_numeric(df[c], errors="coerce")
            bad = df[c][coerced.isna() & df[c].notna()]
            if len(bad):
                raise DataError(f"{c}: non-numeric value {bad.iloc[0]!r} "
                                f"(group {_show(df.loc[bad.index[0], group])})")
            df[c] = coerced
        vals = df[c].to_numpy(dtype=float)
        if np.isinf(vals).any():
            i = int(np.flatnonzero(np.isinf(vals))[0])
            raise DataError(f"{c}: infinite value in group {_show(df[group].iloc[i])}")
    miss_x = df[xs].isna().any(axis=1)
    if miss_x.any():
        notes.append(f"dropped {int(miss_x.sum())} row(s) with a missing {'/'.join(xs)}")
        df = df[~miss_x]
    for c in [y, *zs]:
        spread = df.groupby(group, sort=False)[c].agg(lambda s: s.nunique(dropna=False))
        bad = spread[spread > 1]
        if len(bad):
            raise DataError(f"{c}: not constant within group {_show(bad.index[0])} "
                            "(group-level columns must have one value per group)")
    gmiss = df.groupby(group, sort=False)[[y, *zs]].agg(lambda s: s.isna().any()).any(axis=1)
    if gmiss.any():
        dropped = list(gmiss[gmiss].index)
        notes.append(f"dropped {len(dropped)} group(s) with a missing {y}"
                     + (f" or {'/'.join(zs)}" if zs else "")
                     + f" (first: {_show(dropped[0])})")
        df = df[~df[group].isin(dropped)]
    codes, labels = pd.factorize(df[group], sort=True)
    order = np.argsort(codes, kind="stable")
    df = df.iloc[order]
    codes = codes[order]
    G = len(labels)
    if G < 3:
        raise DataError(f"{group}: need at least 3 groups with complete data, got {G}")
    sizes = np.bincount(codes, minlength=G)
    if sizes.max() < 2:
        raise DataError(f"{group}: every group has a single member; group means cannot be "
                        "told from members (need groups of size >= 2)")
    if (sizes == 1).any():
        notes.append(f"{int((sizes == 1).sum())} group(s) of size 1 (they add no within-group "
                     "information; methods that need balanced data will skip)")
    first = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    data = Dataset(
        group=codes,
        x=df[xs].to_numpy(dtype=float),
        y=df[y].to_numpy(dtype=float)[first],
        z=df[zs].to_numpy(dtype=float)[first] if zs else np.empty((G, 0)),
        x_names=tuple(xs),
        z_names=tuple(zs),
        y_name=y,
        group_labels=np.asarray(labels),
    )
    return Prepared(data=data, notes=tuple(notes))
