"""The scenario's parameters, declared once.

:data:`FIELDS` lists every parameter of a simulation cell (SPEC section 2). Each
:class:`Field` says how its config value is parsed and checked (its :class:`Kind`,
which also bounds it: every number must be finite and inside its range), its default,
whether it enters the scenario key, how it is shown in labels and in the scenarios
table, and which regression term (if any) it is the true value of.
:class:`~micromacro_sim.scenario.Scenario` is built from this table: its attributes,
parsing, defaults, key, label, ``to_params`` and ``describe`` all derive from it, and
summaries read true values through :func:`true_value`.

Adding a factor means adding one :class:`Field` here (and using it in
:mod:`micromacro_sim.dgp`). A parameter at its default does not enter the key, so a new
factor keeps every existing key as long as its default reproduces the old generator.
Never change a default once results exist: add a new parameter instead.

The order of :data:`FIELDS` is the order of labels, of ``to_params`` and of the
scenarios-table columns (where the per-Z fields come after the others, one block per Z).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .errors import ConfigError
from .groups import GroupSizes

__all__ = [
    "DERIVED", "FIELDS", "REQUIRED", "Derived", "Field", "Integer", "Label", "PerZ", "Real",
    "Sizes", "field", "parse_fields", "term_column", "true_value", "z_names",
]

#: Largest variance a scenario may have (given or derived). With coefficients bounded by
#: :data:`MAX_COEF`, generated values stay far below the float range, so the sums of
#: squares and cross-products the estimators form stay finite.
MAX_VARIANCE = 1e100
#: Largest magnitude of a regression coefficient.
MAX_COEF = 1e50


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


#: Default of a parameter that every config must give.
REQUIRED: Any = _Required()


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


# ---------------------------------------------------------------------------- kinds
@dataclass(frozen=True)
class Integer:
    """An integer of at least ``lo``."""

    lo: int
    py_type: ClassVar[Any] = int

    def parse(self, name: str, v: Any, values: Mapping[str, Any]) -> int:
        """The checked value, or a :class:`ConfigError` naming ``name`` and ``v``."""
        if not _is_int(v) or v < self.lo:
            raise ConfigError(f"{name}: expected an integer >= {self.lo}, got {v!r}")
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
class PerZ:
    """One real number per Z (a single number is recycled over every Z)."""

    item: Real
    py_type: ClassVar[Any] = tuple[float, ...]

    def parse(self, name: str, v: Any, values: Mapping[str, Any]) -> tuple[float, ...]:
        """The checked values, one per Z, or a :class:`ConfigError`."""
        n_z = values["n_z"]
        if _is_num(v):
            return (self.item.parse(name, v, values),) * n_z
        if not isinstance(v, (list, tuple)) or not all(_is_num(x) for x in v):
            raise ConfigError(f"{name}: expected a number or a list of numbers, got {v!r}")
        bad = [x for x in v if not self.item.contains(_as_float(x))]
        if bad:
            raise ConfigError(f"{name}: expected finite numbers in {self.item.interval}, "
                              f"got {bad[0]!r} in {list(v)!r}")
        if len(v) != n_z:
            raise ConfigError(f"{name}: expected {n_z} values (one per Z), got {list(v)!r}")
        return tuple(float(x) for x in v)

    def to_config(self, v: tuple[float, ...]) -> Any:
        """A single number when every Z has the same value, else the list."""
        return v[0] if v and len(set(v)) == 1 else list(v)

    def show(self, v: tuple[float, ...], spec: str | None = None) -> Any:
        """Label text: the values formatted with ``spec`` and joined by commas."""
        return ",".join(format(x, spec or "") for x in v)


@dataclass(frozen=True)
class Sizes:
    """Group sizes: an integer, a list of integers or ``{uniform: [low, high]}``."""

    py_type: ClassVar[Any] = GroupSizes

    def parse(self, name: str, v: Any, values: Mapping[str, Any]) -> GroupSizes:
        """The parsed sizes, or a :class:`ConfigError`."""
        return GroupSizes.parse(v, name)

    def to_config(self, v: GroupSizes) -> Any:
        """The config-file form."""
        return v.to_config()

    def show(self, v: GroupSizes, spec: str | None = None) -> Any:
        """Short label (``10``, ``[5,30]``, ``U(5,15)``)."""
        return v.label()


Kind = Integer | Real | PerZ | Sizes


# ---------------------------------------------------------------------------- fields
@dataclass(frozen=True)
class Label:
    """How a field appears in a scenario's one-line label: ``prefix`` + value."""

    prefix: str
    spec: str = ""
    always: bool = True  # False: shown only when the value is not the default


@dataclass(frozen=True)
class Derivation:
    """Another field this one is given instead of, and how that field is computed."""

    target: str
    compute: Callable[[Any, Mapping[str, Any]], float]


@dataclass(frozen=True)
class Field:
    """One scenario parameter.

    Attributes
    ----------
    name : str
        Config name; also the :class:`Scenario` attribute unless ``attr`` is given.
    kind : Kind
        Parser and checker (type and range).
    doc : str
        One-line description.
    default : Any
        Config-form default, :data:`REQUIRED`, or None (optional and absent).
    in_key : bool
        Whether a non-default value enters the scenario key (False only for a
        parameter that cannot change any draw).
    label : Label or None
        Part of the one-line label.
    term : str or None
        Regression term whose true coefficient this is (``{z}`` for per-Z fields).
    column : str or None
        Scenarios-table column (``{z}`` is each Z's name); None: ``name``.
    attr : str or None
        Attribute name when it differs from ``name``.
    derives : Derivation or None
        This field is an alternative way to give ``derives.target``.
    """

    name: str
    kind: Kind
    doc: str
    default: Any = REQUIRED
    in_key: bool = True
    label: Label | None = None
    term: str | None = None
    column: str | None = None
    attr: str | None = None
    derives: Derivation | None = None

    @property
    def attribute(self) -> str:
        """Name of the :class:`Scenario` attribute holding the value."""
        return self.attr or self.name

    @property
    def per_z(self) -> bool:
        """One value per Z."""
        return isinstance(self.kind, PerZ)


def _sigma2_nu_from_icc(icc: float, values: Mapping[str, Any]) -> float:
    with np.errstate(all="ignore"):
        return float(np.float64(values["var_xi"]) * (1.0 - icc) / icc)


_VARIANCE = Real(0.0, MAX_VARIANCE, lo_open=True)
_COEF = Real(-MAX_COEF, MAX_COEF)
_CORR = Real(-1.0, 1.0, lo_open=True, hi_open=True)

#: Every scenario parameter, in scenarios-table order.
FIELDS: tuple[Field, ...] = (
    Field("n_groups", Integer(3), "number of groups G", label=Label("G=")),
    Field("group_size", Sizes(), "members per group: an integer, a list recycled over the "
          "groups, or {uniform: [low, high]} drawn per replication", label=Label("n=")),
    Field("sigma2_nu", _VARIANCE, "within-group variance of x (or give icc)"),
    Field("icc", Real(0.0, 1.0, lo_open=True, hi_open=True),
          "intraclass correlation of x, var_xi / (var_xi + sigma2_nu) (or give sigma2_nu)",
          default=None, attr="icc_given", label=Label("ICC=", ".3g"),
          derives=Derivation("sigma2_nu", _sigma2_nu_from_icc)),
    Field("r_zxi", PerZ(_CORR), "correlation of each Z with xi (one value, or one per Z)",
          column="r_{z}xi", label=Label("r=", "g")),
    Field("n_z", Integer(0), "number of group-level covariates Z", default=1,
          label=Label("q=", always=False)),
    Field("r_zz", _CORR, "correlation between any two Z", default=0.0,
          label=Label("rzz=", "g", always=False)),
    Field("beta0", _COEF, "intercept of y", default=0.3, term="intercept",
          label=Label("b0=", "g", always=False)),
    Field("beta_z", PerZ(_COEF), "coefficient of each Z (one value, or one per Z)",
          default=0.3, term="{z}", column="beta_{z}",
          label=Label("bz=", "g", always=False)),
    Field("beta_xi", _COEF, "coefficient of xi", default=0.3, term="xi",
          label=Label("bxi=", "g", always=False)),
    Field("sigma2_eps", Real(0.0, MAX_VARIANCE), "residual variance of y", default=0.35,
          label=Label("s2e=", "g", always=False)),
    Field("var_xi", _VARIANCE, "variance of the latent group mean xi", default=1.0,
          label=Label("vxi=", "g", always=False)),
)

_BY_NAME = {f.name: f for f in FIELDS}


def field(name: str) -> Field:
    """The field called ``name``."""
    return _BY_NAME[name]


@dataclass(frozen=True)
class Derived:
    """A derived column of the scenarios table, placed after field ``after``."""

    name: str
    after: str
    doc: str


#: Derived values shown in the scenarios table (each is a :class:`Scenario` attribute).
DERIVED: tuple[Derived, ...] = (
    Derived("balanced", "group_size", "every group has the same size in every replication"),
    Derived("reliability", "icc", "reliability of a group mean, "
            "var_xi / (var_xi + sigma2_nu E[1/n])"),
)


def z_names(n_z: int) -> tuple[str, ...]:
    """Names of the Z terms: ``z`` for one, ``z1..zq`` for several."""
    return ("z",) if n_z == 1 else tuple(f"z{j + 1}" for j in range(n_z))


# ---------------------------------------------------------------------------- parsing
def parse_fields(params: Mapping[str, Any]) -> dict[str, Any]:
    """Check a flat config mapping against :data:`FIELDS`.

    Returns
    -------
    dict
        Attribute name -> parsed value, for every field (derived ones computed).

    Raises
    ------
    ConfigError
        Naming the offending field and value.
    """
    unknown = sorted(set(params) - set(_BY_NAME))
    if unknown:
        raise ConfigError(
            f"{unknown[0]}: unknown scenario parameter (known: {', '.join(sorted(_BY_NAME))})"
        )
    sources = {f.derives.target: f for f in FIELDS if f.derives}
    for f in FIELDS:
        if f.default is REQUIRED and f.name not in sources and f.name not in params:
            raise ConfigError(f"{f.name}: required scenario parameter is missing")
    for target, src in sources.items():
        if (src.name in params) == (target in params):
            got = (f" (got {src.name}={params[src.name]!r}, {target}={params[target]!r})"
                   if src.name in params else " (got neither)")
            raise ConfigError(f"{src.name}: give exactly one of {src.name} and {target}{got}")
    # scalar fields first: per-Z fields need n_z
    values: dict[str, Any] = {}
    for f in sorted(FIELDS, key=lambda f: f.per_z):
        if f.name in params:
            values[f.name] = f.kind.parse(f.name, params[f.name], values)
        elif f.default is None or f.default is REQUIRED:
            values[f.name] = None
        else:
            values[f.name] = f.kind.parse(f.name, f.default, values)
    for target, src in sources.items():
        if values[src.name] is not None:
            derived = src.derives.compute(values[src.name], values)  # type: ignore[union-attr]
            kind = _BY_NAME[target].kind
            if not isinstance(kind, Real) or not kind.contains(derived):
                raise ConfigError(
                    f"{src.name}: {params[src.name]!r} gives {target} = {derived!r}, "
                    f"outside the finite range {getattr(kind, 'interval', '?')}"
                )
            values[target] = derived
    return {f.attribute: values[f.name] for f in FIELDS}


# ---------------------------------------------------------------------------- true values
def term_column(term: str, n_z: int) -> str:
    """Scenarios-table column holding the true coefficient of regression term ``term``.

    Raises
    ------
    KeyError
        No field is the true value of ``term``.
    """
    names = z_names(n_z)
    for f in FIELDS:
        if f.term is None:
            continue
        if f.per_z and term in names and f.term.format(z=term) == term:
            return (f.column or f.name).format(z=term)
        if not f.per_z and f.term == term:
            return f.column or f.name
    raise KeyError(f"no scenario field holds the true value of term {term!r}")


def true_value(row: Mapping[str, Any], term: str) -> float:
    """True coefficient of ``term`` from a scenarios-table row (:meth:`Scenario.describe`)."""
    return float(row[term_column(term, int(row["n_z"]))])
