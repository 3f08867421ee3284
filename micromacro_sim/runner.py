"""Run a config: generate, analyse, write shards; resume what is missing.

The steps are separate and pure until the last: :func:`simulate_chunk` draws each
replication's dataset (under the admissibility policy) and applies every method to
that one dataset, returning two tables; :func:`run_task` writes them as shards;
:func:`run` enumerates the missing (scenario, replication range) tasks and hands them
to joblib.
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

import numpy as np

from .admissibility import Policy, draw_many
from .arrow_columns import table_from_columns
from .backends import backend_context
from .batch import Batch
from .budget import batch_ranges, batch_size
from .config import MethodSpec, RunConfig
from .limits import plan_budget
from .lock import RunLock
from .manifest import (
    Ledger,
    now,
    previous_manifest,
    start_run,
    storage_error,
    write_scenarios_table,
)
from .paths import check_output_dir
from .progress import Progress
from .reliability import reliability_rows
from .results import SE_COLUMNS, BatchResult
from .scenario import Scenario
from .storage import (
    ShardRecord,
    completed_ranges,
    write_shard,
)

__all__ = ["RunResult", "Task", "TaskResult", "plan_tasks", "run", "run_task", "simulate_chunk"]

#: Estimated sequential seconds below which starting loky workers does not pay off: each
#: costs about a second of start-up (imports), and the first task, which the estimate is
#: based on, runs cold and overstates the rest.
LOKY_WORTHWHILE_SECONDS = 3.0

_EST_COLUMNS = [
    "scenario", "replication", "method", "method_index", "term", "term_index", "estimate",
    *SE_COLUMNS.values(), "df_resid", "converged", "admissible", "status", "reason_code",
    "reason", "two_step", "engine",
]


def _table(columns: dict[str, np.ndarray]):
    """A pyarrow table from numpy columns (object arrays hold strings), without pandas."""
    return table_from_columns(columns)


def _estimate_columns(results: list[BatchResult], key: str,
                      reps: np.ndarray) -> dict[str, np.ndarray]:
    """Estimate rows as numpy columns, ordered by replication, method, term."""
    R = len(reps)
    parts: dict[str, list[np.ndarray]] = {c: [] for c in _EST_COLUMNS}
    for m_idx, res in enumerate(results):
        k = len(res.terms)
        cols = {
            "scenario": np.full(R * k, key, dtype=object),
            "replication": np.repeat(reps, k).astype(np.int64),
            "method": np.full(R * k, res.method, dtype=object),
            "method_index": np.full(R * k, m_idx, dtype=np.int16),
            "term": np.tile(np.array(res.terms, dtype=object), R),
            "term_index": np.tile(np.arange(k, dtype=np.int16), R),
            "estimate": res.params.reshape(-1),
            **{col: res.bse[t].reshape(-1) for t, col in SE_COLUMNS.items()},
            "df_resid": np.repeat(res.df_resid, k).astype(float),
            "converged": np.repeat(res.converged, k).astype(bool),
            "admissible": np.repeat(res.admissible, k).astype(bool),
            "status": np.repeat(res.status, k).astype(object),
            "reason_code": np.repeat(res.reason_code, k).astype(object),
            "reason": np.repeat(res.reason, k).astype(object),
            "two_step": np.full(R * k, res.two_step),
            "engine": np.full(R * k, res.engine, dtype=object),
        }
        for c in _EST_COLUMNS:
            parts[c].append(cols[c])
    columns = {c: np.concatenate(v) for c, v in parts.items()}
    order = np.lexsort((columns["term_index"], columns["method_index"], columns["replication"]))
    return {c: v[order] for c, v in columns.items()}


def _estimate_table(results: list[BatchResult], key: str, reps: np.ndarray):
    """Rows ordered by replication, method, term."""
    return _table(_estimate_columns(results, key, reps))


def _simulate_batch(scenario: Scenario, replications: range, estimators: list[Any], seed: int,
                    policy: Policy, engine: str) -> tuple[dict[str, np.ndarray],
                                                          dict[str, np.ndarray]]:
    """One batch of :func:`simulate_chunk`: both tables as numpy columns."""
    key = scenario.key
    draws = draw_many(scenario, seed, replications, policy, batch_gate=engine != "reference")
    batch = Batch.from_datasets([d.data for d in draws])
    results = [est.fit_batch(batch, engine) for est in estimators]
    del batch
    reps = np.asarray(replications, dtype=np.int64)
    est = _estimate_columns(results, key, reps)
    datasets = {
        "scenario": np.full(len(reps), key, dtype=object),
        "replication": reps,
        "redraws": np.array([d.redraws for d in draws], dtype=np.int64),
        "gate_passed": np.array([not d.gate_reason for d in draws], dtype=bool),
        "gate_reason": np.array([d.gate_reason for d in draws], dtype=object),
        "n_groups": np.array([d.data.n_groups for d in draws], dtype=np.int64),
        "n_persons": np.array([d.data.n_persons for d in draws], dtype=np.int64),
        **reliability_rows([d.data for d in draws]),
    }
    return est, datasets


def simulate_chunk(
    scenario: Scenario,
    replications: range,
    methods: tuple[MethodSpec, ...],
    seed: int,
    policy: Policy,
    engine: str = "auto",
    memory_budget: int | None = None,
):
    """Generate and analyse a range of replications of one scenario (no I/O).

    Every method sees the same datasets. With the fast engine each method fits a batch
    of replications at once; the reference engine fits one dataset at a time. The range
    is cut into batches whose estimated working set fits ``memory_budget`` (bytes,
    default :data:`~micromacro_sim.budget.DEFAULT_MEMORY_BUDGET`; see
    :mod:`micromacro_sim.budget`); every replication's results are the same whatever
    the batch size.

    Returns
    -------
    estimates, datasets : pyarrow.Table
        One row per (replication, method, term), and one per replication.
    """
    estimators = [m.build() for m in methods]
    size = batch_size(scenario, methods, engine, memory_budget)
    est_parts, ds_parts = [], []
    for part in batch_ranges(replications, size):
        est, ds = _simulate_batch(scenario, part, estimators, seed, policy, engine)
        est_parts.append(est)
        ds_parts.append(ds)
    if not est_parts:  # an empty range: the one-batch path gives the empty tables
        est, ds = _simulate_batch(scenario, replications, estimators, seed, policy, engine)
        est_parts, ds_parts = [est], [ds]
    return _table(_concat(est_parts)), _table(_concat(ds_parts))


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if len(parts) == 1:
        return parts[0]
    return {c: np.concatenate([p[c] for p in parts]) for c in parts[0]}


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
                                 task.policy, task.engine, task.memory_budget)
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


def plan_tasks(config: RunConfig, run_dir: Path, chunk_size: int | None = None) -> list[Task]:
    """A task for every replication range not yet finished in ``run_dir``."""
    size = chunk_size or config.resolved_chunk_size()
    tasks = []
    for sc in config.scenarios:
        for a, b in _missing(completed_ranges(run_dir, sc.key), config.replications):
            for s in range(a, b, size):
                tasks.append(Task(str(run_dir), sc, s, min(s + size, b), config.methods,
                                  config.seed, config.policy, config.engine,
                                  config.result_hash, config.memory_budget))
    return tasks


@dataclass(frozen=True)
class RunResult:
    """What :func:`run` did."""

    run_dir: Path
    tasks_run: int
    replications_run: int
    seconds: float
    notes: tuple[str, ...] = ()


def _choose_backend(config: RunConfig, tasks: list[Task]) -> str:
    backend = config.backend
    if backend in ("loky", "threading") and (config.n_jobs == 1 or len(tasks) <= 1):
        backend = "sequential"
    return backend


def _execute(config: RunConfig, run_dir: Path, tasks: list[Task], ledger: Ledger,
             bar: Progress) -> None:
    """Run ``tasks``, recording each finished one."""
    from joblib import Parallel, delayed

    backend = _choose_backend(config, tasks)
    tasks_left = tasks
    if backend == "loky" and tasks:
        # Worker processes cost about a second to start; when the first task shows the
        # whole run is shorter than that, the rest runs in this process. Where a task
        # runs never changes its results.
        t0 = time.perf_counter()
        ledger.add(run_task(tasks[0]))
        bar.update(tasks[0].size)
        tasks_left = tasks[1:]
        if (time.perf_counter() - t0) * len(tasks_left) < LOKY_WORTHWHILE_SECONDS:
            backend = "sequential"
    if not tasks_left:
        return
    n_jobs = 1 if backend == "sequential" else config.n_jobs
    with backend_context(backend, n_jobs=n_jobs, scratch=run_dir / ".scratch",
                         address=config.address):
        # Ray's joblib backend returns all results at once (no generators): its
        # progress line moves at the end only.
        order = "list" if backend == "ray" else "generator_unordered"
        for res in Parallel(return_as=order)(delayed(run_task)(t) for t in tasks_left):
            ledger.add(res)
            bar.update(res.stop - res.start)


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
) -> RunResult:
    """Run (or resume) every missing task of ``config``.

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
    old, notes = previous_manifest(config, run_dir, overwrite)
    budget = plan_budget(config, run_dir, {} if overwrite else finished_counts(config, run_dir),
                         force=force)
    notes.extend(budget.notes)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise storage_error(exc, run_dir) from None
    with RunLock(run_dir) as lock, _sigterm_as_interrupt():
        return _run_locked(config, run_dir, lock, old, overwrite, notes, budget.chunk_size,
                           progress, max_tasks)


def _run_locked(config: RunConfig, run_dir: Path, lock: RunLock, old: dict[str, Any] | None,
                overwrite: bool, notes: list[str], chunk: int, progress: bool | None,
                max_tasks: int | None) -> RunResult:
    manifest: dict[str, Any] = {}
    ledger: Ledger | None = None
    status = "failed"
    started = time.perf_counter()
    tasks: list[Task] = []
    try:
        manifest = start_run(config, run_dir, lock, old, overwrite, notes)
        write_scenarios_table(run_dir, config, manifest["scenarios"])
        tasks = plan_tasks(config, run_dir, chunk)[:max_tasks]
        manifest["runs"].append({"started": now(), "n_jobs": config.n_jobs,
                                 "chunk_size": chunk, "backend": config.backend,
                                 "tasks": len(tasks)})
        ledger = Ledger(run_dir / "manifest.json", manifest, len(tasks))
        ledger.flush(force=True)
        show = sys.stderr.isatty() if progress is None else progress
        bar = Progress(total=sum(t.size for t in tasks), unit="reps", enabled=show)
        try:
            _execute(config, run_dir, tasks, ledger, bar)
        finally:
            bar.close()
        status = "complete" if not plan_tasks(config, run_dir, chunk) else "partial"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    except OSError as exc:
        status = "failed: " + (os.strerror(exc.errno) if exc.errno else type(exc).__name__)
        raise storage_error(exc, run_dir) from None
    finally:
        if manifest and ledger is not None:
            manifest["status"] = status
            manifest["runs"][-1].update(finished=now(), ended=status,
                                        seconds=round(time.perf_counter() - started, 3))
            manifest["finished"] = now()
            ledger.close()
    return RunResult(run_dir=run_dir, tasks_run=len(tasks),
                     replications_run=sum(t.size for t in tasks),
                     seconds=time.perf_counter() - started, notes=tuple(notes))
