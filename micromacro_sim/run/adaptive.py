"""Adaptive replications at run time: rounds of blocks per cell until its targets hold.

The settings (``replications: {target_mcse: ..., min, max, block}``) are parsed in
:mod:`micromacro_sim.design.adaptive`, whose docstring states the rule. Here each round's
estimates are assessed (:func:`assess`), the next count chosen (:func:`next_count`) and
the rounds driven (:func:`run_rounds`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from micromacro_sim.design.adaptive import ALPHA, SLACK, Adaptive
from micromacro_sim.design.config import RunConfig
from micromacro_sim.design.measures import replications_needed, se_column
from micromacro_sim.design.scenario import Scenario
from micromacro_sim.run.storage import read_table

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["CellOutcome", "Rounds", "assess", "next_count", "run_rounds"]

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


def assess(adaptive: Adaptive, scenario: Scenario, est: pd.DataFrame, n: int) -> CellOutcome:
    """The MCSE of every target measure, method and term over the cell's first ``n``
    replications (proper fits only); a measure with fewer than four usable fits fails."""
    rows = est[(est["replication"] < n) & (est["status"] == "ok")]
    worst = (-1.0, "", math.inf, math.nan)
    needed = float(n)
    met = True
    for (method, term), g in rows.groupby(["method", "term"], sort=False):
        theta = scenario.true_params[term]
        for m, target in adaptive.targets:
            need = replications_needed(m, g["estimate"].to_numpy(),
                                       g[se_column(m.se_type)].to_numpy(),
                                       g["df_resid"].to_numpy(), theta, target, alpha=ALPHA)
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

    def manifest_entry(self, adaptive: Adaptive) -> dict[str, Any]:
        """The manifest's ``adaptive`` record."""
        cells: dict[str, Any] = {}
        for key, n in self.counts.items():
            o = self.outcomes.get(key)
            cells[key] = (o.to_json(True) if o is not None else
                          {"replications": n, "met": False, "finished": False})
        return {**adaptive.to_config(), "cells": cells}


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
    state = Rounds(outcomes={}, counts={k: adaptive.min for k in scen})
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
            o = assess(adaptive, scen[key], groups[key], state.counts[key])
            if o.met or o.replications >= adaptive.max:
                state.outcomes[key] = o
            else:
                state.counts[key] = next_count(adaptive, o)
        if record is not None:
            record(state)
