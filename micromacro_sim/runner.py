"""Run a config: generate, analyse, write shards; resume what is missing.

:func:`~micromacro_sim.chunk.simulate_chunk` (pure) draws and analyses a range of
replications; :func:`run_task` writes its tables as shards; :func:`run` enumerates the
missing (scenario, replication range) tasks and hands them to joblib.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .adaptive import Rounds, run_rounds
from .admissibility import Policy
from .chunk import simulate_chunk
from .config import MethodSpec, RunConfig
from .errors import ConfigError
from .execute import execute as execute_tasks
from .limits import plan_budget
from .lock import LOCK_NAME, RunLock, RunLocked, conflicting
from .manifest import (
    Ledger,
    now,
    previous_manifest,
    start_run,
    storage_error,
    write_scenarios_table,
)
from .parts import Part, PartLedger, chunk_owners, part_grain, start_part
from .paths import check_output_dir
from .progress import Progress
from .scenario import Scenario
from .storage import ShardRecord, completed_ranges, write_shard

__all__ = ["RunResult", "Task", "TaskResult", "plan_tasks", "run", "run_task", "simulate_chunk"]

def _single_threaded_blas():
    """Limit BLAS to one thread: the matrices here are small, and threads only contend
    (about 20% faster on one core, and workers do not oversubscribe the machine)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: without it BLAS keeps its own setting
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


@dataclass(frozen=True)
class Task:
    """Replications [start, stop) of one scenario, and everything needed to run them."""

    run_dir: str
    scenario: Scenario
    start: int
    stop: int
    methods: tuple[MethodSpec, ...]
    seed: int
    policy: Policy
    engine: str = "auto"
    result_hash: str = ""
    generator: str | None = None
    memory_budget: int | None = None

    @property
    def size(self) -> int:
        """Number of replications."""
        return self.stop - self.start


@dataclass(frozen=True)
class TaskResult:
    """What :func:`run_task` wrote: the task's range and its shards' ledger records."""

    key: str
    start: int
    stop: int
    shards: tuple[ShardRecord, ...]


def run_task(task: Task) -> TaskResult:
    """Simulate one task and write both shards.

    The datasets shard is written first and the estimates shard last, so the
    estimates shard marks a finished task.
    """
    sc = task.scenario
    with _single_threaded_blas():
        est, ds = simulate_chunk(sc, range(task.start, task.stop), task.methods, task.seed,
                                 task.policy, task.engine, task.generator,
                                 task.memory_budget)
    where = Path(task.run_dir)
    records = tuple(write_shard(where, table, sc.key, task.start, task.stop, frame,
                                task.result_hash)
                    for table, frame in (("datasets", ds), ("estimates", est)))
    return TaskResult(sc.key, task.start, task.stop, records)


def _missing(done: list[tuple[int, int]], total: int) -> list[tuple[int, int]]:
    """The ranges of [0, total) that no range in ``done`` covers (overlaps allowed)."""
    gaps, reach = [], 0
    for a, b in sorted(done):
        if a > reach:
            gaps.append((reach, min(a, total)))
        reach = max(reach, b)
        if reach >= total:
            break
    if reach < total:
        gaps.append((reach, total))
    return [(a, b) for a, b in gaps if a < b]


def finished_counts(config: RunConfig, run_dir: Path) -> dict[str, int]:
    """Scenario key -> replications of ``config`` already finished in ``run_dir``."""
    return {sc.key: config.replications - sum(b - a for a, b in _missing(
        completed_ranges(run_dir, sc.key), config.replications)) for sc in config.scenarios}


def plan_tasks(config: RunConfig, run_dir: Path, chunk_size: int | None = None,
               part: Part | None = None, counts: dict[str, int] | None = None) -> list[Task]:
    """A task for every replication range not yet finished in ``run_dir``.

    With ``part``, only the ranges of that part's chunks (see :mod:`.parts`): its tasks
    never cross a multiple of :func:`~micromacro_sim.parts.part_grain`. With ``counts``
    (scenario key -> replications), only those scenarios, each up to its own count.
    """
    size = chunk_size or config.resolved_chunk_size()
    grain = config.replications if part is None else part_grain(config, part.count)
    owners = None if part is None else chunk_owners(config, grain, part.count)
    tasks = []
    for sc in config.scenarios:
        if counts is not None and sc.key not in counts:
            continue
        total = config.replications if counts is None else counts[sc.key]
        for a, b in _missing(completed_ranges(run_dir, sc.key), total):
            s = a
            while s < b:
                # a part's tasks end at the next multiple of its grain
                stop = min(b, s + size, s - s % grain + grain)
                if owners is None or owners[(sc.key, s - s % grain)] == part.index:
                    tasks.append(Task(str(run_dir), sc, s, stop, config.methods,
                                      config.seed, config.policy, config.engine,
                                      config.result_hash, config.generator,
                                      config.memory_budget))
                s = stop
    return tasks


@dataclass(frozen=True)
class RunResult:
    """What :func:`run` did."""

    run_dir: Path
    tasks_run: int
    replications_run: int
    seconds: float
    notes: tuple[str, ...] = ()


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """Treat SIGTERM like Ctrl-C inside the block (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
        Show a progress line on stderr (default: when stderr is a terminal).
    max_tasks : int, optional
        Stop after this many tasks (used to test interruption and resume).
    force : bool
        Run even what :func:`~micromacro_sim.limits.plan_budget` estimates will not fit.
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
    if run_dir is None:
        run_dir = config.output if config.output is not None else Path("results") / config.name
    run_dir = check_output_dir(run_dir)
    if isinstance(part, str):
        part = Part.parse(part)
    if part is not None and config.adaptive is not None:
        raise ConfigError("part: adaptive replications decide each round from all of a "
                          "cell's replications and cannot run in parts; give replications "
                          "as an integer")
    if part is not None and overwrite:
        raise ConfigError("part: --overwrite cannot be combined with --part (one part "
                          "would discard the others' work); clear the folder first")
    old, notes = previous_manifest(config, run_dir, overwrite)
    budget = plan_budget(config, run_dir, {} if overwrite else finished_counts(config, run_dir),
                         force=force)
    notes.extend(budget.notes)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise storage_error(exc, run_dir) from None
    lock = RunLock(run_dir, name=LOCK_NAME if part is None else part.lock_name)
    with lock, _sigterm_as_interrupt():
        clash = conflicting(run_dir, lock.name)
        if clash is not None:
            name, holder = clash
            raise RunLocked(f"output: {str(run_dir)!r} is in use by another run ({name}: pid "
                            f"{holder.get('pid')} on host {holder.get('host')!r}); "
                            "wait for it to finish or choose another folder")
        return _run_locked(config, run_dir, lock, old, overwrite, notes, budget.chunk_size,
                           progress, max_tasks, part)


def _start(config: RunConfig, run_dir: Path, lock: RunLock, old: dict[str, Any] | None,
           overwrite: bool, notes: list[str], chunk: int, part: Part | None,
           max_tasks: int | None) -> tuple[Ledger | PartLedger, list[Task]]:
    """Prepare the folder, plan the tasks and open the ledger."""
    if part is None:
        manifest = start_run(config, run_dir, lock, old, overwrite, notes)
        write_scenarios_table(run_dir, config, manifest["scenarios"])
    else:
        manifest = start_part(config, run_dir, lock, part, notes)
    # adaptive runs plan their tasks round by round (see _run_adaptive)
    tasks = [] if config.adaptive else plan_tasks(config, run_dir, chunk, part)[:max_tasks]
    entry = {"started": now(), "n_jobs": config.n_jobs, "chunk_size": chunk,
             "backend": config.backend, "tasks": len(tasks)}
    ledger: Ledger | PartLedger
    if part is None:
        manifest["runs"].append(entry)
        ledger = Ledger(run_dir / "manifest.json", manifest, len(tasks))
    else:
        entry.update(part=str(part), lock=part.lock_name, pid=os.getpid())
        ledger = PartLedger(run_dir, manifest, entry,
                            lambda: not plan_tasks(config, run_dir, chunk))
    ledger.flush(force=True)
    return ledger, tasks


def _run_locked(config: RunConfig, run_dir: Path, lock: RunLock, old: dict[str, Any] | None,
                overwrite: bool, notes: list[str], chunk: int, progress: bool | None,
                max_tasks: int | None, part: Part | None = None) -> RunResult:
    ledger: Ledger | PartLedger | None = None
    status = "failed"
    started = time.perf_counter()
    tasks: list[Task] = []
    tasks_run = reps_run = 0
    try:
        ledger, tasks = _start(config, run_dir, lock, old, overwrite, notes, chunk, part,
                               max_tasks)
        show = sys.stderr.isatty() if progress is None else progress
        if config.adaptive is not None:
            assert isinstance(ledger, Ledger)
            rounds = _run_adaptive(config, run_dir, ledger, chunk, show, max_tasks)
            tasks_run, reps_run = rounds.tasks, rounds.replications
            status = "partial" if rounds.stopped else "complete"
        else:
            bar = Progress(total=sum(t.size for t in tasks), unit="reps", enabled=show)
            try:
                execute_tasks(config, run_dir, tasks, ledger, bar, run_task, part)
            finally:
                bar.close()
            tasks_run, reps_run = len(tasks), sum(t.size for t in tasks)
            status = "complete" if not plan_tasks(config, run_dir, chunk) else "partial"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    except OSError as exc:
        status = "failed: " + (os.strerror(exc.errno) if exc.errno else type(exc).__name__)
        raise storage_error(exc, run_dir) from None
    finally:
        if ledger is not None:
            end = {"finished": now(), "ended": status,
                   "seconds": round(time.perf_counter() - started, 3)}
            if isinstance(ledger, PartLedger):
                ledger.run.update(end)
            else:
                ledger.manifest["status"] = status
                ledger.manifest["runs"][-1].update(end)
                ledger.manifest["finished"] = now()
            ledger.close()
    return RunResult(run_dir=run_dir, tasks_run=tasks_run, replications_run=reps_run,
                     seconds=time.perf_counter() - started, notes=tuple(notes))


def _run_adaptive(config: RunConfig, run_dir: Path, ledger: Ledger, chunk: int, show: bool,
                  max_tasks: int | None) -> Rounds:
    """Adaptive replications (:mod:`.adaptive`): rounds of blocks per cell until every
    target holds; the outcome goes to the manifest's ``adaptive`` record."""
    adaptive = config.adaptive
    assert adaptive is not None

    def plan(counts: dict[str, int]) -> list[Task]:
        if config.chunk_size:
            size = chunk
        else:  # about two tasks per worker in each round (never changes results)
            new = sum(counts.values()) - sum(finished_counts(config, run_dir).get(k, 0)
                                             for k in counts)
            size = int(min(chunk, max(10, -(-new // (2 * max(1, config.n_jobs))))))
        return plan_tasks(config, run_dir, size, counts=counts)

    def execute(tasks: list[Task]) -> None:
        bar = Progress(total=sum(t.size for t in tasks), unit="reps", enabled=show)
        try:
            execute_tasks(config, run_dir, tasks, ledger, bar, run_task)
        finally:
            bar.close()

    def record(state: Rounds) -> None:
        ledger.manifest["adaptive"] = state.manifest_entry(adaptive)
        ledger.flush(force=True)

    return run_rounds(config, run_dir, plan, execute, max_tasks, record)
