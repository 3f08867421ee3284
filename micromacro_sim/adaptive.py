"""Adaptive replications: each cell runs blocks of replications until its targets hold.

A config may ask for a precision instead of a number of replications:

.. code-block:: yaml

    replications: {target_mcse: {bias: 0.005, cover: 0.005}, min: 200, max: 20000, block: 100}

Every cell starts with its first ``min`` replications. After each round, the Monte Carlo
SE of every target measure is computed for every method x term of the cell from its
proper fits (as the summaries compute them; :mod:`micromacro_sim.planning.measures`). A
cell is done when every MCSE is at or below its target, or when it reached ``max``
(reported as not met). Otherwise its next count is the next point of the grid ``min +
j * block`` at or beyond both one more block and the replications the current data
predict (``n = V / MCSE^2``), at most ``max``.

The decision is a function of the cell's first ``n`` replications only, and those are
bitwise the same whatever the execution (n_jobs, backend, chunk size, resume). Every
run replays the rule from ``min`` on the data the folder already holds, so a run with
tighter targets extends the same streams and equals a fresh run with those targets, and
a looser target on a folder with more replications uses only the first ones it needs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError
from .planning.measures import Measure, parse_measure, replications_needed, se_column

if TYPE_CHECKING:
    import pandas as pd

    from .config import RunConfig
    from .scenario import Scenario

__all__ = ["ADAPTIVE_KEYS", "Adaptive", "CellOutcome", "assess", "next_count",
           "parse_adaptive", "run_rounds"]

#: Keys of the mapping form of ``replications``.
ADAPTIVE_KEYS = ("target_mcse", "min", "max", "block")
#: Nominal level of coverage and rejection in the stopping rule (the summaries' default).
ALPHA = 0.05
#: A target counts as met only below ``target * (1 - SLACK)``, so that the MCSE the
#: summaries compute (the same formula, rounded differently) never exceeds it.
SLACK = 1e-9


@dataclass(frozen=True)
class Adaptive:
    """Adaptive replications: target MCSEs and the limits of every cell.

    Attributes
    ----------
    targets : tuple of (Measure, float)
    min, max, block : int
        First count, largest count, and the step of the grid of counts.
    """

    targets: tuple[tuple[Measure, float], ...]
    min: int
    max: int
    block: int

    def to_config(self) -> dict[str, Any]:
        """The config-file form."""
        return {"target_mcse": {m.label: t for m, t in self.targets}, "min": self.min,
                "max": self.max, "block": self.block}


def _int(value: Any, field: str, low: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(f"{field}: expected an integer >= {low}, got {value!r}")
    return value


def _targets(value: Any) -> tuple[tuple[Measure, float], ...]:
    field = "replications.target_mcse"
    if not isinstance(value, Mapping) or not value:
        raise ConfigError(f"{field}: expected a mapping of measure: MCSE, got {value!r}")
    out: dict[Measure, float] = {}
    for name, target in value.items():
        m = parse_measure(str(name), field)
        ok = isinstance(target, (int, float)) and not isinstance(target, bool)
        if not ok or not math.isfinite(target) or target <= 0:
            raise ConfigError(f"{field}.{name}: expected a positive number, got {target!r}")
        if m.is_rate and target >= 0.5:
            raise ConfigError(f"{field}.{name}: a rate's MCSE is below 0.5, got {target!r}")
        if m in out:
            raise ConfigError(f"{field}.{name}: measure {m.label!r} given twice")
        out[m] = float(target)
    return tuple(out.items())


def parse_adaptive(value: Any) -> Adaptive:
    """Validate the mapping form of ``replications``.

    Raises
    ------
    ConfigError
        A one-line message naming the field and the value.
    """
    if not isinstance(value, Mapping):
        raise ConfigError(f"replications: expected an integer or a mapping, got {value!r}")
    unknown = sorted(str(k) for k in value if k not in ADAPTIVE_KEYS)
    if unknown:
        raise ConfigError(f"replications.{unknown[0]}: unknown key (known: "
                          f"{', '.join(ADAPTIVE_KEYS)})")
    if "target_mcse" not in value:
        raise ConfigError("replications.target_mcse: missing (e.g. {bias: 0.005})")
    targets = _targets(value["target_mcse"])
    low = _int(value.get("min", 200), "replications.min", 10)
    high = _int(value.get("max", 20000), "replications.max", 10)
    block = _int(value.get("block", 100), "replications.block", 1)
    if high < low:
        raise ConfigError(f"replications.max: expected at least min ({low}), got {high!r}")
    return Adaptive(targets, low, high, block)


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
    from .storage import read_table

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
