"""The Python API of a simulation study: :func:`simulate`.

.. code-block:: python

    import micromacro_sim as mm

    sim = mm.simulate("configs/clark2020.yaml", replications=200)
    sim.summary()          # one row per scenario x method x term, design factors as columns
    sim.estimates          # one row per replication x method x term
    sim.datasets           # one row per replication (redraws, reliability)
    sim.scenarios          # one row per scenario (parameters, label, derived values)

Without ``output`` the run goes to a temporary folder that is removed when the result is
closed or garbage-collected; with ``output`` it is an ordinary run folder (resumable,
extendable, readable by ``micromacro summarize``). ``micromacro run`` is this function
with a folder.
"""

from __future__ import annotations

import tempfile
import weakref
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

from micromacro_sim.core.errors import ConfigError
from micromacro_sim.design.config import RunConfig
from micromacro_sim.run.configure import load_config, parse_config
from micromacro_sim.run.runner import RunResult, run
from micromacro_sim.run.session import default_run_dir

__all__ = ["Simulation", "default_run_dir", "simulate"]

#: Top-level config keys :func:`simulate` accepts as keyword overrides.
OVERRIDES = ("replications", "seed", "n_jobs", "chunk_size", "engine", "backend", "address")


def _as_config(config: str | Path | Mapping[str, Any] | RunConfig, force: bool,
               overrides: dict[str, Any]) -> RunConfig:
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(given) - set(OVERRIDES))
    if unknown:
        raise ConfigError(f"{unknown[0]}: not a simulate() override (known: "
                          f"{', '.join(OVERRIDES)})")
    if isinstance(config, RunConfig):
        if not given:
            return config
        if not config.raw:
            raise ConfigError("config: a RunConfig without its raw form cannot take overrides")
        return parse_config({**config.raw, **given}, source=config.name, force=force)
    if isinstance(config, Mapping):
        return parse_config({**dict(config), **given}, force=force)
    if isinstance(config, (str, Path)):
        return load_config(config, force=force, **given)
    raise ConfigError(f"config: expected a path, a mapping or a RunConfig, got "
                      f"{type(config).__name__}")


class Simulation:
    """A finished (or partial) simulation: tidy tables of its run folder.

    Attributes
    ----------
    config : RunConfig
    run_dir : Path
        The run folder (a temporary one when :func:`simulate` had no ``output``).
    result : RunResult
        What this call ran.
    """

    def __init__(self, config: RunConfig, run_dir: Path, result: RunResult,
                 tmp: tempfile.TemporaryDirectory[str] | None = None) -> None:
        self.config, self.run_dir, self.result = config, run_dir, result
        self._tmp = tmp
        self._cleanup = weakref.finalize(self, tmp.cleanup) if tmp is not None else None

    def __repr__(self) -> str:
        where = "in memory" if self._tmp is not None else str(self.run_dir)
        return (f"Simulation({self.config.name!r}: {len(self.config.scenarios)} scenario(s) x "
                f"{self.config.replications} replications, {len(self.config.methods)} "
                f"method(s), {where})")

    @property
    def in_memory(self) -> bool:
        """Whether the run folder is temporary."""
        return self._tmp is not None

    def close(self) -> None:
        """Remove the temporary run folder (tables already read stay available)."""
        if self._cleanup is not None:
            self._cleanup()

    def __enter__(self) -> Simulation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self, table: str):
        from micromacro_sim.run.storage import read_table

        if self._cleanup is not None and not self._cleanup.alive:
            raise ConfigError("simulation: closed; its temporary folder is gone")
        return read_table(self.run_dir, table, [sc.key for sc in self.config.scenarios])

    @cached_property
    def estimates(self):
        """One row per (scenario, replication, method, term): estimate, SEs, status."""
        return self._read("estimates")

    @cached_property
    def datasets(self):
        """One row per (scenario, replication): redraws, gate, sizes, reliability."""
        return self._read("datasets")

    @cached_property
    def scenarios(self):
        """One row per scenario: key, label, every parameter and derived value."""
        import pandas as pd

        return pd.DataFrame(self.config.scenario_rows())

    def summary_tables(self, *, alpha: float = 0.05, include_flagged: bool = False):
        """The :class:`~micromacro_sim.summaries.summarize.RunSummary` (performance, flags,
        reliability) of the run folder."""
        from micromacro_sim.summaries.summarize import summarize_run

        if self._cleanup is not None and not self._cleanup.alive:
            raise ConfigError("simulation: closed; its temporary folder is gone")
        return summarize_run(self.run_dir, alpha=alpha, include_flagged=include_flagged)

    def summary(self, *, alpha: float = 0.05, include_flagged: bool = False):
        """Performance measures, one row per scenario x method x term, with the design's
        parameters (the scenarios table's columns) beside each row's label."""
        perf = self.summary_tables(alpha=alpha, include_flagged=include_flagged).performance
        design = self.scenarios.drop(columns=["label"])
        design = design[[c for c in design.columns if c == "scenario" or c not in perf]]
        out = perf.merge(design, on="scenario", how="left", validate="many_to_one")
        cols = list(perf.columns)
        at = cols.index("label") + 1
        factors = [c for c in design.columns if c != "scenario"]
        return out[cols[:at] + factors + cols[at:]]


def simulate(
    config: str | Path | Mapping[str, Any] | RunConfig,
    *,
    output: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = False,
    force: bool = False,
    part: str | None = None,
    max_tasks: int | None = None,
    **overrides: Any,
) -> Simulation:
    """Run a simulation study and return its tables.

    Parameters
    ----------
    config : path, mapping or RunConfig
        A YAML file, a config mapping (as the YAML would read) or a parsed config.
    output : path, optional
        Run folder; resumed or extended when it holds a run of this config. None: a
        temporary folder, removed when the result is closed or garbage-collected.
    overwrite, progress, force, part, max_tasks
        As for :func:`micromacro_sim.run.runner.run`.
    **overrides
        Top-level keys replacing the config's: ``replications``, ``seed``, ``n_jobs``,
        ``chunk_size``, ``engine``, ``backend``, ``address``.

    Returns
    -------
    Simulation

    Raises
    ------
    ConfigError, StorageError, RunLocked
        One line naming the field and the value.
    """
    cfg = _as_config(config, force, overrides)
    tmp = None
    if output is None:
        tmp = tempfile.TemporaryDirectory(prefix=f"micromacro-{cfg.name}-")
        run_dir = Path(tmp.name)
    else:
        run_dir = Path(output)
    try:
        res = run(cfg, run_dir=run_dir, overwrite=overwrite, progress=progress, force=force,
                  part=part, max_tasks=max_tasks)
    except BaseException:
        if tmp is not None:
            tmp.cleanup()
        raise
    return Simulation(cfg, res.run_dir, res, tmp)
