"""How a scenario field's config value is parsed, checked, stored and shown.

Every kind has ``parse(name, value, values)`` (the checked value, or a
:class:`~micromacro_sim.core.errors.ConfigError` naming the field and the value),
``to_config`` (the canonical config form: it enters the scenario key, so it must never
change for an existing value), ``show`` (scenarios-table value, or label text) and
``axis``: ``""`` for one value, ``"z"`` for one per Z, ``"x"`` for one per construct,
``"zx"`` for one per (Z, construct) pair. ``needs`` names the fields parsed first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from micromacro_sim.core.errors import ConfigError, did_you_mean
from micromacro_sim.design.groups import GroupSizes

__all__ = [
    "Choice", "Integer", "Kind", "PerX", "PerZ", "PerZX", "Real", "Recycled", "Sizes", "Spec",
    "Thresholds", "integer_hint",
]


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _as_float(v: Any) -> float:
    """``v`` as a float; an integer too large for one becomes infinite (never raises)."""
    try:
        return float(v)
    except OverflowError:
        return math.inf if v > 0 else -math.inf


def _fmt(v: float, spec: str | None) -> str:
    return format(v, spec or "")


def integer_hint(v: Any) -> str:
    """Hint appended when an integer field gets a whole float such as ``1e6`` or ``10.0``
    (``""`` for any other value). Integer fields refuse every float: one above 2**53 is not
    the integer it was written as.
    """
    if not isinstance(v, (float, np.floating)) or not math.isfinite(v) or v != int(v):
        return ""
    digits = int(v) if abs(v) <= 2**53 else "the integer in digits"
    return f" (write {digits}: an integer takes no exponent or decimal point)"


# ---------------------------------------------------------------------------- scalars
@dataclass(frozen=True)
class Integer:
    """An integer of at least ``lo`` and, when ``hi`` is given, at most ``hi``.

    Floats are refused, whole ones (``1e6``, ``10.0``) with a hint (:func:`integer_hint`).
    """

    lo: int
    hi: int | None = None
    py_type: ClassVar[Any] = int
    axis: ClassVar[str] = ""
    needs: ClassVar[tuple[str, ...]] = ()

    @property
    def interval(self) -> str:
        """The range as a message shows it (``>= 2`` or ``in [2, 100]``)."""
        return f">= {self.lo}" if self.hi is None else f"in [{self.lo}, {self.hi}]"

    def parse(self, name: str, v: Any, values: Mapping[str, Any]) -> int:
        """The checked value, or a :class:`ConfigError` naming ``name`` and ``v``."""
        if not _is_int(v) or v < self.lo or (self.hi is not None and v > self.hi):
            raise ConfigError(f"{name}: expected an integer {self.interval}, got {v!r}"
                              f"{integer_hint(v)}")
        return int(v)

    def to_config(self, v: int) -> Any:
        """The config-file form of a parsed value."""
        return v

    def show(self, v: int, spec: str | None = None) -> Any:
        """Value of the scenarios-table column, or label text with format ``spec``."""
        return v if spec is None else format(v, spec)


@dataclass(frozen=True)
class Real:
    """A finite real number between ``lo`` and ``hi`` (each bound open or closed)."""

    lo: float
    hi: float
    lo_open: bool = False
    hi_open: bool = False
    py_type: ClassVar[Any] = float
    axis: ClassVar[str] = ""
    needs: ClassVar[tuple[str, ...]] = ()

    @property
    def interval(self) -> str:
        """The range in interval notation."""
        return (f"{'(' if self.lo_open else '['}{self.lo:g}, "
                f"{self.hi:g}{')' if self.hi_open else ']'}")

    def contains(self, x: float) -> bool:
        """Whether ``x`` is finite and inside the range."""
        if not math.isfinite(x):
            return False
        above = x > self.lo if self.lo_open else x >= self.lo
        below = x < self.hi if self.hi_open else x <= self.hi
        return above and below

    def parse(self, name: str, v: Any, values: Mapping[str, Any]) -> float:
        """The checked value, or a :class:`ConfigError` naming ``name`` and ``v``."""
        if not _is_num(v) or not self.contains(_as_float(v)):
            raise ConfigError(f"{name}: expected a finite number in {self.interval}, got {v!r}")
        return float(v)

    def to_config(self, v: float) -> Any:
        """The config-file form of a parsed value."""
        return v

    def show(self, v: float, spec: str | None = None) -> Any:
        """Value of the scenarios-table column, or label text with format ``spec``."""
        return v if spec is None else format(v, spec)


@dataclass(frozen=True)
class Choice:
    """One of a fixed set of words."""

    words: tuple[str, ...]
    py_type: ClassVar[Any] = str
    axis: ClassVar[str] = ""
    needs: ClassVar[tuple[str, ...]] = ()

    def parse(self, name: str, v: Any, values: Mapping[str, Any]) -> str:
        """The checked word, or a :class:`ConfigError`."""
        if not isinstance(v, str) or v not in self.words:
            raise ConfigError(f"{name}: expected one of {', '.join(self.words)}, got {v!r}")
        return v

    def to_config(self, v: str) -> Any:
        """The config-file form."""
        return v

    def show(self, v: str, spec: str | None = None) -> Any:
        """The word."""
        return v


def _numbers(name: str, v: Any, item: Real, what: str, empty: bool = False) -> tuple[float, ...]:
    """A list of numbers (non-empty unless ``empty``), each checked by ``item``."""
    if (not isinstance(v, (list, tuple)) or (not v and not empty)
            or not all(_is_num(x) for x in v)):
        raise ConfigError(f"{name}: expected a number or a list of numbers{what}, got {v!r}")
    bad = [x for x in v if not item.contains(_as_float(x))]
    if bad:
        raise ConfigError(f"{name}: expected finite numbers in {item.interval}, "
                          f"got {bad[0]!r} in {list(v)!r}")
    return tuple(float(x) for x in v)


# ---------------------------------------------------------------------------- vectors
@dataclass(frozen=True)
class PerZ:
    """One real number per Z (a single number is recycled over every Z)."""

    item: Real
    py_type: ClassVar[Any] = tuple[float, ...]
    axis: ClassVar[str] = "z"
    needs: ClassVar[tuple[str, ...]] = ("n_z",)
    count: ClassVar[str] = "n_z"
    per: ClassVar[str] = "one per Z"

    def parse(self, name: str, v: Any, values: Mapping[str, Any]) -> tuple[float, ...]:
        """The checked values, one per Z, or a :class:`ConfigError`."""
        n = values[self.count]
        if _is_num(v):
            return (self.item.parse(name, v, values),) * n
        out = _numbers(name, v, self.item, "", empty=True)
        if len(out) != n:
            raise ConfigError(f"{name}: expected {n} values ({self.per}), got {list(v)!r}")
        return out

    def to_config(self, v: tuple[float, ...]) -> Any:
        """A single number when every value is the same, else the list."""
        return v[0] if v and len(set(v)) == 1 else list(v)

    def show(self, v: tuple[float, ...], spec: str | None = None) -> Any:
        """Label text: the values formatted with ``spec`` and joined by commas."""
        return ",".join(_fmt(x, spec) for x in v)


@dataclass(frozen=True)
class PerX(PerZ):
    """One real number per construct (a single number is recycled over every construct)."""

    axis: ClassVar[str] = "x"
    needs: ClassVar[tuple[str, ...]] = ("n_x",)
    count: ClassVar[str] = "n_x"
    per: ClassVar[str] = "one per construct"


@dataclass(frozen=True)
class PerZX:
    """One real number per (Z, construct) pair: a number, one per Z, or a q x p nested list.

    Stored as q tuples of p values. With one construct the config form is exactly that
    of :class:`PerZ` (a number or one value per Z), so one-construct keys never move.
    """

    item: Real
    py_type: ClassVar[Any] = tuple[tuple[float, ...], ...]
    axis: ClassVar[str] = "zx"
    needs: ClassVar[tuple[str, ...]] = ("n_z", "n_x")

    def parse(self, name: str, v: Any, values: Mapping[str, Any]) -> tuple[tuple[float, ...], ...]:
        """The checked q x p values, or a :class:`ConfigError`."""
        q, p = values["n_z"], values["n_x"]
        if _is_num(v):
            return ((self.item.parse(name, v, values),) * p,) * q
        if isinstance(v, (list, tuple)) and v and all(isinstance(r, (list, tuple)) for r in v):
            rows = tuple(_numbers(name, r, self.item, " per Z") for r in v)
            if len(rows) != q or any(len(r) != p for r in rows):
                raise ConfigError(f"{name}: expected {q} rows (one per Z) of {p} values (one per "
                                  f"construct), got {[list(r) for r in v]!r}")
            return rows
        out = _numbers(name, v, self.item, " (one per Z) or a nested list (Z by construct)",
                       empty=True)
        if len(out) != q:
            raise ConfigError(f"{name}: expected {q} values (one per Z), got {list(v)!r}")
        return tuple((x,) * p for x in out)

    def to_config(self, v: tuple[tuple[float, ...], ...]) -> Any:
        """A number when all are equal, one per Z when constant over constructs, else rows."""
        flat = [x for r in v for x in r]
        if flat and len(set(flat)) == 1:
            return flat[0]
        if all(len(set(r)) == 1 for r in v):
            return [r[0] for r in v]
        return [list(r) for r in v]

    def show(self, v: tuple[tuple[float, ...], ...], spec: str | None = None) -> Any:
        """Label text: per Z its values (``/`` between constructs), Zs joined by commas."""
        return ",".join("/".join(_fmt(x, spec) for x in sorted(set(r), key=r.index))
                        for r in v)


@dataclass(frozen=True)
class Recycled:
    """A number, or a list of numbers recycled over the member positions."""

    item: Real
    py_type: ClassVar[Any] = tuple[float, ...]
    axis: ClassVar[str] = ""
    needs: ClassVar[tuple[str, ...]] = ()

    def parse(self, name: str, v: Any, values: Mapping[str, Any]) -> tuple[float, ...]:
        """The checked values (one or more), or a :class:`ConfigError`."""
        if _is_num(v):
            return (self.item.parse(name, v, values),)
        return _numbers(name, v, self.item, " (one per member position)")

    def to_config(self, v: tuple[float, ...]) -> Any:
        """A number when every position has the same value, else the list."""
        return v[0] if len(set(v)) == 1 else list(v)

    def show(self, v: tuple[float, ...], spec: str | None = None) -> Any:
        """Label text: the values joined by commas."""
        return ",".join(_fmt(x, spec) for x in (v[:1] if len(set(v)) == 1 else v))


@dataclass(frozen=True)
class Thresholds:
    """``symmetric``, ``skewed``, or k - 1 increasing numbers (k = ``categories``)."""

    py_type: ClassVar[Any] = Any
    axis: ClassVar[str] = ""
    needs: ClassVar[tuple[str, ...]] = ("categories",)
    words: ClassVar[tuple[str, ...]] = ("symmetric", "skewed")

    def parse(self, name: str, v: Any, values: Mapping[str, Any]) -> str | tuple[float, ...]:
        """The word or the checked thresholds, or a :class:`ConfigError`."""
        if isinstance(v, str):
            if v not in self.words:
                raise ConfigError(f"{name}: expected symmetric, skewed or a list of numbers, "
                                  f"got {v!r}")
            return v
        k = values["categories"]
        if k is None:
            raise ConfigError(f"{name}: thresholds need categories, got {v!r}")
        out = _numbers(name, v, Real(-1e6, 1e6), "")
        if len(out) != k - 1 or any(b <= a for a, b in zip(out, out[1:], strict=False)):
            raise ConfigError(f"{name}: expected {k - 1} increasing numbers (categories - 1), "
                              f"got {list(v)!r}")
        return out

    def to_config(self, v: str | tuple[float, ...]) -> Any:
        """The word or the list."""
        return v if isinstance(v, str) else list(v)

    def show(self, v: str | tuple[float, ...], spec: str | None = None) -> Any:
        """The word, or the thresholds joined by commas."""
        return v if isinstance(v, str) else ",".join(_fmt(x, spec) for x in v)


@dataclass(frozen=True)
class Sizes:
    """Group sizes: see :class:`~micromacro_sim.design.groups.GroupSizes`."""

    py_type: ClassVar[Any] = GroupSizes
    axis: ClassVar[str] = ""
    needs: ClassVar[tuple[str, ...]] = ()

    def parse(self, name: str, v: Any, values: Mapping[str, Any]) -> GroupSizes:
        """The parsed sizes, or a :class:`ConfigError`."""
        return GroupSizes.parse(v, name)

    def to_config(self, v: GroupSizes) -> Any:
        """The config-file form."""
        return v.to_config()

    def show(self, v: GroupSizes, spec: str | None = None) -> Any:
        """Short label (``10``, ``[5,30]``, ``U(5,15)``)."""
        return v.label()


# ---------------------------------------------------------------------------- mappings
@dataclass(frozen=True)
class Spec:
    """A small mapping with required and optional keys, parsed into ``cls``.

    ``keys`` maps each key to its kind; ``optional`` gives the defaults of the optional
    ones. ``cls(**values)`` builds the stored value, which must have ``to_config`` and
    ``label``.
    """

    cls: type
    keys: tuple[tuple[str, Any], ...]
    optional: tuple[tuple[str, Any], ...] = ()
    axis: ClassVar[str] = ""
    needs: ClassVar[tuple[str, ...]] = ()

    @property
    def py_type(self) -> Any:
        """Type of the stored value."""
        return self.cls

    def parse(self, name: str, v: Any, values: Mapping[str, Any]) -> Any:
        """The parsed mapping, or a :class:`ConfigError` naming ``name.key``."""
        if isinstance(v, self.cls):
            return v
        kinds, defaults = dict(self.keys), dict(self.optional)
        if not isinstance(v, Mapping):
            raise ConfigError(f"{name}: expected a mapping with keys {', '.join(kinds)}, "
                              f"got {v!r}")
        if True in v and "on" in kinds and "on" not in v:  # YAML 1.1 reads the key on as true
            v = {("on" if k is True else k): x for k, x in v.items()}
        unknown = sorted(map(str, set(v) - set(kinds)))
        if unknown:
            raise ConfigError(f"{name}.{unknown[0]}: unknown key (known: {', '.join(kinds)})"
                              + did_you_mean(unknown[0], kinds))
        out = {}
        for key, kind in kinds.items():
            if key not in v and key not in defaults:
                raise ConfigError(f"{name}.{key}: required key is missing (got {v!r})")
            out[key] = kind.parse(f"{name}.{key}", v.get(key, defaults.get(key)), values)
        return self.cls(**out)

    def to_config(self, v: Any) -> Any:
        """The config-file form (every key, defaults included)."""
        return v.to_config()

    def show(self, v: Any, spec: str | None = None) -> Any:
        """Short label."""
        return v.label()


Kind = Integer | Real | Choice | PerZ | PerX | PerZX | Recycled | Thresholds | Sizes | Spec
