"""The scenario's parameters, declared once.

:data:`FIELDS` lists every parameter of a simulation cell (SPEC section 2). Each
:class:`Field` says how its config value is parsed and checked (its :class:`Kind`,
which also bounds it: every number must be finite and inside its range), its default,
whether it enters the scenario key, how it is shown in labels and in the scenarios
table, and which regression term (if any) it is the true value of.
:class:`~micromacro_sim.design.scenario.Scenario` is built from this table: its attributes,
parsing, defaults, key, label, ``to_params`` and ``describe`` all derive from it, and
summaries read true values through :func:`true_value`.

Adding a factor means adding one :class:`Field` here (and using it in
:mod:`micromacro_sim.generate.dgp`). A parameter at its default does not enter the key, so a new
factor keeps every existing key as long as its default reproduces the old generator.
Never change a default once results exist: add a new parameter instead.

The order of :data:`FIELDS` is the order of labels, of ``to_params`` and of the
scenarios-table columns (where the per-Z fields come after the others, one block per Z).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from micromacro_sim.core.errors import ConfigError, did_you_mean
from micromacro_sim.design.fieldchecks import CHECKS
from micromacro_sim.design.kinds import (
    Choice,
    Integer,
    Kind,
    PerX,
    PerZ,
    PerZX,
    Real,
    Recycled,
    Sizes,
    Spec,
    Thresholds,
)

__all__ = [
    "CHECKS", "DERIVED", "FIELDS", "GENERATOR_FIELDS", "REQUIRED", "Derived", "ErrorHet",
    "Field", "Integer", "Kind", "Label", "MissingMar", "PerX", "PerZ", "PerZX", "Real", "Sizes",
    "field", "parse_fields", "term_column", "true_value", "x_names", "z_names",
]

#: Largest variance a scenario may have (given or derived). With coefficients bounded by
#: :data:`MAX_COEF`, generated values stay far below the float range, so the sums of
#: squares and cross-products the estimators form stay finite.
MAX_VARIANCE = 1e100
#: Largest magnitude of a regression coefficient.
MAX_COEF = 1e50
#: Most answer categories, constructs and Z: the thresholds, the (Z, xi) correlation matrix
#: and the methods' working sets grow with them (run/capacity counts a member's x once).
MAX_CATEGORIES, MAX_N_X, MAX_N_Z = 100, 20, 50


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


#: Default of a parameter that every config must give.
REQUIRED: Any = _Required()


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
        return self.kind.axis in ("z", "zx")

    @property
    def per_x(self) -> bool:
        """One value per construct (and not per Z)."""
        return self.kind.axis == "x"

    def cells(self, value: Any, x_names: tuple[str, ...]) -> dict[str, Any]:
        """Scenarios-table columns of a field that is not per Z: one, or one per construct."""
        col = self.column or self.name
        if self.per_x:
            return {col.format(x=x): value[j] for j, x in enumerate(x_names)}
        return {col: self.kind.show(value)}

    def z_cells(self, value: Any, j: int, z: str, x_names: tuple[str, ...]) -> dict[str, Any]:
        """Scenarios-table columns of a per-Z field for Z number ``j`` (named ``z``)."""
        col = self.column or self.name
        if self.kind.axis == "zx":
            return {col.format(z=z, x=x): value[j][k] for k, x in enumerate(x_names)}
        return {col.format(z=z): value[j]}


def _sigma2_nu_from_icc(icc: float, values: Mapping[str, Any]) -> float:
    with np.errstate(all="ignore"):
        return float(np.float64(values["var_xi"]) * (1.0 - icc) / icc)


_VARIANCE = Real(0.0, MAX_VARIANCE, lo_open=True)
_COEF = Real(-MAX_COEF, MAX_COEF)
_CORR = Real(-1.0, 1.0, lo_open=True, hi_open=True)
_SKEW = Real(-50.0, 50.0)
_KURT = Real(-2.0, 1e4)


@dataclass(frozen=True)
class MissingMar:
    """``missing_mar``: P(member missing) = logistic(a + strength * w_g), E = rate.

    ``w_g`` is the standardized first Z (``on: z``) or the standardized first latent mean
    (``on: xi``); the intercept ``a`` is solved so that the expected missing rate is
    ``rate`` (see :func:`micromacro_sim.design.measurement.mar_intercept`).
    """

    on: str
    rate: float
    strength: float

    def to_config(self) -> dict[str, Any]:
        """The config form (every key)."""
        return {"on": self.on, "rate": self.rate, "strength": self.strength}

    def label(self) -> str:
        """Short label, e.g. ``MAR(z,0.15,1)``."""
        return f"MAR({self.on},{self.rate:g},{self.strength:g})"


@dataclass(frozen=True)
class ErrorHet:
    """``e_het``: Var(e_g) proportional to exp(gamma t_g), ratio ``ratio`` between extremes."""

    by: str
    ratio: float

    def to_config(self) -> dict[str, Any]:
        """The config form (every key)."""
        return {"by": self.by, "ratio": self.ratio}

    def label(self) -> str:
        """Short label, e.g. ``het(z,4)``."""
        return f"het({self.by},{self.ratio:g})"


_POSITIVE = Real(0.0, 1e6, lo_open=True)
_MAR = Spec(MissingMar, (("on", Choice(("z", "xi"))), ("rate", Real(0.0, 1.0, True, True)),
                         ("strength", Real(-50.0, 50.0))), (("strength", 1.0),))
_HET = Spec(ErrorHet, (("by", Choice(("group_size", "z"))), ("ratio", _POSITIVE)))

#: The generator's factors beyond Croon & van Veldhoven's model (docs/generator.md).
#: Every default reproduces that model draw for draw.
GENERATOR_FIELDS: tuple[Field, ...] = (
    Field("n_x", Integer(1, MAX_N_X), "number of latent constructs, each measured by every "
          "member", default=1, label=Label("p=", always=False)),
    Field("r_xixi", _CORR, "correlation between any two latent constructs", default=0.0,
          label=Label("rxx=", "g", always=False)),
    Field("xi_skew", _SKEW, "skewness of the latent means xi", default=0.0,
          label=Label("xi_skew=", "g", always=False)),
    Field("xi_kurtosis", _KURT, "excess kurtosis of the latent means xi", default=0.0,
          label=Label("xi_kurt=", "g", always=False)),
    Field("nu_skew", _SKEW, "skewness of the member deviations nu", default=0.0,
          label=Label("nu_skew=", "g", always=False)),
    Field("nu_kurtosis", _KURT, "excess kurtosis of the member deviations nu", default=0.0,
          label=Label("nu_kurt=", "g", always=False)),
    Field("e_skew", _SKEW, "skewness of the group errors e", default=0.0,
          label=Label("e_skew=", "g", always=False)),
    Field("e_kurtosis", _KURT, "excess kurtosis of the group errors e", default=0.0,
          label=Label("e_kurt=", "g", always=False)),
    Field("categories", Integer(2, MAX_CATEGORIES), "answer categories k of ordinal members "
          "(absent: continuous x)", default=None, label=Label("k=")),
    Field("thresholds", Thresholds(), "ordinal thresholds: symmetric, skewed, or k - 1 "
          "increasing values on the standardized latent-response scale", default="symmetric",
          label=Label("thr=", "g", always=False)),
    Field("loadings", Recycled(_COEF), "loading of each member position on xi (recycled)",
          default=1.0, label=Label("load=", "g", always=False)),
    Field("member_variances", Recycled(_POSITIVE), "Var(nu) of each member position as a "
          "multiple of sigma2_nu (recycled)", default=1.0,
          label=Label("mvar=", "g", always=False)),
    Field("missing_mcar", Real(0.0, 1.0, hi_open=True), "probability that a member is "
          "missing completely at random", default=0.0, label=Label("mcar=", "g", always=False)),
    Field("missing_mar", _MAR, "members missing at random: {on: z | xi, rate: r, strength: s}",
          default=None, label=Label("")),
    Field("e_het", _HET, "heteroscedastic group errors: {by: group_size | z, ratio: R}",
          default=None, label=Label("")),
)

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
    Field("r_zxi", PerZX(_CORR), "correlation of each Z with xi (one value, one per Z, or a "
          "list per Z of one value per construct)", column="r_{z}{x}", label=Label("r=", "g")),
    Field("n_z", Integer(0, MAX_N_Z), "number of group-level covariates Z", default=1,
          label=Label("q=", always=False)),
    Field("r_zz", _CORR, "correlation between any two Z", default=0.0,
          label=Label("rzz=", "g", always=False)),
    Field("beta0", _COEF, "intercept of y", default=0.3, term="intercept",
          label=Label("b0=", "g", always=False)),
    Field("beta_z", PerZ(_COEF), "coefficient of each Z (one value, or one per Z)",
          default=0.3, term="{z}", column="beta_{z}",
          label=Label("bz=", "g", always=False)),
    Field("beta_xi", PerX(_COEF), "coefficient of xi (one value, or one per construct)",
          default=0.3, term="{x}", column="beta_{x}", label=Label("bxi=", "g", always=False)),
    Field("sigma2_eps", Real(0.0, MAX_VARIANCE), "residual variance of y", default=0.35,
          label=Label("s2e=", "g", always=False)),
    Field("var_xi", _VARIANCE, "variance of the latent group mean xi", default=1.0,
          label=Label("vxi=", "g", always=False)),
    *GENERATOR_FIELDS,
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
    Derived("reliability", "icc", "reliability of the observed group mean, Var(T) / "
            "Var(xbar) (T the group's true mean of x; docs/estimands.md)"),
)


def z_names(n_z: int) -> tuple[str, ...]:
    """Names of the Z terms: ``z`` for one, ``z1..zq`` for several."""
    return ("z",) if n_z == 1 else tuple(f"z{j + 1}" for j in range(n_z))


def x_names(n_x: int) -> tuple[str, ...]:
    """Names of the construct terms (the x columns): ``xi`` for one, ``x1..xp`` for several."""
    return ("xi",) if n_x == 1 else tuple(f"x{j + 1}" for j in range(n_x))


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
    # an optional field given as null (e.g. a grid level "no missing members") is absent
    params = {k: v for k, v in params.items()
              if not (v is None and k in _BY_NAME and _BY_NAME[k].default is None)}
    unknown = sorted(set(params) - set(_BY_NAME))
    if unknown:
        raise ConfigError(
            f"{unknown[0]}: unknown scenario parameter (known: {', '.join(sorted(_BY_NAME))})"
            + did_you_mean(unknown[0], _BY_NAME))
    sources = {f.derives.target: f for f in FIELDS if f.derives}
    for f in FIELDS:
        if f.default is REQUIRED and f.name not in sources and f.name not in params:
            raise ConfigError(f"{f.name}: required scenario parameter is missing")
    for target, src in sources.items():
        if (src.name in params) == (target in params):
            got = (f" (got {src.name}={params[src.name]!r}, {target}={params[target]!r})"
                   if src.name in params else " (got neither)")
            raise ConfigError(f"{src.name}: give exactly one of {src.name} and {target}{got}")
    # independent fields first: per-Z fields need n_z, per-construct ones n_x, ...
    values: dict[str, Any] = {}
    for f in sorted(FIELDS, key=lambda f: bool(f.kind.needs)):
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
    out = {f.attribute: values[f.name] for f in FIELDS}
    for check in CHECKS:
        check(out)
    return out


# ---------------------------------------------------------------------------- true values
def term_column(term: str, n_z: int, n_x: int = 1) -> str:
    """Scenarios-table column holding the true coefficient of regression term ``term``.

    Raises
    ------
    KeyError
        No field is the true value of ``term``.
    """
    for f in FIELDS:
        if f.term is None:
            continue
        if f.per_z and term in z_names(n_z) and f.term.format(z=term) == term:
            return (f.column or f.name).format(z=term)
        if f.per_x and term in x_names(n_x) and f.term.format(x=term) == term:
            return (f.column or f.name).format(x=term)
        if not f.per_z and not f.per_x and f.term == term:
            return f.column or f.name
    raise KeyError(f"no scenario field holds the true value of term {term!r}")


def true_value(row: Mapping[str, Any], term: str) -> float:
    """True coefficient of ``term`` from a scenarios-table row (:meth:`Scenario.describe`).

    Rows of tables written before constructs could vary have no ``n_x``: one construct.
    """
    n_x = row.get("n_x", 1)
    n_x = 1 if n_x is None or n_x != n_x else int(n_x)
    return float(row[term_column(term, int(row["n_z"]), n_x)])
