"""How many replications does a study need? A pilot run, then n = V / MCSE^2 per cell.

:func:`plan` runs ``pilot`` replications of every cell of a config through the runner (in
a temporary folder, with the config's own seed: the pilot's replications are the first
ones of the full study), then for every cell x method x term x target measure computes
the replications that reach the target Monte Carlo SE (Morris, White & Crowther 2019,
Table 6; Siepe et al. 2024), with an interval reflecting the pilot's own uncertainty
(:mod:`micromacro_sim.design.measures`). The largest requirement binds. A bare modelse,
cover or reject uses each method's default SE type (column ``se_type`` of the plan).
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from micromacro_sim.core.errors import ConfigError
from micromacro_sim.design.config import RunConfig
from micromacro_sim.design.estimands import true_value
from micromacro_sim.design.measures import (
    Measure,
    check_target,
    interval_limits,
    parse_measure,
    replications_needed,
    se_column,
)
from micromacro_sim.estimators import FALLBACK_ESTIMAND, method_estimands
from micromacro_sim.run.adaptive import default_se_types

__all__ = ["PLAN_COLUMNS", "PlanResult", "parse_targets", "plan"]

#: Columns of the plan table.
PLAN_COLUMNS = [
    "scenario", "label", "method", "term", "measure", "se_type", "target_mcse", "pilot_reps",
    "pilot_estimate", "pilot_mcse", "reps_needed", "reps_lo", "reps_hi", "binding",
]


def parse_targets(spec: str | Mapping[str, float], field: str = "target-mcse",
                  se_type: str | None = None) -> dict[Measure, float]:
    """``bias=0.005,cover=0.005`` (or a mapping) -> {Measure: target MCSE}.

    ``se_type`` is the SE type of a bare modelse, cover and reject (None: each method's
    default type).

    Raises
    ------
    ConfigError
        Unknown measure, or a target that is not a number of at least
        :data:`~micromacro_sim.design.measures.MIN_TARGET_MCSE` (a rate's below 0.5).
    """
    if isinstance(spec, Mapping):
        items = [(str(k), v) for k, v in spec.items()]
    else:
        items = []
        for part in str(spec).split(","):
            if not part.strip():
                continue
            name, eq, value = part.partition("=")
            if not eq:
                raise ConfigError(f"{field}: expected measure=value, got {part.strip()!r}")
            items.append((name.strip(), value.strip()))
    if not items:
        raise ConfigError(f"{field}: expected at least one measure=value, got {spec!r}")
    out: dict[Measure, float] = {}
    for name, value in items:
        m = parse_measure(name, field, se_type)
        out[m] = check_target(m, value, f"{field}: {name}={value!r}")
    return out


@dataclass(frozen=True)
class PlanResult:
    """A plan: one row per cell x method x term x measure (:data:`PLAN_COLUMNS`).

    Attributes
    ----------
    table : DataFrame
    pilot : int
        Pilot replications per cell.
    worst_case : bool
        Rates planned at p = .5.
    """

    table: pd.DataFrame
    pilot: int
    worst_case: bool

    @property
    def binding(self) -> pd.Series:
        """The row needing the most replications."""
        return self.table.loc[self.table["binding"]].iloc[0]

    @property
    def recommended(self) -> int:
        """Replications per cell that meet every target at the pilot's estimates."""
        return int(self.table["reps_needed"].max())

    @property
    def conservative(self) -> int:
        """Replications per cell that meet every target at the upper end of every
        interval."""
        return int(self.table["reps_hi"].max())

    def format(self) -> str:
        """A readable table and the recommendation."""
        t = self.table.copy()
        show = ["label", "method", "term", "measure", "se_type", "target_mcse", "pilot_estimate",
                "pilot_mcse", "reps_needed", "reps_lo", "reps_hi"]
        text = t[show].to_string(index=False, float_format=lambda v: f"{v:.4g}")
        b = self.binding
        note = " (rates at the worst case p = .5)" if self.worst_case else ""
        return (
            f"{text}\n\npilot: {self.pilot} replications per cell{note}\n"
            f"binding: {b['label']} / {b['method']} / {b['term']} / {b['measure']} "
            f"(pilot {b['pilot_estimate']:.4g}, target MCSE {b['target_mcse']:g})\n"
            f"replications needed: {self.recommended} "
            f"[{int(b['reps_lo'])}, {int(b['reps_hi'])}]; every target at the upper end "
            f"of its interval: {self.conservative}"
        )


def _check(config: RunConfig, pilot: int, level: float, alpha: float) -> None:
    if not isinstance(pilot, int) or isinstance(pilot, bool) or pilot < 10:
        raise ConfigError(f"pilot: expected an integer >= 10, got {pilot!r}")
    if not 0 < level < 1:
        raise ConfigError(f"level: expected a number in (0, 1), got {level!r}")
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha: expected a number in (0, 1), got {alpha!r}")


def check_terms(config: RunConfig, terms: list[str] | None) -> None:
    """Every requested term exists in some cell."""
    known = {t for sc in config.scenarios for t in sc.terms}
    for t in terms or []:
        if t not in known:
            raise ConfigError(f"term: unknown term {t!r} (known: {', '.join(sorted(known))})")


def pilot_estimates(config: RunConfig, pilot: int) -> pd.DataFrame:
    """The estimates table of ``pilot`` replications of every cell (a temporary run)."""
    from micromacro_sim.run.runner import run
    from micromacro_sim.run.storage import read_table

    cfg = dataclasses.replace(config, replications=pilot, adaptive=None, output=None)
    with tempfile.TemporaryDirectory(prefix="micromacro-pilot-") as tmp:
        res = run(cfg, run_dir=Path(tmp) / "pilot", progress=False)
        return read_table(res.run_dir, "estimates", [sc.key for sc in cfg.scenarios])


def plan_table(config: RunConfig, estimates: pd.DataFrame, targets: dict[Measure, float], *,
               alpha: float = 0.05, level: float = 0.95,
               worst_case: bool = False, terms: list[str] | None = None) -> pd.DataFrame:
    """The plan rows from a pilot's estimates table (proper fits only, as summaries)."""
    scen = {sc.key: sc for sc in config.scenarios}
    defaults = default_se_types(config.methods)
    scored = method_estimands(config.methods)
    own = config.generator is not None
    rows = []
    est = estimates[estimates["status"] == "ok"] if "status" in estimates else estimates
    if terms:
        est = est[est["term"].isin(terms)]
    for (key, method, term), g in est.groupby(["scenario", "method", "term"], sort=False):
        sc = scen[key]
        theta = true_value(sc, term, scored.get(method, FALLBACK_ESTIMAND), own_generator=own)
        for m, target in targets.items():
            se = m.se_for(defaults.get(method, "classical"))
            need = replications_needed(
                m, g["estimate"].to_numpy(), g[se_column(se)].to_numpy(),
                g["df_resid"].to_numpy(), theta, target, alpha=alpha, level=level,
                worst_case=worst_case, ci=interval_limits(g, m, alpha, method))
            if need is None:
                continue
            rows.append({
                "scenario": key, "label": sc.label(), "method": method, "term": term,
                "measure": m.label, "se_type": se if m.uses_se else "",
                "target_mcse": target, "pilot_reps": need.k,
                "pilot_estimate": need.estimate, "pilot_mcse": need.pilot_mcse,
                "reps_needed": _ceil(need.n), "reps_lo": _ceil(need.lo),
                "reps_hi": _ceil(need.hi),
            })
    table = pd.DataFrame(rows, columns=[c for c in PLAN_COLUMNS if c != "binding"])
    if table.empty:
        raise ConfigError("methods: no cell x method x term has four proper pilot fits to plan "
                          "from (raise --pilot)")
    order = {m.label: i for i, m in enumerate(config.methods)}
    table["_m"] = table["method"].map(order)
    table["_s"] = table["scenario"].map({k: i for i, k in enumerate(scen)})
    table = table.sort_values(["_s", "_m"], kind="stable").drop(columns=["_m", "_s"])
    table = table.reset_index(drop=True)
    table["binding"] = False
    table.loc[int(np.argmax(table["reps_needed"].to_numpy())), "binding"] = True
    return table


def _ceil(v: float) -> int:
    """Replications as an integer, at least 2 (an SD needs two)."""
    return max(2, int(math.ceil(v - 1e-9))) if math.isfinite(v) else -1


def plan(config: RunConfig, *, pilot: int = 200,
         target_mcse: str | Mapping[str, float] = "bias=0.005,cover=0.005",
         alpha: float = 0.05, level: float = 0.95, worst_case: bool = False,
         se_type: str | None = None, terms: list[str] | None = None) -> PlanResult:
    """Replications per cell for target Monte Carlo SEs, from a pilot run.

    Parameters
    ----------
    config : RunConfig
        The study (its ``replications`` is ignored: the pilot runs ``pilot``).
    pilot : int
        Pilot replications per cell (>= 10).
    target_mcse : str or mapping
        ``{"bias": 0.005, "cover": 0.005}`` or ``"bias=0.005,cover=0.005"``. Measures:
        bias, empse, mse, modelse, cover, reject (or power); a bare modelse, cover or
        reject uses each method's default SE type, ``cover_HC3`` etc. pick one.
    alpha : float
        Nominal level of coverage and rejection.
    level : float
        Confidence level of the intervals for the replications needed.
    worst_case : bool
        Plan rates (cover, reject) for p = .5, i.e. 0.25 / MCSE^2.
    se_type : str, optional
        SE type of a bare modelse, cover and reject for every method (default: each
        method's own, ``Estimator.default_se``: the model SE of a one-step method, HC3
        for two-step methods, HC2 for croon).
    terms : list of str, optional
        Plan for these terms only (default: every term).

    Returns
    -------
    PlanResult
    """
    targets = parse_targets(target_mcse, se_type=se_type)
    _check(config, pilot, level, alpha)
    check_terms(config, terms)
    estimates = pilot_estimates(config, pilot)
    table = plan_table(config, estimates, targets, alpha=alpha, level=level,
                       worst_case=worst_case, terms=terms)
    return PlanResult(table=table, pilot=pilot, worst_case=worst_case)
