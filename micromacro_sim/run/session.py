"""The steps of one run of a config, in the order :func:`~micromacro_sim.run.runner.run`
takes them.

1. :func:`plan_run`: check the request against the folder and the machine (the output
   folder, ``--part``, the previous manifest, the size limits); nothing is written.
2. :func:`claim`: take the folder's lock (or a part's) and refuse a folder another run
   is using.
3. :func:`open_ledger`: clean up after a killed run, verify the shards on disk, write
   the manifest and plan the tasks still missing.
4. :func:`execute_run`: run the tasks (or the adaptive rounds), recording each finished
   task in the ledger.
5. :func:`recording`: whatever happens, close the ledger with the run's true end.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from micromacro_sim.core.errors import ConfigError
from micromacro_sim.design.config import RunConfig
from micromacro_sim.run.adaptive import run_rounds
from micromacro_sim.run.capacity import plan_budget
from micromacro_sim.run.execute import execute
from micromacro_sim.run.ledger import Ledger, PartLedger, start_part
from micromacro_sim.run.lock import LOCK_NAME, RunLock, RunLocked, conflicting
from micromacro_sim.run.manifest import (
    mark_summary_stale,
    now,
    previous_manifest,
    start_run,
    storage_error,
    write_scenarios_table,
)
from micromacro_sim.run.parts import Part
from micromacro_sim.run.paths import check_output_dir
from micromacro_sim.run.progress import Progress
from micromacro_sim.run.tasks import Task, finished_counts, plan_tasks, run_task

__all__ = ["Outcome", "RunPlan", "claim", "execute_run", "open_ledger", "plan_run",
           "recording"]

AnyLedger = Ledger | PartLedger


@dataclass
class RunPlan:
    """What :func:`plan_run` decided: the folder, the part, the chunk size and the notes
    for the user (which later steps extend)."""

    config: RunConfig
    run_dir: Path
    overwrite: bool
    part: Part | None
    chunk: int
    old: dict[str, Any] | None
    notes: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    """How a run ended: ``status`` as the manifest records it, tasks and replications run."""

    status: str = "failed"
    tasks: int = 0
    replications: int = 0


def default_run_dir(config: RunConfig) -> Path:
    """The config's ``output``, else ``results/<name>``."""
    return Path(config.output) if config.output is not None else Path("results") / config.name


def plan_run(config: RunConfig, run_dir: str | Path | None, *, overwrite: bool, force: bool,
             part: Part | str | None) -> RunPlan:
    """Check the request (see the module docstring); nothing is written except the empty
    output folder itself.

    Raises
    ------
    ConfigError, StorageError
    """
    run_dir = check_output_dir(default_run_dir(config) if run_dir is None else run_dir)
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
    return RunPlan(config, run_dir, overwrite, part, budget.chunk_size, old, notes)


@contextlib.contextmanager
def claim(plan: RunPlan) -> Iterator[RunLock]:
    """Hold the folder's lock (a part's own lock with ``--part``), SIGTERM acting as
    Ctrl-C, for the block.

    Raises
    ------
    RunLocked
        Another live run holds the folder.
    """
    name = LOCK_NAME if plan.part is None else plan.part.lock_name
    lock = RunLock(plan.run_dir, name=name)
    with lock, _sigterm_as_interrupt():
        clash = conflicting(plan.run_dir, lock.name)
        if clash is not None:
            other, holder = clash
            raise RunLocked(f"output: {str(plan.run_dir)!r} is in use by another run ({other}: "
                            f"pid {holder.get('pid')} on host {holder.get('host')!r}); "
                            "wait for it to finish or choose another folder")
        yield lock


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
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


def open_ledger(plan: RunPlan, lock: RunLock, max_tasks: int | None
                ) -> tuple[AnyLedger, list[Task]]:
    """Prepare the folder, write the manifest, plan the missing tasks and open the ledger.

    Adaptive runs plan their tasks round by round (:func:`execute_run`): their list is
    empty here.
    """
    config, run_dir, part = plan.config, plan.run_dir, plan.part
    try:
        if part is None:
            manifest = start_run(config, run_dir, lock, plan.old, plan.overwrite, plan.notes)
            write_scenarios_table(run_dir, config, manifest["scenarios"])
        else:
            manifest = start_part(config, run_dir, lock, part, plan.notes)
        tasks = [] if config.adaptive else plan_tasks(config, run_dir, plan.chunk,
                                                      part)[:max_tasks]
        entry = {"started": now(), "n_jobs": config.n_jobs, "chunk_size": plan.chunk,
                 "backend": config.backend, "tasks": len(tasks)}
        ledger: AnyLedger
        if part is None:
            manifest["runs"].append(entry)
            ledger = Ledger(run_dir / "manifest.json", manifest, len(tasks))
        else:
            entry.update(part=str(part), lock=part.lock_name, pid=os.getpid())
            ledger = PartLedger(run_dir, manifest, entry,
                                lambda: not plan_tasks(config, run_dir, plan.chunk))
        ledger.flush(force=True)
    except OSError as exc:
        raise storage_error(exc, run_dir) from None
    return ledger, tasks


def reference_path_note(config: RunConfig) -> str | None:
    """Which methods fit one dataset at a time, and on how many scenarios (None: none)."""
    from micromacro_sim.estimators import method_class

    slow: dict[str, int] = {}
    for spec in config.methods:
        cls = method_class(spec.method)
        for sc in config.scenarios:
            batch = (config.engine != "reference" and cls.has_batch(sc.balanced)
                     and not cls.batch_refused(several_x=sc.n_x > 1,
                                               member_ids=sc.absent_members))
            if not batch:
                slow[spec.label] = slow.get(spec.label, 0) + 1
    if not slow:
        return None
    n = len(config.scenarios)
    return ("one dataset at a time (no batch path for the design): "
            + ", ".join(f"{m} ({k} of {n} scenarios)" for m, k in slow.items()))


def _execute(plan: RunPlan, ledger: AnyLedger, tasks: list[Task], show: bool) -> None:
    bar = Progress(total=sum(t.size for t in tasks), unit="reps", enabled=show)
    if tasks:
        bar.note(f"{sum(t.size for t in tasks)} replications in {len(tasks)} task(s), "
                 f"n_jobs {plan.config.n_jobs}, backend {plan.config.backend}")
        slow = reference_path_note(plan.config)
        if slow:
            bar.note(slow)
    try:
        execute(plan.config, plan.run_dir, tasks, ledger, bar, run_task, plan.part)
    finally:
        bar.close()


def execute_run(plan: RunPlan, ledger: AnyLedger, tasks: list[Task], show: bool,
                max_tasks: int | None, outcome: Outcome) -> None:
    """Run the planned tasks, or the adaptive rounds, filling ``outcome``."""
    config, run_dir = plan.config, plan.run_dir
    if config.adaptive is None:
        _execute(plan, ledger, tasks, show)
        outcome.tasks, outcome.replications = len(tasks), sum(t.size for t in tasks)
        done = not plan_tasks(config, run_dir, plan.chunk)
        outcome.status = "complete" if done else "partial"
        return
    assert isinstance(ledger, Ledger)
    adaptive = config.adaptive

    def plan_round(counts: dict[str, int]) -> list[Task]:
        if config.chunk_size:
            size = plan.chunk
        else:  # about two tasks per worker in each round (never changes results)
            new = sum(counts.values()) - sum(finished_counts(config, run_dir).get(k, 0)
                                             for k in counts)
            size = int(min(plan.chunk, max(10, -(-new // (2 * max(1, config.n_jobs))))))
        return plan_tasks(config, run_dir, size, counts=counts)

    def record(state: Any) -> None:
        ledger.manifest["adaptive"] = state.manifest_entry(adaptive)
        ledger.flush(force=True)

    rounds = run_rounds(config, run_dir, plan_round,
                        lambda ts: _execute(plan, ledger, list(ts), show), max_tasks, record)
    outcome.tasks, outcome.replications = rounds.tasks, rounds.replications
    outcome.status = "partial" if rounds.stopped else "complete"


@contextlib.contextmanager
def recording(ledger: AnyLedger, run_dir: Path, started: float,
              notes: list[str] | None = None) -> Iterator[Outcome]:
    """Yield the run's :class:`Outcome`; on leaving, close the ledger with its status
    (``interrupted`` on Ctrl-C or SIGTERM, ``failed: ...`` on a storage error, which is
    raised as a one-line :class:`~micromacro_sim.run.storage.StorageError`). A summary of
    the folder that the run made out of date is marked stale (a note in ``notes``)."""
    outcome = Outcome()
    try:
        yield outcome
    except KeyboardInterrupt:
        outcome.status = "interrupted"
        raise
    except OSError as exc:
        outcome.status = "failed: " + (os.strerror(exc.errno) if exc.errno
                                       else type(exc).__name__)
        raise storage_error(exc, run_dir) from None
    finally:
        end = {"finished": now(), "ended": outcome.status,
               "seconds": round(time.perf_counter() - started, 3)}
        if isinstance(ledger, PartLedger):
            ledger.run.update(end)
        else:
            ledger.manifest["status"] = outcome.status
            ledger.manifest["runs"][-1].update(end)
            ledger.manifest["finished"] = now()
        ledger.close()
        stale = mark_summary_stale(run_dir, ledger.manifest) if outcome.tasks else None
        if stale is not None and notes is not None:
            notes.append(stale)
