"""Run configuration: a YAML file with a scenario grid, methods, seed and policy.

Example
-------
.. code-block:: yaml

    name: clark2020
    seed: 20200831
    replications: 1000
    methods: [true, unadjusted]
    fixed: {n_groups: 100, group_size: 10, r_zxi: 0.3}
    grid: {sigma2_nu: [9, 1]}

Every list in ``grid`` is a factor whose levels expand into the full product; values
in ``fixed`` are taken as they are (so ``fixed: {group_size: [5, 30]}`` is one
unbalanced design, while ``grid: {group_size: [10, 40]}`` is two balanced cells).

An optional ``meta:`` block holds the free text of a study protocol (:data:`META_KEYS`,
read by ``micromacro protocol``); it enters neither a scenario key nor the result identity.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from micromacro_sim.core.errors import ConfigError, did_you_mean
from micromacro_sim.core.version import __version__
from micromacro_sim.design import limits
from micromacro_sim.design.adaptive import Adaptive, parse_adaptive
from micromacro_sim.design.budget import parse_memory_budget
from micromacro_sim.design.kinds import integer_hint
from micromacro_sim.design.meta import META_KEYS, parse_meta
from micromacro_sim.design.policy import Policy
from micromacro_sim.design.scenario import Scenario

__all__ = ["ENGINES", "META_KEYS", "MethodSpec", "RunConfig", "parse_config", "parse_methods"]

ENGINES: tuple[str, ...] = ("auto", "fast", "reference")

_TOP_KEYS = {
    "name", "description", "seed", "replications", "methods", "n_jobs", "chunk_size",
    "output", "admissibility", "fixed", "grid", "backend", "address",
    "engine", "generator", "memory_budget", "meta",
}



@dataclass(frozen=True)
class MethodSpec:
    """A method as the config names it: a label, a registered id and options."""

    label: str
    method: str
    options: tuple[tuple[str, Any], ...] = ()

    def to_config(self) -> Any:
        """Config-file form."""
        if self.label == self.method and not self.options:
            return self.method
        return {self.label: {"method": self.method, **dict(self.options)}}


@dataclass(frozen=True)
class RunConfig:
    """A validated run configuration.

    Attributes
    ----------
    name : str
    scenarios : tuple of Scenario
        Cells of the expanded grid, in grid order.
    methods : tuple of MethodSpec
    seed : int
        Root seed of every random stream.
    replications : int
        Replications per cell (with ``adaptive``: its ``max``, the most any cell runs).
    policy : Policy
        Inadmissible-solution policy (see :mod:`micromacro_sim.estimators.admissibility`).
    engine : str
        ``auto`` (default), ``fast`` or ``reference`` (see
        :data:`~micromacro_sim.design.config.ENGINES`).
    n_jobs, chunk_size, memory_budget, backend, address, output
        Execution options: they do not change results. ``memory_budget`` (bytes, None
        for the default) bounds the working set of a task's batches (see
        :mod:`~micromacro_sim.design.budget`).
    generator : str or None
        A user's generator (``module:Name`` or an entry point of
        ``micromacro_sim.generators``) used instead of :func:`micromacro_sim.generate.dgp.generate`.
    factors : tuple of str
        The grid's factors (each scenario's label names them).
    adaptive : Adaptive or None
        Adaptive replications (``replications: {target_mcse: ..., min, max, block}``;
        see :mod:`micromacro_sim.design.adaptive`).
    meta : dict
        The ``meta:`` block, key of :data:`META_KEYS` -> text (lists joined by "; "):
        protocol text only, never part of a scenario key or the result identity.
    raw : dict
        The config as read (stored in the manifest).
    plugins : dict
        Plug-in reference -> :func:`~micromacro_sim.estimators.plugins.identity` for the
        methods and generator from outside the package; filled by
        :func:`~micromacro_sim.run.configure.resolve`, which checks the methods against the
        registry.
    """

    name: str
    scenarios: tuple[Scenario, ...]
    methods: tuple[MethodSpec, ...]
    seed: int
    replications: int
    policy: Policy
    n_jobs: int = 1
    chunk_size: int | None = None
    engine: str = "auto"
    memory_budget: int | None = None
    backend: str = "auto"
    address: str | None = None
    output: str | None = None
    description: str = ""
    generator: str | None = None
    factors: tuple[str, ...] = ()
    adaptive: Adaptive | None = None
    meta: dict[str, str] = field(default_factory=dict, compare=False)
    raw: dict[str, Any] = field(default_factory=dict, compare=False)
    plugins: dict[str, Any] = field(default_factory=dict, compare=False)

    def scenario_rows(self) -> list[dict[str, Any]]:
        """The scenarios table: one :meth:`Scenario.describe` row per cell, labels naming
        every factor of the grid.

        Labels are unique: cells whose values differ only beyond the labels' rounding
        get the start of their key appended (``[1a2b3c]``).
        """
        rows = [sc.describe(self.factors) for sc in self.scenarios]
        labels = [r["label"] for r in rows]
        for r in rows:
            if labels.count(r["label"]) > 1:
                r["label"] = f"{r['label']} [{r['scenario'][:6]}]"
        return rows

    def result_identity(self) -> dict[str, Any]:
        """Everything that determines the numbers of a replication.

        Neither the list of scenarios nor the number of replications enters: a
        replication's numbers depend on its own stream only, so a folder may be extended
        by grid cells or replications (only what is missing runs). The methods do enter
        (every estimates shard holds all of them): changing them needs another folder or
        ``--overwrite``. Plug-ins (methods from outside the package, a user's generator) add their
        :func:`~micromacro_sim.estimators.plugins.identity` under ``plugins``: editing one changes
        the hash. Without plug-ins the identity is what it always was. ``meta`` (protocol
        text) never enters.
        """
        out: dict[str, Any] = {
            "seed": self.seed,
            "methods": [m.to_config() for m in self.methods],
            "admissibility": self.policy.to_config(),
            "engine": self.engine,
            "package": __version__,
        }
        if self.plugins:
            out["plugins"] = dict(self.plugins)
        return out

    @cached_property
    def result_hash(self) -> str:
        """Hash of :meth:`result_identity`: runs with equal hashes may share a folder."""
        text = json.dumps(self.result_identity(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def resolved_chunk_size(self) -> int:
        """Replications per task: the configured value, or about two tasks per worker.

        Large chunks suit the fast engine (its batched solvers pay a fixed cost per
        iteration, whatever the batch size); at most 1000 replications per task keeps
        memory bounded and progress visible.
        """
        if self.chunk_size:
            return self.chunk_size
        total = self.replications * len(self.scenarios)
        per = -(-total // (2 * max(1, self.n_jobs)))
        return int(min(self.replications, 1000, max(10, per)))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _method_spec(item: Any) -> MethodSpec:
    """One entry of ``methods:``: a name, or ``{label: {method: name, option: value}}``."""
    if item is True:  # YAML 1.1 reads an unquoted `true` as a boolean
        item = "true"
    if isinstance(item, str):
        return MethodSpec(item, item)
    if not isinstance(item, dict) or len(item) != 1:
        raise ConfigError(f"methods: expected a name or {{label: {{options}}}}, got {item!r}")
    label, body = next(iter(item.items()))
    label = str(label)
    if not isinstance(body, dict):
        raise ConfigError(f"methods.{label}: expected a mapping of options, got {body!r}")
    opts = dict(body)
    method = opts.pop("method", label)
    if method is True:
        method = "true"
    if not isinstance(method, str) or not method:
        raise ConfigError(f"methods.{label}.method: expected a method name, got {method!r}")
    bad = [k for k in opts if not isinstance(k, str)]
    if bad:
        raise ConfigError(f"methods.{label}: option names are words, got {bad[0]!r}")
    return MethodSpec(label, method, tuple(sorted(opts.items())))


def parse_methods(value: Any) -> tuple[MethodSpec, ...]:
    """A config's ``methods:`` list as specs (labels unique, each method a name, option
    names words); the methods themselves are checked against the registry by
    :func:`micromacro_sim.run.configure.check_methods`.

    Raises
    ------
    ConfigError
        ``methods...`` naming the entry and the value of the wrong shape.
    """
    if not isinstance(value, list) or not value:
        raise ConfigError(f"methods: expected a non-empty list of method names, got {value!r}")
    specs = [_method_spec(item) for item in value]
    labels = [s.label for s in specs]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise ConfigError(f"methods: label {dup[0]!r} appears more than once")
    return tuple(specs)


def _expand(fixed: dict[str, Any], grid: dict[str, Any]) -> tuple[Scenario, ...]:
    both = sorted(set(fixed) & set(grid))
    if both:
        raise ConfigError(f"grid.{both[0]}: appears in both grid and fixed")
    for k, v in grid.items():
        if not isinstance(v, list) or not v:
            raise ConfigError(f"grid.{k}: expected a non-empty list of levels, got {v!r}")
    names = list(grid)
    cells: list[Scenario] = []
    seen: set[str] = set()
    for levels in itertools.product(*(grid[k] for k in names)):
        params = {**fixed, **dict(zip(names, levels, strict=True))}
        sc = Scenario.from_params(params)
        if sc.key in seen:
            raise ConfigError(f"grid: two cells are the same scenario ({sc.label()})")
        seen.add(sc.key)
        cells.append(sc)
    return tuple(cells)


def _check_name(name: Any) -> str:
    """A run name is one plain folder name: results/<name> stays inside results/."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"name: expected a non-empty string, got {name!r}")
    bad = [c for c in ("/", "\\", "\0") if c in name]
    if bad or name in (".", ".."):
        raise ConfigError(f"name: must be a plain folder name (no path), got {name!r}")
    if len(name.encode()) > 200:
        raise ConfigError(f"name: longer than 200 bytes, got {name[:40]!r}...")
    return name


def _check_grid_size(grid: dict[str, Any], force: bool) -> None:
    cells = 1
    for v in grid.values():
        cells *= len(v) if isinstance(v, list) else 1
    if cells > limits.MAX_CELLS and not force:
        raise ConfigError(f"grid: {cells} cells, more than {limits.MAX_CELLS}; reduce the "
                          "levels or pass --force to insist")


def parse_config(raw: Any, *, source: str = "config", force: bool = False) -> RunConfig:
    """Validate a config mapping (``force`` lifts the limit on the number of grid cells).

    Raises
    ------
    ConfigError
        A one-line message naming the field and the value.
    """
    if not isinstance(raw, dict):
        what = "an empty file" if raw is None else type(raw).__name__
        raise ConfigError(f"config: expected a mapping at the top level of {source!r}, got {what}")
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise ConfigError(
            f"{unknown[0]}: unknown config key (known: {', '.join(sorted(_TOP_KEYS))})"
            + did_you_mean(unknown[0], _TOP_KEYS))
    seed = raw.get("seed")
    if not _is_int(seed) or seed < 0:
        raise ConfigError(f"seed: expected a non-negative integer, got {seed!r}"
                          f"{integer_hint(seed)}")
    reps = raw.get("replications")
    adaptive = None
    if isinstance(reps, dict):
        adaptive = parse_adaptive(reps)
        reps = adaptive.max
    elif not _is_int(reps) or reps < 1:
        raise ConfigError(f"replications: expected an integer >= 1 or a mapping "
                          f"{{target_mcse: ..., min, max, block}}, got {reps!r}"
                          f"{integer_hint(reps)}")
    n_jobs = raw.get("n_jobs", 1)
    if not _is_int(n_jobs) or n_jobs == 0 or n_jobs < -1:
        raise ConfigError(f"n_jobs: expected a positive integer or -1, got {n_jobs!r}"
                          f"{integer_hint(n_jobs)}")
    chunk = raw.get("chunk_size")
    if chunk is not None and (not _is_int(chunk) or chunk < 1):
        raise ConfigError(f"chunk_size: expected an integer >= 1, got {chunk!r}"
                          f"{integer_hint(chunk)}")
    budget = raw.get("memory_budget")
    if budget is not None:
        budget = parse_memory_budget(budget)
    backend = raw.get("backend", "auto")
    if not isinstance(backend, str):
        raise ConfigError(f"backend: expected a backend name, got {backend!r}")
    engine = raw.get("engine", "auto")
    if engine not in ENGINES:
        raise ConfigError(f"engine: expected one of {', '.join(ENGINES)}, got {engine!r}")
    address = raw.get("address")
    if address is not None and (not isinstance(address, str) or not address):
        raise ConfigError(f"address: expected a scheduler address string, got {address!r}")
    if address is not None and backend not in ("dask", "ray"):
        raise ConfigError(f"address: only used with backend dask or ray, got backend {backend!r}")
    output = raw.get("output")
    if output is not None and (not isinstance(output, str) or not output.strip()):
        raise ConfigError(f"output: expected a folder path, got {output!r}")
    name = _check_name(raw.get("name", Path(source).stem))
    fixed = raw.get("fixed", {}) or {}
    grid = raw.get("grid", {}) or {}
    if not isinstance(fixed, dict):
        raise ConfigError(f"fixed: expected a mapping, got {fixed!r}")
    if not isinstance(grid, dict):
        raise ConfigError(f"grid: expected a mapping, got {grid!r}")
    methods = parse_methods(raw.get("methods"))
    _check_grid_size(grid, force)
    scenarios = _expand(fixed, grid)
    generator = raw.get("generator")
    if generator is not None and (not isinstance(generator, str) or not generator):
        raise ConfigError(f"generator: expected module:Name or an entry point name, got "
                          f"{generator!r}")
    policy = Policy.from_config(raw.get("admissibility"))
    policy.check_scenarios(scenarios)
    meta = parse_meta(raw.get("meta"))
    return RunConfig(
        name=name,
        description=str(raw.get("description", "")),
        scenarios=scenarios,
        methods=methods,
        seed=seed,
        replications=reps,
        policy=policy,
        n_jobs=n_jobs,
        chunk_size=chunk,
        engine=engine,
        memory_budget=budget,
        backend=backend,
        address=address,
        output=output,
        generator=generator,
        factors=tuple(grid),
        adaptive=adaptive,
        meta=meta,
        raw=raw,
    )
