"""Run a config: generate, analyse, write shards; resume or extend what is missing.

:func:`run` is the whole orchestration, as a sequence of the steps in
:mod:`~micromacro_sim.run.session`: plan the run from the design and the folder, claim the
folder, open the ledger and plan the missing tasks, execute them in chunks
(:mod:`~micromacro_sim.run.execute`, :func:`~micromacro_sim.run.tasks.run_task`,
:func:`~micromacro_sim.run.chunk.simulate_chunk`) while each finished task is recorded,
and finish the manifest with the run's true end.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from micromacro_sim.design.config import RunConfig
from micromacro_sim.run.parts import Part
from micromacro_sim.run.session import claim, execute_run, open_ledger, plan_run, recording

__all__ = ["RunResult", "run"]


@dataclass(frozen=True)
class RunResult:
    """What :func:`run` did."""

    run_dir: Path
    tasks_run: int
    replications_run: int
    seconds: float
    notes: tuple[str, ...] = ()


def run(
    config: RunConfig,
    *,
    run_dir: str | Path | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
    max_tasks: int | None = None,
    force: bool = False,
    part: Part | str | None = None,
) -> RunResult:
    """Run (or resume, or extend) every missing task of ``config``.

    A folder may be extended: more replications or more grid cells run only what is
    missing, and the rows equal those of a fresh run bit for bit.

    Parameters
    ----------
    config : RunConfig
    run_dir : path, optional
        Output folder (default: the config's ``output``, else ``results/<name>``).
    overwrite : bool
        Discard an existing run of a different config in ``run_dir``.
    progress : bool, optional
        Show progress on stderr (default: yes; a line redrawn in place on a terminal,
        plain lines at task ends and at least every 10 s elsewhere, e.g. a job's log).
    max_tasks : int, optional
        Stop after this many tasks (used to test interruption and resume).
    force : bool
        Run even what :func:`~micromacro_sim.run.capacity.plan_budget` estimates will not fit.
    part : Part or "I/N", optional
        Run only part I of N of the tasks (a cluster array; see :mod:`.parts`); parts
        run side by side in one folder.

    Returns
    -------
    RunResult

    Raises
    ------
    ConfigError, StorageError, RunLocked
        Before anything is written, except a full disk or an unwritable file met
        while running (finished shards are then kept and recorded).
    """
    started = time.perf_counter()
    plan = plan_run(config, run_dir, overwrite=overwrite, force=force, part=part)
    show = True if progress is None else progress
    with claim(plan) as lock:
        ledger, tasks = open_ledger(plan, lock, max_tasks)
        with recording(ledger, plan.run_dir, started, plan.notes) as outcome:
            execute_run(plan, ledger, tasks, show, max_tasks, outcome)
    return RunResult(run_dir=plan.run_dir, tasks_run=outcome.tasks,
                     replications_run=outcome.replications,
                     seconds=time.perf_counter() - started, notes=tuple(plan.notes))
