"""The true value each method's estimates are scored against, in a run folder.

A method declares the scale of its slopes and the origin of its intercept
(``Estimator.scale``, ``Estimator.origin``); the scenario fixes the estimands on every
scale (:mod:`micromacro_sim.design.estimands`). The scenarios are rebuilt from the config
the manifest records. A scenario that cannot be rebuilt (a config that no longer parses)
falls back to the latent-scale value of the scenarios table, and a method whose class
cannot be loaded (an absent plug-in) to the x scale with its intercept where x is 0. With a
generator of the user's own the estimands of this package's generator do not apply: every
method is scored against the fields' values. The ``theta_source`` column says which.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from micromacro_sim.core.errors import ConfigError
from micromacro_sim.design.config import parse_config
from micromacro_sim.design.estimands import estimands
from micromacro_sim.design.fields import true_value
from micromacro_sim.design.scenario import Scenario
from micromacro_sim.estimators import FALLBACK_ESTIMAND, method_estimands

__all__ = ["Estimand", "RunTruth", "run_truth"]



@dataclass(frozen=True)
class Estimand:
    """One true value and where it came from."""

    theta: float
    scale: str
    origin: str
    source: str


@dataclass(frozen=True)
class RunTruth:
    """True values of a run folder's scenarios for each of its methods.

    Attributes
    ----------
    scenarios : mapping of str to Scenario
        Rebuilt scenarios by key.
    rows : DataFrame
        The scenarios table indexed by key (the fallback).
    methods : mapping of str to (scale, origin)
        Declared estimand of each method label.
    """

    scenarios: Mapping[str, Scenario]
    rows: pd.DataFrame
    methods: Mapping[str, tuple[str, str]]
    fallback: str = "scenarios table (latent scale)"

    def method_estimand(self, method: str) -> tuple[str, str]:
        """(scale, origin) of a method label."""
        return self.methods.get(method, FALLBACK_ESTIMAND)

    def estimand(self, key: str, method: str, term: str) -> Estimand:
        """The true value of ``term`` for ``method`` in scenario ``key``."""
        scale, origin = self.method_estimand(method)
        shown_origin = origin if term == "intercept" else ""
        sc = self.scenarios.get(key)
        if sc is not None and term in sc.terms:
            e = estimands(sc)
            return Estimand(e.value(term, scale, origin), scale, shown_origin,
                            e.source_of(scale))
        try:
            theta = true_value(self.rows.loc[key], term)
        except KeyError:  # no field holds this term's true value
            theta = float("nan")
        return Estimand(theta, "latent", shown_origin, self.fallback)

    def is_null(self, key: str, method: str, term: str) -> bool:
        """Whether rejections of ``term`` are Type I errors: its slope is 0 on the latent
        scale (the generator gives the term no effect; on the scale of x a slope of Z can
        then still differ from 0 by a rounding-sized amount, see docs/estimands.md), or,
        for the intercept, the method's own estimand is 0."""
        if term == "intercept":
            return self.estimand(key, method, term).theta == 0
        sc = self.scenarios.get(key)
        if sc is not None and term in sc.terms:
            return estimands(sc).value(term, "latent") == 0
        return self.estimand(key, method, term).theta == 0

    def table(self, keys: list[str], methods: list[str]) -> pd.DataFrame:
        """Every estimand of the scenarios ``keys``: one row per scenario, term, scale and
        (for the intercept) origin, with the methods scored against it."""
        rows = []
        for key in keys:
            sc = self.scenarios.get(key)
            if sc is None:
                continue
            for row in estimands(sc).rows():
                users = [m for m in methods if self.method_estimand(m)[0] == row["scale"]
                         and (row["term"] != "intercept"
                              or self.method_estimand(m)[1] == row["origin"])]
                rows.append({"scenario": key, **row, "methods": ", ".join(users)})
        columns = ["scenario", "term", "scale", "origin", "theta", "source", "methods"]
        return pd.DataFrame(rows, columns=columns)

    def theta(self, key: str, method: str, term: str) -> float:
        """The true value alone."""
        return self.estimand(key, method, term).theta


def run_truth(manifest: Mapping[str, Any], scenarios: pd.DataFrame) -> RunTruth:
    """The :class:`RunTruth` of a run folder (its manifest and scenarios table)."""
    rows = scenarios.set_index("scenario") if "scenario" in scenarios.columns else scenarios
    try:
        cfg = parse_config(manifest.get("config"), source="manifest", force=True)
    except (ConfigError, TypeError, ValueError, AttributeError):
        return RunTruth({}, rows, {})
    methods = method_estimands(cfg.methods)
    if cfg.generator is not None:  # the estimands follow this package's generator only
        return RunTruth({}, rows, methods, "the fields' values (a generator of your own)")
    return RunTruth({sc.key: sc for sc in cfg.scenarios}, rows, methods)
