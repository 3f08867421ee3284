"""Where a run's tasks execute: this process, forked or loky workers, threads, dask or ray.

:func:`execute` runs the tasks :func:`~micromacro_sim.run.tasks.plan_tasks` enumerated and
records each finished one in the ledger. Where a task runs, and how a task's range is cut,
never changes its results (every replication draws from its own stream and every batch
path is bitwise stable across batch companions), so the choice is about time only.

A worker process (forked or loky) that dies (a plug-in calling ``os._exit``, a crash in
compiled code, the system killing it) cannot be caught inside it: each task it runs leaves
a marker file in the run's scratch folder while it runs, and when the pool breaks the run
stops with a one-line :class:`WorkerDied` naming the task(s) still marked and their methods. The
tasks finished before are kept.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from micromacro_sim.core.errors import MicroMacroError
from micromacro_sim.run.backends import backend_context, resolve_backend
from micromacro_sim.run.forkpool import run_forked

if TYPE_CHECKING:
    from micromacro_sim.design.config import RunConfig
    from micromacro_sim.run.parts import Part
    from micromacro_sim.run.progress import Progress

__all__ = ["LOKY_WORTHWHILE_SECONDS", "PROBE_SHARE", "MarkedTask", "WorkerDied",
           "choose_backend", "describe_task", "describe_work", "execute", "probe_tasks",
           "sequential_estimate"]

#: Estimated sequential seconds below which starting loky workers does not pay off: each
#: costs about a second of start-up (imports).
LOKY_WORTHWHILE_SECONDS = 3.0
#: The timed probe is this share (one in ``PROBE_SHARE``) of the first task: large enough
#: that the per-call costs of the batched solvers (their iterations) do not dominate it.
PROBE_SHARE = 5
#: The folder of the scratch folder where tasks running in loky workers leave markers.
RUNNING_DIR = "running"


class WorkerDied(MicroMacroError):
    """A worker process ended while it ran a task (the message names the task)."""


def describe_task(task: Any) -> str:
    """``scenario KEY replications A-B``: which replications a task ran."""
    return f"scenario {task.scenario.key} replications {task.start}-{task.stop - 1}"


def describe_work(task: Any) -> str:
    """``methods: LABEL, LABEL=module:Name; generator REF``: what a task ran them with."""
    methods = ", ".join(m.label if m.label == m.method else f"{m.label}={m.method}"
                        for m in task.methods)
    gen = f"; generator {task.generator}" if getattr(task, "generator", None) else ""
    return f"methods: {methods}{gen}"


def _marker(task: Any) -> str:
    return f"{task.scenario.key}.{task.start}-{task.stop}"


class MarkedTask:
    """``run_task`` in a worker process, leaving a marker file in ``where`` while it runs.

    A task that ends normally, or raises, removes its marker; one whose process dies
    leaves it (see :func:`execute`).
    """

    def __init__(self, run_task: Callable[[Any], Any], where: Path) -> None:
        self.run_task, self.where = run_task, where

    def __call__(self, task: Any) -> Any:
        mark = self.where / _marker(task)
        mark.write_text(str(os.getpid()))
        try:
            return self.run_task(task)
        finally:
            with contextlib.suppress(OSError):
                mark.unlink()


def _died(exc: BrokenProcessPool, where: Path, tasks: list[Any]) -> WorkerDied:
    """The one-line error for a broken worker pool: the marked task(s), the exit code."""
    try:
        marked = {p.name for p in where.iterdir()}
    except OSError:
        marked = set()
    running = [t for t in tasks if _marker(t) in marked]
    codes = re.search(r"exit codes of the workers are \{([^}]*)\}", str(exc))
    how = f" ({codes.group(1)})" if codes else ""
    if running:
        what = (f"while running {' or '.join(describe_task(t) for t in running)} "
                f"({describe_work(running[0])})")
    else:
        what = (f"with {len(tasks)} task(s) unfinished ({type(exc).__name__}"
                f"{'; ' + describe_work(tasks[0]) if tasks else ''})")
    return WorkerDied(f"backend: a worker process died{how} {what}; the tasks finished "
                      "before are kept")


def choose_backend(config: RunConfig, tasks: list[Any]) -> str:
    """The backend the tasks run on: the configured one (``auto`` resolved by
    :func:`~micromacro_sim.run.backends.resolve_backend`), or ``"sequential"`` when
    one worker or one task."""
    backend = resolve_backend(config.backend)
    if backend in ("processes", "loky", "threading") and (config.n_jobs == 1
                                                          or len(tasks) <= 1):
        backend = "sequential"
    return backend


def probe_tasks(tasks: list[Any]) -> tuple[list[Any], list[Any], list[Any]]:
    """Cut the first task into a warm-up, two timed probes and the remainder.

    Returns ``(warm, probes, rest)``: the warm-up (one replication: it pays the lazy
    imports and first-call costs, which would overstate the rest), the probes (one
    replication, then a fifth of the first task, at least two: their difference separates
    a task's fixed cost, the batched solvers' iterations, from the cost per replication;
    empty when the first task is too small to cut) and every other range, the remainder
    of the first task first.
    """
    first = tasks[0]
    if first.size < 5:
        return [first], [], list(tasks[1:])
    a = first.start
    k = min(max(2, first.size // PROBE_SHARE), first.size - 2)
    warm = replace(first, stop=a + 1)
    probes = [replace(first, start=a + 1, stop=a + 2), replace(first, start=a + 2, stop=a + 2 + k)]
    rest = [replace(first, start=a + 2 + k)] if a + 2 + k < first.stop else []
    return [warm], probes, rest + list(tasks[1:])


def sequential_estimate(one: float, probe: float, k: int, tasks: list[Any]) -> float:
    """Seconds ``tasks`` would take here, from a one-replication probe (``one`` seconds) and
    a ``k``-replication probe: a fixed cost per task plus a cost per replication."""
    per_rep = max(0.0, (probe - one) / (k - 1))
    fixed = max(0.0, one - per_rep)
    return len(tasks) * fixed + per_rep * sum(t.size for t in tasks)


@contextlib.contextmanager
def _heartbeat(bar: Progress, backend: str) -> Iterator[None]:
    """While tasks run in this process or behind joblib: :meth:`Progress.tick` about once a
    second from a helper thread, so that plain progress lines keep coming during long
    tasks. Forked workers need none (their wait ticks), and must not be forked while a
    thread runs."""
    if backend == "processes" or not (bar.enabled and bar.plain):
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(1.0):
            bar.tick()

    helper = threading.Thread(target=beat, name="progress-heartbeat", daemon=True)
    helper.start()
    try:
        yield
    finally:
        stop.set()
        helper.join()


def _probe_loky(tasks: list[Any], ledger: Any, bar: Progress,
                run_task: Callable[[Any], Any]) -> tuple[str, list[Any]]:
    """Run the warm-up and probes of the first task here; ``("sequential", rest)`` when
    the rest would take less than :data:`LOKY_WORTHWHILE_SECONDS` here, else
    ``("loky", rest)``."""
    warm, probes, tasks_left = probe_tasks(tasks)
    seconds = []
    for t in warm + probes:
        t0 = time.perf_counter()
        ledger.add(run_task(t))
        seconds.append(time.perf_counter() - t0)
        bar.update(t.size)
    if probes:
        rest = sequential_estimate(seconds[1], seconds[2], probes[1].size, tasks_left)
    else:  # the first task was tiny: judge by it, warm-up costs included
        rest = seconds[0] * len(tasks_left)
    return ("sequential" if rest < LOKY_WORTHWHILE_SECONDS else "loky"), tasks_left


def _warm_up(tasks: list[Any], ledger: Any, bar: Progress,
             run_task: Callable[[Any], Any]) -> list[Any]:
    """Run the first replication here (it pays the lazy imports and first-call costs once,
    before the fork, instead of once per worker); the remaining tasks."""
    first = tasks[0]
    warm = replace(first, stop=first.start + 1)
    ledger.add(run_task(warm))
    bar.update(warm.size)
    rest = [replace(first, start=first.start + 1)] if first.size > 1 else []
    return rest + list(tasks[1:])


def execute(config: RunConfig, run_dir: Path, tasks: list[Any], ledger: Any,
            bar: Progress, run_task: Callable[[Any], Any], part: Part | None = None) -> None:
    """Run ``tasks`` with ``run_task``, recording each finished one in ``ledger``.

    With ``processes`` (forked workers, the default on Linux) the first replication runs
    here, then the workers fork and take the rest. With loky, worker processes cost about
    a second each to start: a warm-up replication and two timed probes of the first task
    (:func:`probe_tasks`) run here first, and when they show the rest would take less
    than :data:`LOKY_WORTHWHILE_SECONDS` in this process (:func:`sequential_estimate`), it
    runs here; otherwise every remaining range goes to the workers at once.

    Raises
    ------
    WorkerDied
        A worker process died: one line naming the task it ran (or the candidates, when
        several were running) and their methods.
    """
    backend = choose_backend(config, tasks)
    tasks_left = tasks
    if backend == "loky" and tasks:
        backend, tasks_left = _probe_loky(tasks, ledger, bar, run_task)
    elif backend == "processes":
        tasks_left = _warm_up(tasks, ledger, bar, run_task)
        if len(tasks_left) <= 1:
            backend = "sequential"
    if not tasks_left:
        return
    n_jobs = 1 if backend == "sequential" else config.n_jobs
    scratch = run_dir / (".scratch" if part is None else f".scratch-{part.index}-of-{part.count}")
    with backend_context(backend, n_jobs=n_jobs, scratch=scratch,
                         address=config.address):
        marks = scratch.resolve() / RUNNING_DIR
        if backend in ("loky", "processes"):
            marks.mkdir(exist_ok=True)
            run_task = MarkedTask(run_task, marks)
        if backend == "processes":
            results = run_forked(run_task, tasks_left, n_jobs, tick=bar.tick)
        elif backend == "sequential":
            results = (run_task(t) for t in tasks_left)
        else:
            from joblib import Parallel, delayed  # lazy: the processes backend needs none

            # Ray's joblib backend returns all results at once (no generators): its
            # progress line moves at the end only.
            order = "list" if backend == "ray" else "generator_unordered"
            results = Parallel(return_as=order)(delayed(run_task)(t) for t in tasks_left)
        done = set()
        try:
            with _heartbeat(bar, backend):
                for res in results:
                    ledger.add(res)
                    bar.update(res.stop - res.start)
                    done.add((res.key, res.start))
        except BrokenProcessPool as exc:
            unfinished = [t for t in tasks_left if (t.scenario.key, t.start) not in done]
            raise _died(exc, marks, unfinished) from None
