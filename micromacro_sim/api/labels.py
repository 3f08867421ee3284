"""Group ids and member labels: the one rule for telling them apart and ordering them.

Ids and member labels are labels, never numbers to be rounded or parsed: a CSV's label
columns are read as text exactly as written (see
:func:`~micromacro_sim.api.userdata.read_table_file`), and :func:`label_codes` decides which
values are one label and in what order labels come (the first member label is
factor_score's marker indicator).
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Hashable

import numpy as np
import pandas as pd

from micromacro_sim.core.errors import DataError

__all__ = ["label_codes"]

#: A text label that sorts as a number: an integer written without leading zeros.
_PLAIN_INTEGER = re.compile(r"-?[1-9][0-9]*|0")


def _kind(v: object) -> str:
    """What a label is: a text, a truth value, a number, or else the name of its type."""
    if isinstance(v, str):
        return "text"
    if isinstance(v, (bool, np.bool_)):
        return "bool"
    if isinstance(v, numbers.Real):
        return "number"
    return type(v).__name__


def label_codes(ids: pd.Series, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The one rule for group ids and member labels: each row's label index, and the labels.

    Two values are one label when equal and of the same kind (text, number, truth
    value): the number 1.1 and the text '1.1' are two labels, '1.10' and '1.1' two
    texts. Labels sort as numbers when all are numbers or all are texts of integers
    written without leading zeros ('2' < '10'); else as text ('01' < '02', 'a' < 'b';
    a number before a text written alike). ``ids`` has no missing value; ``name`` is
    the column's name for messages. Returns ``codes`` (int, one per row) and the
    labels in order, ``labels[codes]`` giving ``ids`` back.
    """
    if ids.dtype == object:  # values of several kinds (Python has 1 == 1.0 == True)
        seen: dict[tuple[str, Hashable], int] = {}
        try:
            codes = np.fromiter((seen.setdefault((_kind(v), v), len(seen)) for v in ids),
                                dtype=np.int64, count=len(ids))
        except TypeError:
            raise DataError(f"{name}: every id must be a text or a number") from None
        found = np.fromiter((v for _, v in seen), dtype=object, count=len(seen))
    else:
        codes, index = pd.factorize(ids)
        found = np.asarray(index)
    firsts = found.tolist()
    kinds = [_kind(v) for v in firsts]
    if all(k == "number" for k in kinds):
        key: list = firsts
    elif all(k == "text" and _PLAIN_INTEGER.fullmatch(v) for v, k in zip(firsts, kinds,
                                                                          strict=True)):
        key = [int(v) for v in firsts]
    else:
        key = [(str(v), k) for v, k in zip(firsts, kinds, strict=True)]
    order = sorted(range(len(firsts)), key=key.__getitem__)
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank[np.asarray(codes, dtype=np.int64)], found[order]
