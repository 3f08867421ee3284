"""Where a run's tasks execute: this process, loky workers, threads, dask or ray.

:func:`execute` runs the tasks :func:`~micromacro_sim.runner.plan_tasks` enumerated and
records each finished one in the ledger. Where a task runs, and how a task's range is cut,
never changes its results (every replication draws from its own stream and every batch
path is bitwise stable across batch companions), so the choice is about time only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .backends import backend_context

if TYPE_CHECKING:
    from .config import RunConfig
    from .parts import Part
    from .progress import Progress

__all__ = ["LOKY_WORTHWHILE_SECONDS", "PROBE_SHARE", "choose_backend", "execute",
           "probe_tasks"]

#: Estimated sequential seconds below which starting loky workers does not pay off: each
#: costs about a second of start-up (imports).
LOKY_WORTHWHILE_SECONDS = 3.0
#: The timed probe is this share (one in ``PROBE_SHARE``) of the first task.
PROBE_SHARE = 20


def choose_backend(config: RunConfig, tasks: list[Any]) -> str:
    """The configured backend, or ``"sequential"`` when one worker or one task."""
    backend = config.backend
    if backend in ("loky", "threading") and (config.n_jobs == 1 or len(tasks) <= 1):
        backend = "sequential"
    return backend


def probe_tasks(tasks: list[Any]) -> tuple[list[Any], Any | None, list[Any]]:
    """Cut the first task into a warm-up replication, a timed probe and the remainder.

    Returns ``(warm, probe, rest)``: the warm-up (one replication: it pays the lazy
    imports and first-call costs, which would overstate the rest), the timed probe (a
    twentieth of the first task, at least one replication; None when the first task is
    too small to cut) and every other range, the remainder of the first task first.
    """
    first = tasks[0]
    if first.size < 3:
        return [first], None, list(tasks[1:])
    k = max(1, first.size // PROBE_SHARE)
    a = first.start
    warm = replace(first, stop=a + 1)
    probe = replace(first, start=a + 1, stop=a + 1 + k)
    rest = [replace(first, start=a + 1 + k)] if a + 1 + k < first.stop else []
    return [warm], probe, rest + list(tasks[1:])


def execute(config: RunConfig, run_dir: Path, tasks: list[Any], ledger: Any,
            bar: Progress, run_task: Callable[[Any], Any], part: Part | None = None) -> None:
    """Run ``tasks`` with ``run_task``, recording each finished one in ``ledger``.

    With loky, worker processes cost about a second each to start: a warm-up replication
    and a small timed probe of the first task run here first, and when the probe shows
    the rest would take less than :data:`LOKY_WORTHWHILE_SECONDS` in this process, it
    runs here; otherwise every remaining range goes to the workers at once.
    """
    from joblib import Parallel, delayed

    backend = choose_backend(config, tasks)
    tasks_left = tasks
    if backend == "loky" and tasks:
        warm, probe, tasks_left = probe_tasks(tasks)
        t0 = time.perf_counter()
        for t in warm + ([probe] if probe is not None else []):
            if t is probe:
                t0 = time.perf_counter()
            ledger.add(run_task(t))
            bar.update(t.size)
        per_rep = (time.perf_counter() - t0) / (probe.size if probe is not None else
                                                 warm[0].size)
        if per_rep * sum(t.size for t in tasks_left) < LOKY_WORTHWHILE_SECONDS:
            backend = "sequential"
    if not tasks_left:
        return
    n_jobs = 1 if backend == "sequential" else config.n_jobs
    scratch = run_dir / (".scratch" if part is None else f".scratch-{part.index}-of-{part.count}")
    with backend_context(backend, n_jobs=n_jobs, scratch=scratch,
                         address=config.address):
        # Ray's joblib backend returns all results at once (no generators): its
        # progress line moves at the end only.
        order = "list" if backend == "ray" else "generator_unordered"
        for res in Parallel(return_as=order)(delayed(run_task)(t) for t in tasks_left):
            ledger.add(res)
            bar.update(res.stop - res.start)
