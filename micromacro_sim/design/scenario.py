"""The simulation scenario: one cell of a design grid.

A :class:`Scenario` is immutable and validated on construction. Its parameters are
declared once, in :data:`micromacro_sim.design.fields.FIELDS`: the attributes, parsing,
defaults, key, label, :meth:`Scenario.to_params` and :meth:`Scenario.describe` all
derive from that table. The stable :attr:`Scenario.key` is a hash of the parameters,
so adding cells to a grid never changes the key (and therefore the random streams and
results) of existing cells. Parameters left at their defaults do not enter the hash,
so adding a new factor with a default value keeps every existing key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Collection
from functools import cached_property
from typing import Any

import numpy as np

from micromacro_sim.design import estimands
from micromacro_sim.design.fieldchecks import correlation
from micromacro_sim.design.fields import (
    DERIVED,
    FIELDS,
    REQUIRED,
    Field,
    Label,
    parse_fields,
    true_value,
    x_names,
    z_names,
)
from micromacro_sim.design.groups import GroupSizes

__all__ = ["GroupSizes", "Scenario"]


def _attribute(f: Field) -> tuple[str, Any, dataclasses.Field]:
    if f.derives is not None:
        # an alternative input (icc for sigma2_nu): kept for the key and the labels;
        # scenarios with equal generating values compare equal however they were given
        return f.attribute, f.kind.py_type | None, dataclasses.field(default=None, compare=False)
    return f.attribute, f.kind.py_type, dataclasses.field()


_ScenarioFields = dataclasses.make_dataclass(
    "_ScenarioFields", [_attribute(f) for f in FIELDS], frozen=True, kw_only=True
)
_ScenarioFields.__module__ = __name__
_DERIVED_TARGETS = {f.derives.target: f for f in FIELDS if f.derives is not None}
#: The label of a field that declares none (shown when not at its default).
_AUTO_LABEL = Label("{name}=", "g", always=False)


class Scenario(_ScenarioFields):  # type: ignore[misc,valid-type]
    """One cell of a simulation design (SPEC section 2).

    Build one with :meth:`from_params`. Its attributes are the fields of
    :data:`micromacro_sim.design.fields.FIELDS` (listed below); ``icc_given`` is the ICC when
    the config gave it instead of ``sigma2_nu`` (it does not take part in equality).
    """

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Scenario:
        """Validate a flat parameter mapping (as in a config cell) and build a scenario.

        Raises
        ------
        ConfigError
            Naming the offending field and value.
        """
        return cls(**parse_fields(params))

    # ------------------------------------------------------------------ derived values
    @property
    def icc(self) -> float:
        """Intraclass correlation of x: var_xi / (var_xi + sigma2_nu)."""
        return self.var_xi / (self.var_xi + self.sigma2_nu)

    @property
    def absent_members(self) -> bool:
        """Members may go missing (MCAR or MAR): the datasets then carry member ids."""
        return self.missing_mcar != 0.0 or self.missing_mar is not None

    @property
    def balanced(self) -> bool:
        """Every group has the same size in every replication (and no member goes missing)."""
        return self.group_size.balanced and not self.absent_members

    @property
    def reliability(self) -> float:
        """Reliability of the first construct's observed group mean, Var(T) / Var(xbar)
        (T the group's true mean of x): ``var_xi / (var_xi + sigma2_nu E[1/n])`` for
        continuous parallel members, otherwise accounting for categories, loadings,
        member variances and missing members (:func:`.estimands.reliability`)."""
        return estimands.reliability(self)

    @property
    def correlation(self) -> np.ndarray:
        """Correlation matrix of (Z_1..Z_q, xi_1..xi_p)."""
        return correlation(vars(self))

    @property
    def covariance(self) -> np.ndarray:
        """Covariance matrix of (Z_1..Z_q, xi_1..xi_p); Var(Z) = 1."""
        sd = np.ones(self.n_z + self.n_x)
        sd[self.n_z:] = math.sqrt(self.var_xi)
        return self.correlation * np.outer(sd, sd)

    @cached_property
    def covariance_cholesky(self) -> np.ndarray:
        """Lower Cholesky factor of :attr:`covariance` (read-only)."""
        chol = np.linalg.cholesky(self.covariance)
        chol.setflags(write=False)
        return chol

    @property
    def z_names(self) -> tuple[str, ...]:
        """Names of the Z terms: ``z`` for one, ``z1..zq`` for several."""
        return z_names(self.n_z)

    @property
    def x_names(self) -> tuple[str, ...]:
        """Names of the construct terms: ``xi`` for one, ``x1..xp`` for several."""
        return x_names(self.n_x)

    @property
    def terms(self) -> tuple[str, ...]:
        """Names of the group-level regression terms, in order."""
        return ("intercept", *self.z_names, *self.x_names)

    @property
    def true_params(self) -> dict[str, float]:
        """True value of every term (the fields whose ``term`` names it)."""
        row = self.describe()
        return {t: true_value(row, t) for t in self.terms}

    def unadjusted_limit(self) -> dict[str, float] | None:
        """Large-G limit of the OLS of y on [1, Z, xbar] (SPEC section 5, any sizes).

        Continuous parallel members: the population regression with
        Var(xbar) = var_xi + sigma2_nu E[1/n_g]. Other measurement (categories, loadings,
        member variances, missing members): :func:`.estimands.unadjusted_limit` (None where it
        has no closed form).
        """
        if not estimands.default_measurement(self):
            return estimands.unadjusted_limit(self)
        cov = self.covariance.copy()
        q = self.n_z
        cov_obs = cov.copy()
        idx = np.arange(q, q + self.n_x)
        cov_obs[idx, idx] = self.var_xi + self.sigma2_nu * self.group_size.mean_inverse()
        beta = np.array([*self.beta_z, *self.beta_xi])
        cov_y = cov @ beta  # Cov([Z, xbar], y) = Cov([Z, xi], y)
        b = np.linalg.solve(cov_obs, cov_y)
        return dict(zip(self.terms, (self.beta0, *b), strict=True))

    # ------------------------------------------------------------------ identity
    def _at_default(self, f: Field) -> bool:
        if f.default is REQUIRED or f.default is None:
            return False
        return f.kind.to_config(getattr(self, f.attribute)) == f.default

    def to_params(self) -> dict[str, Any]:
        """Canonical parameters (config form) including defaults.

        A field given through an alternative (``sigma2_nu`` through ``icc``) appears in
        the form the config gave it.
        """
        out: dict[str, Any] = {}
        for f in FIELDS:
            value = getattr(self, f.attribute)
            src = _DERIVED_TARGETS.get(f.name)
            if value is None or (src is not None and getattr(self, src.attribute) is not None):
                continue
            out[f.name] = f.kind.to_config(value)
        return out

    def _key_material(self) -> str:
        # The hash input: never change its format (it would re-key every stored result).
        params = self.to_params()
        for f in FIELDS:
            if f.name in params and (not f.in_key or self._at_default(f)):
                params.pop(f.name)
        return json.dumps(params, sort_keys=True, separators=(",", ":"), default=float)

    @cached_property
    def key(self) -> str:
        """Stable 16-hex-digit key from the non-default parameters."""
        return hashlib.sha256(self._key_material().encode()).hexdigest()[:16]

    @cached_property
    def key_words(self) -> tuple[int, ...]:
        """The key as four 32-bit words, for :class:`numpy.random.SeedSequence`."""
        digest = hashlib.sha256(self._key_material().encode()).digest()
        return tuple(int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4))

    def label(self, shown: Collection[str] = ()) -> str:
        """Human-readable one-line label (the fields that declare a :class:`Label`).

        A field whose label is not ``always`` shown appears when its value is not the
        default, or when it is named in ``shown`` (the factors a grid varies); a field
        without a :class:`Label` then appears as ``name=value`` (except one given through
        an alternative, such as ``sigma2_nu`` through the ICC label).
        """
        parts = []
        for f in FIELDS:
            spec = f.label or (None if f.name in _DERIVED_TARGETS else _AUTO_LABEL)
            value = getattr(self, f.name)
            if spec is None or value is None:
                continue
            if spec.always or f.name in shown or not self._at_default(f):
                parts.append(spec.prefix.format(name=f.name) + str(f.kind.show(value, spec.spec)))
        return " ".join(parts)

    def describe(self, shown: Collection[str] = ()) -> dict[str, Any]:
        """Flat row of parameters and derived values (for the scenarios table);
        ``shown`` as in :meth:`label`."""
        row: dict[str, Any] = {"scenario": self.key, "label": self.label(shown)}
        for f in FIELDS:
            if f.per_z:
                continue
            value = getattr(self, f.name)
            row.update(f.cells(value, self.x_names) if value is not None
                       else {f.column or f.name: None})
            for d in DERIVED:
                if d.after == f.name:
                    row[d.name] = getattr(self, d.name)
        per_z = [f for f in FIELDS if f.per_z]
        for j, name in enumerate(self.z_names):
            for f in per_z:
                row.update(f.z_cells(getattr(self, f.name), j, name, self.x_names))
        return row


Scenario.__doc__ = (Scenario.__doc__ or "") + "\n    Parameters\n    ----------\n" + "".join(
    f"    {f.name} : {getattr(f.kind.py_type, '__name__', str(f.kind.py_type))}\n"
    f"        {f.doc[0].upper()}{f.doc[1:]}.\n"
    for f in FIELDS
)
