"""How many groups (or members per group) does a study need? A stochastic root finder
over the simulation.

:func:`solve_power` finds the smallest design value (``n_groups`` or ``group_size``) at
which a method reaches a target power, coverage or absolute bias for one term, in the
manner of SimDesign's ``SimSolve`` (Chalmers 2024):

1. the ends of the range are evaluated (is the target reachable at all?);
2. probabilistic bisection (Waeber, Frazier & Henderson 2013) over the integers of the
   range, with a log-uniform prior: each step runs a block of new replications at the
   posterior median, and multiplies the density on the side the block points to by its
   evidence; blocks grow (100, 100, 100, 200, ...);
3. a local curve (binomial GLM of the rate on log x, or WLS of the bias on 1 / x) over
   the pooled replications near the root gives the answer and its interval;
4. a confirmation block runs at the answer.

Every evaluated design value is its own scenario (its key derives from its parameters),
and each block continues that scenario's replication streams, so the same config and
seed give the same answer. Power and coverage use each method's default SE type (the
model SE of a one-step method, HC3 for two-step methods, HC2 for croon) unless an SE
type is given; :attr:`Solution.se_type` and the evaluations say which.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from micromacro_sim.core.errors import ConfigError, did_you_mean
from micromacro_sim.core.results import DEFAULT_SE
from micromacro_sim.design.config import MethodSpec, RunConfig
from micromacro_sim.design.estimands import true_value
from micromacro_sim.design.measures import (
    Measure,
    check_se_type,
    indicators,
    interval_limits,
    se_column,
)
from micromacro_sim.design.scenario import Scenario
from micromacro_sim.estimators import method_estimands, registry
from micromacro_sim.planning.curve import CurveFit, fit_curve
from micromacro_sim.run.adaptive import default_se_types

__all__ = ["SOLVABLE", "PowerTarget", "Solution", "parse_range", "parse_target", "solve_power"]

#: Design fields the solver can search, with their default ranges.
SOLVABLE = {"n_groups": (10, 500), "group_size": (2, 100)}
_SHORT = {"n_groups": "G", "group_size": "n"}


@dataclass(frozen=True)
class PowerTarget:
    """The target: ``power`` (or ``reject``) and ``cover`` at least ``value``; ``bias``:
    absolute bias at most ``value``. ``se_type`` is the SE type of the tests and
    intervals (``default``: each method's own)."""

    measure: str
    value: float
    se_type: str = DEFAULT_SE

    @property
    def kind(self) -> str:
        return "bias" if self.measure == "bias" else "rate"

    @property
    def measure_spec(self) -> Measure:
        """The target as a :class:`~micromacro_sim.design.measures.Measure`."""
        return Measure("reject" if self.measure == "power" else self.measure, self.se_type)

    def se_for(self, spec: MethodSpec) -> str:
        """The SE type of the tests and intervals of method ``spec``."""
        if self.se_type != DEFAULT_SE:
            return self.se_type
        return default_se_types([spec])[spec.label]


def parse_target(text: str, se_type: str | None = None) -> PowerTarget:
    """``power=0.80``, ``cover=0.93``, ``bias=0.01`` -> PowerTarget (``se_type``: that
    of the tests and intervals, None for each method's default)."""
    se_type = check_se_type(se_type)
    name, eq, value = str(text).partition("=")
    name = name.strip().lower()
    name = {"reject": "power", "coverage": "cover"}.get(name, name)
    if not eq or name not in ("power", "cover", "bias"):
        raise ConfigError(f"target: expected power=P, cover=P or bias=B, got {text!r}")
    try:
        v = float(value)
    except ValueError:
        raise ConfigError(f"target: {name}={value.strip()!r}: expected a number") from None
    ok = 0 < v < 1 if name != "bias" else 0 < v < math.inf
    if not ok:
        bound = "in (0, 1)" if name != "bias" else "> 0"
        raise ConfigError(f"target: {name}={value.strip()!r}: expected a number {bound}")
    return PowerTarget(name, v, se_type)


def parse_range(text: str | tuple[int, int] | None, solve: str) -> tuple[int, int]:
    """``LO:HI`` -> (LO, HI), integers with a minimum of 3 groups or 2 members."""
    if solve not in SOLVABLE:
        raise ConfigError(f"solve: expected one of {', '.join(SOLVABLE)}, got {solve!r}")
    if text is None:
        return SOLVABLE[solve]
    if isinstance(text, tuple):
        lo, hi = text
    else:
        parts = str(text).split(":")
        try:
            lo, hi = (int(p) for p in parts) if len(parts) == 2 else (None, None)
        except ValueError:
            lo = hi = None
        if lo is None:
            raise ConfigError(f"range: expected LO:HI with integers LO < HI, got {text!r}")
    low = 3 if solve == "n_groups" else 2
    if lo < low or hi <= lo:
        raise ConfigError(f"range: expected LO:HI with {low} <= LO < HI, got {lo}:{hi}")
    return int(lo), int(hi)


@dataclass
class Solution:
    """One method's answer.

    Attributes
    ----------
    answer, lo, hi : int or None
        The smallest design value reaching the target and its interval (None: the target
        is not reached within the range; ``lo`` None: already reached at its start).
    confirmation : tuple (estimate, mcse, replications)
        The measure at ``answer`` from the confirmation block.
    se_type : str
        SE type of the tests and intervals ("" for a bias target).
    evaluations : DataFrame
        Every block run: design value, stage, replications, the block's and the pooled
        estimate, the pooled MCSE, the SE type and the fitted curve.
    """

    method: str
    solve: str
    target: PowerTarget
    range: tuple[int, int]
    se_type: str = ""
    answer: int | None = None
    lo: int | None = None
    hi: int | None = None
    note: str = ""
    confirmation: tuple[float, float, int] | None = None
    curve: CurveFit | None = None
    evaluations: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def replications(self) -> int:
        """Replications spent on this method."""
        return int(self.evaluations["reps"].sum()) if len(self.evaluations) else 0

    def line(self) -> str:
        """``n_groups = N [LO, HI]`` (or why there is no answer)."""
        if self.answer is None:
            return f"{self.solve} > {self.range[1]} [target not reached in the range]"
        lo = self.lo if self.lo is not None else self.range[0]
        hi = self.hi if self.hi is not None else f">{self.range[1]}"
        return f"{self.solve} = {self.answer} [{lo}, {hi}]"


class _Evaluator:
    """Runs blocks of replications of one method at design values, pooling by value."""

    def __init__(self, config: RunConfig, spec: MethodSpec, solve: str, term: str,
                 target: PowerTarget, alpha: float):
        self.config, self.spec, self.solve, self.term = config, spec, solve, term
        self.target, self.alpha = target, alpha
        self.se_type = target.se_for(spec) if target.kind == "rate" else ""
        self.base = config.scenarios[0].to_params()
        self.pooled: dict[int, np.ndarray] = {}  # x -> [n, s1, s2]
        self.rows: list[dict] = []

    def scenario(self, x: int) -> Scenario:
        return Scenario.from_params({**self.base, self.solve: int(x)})

    def quantity(self, sc: Scenario, start: int, stop: int) -> np.ndarray:
        """Per-replication indicator (rates) or error (bias) of the proper fits."""
        from micromacro_sim.run.chunk import simulate_chunk

        est, _ = simulate_chunk(sc, range(start, stop), (self.spec,), self.config.seed,
                                self.config.policy, self.config.engine)
        g = est.to_pandas()
        g = g[(g["term"] == self.term) & (g["status"] == "ok")]
        theta = true_value(sc, self.term, method_estimands([self.spec])[self.spec.label],
                           own_generator=self.config.generator is not None)
        e = g["estimate"].to_numpy()
        if self.target.measure == "bias":
            return (e - theta)[np.isfinite(e)]
        cover, reject = indicators(e, g[se_column(self.se_type)].to_numpy(),
                                   g["df_resid"].to_numpy(), theta, self.alpha,
                                   interval_limits(g, self.target.measure_spec, self.alpha,
                                                   self.spec.label))
        return (cover if self.target.measure == "cover" else reject).astype(float)

    def margin(self, stats: np.ndarray) -> tuple[float, float]:
        """Estimated margin (>= 0: target met) and its standard error."""
        n, s1, s2 = stats
        if n < 2:
            return float("nan"), float("inf")
        mean = s1 / n
        if self.target.kind == "rate":
            p = (s1 + 0.5) / (n + 1)
            return mean - self.target.value, math.sqrt(p * (1 - p) / n)
        var = max((s2 - n * mean**2) / (n - 1), 0.0)
        return self.target.value - abs(mean), math.sqrt(var / n) + 1e-300

    def run(self, x: int, reps: int, stage: str) -> tuple[float, float]:
        """Run ``reps`` new replications at ``x``; return the block's margin and SE."""
        sc = self.scenario(x)
        pooled = self.pooled.setdefault(int(x), np.zeros(3))
        start = int(sum(r["reps"] for r in self.rows if r["value"] == x))
        u = self.quantity(sc, start, start + reps)
        block = np.array([u.size, u.sum(), (u**2).sum()])
        pooled += block
        m_pool, se_pool = self.margin(pooled)
        self.rows.append({
            "method": self.spec.label, "solve": self.solve, "value": int(x), "stage": stage,
            "reps": reps, "proper": int(u.size),
            "block_estimate": float(u.mean()) if u.size else float("nan"),
            "pooled_reps": int(pooled[0]),
            "pooled_estimate": float(pooled[1] / pooled[0]) if pooled[0] else float("nan"),
            "pooled_mcse": se_pool, "se_type": self.se_type, "label": sc.label(),
        })
        return self.margin(block)


def _quantile(grid: np.ndarray, f: np.ndarray, q: float) -> int:
    return int(grid[min(int(np.searchsorted(np.cumsum(f), q)), grid.size - 1)])


def _bisect(ev: _Evaluator, grid: np.ndarray, steps: int, block: int) -> np.ndarray:
    """Probabilistic bisection; returns the posterior density over ``grid``."""
    from scipy import stats

    f = 1.0 / grid
    f /= f.sum()
    for step in range(steps):
        x = _quantile(grid, f, 0.5)
        m, se = ev.run(x, block * 2 ** (step // 3), "bisection")
        if not math.isfinite(m):
            continue
        q = float(np.clip(stats.norm.cdf(abs(m) / se), 0.55, 0.95))
        below = grid <= x  # where the root lies when the target is met at x
        f = f * np.where(below == (m >= 0), q, 1 - q)
        f /= f.sum()
    return f


def _local_fit(ev: _Evaluator, f: np.ndarray, grid: np.ndarray) -> CurveFit | None:
    """The curve over pooled evaluations inside the posterior's central 99% (widened)."""
    lo, hi = _quantile(grid, f, 0.005) / 1.25, _quantile(grid, f, 0.995) * 1.25
    xs = np.array(sorted(ev.pooled))
    near = xs[(xs >= lo) & (xs <= hi)]
    if near.size < 2:
        med = _quantile(grid, f, 0.5)
        near = xs[np.argsort(np.abs(np.log(xs / med)), kind="stable")[:3]]
    if near.size < 2:
        return None
    stats_ = np.array([ev.pooled[int(x)] for x in near])
    return fit_curve(ev.target.kind, near, stats_[:, 0], stats_[:, 1], stats_[:, 2])


def _solve_one(config: RunConfig, spec: MethodSpec, solve: str, term: str,
               target: PowerTarget, rng: tuple[int, int], alpha: float, level: float,
               steps: int, block: int, confirm: int) -> Solution:
    ev = _Evaluator(config, spec, solve, term, target, alpha)
    sol = Solution(spec.label, solve, target, rng, ev.se_type)
    lo, hi = rng
    m_hi, se_hi = ev.run(hi, 2 * block, "bracket")
    m_lo, se_lo = ev.run(lo, 2 * block, "bracket")
    grid = np.arange(lo, hi + 1)
    if m_hi < -2 * se_hi:
        sol.note = (f"the target is not met at {solve} = {hi} (widen --range if it improves "
                    f"with {solve})")
    elif m_lo > 2 * se_lo:
        sol.answer, sol.lo, sol.hi = lo, None, lo
        sol.note = f"the target is already met at {solve} = {lo}"
    else:
        f = _bisect(ev, grid, steps, block)
        sol.curve = _local_fit(ev, f, grid)
        if sol.curve is not None:
            sol.answer, sol.lo, sol.hi = sol.curve.root(grid, target.value, level)
        if sol.answer is None:
            sol.note = "the fitted curve does not reach the target in the range"
    if sol.answer is not None and confirm:
        m, se = ev.run(sol.answer, confirm, "confirmation")
        sol.confirmation = (ev.rows[-1]["block_estimate"], se, confirm)
        if m < -2 * se:
            sol.note = ("the confirmation run misses the target by more than 2 MCSE: "
                        "raise --steps or --block")
    table = pd.DataFrame(ev.rows)
    table["fitted"] = np.nan
    if sol.curve is not None:
        a, b = sol.curve.support
        inside = (table["value"] >= a) & (table["value"] <= b)
        table.loc[inside, "fitted"] = sol.curve.predict(table.loc[inside, "value"])
    sol.evaluations = table
    return sol


def method_specs(config: RunConfig, methods: list[str] | None) -> list[MethodSpec]:
    """Config labels or registered ids -> MethodSpecs (default: the config's methods)."""
    if not methods:
        return list(config.methods)
    by_label = {m.label: m for m in config.methods}
    reg = registry()
    out = []
    for m in methods:
        if m in by_label:
            out.append(by_label[m])
        elif m in reg:
            out.append(MethodSpec(m, m))
        else:
            known = ", ".join(dict.fromkeys([*by_label, *reg]))
            raise ConfigError(f"method: unknown method {m!r} (known: {known})"
                              + did_you_mean(m, [*by_label, *reg]))
    return out


def check_design(config: RunConfig, solve: str, term: str) -> None:
    """One design to vary; the solved field is an integer there; the term exists."""
    if solve not in SOLVABLE:
        raise ConfigError(f"solve: expected one of {', '.join(SOLVABLE)}, got {solve!r}")
    cells = {sc.key for sc in (Scenario.from_params({**s.to_params(), solve: 10})
                               for s in config.scenarios)}
    if len(cells) > 1:
        raise ConfigError(f"grid: the config has {len(cells)} designs besides {solve}; "
                          "power solves one (move the other factors to fixed)")
    sc = config.scenarios[0]
    if solve == "group_size" and not sc.group_size.balanced:
        raise ConfigError(f"group_size: solving group_size needs one size for every group, "
                          f"got {sc.group_size.label()}")
    if term not in sc.terms:
        raise ConfigError(f"term: unknown term {term!r} (known: {', '.join(sc.terms)})")


def solve_power(config: RunConfig, *, solve: str = "n_groups",
                target: str | PowerTarget = "power=0.80", methods: list[str] | None = None,
                term: str = "xi", alpha: float = 0.05,
                search_range: str | tuple[int, int] | None = None, level: float = 0.95,
                steps: int = 10, block: int = 100, confirm: int = 1000,
                se_type: str | None = None) -> list[Solution]:
    """The smallest design value at which each method reaches the target.

    Parameters
    ----------
    config : RunConfig
        One design (the solved field's value in it is replaced); seed, admissibility
        policy and engine are used as the config gives them.
    solve : {"n_groups", "group_size"}
    target : str or PowerTarget
        ``power=0.80``, ``cover=0.93`` (at least) or ``bias=0.01`` (absolute, at most).
    methods : list of str, optional
        Config labels or registered method ids (default: the config's methods).
    term : str
        The term whose power, coverage or bias is targeted.
    alpha : float
        Level of the tests and intervals.
    search_range : "LO:HI" or (LO, HI), optional
        Default 10:500 groups or 2:100 members.
    level : float
        Confidence level of the answer's interval.
    steps, block, confirm : int
        Bisection steps, the first block's replications (doubling every third step),
        and the confirmation block's replications.
    se_type : str, optional
        SE type of the tests and intervals for every method (default: each method's
        own, ``Estimator.default_se``; ignored when ``target`` is a PowerTarget).

    Returns
    -------
    list of Solution
        One per method, in the order given.
    """
    if isinstance(target, str):
        target = parse_target(target, se_type)
    rng = parse_range(search_range, solve)
    check_design(config, solve, term)
    for name, value, low in (("steps", steps, 1), ("block", block, 10), ("confirm", confirm, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ConfigError(f"{name}: expected an integer >= {low}, got {value!r}")
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha: expected a number in (0, 1), got {alpha!r}")
    if not 0 < level < 1:
        raise ConfigError(f"level: expected a number in (0, 1), got {level!r}")
    specs = method_specs(config, methods)
    return [_solve_one(config, s, solve, term, target, rng, alpha, level, steps, block, confirm)
            for s in specs]


def short_name(solve: str) -> str:
    """``G`` for n_groups, ``n`` for group_size."""
    return _SHORT[solve]
