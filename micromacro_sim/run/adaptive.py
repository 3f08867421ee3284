"""Adaptive replications at run time: rounds of blocks per cell until its targets hold.

The settings (``replications: {target_mcse: ..., min, max, block}``) are parsed in
:mod:`micromacro_sim.design.adaptive`, whose docstring states the rule. Here each round's
estimates are assessed (:func:`assess`), the next count chosen (:func:`next_count`) and
the rounds driven (:func:`run_rounds`). The SE type of every target that uses one is
fixed per method before the first round (:func:`target_se_types`): the folder's record
when it has one, so that a resumed run replays the rule it started with.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from micromacro_sim.core.results import SE_TYPES
from micromacro_sim.design.adaptive import ALPHA, SLACK, Adaptive
from micromacro_sim.design.config import MethodSpec, RunConfig
from micromacro_sim.design.estimands import true_value
from micromacro_sim.design.measures import (
    interval_limits,
    method_se_type,
    replications_needed,
    se_column,
)
from micromacro_sim.design.scenario import Scenario
from micromacro_sim.estimators import FALLBACK_ESTIMAND, method_estimands
from micromacro_sim.run.storage import load_manifest, read_table

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["SE_RECORD", "CellOutcome", "Rounds", "assess", "default_se_types", "next_count",
           "run_rounds", "target_se_types"]

#: Key of the manifest's ``adaptive`` record that holds, per target measure (its config
#: label) and method label, the SE type the rule used.
SE_RECORD = "se_types"

#: Target label -> method label -> SE type.
SeTypes = dict[str, dict[str, str]]


def default_se_types(methods: Sequence[MethodSpec]) -> dict[str, str]:
    """Method label -> its default SE type (the estimator's ``default_se``)."""
    from micromacro_sim.estimators import method_class

    out = {}
    for spec in methods:
        cls = method_class(spec.method)
        out[spec.label] = method_se_type(getattr(cls, "default_se", None), cls.two_step)
    return out


def target_se_types(adaptive: Adaptive, methods: Sequence[MethodSpec],
                    previous: Mapping[str, Any] | None) -> SeTypes:
    """The SE type of every target that uses one, per method.

    Parameters
    ----------
    adaptive : Adaptive
    methods : sequence of MethodSpec
    previous : mapping, optional
        The folder's ``adaptive`` record (None: a fresh folder). Types it records are
        kept; a record without :data:`SE_RECORD` (written before it existed) means
        ``classical`` for a bare name, as it did then. Pairs it lacks get the method's
        default (:func:`default_se_types`).
    """
    defaults = default_se_types(methods)
    kept: Any = {}
    legacy = False
    if isinstance(previous, Mapping):
        kept = previous.get(SE_RECORD)
        legacy = not isinstance(kept, Mapping)
    out: SeTypes = {}
    for m, _ in adaptive.targets:
        if not m.uses_se:
            continue
        row = kept.get(m.label) if isinstance(kept, Mapping) else None
        row = row if isinstance(row, Mapping) else {}
        out[m.label] = {
            label: row[label] if row.get(label) in SE_TYPES
            else m.se_for("classical" if legacy else default)
            for label, default in defaults.items()}
    return out


@dataclass(frozen=True)
class CellOutcome:
    """One cell's state after assessing its first ``replications``.

    Attributes
    ----------
    replications : int
    met : bool
        Every target holds.
    binding : str
        ``method/term/measure`` with the largest MCSE relative to its target.
    mcse, target : float
        That measure's MCSE and target.
    needed : float
        Replications the data predict for every target (the largest).
    """

    replications: int
    met: bool
    binding: str
    mcse: float
    target: float
    needed: float

    def to_json(self, finished: bool) -> dict[str, Any]:
        """The manifest record."""
        mcse = self.mcse if math.isfinite(self.mcse) else None
        return {"replications": self.replications, "met": self.met, "finished": finished,
                "binding": self.binding, "mcse": mcse, "target": self.target}


def assess(adaptive: Adaptive, scenario: Scenario, est: pd.DataFrame, n: int,
           se_types: Mapping[str, Mapping[str, str]],
           scored: Mapping[str, tuple[str, str]] | None = None, *,
           own_generator: bool = False) -> CellOutcome:
    """The MCSE of every target measure, method and term over the cell's first ``n``
    replications (proper fits only); a measure with fewer than four usable fits fails.
    ``se_types`` (:func:`target_se_types`) gives the SE type of each target per method,
    ``scored`` the (scale, origin) of each method's estimand (docs/estimands.md; default
    the x scale), ``own_generator`` that the fields' values are the truth."""
    scored = scored or {}
    rows = est[(est["replication"] < n) & (est["status"] == "ok")]
    worst = (-1.0, "", math.inf, math.nan)
    needed = float(n)
    met = True
    for (method, term), g in rows.groupby(["method", "term"], sort=False):
        theta = true_value(scenario, term, scored.get(method, FALLBACK_ESTIMAND),
                           own_generator=own_generator)
        for m, target in adaptive.targets:
            se = se_types.get(m.label, {}).get(method) or m.se_for("classical")
            need = replications_needed(m, g["estimate"].to_numpy(),
                                       g[se_column(se)].to_numpy(),
                                       g["df_resid"].to_numpy(), theta, target, alpha=ALPHA,
                                       ci=interval_limits(g, m, ALPHA, method))
            if need is None:
                mcse, want = math.inf, float(n + adaptive.block)
            else:
                mcse = need.pilot_mcse
                # the need counts usable fits: scale to replications
                want = need.n * n / need.k if math.isfinite(need.n) else math.inf
            ok = mcse <= target * (1 - SLACK)
            met = met and ok
            if not ok:
                needed = max(needed, want)
            ratio = mcse / target
            if ratio > worst[0]:
                worst = (ratio, f"{method}/{term}/{m.label}", mcse, target)
    return CellOutcome(n, met, worst[1], worst[2], worst[3], needed)


def next_count(adaptive: Adaptive, outcome: CellOutcome) -> int:
    """The next count of an unfinished cell: the first grid point ``min + j * block`` at
    least one block on and at least the predicted need, at most ``max``."""
    n = outcome.replications
    if not math.isfinite(outcome.needed):
        return adaptive.max
    steps = max(1, math.ceil((outcome.needed - n) / adaptive.block))
    return int(min(adaptive.max, n + steps * adaptive.block))


@dataclass
class Rounds:
    """What :func:`run_rounds` did: per cell its outcome (finished cells) or its
    current count, the tasks and replications run, and whether ``max_tasks`` stopped
    it."""

    outcomes: dict[str, CellOutcome]
    counts: dict[str, int]
    tasks: int = 0
    replications: int = 0
    stopped: bool = False
    se_types: SeTypes = field(default_factory=dict)

    def manifest_entry(self, adaptive: Adaptive) -> dict[str, Any]:
        """The manifest's ``adaptive`` record: the settings, the SE type of every target
        per method (:data:`SE_RECORD`) and each cell's state."""
        cells: dict[str, Any] = {}
        for key, n in self.counts.items():
            o = self.outcomes.get(key)
            cells[key] = (o.to_json(True) if o is not None else
                          {"replications": n, "met": False, "finished": False})
        return {**adaptive.to_config(), SE_RECORD: self.se_types, "cells": cells}


def run_rounds(config: RunConfig, run_dir: Path,
               plan: Callable[[dict[str, int]], Sequence[Any]],
               execute: Callable[[Sequence[Any]], None],
               max_tasks: int | None = None,
               record: Callable[[Rounds], None] | None = None) -> Rounds:
    """Run rounds until every cell is done (or ``max_tasks`` tasks ran).

    Parameters
    ----------
    config : RunConfig
        With ``adaptive`` set.
    run_dir : Path
    plan : callable
        ``counts -> tasks``: the missing tasks for these per-cell counts.
    execute : callable
        Runs tasks (each has ``size``).
    max_tasks : int, optional
    record : callable, optional
        Called with the state after every round (to write the manifest).
    """
    adaptive = config.adaptive
    assert adaptive is not None
    scen = {sc.key: sc for sc in config.scenarios}
    scored = method_estimands(config.methods)
    # the manifest this run wrote carries the SE record of an earlier run of the folder
    previous = (load_manifest(run_dir) or {}).get("adaptive")
    state = Rounds(outcomes={}, counts={k: adaptive.min for k in scen},
                   se_types=target_se_types(adaptive, config.methods, previous))
    left = max_tasks
    while True:
        pending = [k for k in scen if k not in state.outcomes]
        if not pending:
            return state
        tasks = list(plan({k: state.counts[k] for k in pending}))
        if left is not None:
            state.stopped = len(tasks) > left
            tasks = tasks[:left]
            left -= len(tasks)
        execute(tasks)
        state.tasks += len(tasks)
        state.replications += sum(t.size for t in tasks)
        if state.stopped:
            if record is not None:
                record(state)
            return state
        est = read_table(run_dir, "estimates", pending)
        groups = dict(tuple(est.groupby("scenario", sort=False))) if not est.empty else {}
        for key in pending:
            if key not in groups:  # nothing finished (cannot happen after a full round)
                raise RuntimeError(f"adaptive: no estimates for scenario {key}")
            o = assess(adaptive, scen[key], groups[key], state.counts[key], state.se_types,
                       scored, own_generator=config.generator is not None)
            if o.met or o.replications >= adaptive.max:
                state.outcomes[key] = o
            else:
                state.counts[key] = next_count(adaptive, o)
        if record is not None:
            record(state)
