"""Turn a user's long-format table into a :class:`~micromacro_sim.generate.dataset.Dataset`.

One row per member; the outcome and the group covariates must be constant within a
group. Rows with a missing x are dropped (counted); groups with a missing y or Z are
dropped (reported). Every problem is a :class:`~micromacro_sim.core.errors.DataError`
naming the column and the first offending group.

Member identity
---------------
Some methods treat the members of a group as distinct indicators (the wide-format
methods factor_score, sem, sam and zcond_score, and blup_hetvar's variance per member):
their estimates depend on which row is which member. A ``member`` column names them:
rows are then ordered by member label inside each group, so the results do not depend
on the order of the rows, and member label ``m`` is the same indicator in every group
(the first label in label order is factor_score's marker). Without one, those methods
are not applicable (reason ``member_order_undefined``) unless the caller accepts the
order of the rows as the member order (``row_order_is_member``). Methods that use only
group means and within-group sums never look at members.

Missing members: member ids must be present and unique within a group (else a
DataError naming the group). A group may lack some member labels (unbalanced data, or a
member whose x is missing): the wide-format methods then see a missing cell at that
label's position and fit by full-information ML (not applicable, ``sparse_position``,
where a label occurs in fewer than 2 groups for factor_score and sam); blup_hetvar fits
the members each group has. No group needs every label.

Group ids and member labels are labels, not numbers: :func:`label_codes` owns their
identity and order, and :func:`read_table_file` reads them from a CSV as written.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from micromacro_sim.api.labels import label_codes
from micromacro_sim.core.errors import DataError, NotApplicable
from micromacro_sim.core.status import Reason
from micromacro_sim.generate.dataset import Dataset

__all__ = ["MEMBER_MODES", "Prepared", "UserDataset", "label_codes", "prepare", "read_table_file"]

#: How the members of a group are identified: by a member column, by the order of the
#: rows (accepted by the user), or not at all.
MEMBER_MODES: tuple[str, ...] = ("column", "row_order", "undefined")


@dataclass(frozen=True, eq=False)
class UserDataset(Dataset):
    """A :class:`Dataset` from user data that knows how its members are identified.

    Position-dependent views (:meth:`wide`, :attr:`position`) raise
    :class:`~micromacro_sim.core.errors.NotApplicable` when the member order is
    undefined or the member labels do not line up, so every method that relies on
    member positions is refused with that reason instead of fitting an arbitrary order.

    Parameters
    ----------
    member_mode : {"column", "row_order", "undefined"}
    member_codes : ndarray of int, shape (N,), optional
        Index of each row's member label in :attr:`member_labels` (``column`` mode).
    member_labels : ndarray, optional
        The member labels found in the data, in label order (:func:`label_codes`).
    member_name : str
        Name of the member column (for messages).
    """

    member_mode: str = "undefined"
    member_codes: np.ndarray | None = None
    member_labels: np.ndarray | None = None
    member_name: str = "member"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.member_mode not in MEMBER_MODES:
            raise ValueError(f"member_mode must be one of {MEMBER_MODES}, got {self.member_mode!r}")
        if self.member_codes is not None:
            codes = np.array(self.member_codes, dtype=np.int64)
            codes.setflags(write=False)
            object.__setattr__(self, "member_codes", codes)

    def _undefined(self) -> NotApplicable:
        return NotApplicable(Reason.MEMBER_ORDER_UNDEFINED)

    def _first_incomplete(self) -> str:
        """Message naming the first group whose member labels differ from the first's."""
        assert self.member_codes is not None and self.member_labels is not None
        sets = [frozenset(self.member_codes[s:s + n].tolist())
                for s, n in zip(self.starts, self.sizes, strict=True)]
        g = next(i for i, s in enumerate(sets) if s != sets[0])
        names = self.group_labels if self.group_labels is not None else np.arange(len(sets))
        lack, extra = sorted(sets[0] - sets[g]), sorted(sets[g] - sets[0])
        what, code = ("lacks", lack[0]) if lack else ("has", extra[0])
        return (f"member labels differ across groups: group {_show(names[g])} {what} "
                f"{self.member_name} {_show(self.member_labels[code])} (group "
                f"{_show(names[0])} {'has' if lack else 'lacks'} it)")

    @cached_property
    def position(self) -> np.ndarray:  # type: ignore[override]
        """Member index within the group: the member label's index, or the row order."""
        if self.member_mode == "undefined":
            raise self._undefined()
        if self.member_mode == "row_order":
            return Dataset.position.func(self)
        assert self.member_codes is not None and self.member_labels is not None
        return self.member_codes  # a group may lack any member: the width is every label

    def wide(self, j: int = 0) -> np.ndarray:
        """The G x n matrix of x variable ``j``, column m the member labelled m."""
        if self.member_mode == "undefined":
            raise self._undefined()
        if (self.member_mode == "column" and self.balanced and self.member_labels is not None
                and int(self.sizes[0]) != len(self.member_labels)):
            raise NotApplicable(Reason.MEMBERS_MISALIGNED, self._first_incomplete())
        return super().wide(j)

    @property
    def complete(self) -> bool:
        """Balanced with every member label in every group (the plain wide layout)."""
        if self.member_mode == "undefined":
            raise self._undefined()
        return self.balanced and not (
            self.member_mode == "column" and self.member_labels is not None
            and int(self.sizes[0]) != len(self.member_labels))

    def to_frame(self) -> pd.DataFrame:
        """Long DataFrame; ``member`` holds the member labels (or the row index)."""
        frame = Dataset.to_frame(_plain(self))
        if self.member_mode == "column" and self.member_labels is not None:
            frame["member"] = self.member_labels[self.member_codes]
        return frame


def _plain(d: UserDataset) -> Dataset:
    return Dataset(group=d.group, x=d.x, y=d.y, z=d.z, xi=d.xi, x_names=d.x_names,
                   z_names=d.z_names, y_name=d.y_name, group_labels=d.group_labels)


@dataclass(frozen=True)
class Prepared:
    """A dataset built from user data, with what was dropped on the way."""

    data: UserDataset
    notes: tuple[str, ...]


def read_table_file(path: str | Path, *, labels: Sequence[str | None] = ()) -> pd.DataFrame:
    """Read a CSV (or Parquet) file, with a one-line error when it cannot be read.

    ``labels`` names the columns that hold labels (group, member; None is skipped). A
    CSV's label columns are read as text exactly as written, only an empty field being
    missing: '007' is not '7', '1.10' not '1.1', and a team named 'NA' or 'None' is a
    team. Other columns keep pandas' type inference and missing-value strings; a Parquet
    file keeps its stored types. Raises DataError for a missing or unreadable file or a
    name used twice in the header.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"DATA: file not found: {str(path)!r}")
    try:
        if p.suffix.lower() == ".parquet":
            return pd.read_parquet(p)
        frame = pd.read_csv(p)
        with open(p, newline="", encoding="utf-8", errors="replace") as fh:
            header = next(csv.reader(fh), [])
        text = [c for c in dict.fromkeys(labels) if c is not None and c in frame.columns]
        if text:
            raw = pd.read_csv(p, usecols=text, dtype=str, keep_default_na=False, na_values=[""])
            frame[text] = raw[text].to_numpy()
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"DATA: cannot read {str(path)!r}: {first}") from None
    twice = sorted({c for c in header if header.count(c) > 1})
    if twice:  # pandas would silently rename the second one (x -> x.1)
        raise DataError(f"{twice[0]}: column appears more than once in the header of "
                        f"{str(path)!r}")
    return frame


def _show(v: object) -> str:
    """A label for messages: 7, 'team-7' (numpy scalars shown plainly)."""
    if isinstance(v, np.generic):
        v = v.item()
    return repr(v)


def _as_list(v: str | Sequence[str] | None) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        return [c for c in (s.strip() for s in v.split(",")) if c]
    return list(v)


def _check_columns(frame: pd.DataFrame, cols: list[str]) -> None:
    dup = sorted({c for c in cols if cols.count(c) > 1})
    if dup:
        raise DataError(f"{dup[0]}: column used twice (group, member, x, y and z must differ)")
    names = list(frame.columns)
    for c in cols:
        if c not in names:
            raise DataError(f"{c}: no such column (have: {', '.join(map(str, frame.columns))})")
        if names.count(c) > 1:
            raise DataError(f"{c}: {names.count(c)} columns of the data have this name (the "
                            "columns used must have unique names)")


def _numeric(df: pd.DataFrame, cols: list[str], group: str) -> pd.DataFrame:
    """Coerce ``cols`` to numbers; non-numeric or infinite values are errors."""
    for c in cols:
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
    return df


def _group_level(df: pd.DataFrame, group: str, y: str, zs: list[str],
                 notes: list[str]) -> pd.DataFrame:
    """Check that y and Z are constant within group; drop groups missing them."""
    codes, labels = label_codes(df[group], group)
    for c in [y, *zs]:
        spread = df[c].groupby(codes, sort=False).nunique(dropna=False)
        bad = spread[spread > 1]
        if len(bad):
            raise DataError(f"{c}: not constant within group {_show(labels[bad.index[0]])} "
                            "(group-level columns must have one value per group)")
    gmiss = df[[y, *zs]].isna().groupby(codes, sort=False).any().any(axis=1)
    if gmiss.any():
        dropped = gmiss[gmiss].index.to_numpy()
        notes.append(f"dropped {len(dropped)} group(s) with a missing {y}"
                     + (f" or {'/'.join(zs)}" if zs else "")
                     + f" (first: {_show(labels[dropped[0]])})")
        df = df[~np.isin(codes, dropped)]
    return df


def _member_codes(df: pd.DataFrame, group: str, member: str) -> tuple[np.ndarray, np.ndarray]:
    """Member labels in label order and each row's label index; ids present and unique."""
    ids = df[member]
    if ids.isna().any():
        i = int(np.flatnonzero(ids.isna().to_numpy())[0])
        raise DataError(f"{member}: missing member id in group {_show(df[group].iloc[i])} "
                        "(every row needs one)")
    codes, labels = label_codes(ids, member)
    pairs = pd.DataFrame({"group": label_codes(df[group], group)[0], "member": codes})
    dup = pairs.duplicated(keep=False).to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        raise DataError(f"{member}: member {_show(ids.iloc[i])} appears more than once in "
                        f"group {_show(df[group].iloc[i])} (member ids must be unique "
                        "within a group)")
    return codes, labels


def prepare(
    frame: pd.DataFrame,
    *,
    group: str,
    x: str | Sequence[str],
    y: str,
    z: str | Sequence[str] | None = None,
    member: str | None = None,
    row_order_is_member: bool = False,
) -> Prepared:
    """Validate and convert a long DataFrame (one row per member).

    Parameters
    ----------
    frame : DataFrame
    group, y : str
        Group id column (ids are labels, :func:`label_codes`) and group-level outcome.
    x, z : str or list of str
        Member-level variable(s) to aggregate; group-level covariates (optional).
    member : str, optional
        Member label column (unique within a group; the same label is the same indicator
        in every group). Rows are ordered by it, so results do not depend on row order.
    row_order_is_member : bool
        Without ``member``: accept the order of the rows inside each group as the
        member order (position-dependent methods then fit that order).

    Returns
    -------
    Prepared

    Raises
    ------
    DataError
        Missing, duplicated or non-numeric columns, non-constant group-level values,
        infinite values, missing or duplicate member ids, too few groups, or no
        within-group replication.
    """
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"data: expected a pandas DataFrame (one row per member), got a "
                        f"{type(frame).__module__}.{type(frame).__name__}")
    xs, zs = _as_list(x), _as_list(z)
    if not xs:
        raise DataError("x: at least one member-level column is needed")
    if member is not None and row_order_is_member:
        raise DataError(f"member: give a member column ({member!r}) or accept the row order, "
                        "not both")
    cols = [group, *([member] if member is not None else []), *xs, y, *zs]
    _check_columns(frame, cols)
    notes: list[str] = []
    df = frame[cols].copy()
    if df[group].isna().any():
        n = int(df[group].isna().sum())
        df = df[df[group].notna()]
        notes.append(f"dropped {n} row(s) with a missing {group}")
    df = _numeric(df, [*xs, y, *zs], group)
    if member is not None:
        _member_codes(df, group, member)  # checks before anything is dropped
    miss_x = df[xs].isna().any(axis=1)
    if miss_x.any():
        notes.append(f"dropped {int(miss_x.sum())} row(s) with a missing {'/'.join(xs)}")
        df = df[~miss_x]
    df = _group_level(df, group, y, zs, notes)
    return Prepared(data=_build(df, group, member, xs, y, zs, row_order_is_member, notes),
                    notes=tuple(notes))


def _build(df: pd.DataFrame, group: str, member: str | None, xs: list[str], y: str,
           zs: list[str], row_order_is_member: bool, notes: list[str]) -> UserDataset:
    """Sort by group (and member) and build the dataset."""
    codes, labels = label_codes(df[group], group)
    G = len(labels)
    if G < 3:
        raise DataError(f"{group}: need at least 3 groups with complete data, got {G}")
    mcodes = mlabels = None
    if member is not None:
        mcodes, mlabels = _member_codes(df, group, member)
        order = np.lexsort((mcodes, codes))
        mcodes = mcodes[order]
    else:
        order = np.argsort(codes, kind="stable")
    df = df.iloc[order]
    codes = codes[order]
    sizes = np.bincount(codes, minlength=G)
    if sizes.max() < 2:
        raise DataError(f"{group}: every group has a single member; group means cannot be "
                        "told from members (need groups of size >= 2)")
    if (sizes == 1).any():
        notes.append(f"{int((sizes == 1).sum())} group(s) of size 1 (they add no within-group "
                     "information; methods that need balanced data will skip)")
    first = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    mode = "column" if member is not None else ("row_order" if row_order_is_member
                                                 else "undefined")
    return UserDataset(
        group=codes,
        x=df[xs].to_numpy(dtype=float),
        y=df[y].to_numpy(dtype=float)[first],
        z=df[zs].to_numpy(dtype=float)[first] if zs else np.empty((G, 0)),
        x_names=tuple(xs),
        z_names=tuple(zs),
        y_name=y,
        group_labels=labels,
        member_mode=mode,
        member_codes=mcodes,
        member_labels=mlabels,
        member_name=member or "member",
    )
