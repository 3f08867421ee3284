"""The ``processes`` backend: worker processes forked from the run's own process.

A forked worker starts in milliseconds with everything the run has imported and set up
(the registry, plug-ins, the generator), where a loky worker starts a new interpreter and
imports the package again (about a second each). The tasks are not sent to the workers:
they inherit the task list at the fork and receive only its index, so a plug-in defined
in a file, a closure or anything else that does not pickle runs as it does in the run's
own process. Only the results (small records of the shards each task wrote) come back.

Workers ignore Ctrl-C: the run's process receives it, stops the pool and ends the
workers, and records the run as interrupted (a worker's traceback never reaches the
terminal). A worker that dies breaks the pool, which :func:`run_forked` raises as
:class:`~concurrent.futures.process.BrokenProcessPool` for the caller to name the task.

Fork is used on Linux only (on macOS, system libraries are not safe to use after a fork
and Python defaults to spawn there); elsewhere the ``auto`` backend is loky.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import signal
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

__all__ = ["fork_available", "run_forked"]

#: What the forked workers inherit: the task function and the task list.
_INHERITED: tuple[Callable[[Any], Any], list[Any]] | None = None


def fork_available() -> bool:
    """Whether the ``processes`` backend can run here (Linux with the fork start method)."""
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


#: Linux prctl option: the signal a process receives when the thread that forked it ends.
_PR_SET_PDEATHSIG = 1


def _worker_init() -> None:
    """Ignore Ctrl-C (the run's process handles it), end quietly on SIGTERM (the run's
    handler, inherited at the fork, would raise in the worker), and end with the run's
    process, even when that is killed outright (no orphans left computing)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _exit_codes(procs: list[Any]) -> str:
    """``; exit codes of the workers are {EXIT(3)}``: how the workers that failed ended
    (those the pool ended itself with SIGTERM left out when others failed first)."""
    def text(code: int) -> str:
        if code < 0:
            with contextlib.suppress(ValueError):
                return f"{signal.Signals(-code).name}({code})"
        return f"EXIT({code})"
    codes = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
    own = [c for c in codes if c != -signal.SIGTERM] or codes
    return f"; exit codes of the workers are {{{', '.join(map(text, own))}}}" if own else ""


def _run_inherited(index: int) -> Any:
    assert _INHERITED is not None, "a forked worker without its task list"
    run_task, tasks = _INHERITED
    return run_task(tasks[index])


def run_forked(run_task: Callable[[Any], Any], tasks: list[Any], n_jobs: int,
               tick: Callable[[], None] | None = None) -> Iterator[Any]:
    """Run ``run_task`` on every task in ``n_jobs`` forked workers; yield results as they end.

    Parameters
    ----------
    run_task : callable
        Called in a worker with one task; its return value must pickle.
    tasks : list
        The tasks, inherited by the workers at the fork.
    n_jobs : int
        Worker processes (at most one per task).
    tick : callable, optional
        Called about once a second while no task ends (a progress heartbeat).

    Yields
    ------
    object
        Each task's result, in the order the tasks finish.

    Raises
    ------
    concurrent.futures.process.BrokenProcessPool
        A worker process died.
    """
    global _INHERITED
    if _INHERITED is not None:
        raise RuntimeError("run_forked: a forked pool is already running in this process")
    _INHERITED = (run_task, list(tasks))
    pool = ProcessPoolExecutor(max_workers=max(1, min(n_jobs, len(tasks))),
                               mp_context=multiprocessing.get_context("fork"),
                               initializer=_worker_init)
    clean, procs = False, []
    try:
        pending = {pool.submit(_run_inherited, i) for i in range(len(tasks))}
        procs = list(getattr(pool, "_processes", {}).values())  # forked at the first submit
        while pending:
            done, pending = wait(pending, timeout=None if tick is None else 1.0,
                                 return_when=FIRST_COMPLETED)
            if not done and tick is not None:
                tick()
            for fut in done:
                yield fut.result()
        clean = True
    except BrokenProcessPool as exc:
        for proc in procs:
            proc.join(timeout=5)
        raise BrokenProcessPool(f"{exc}{_exit_codes(procs)}") from None
    finally:
        _INHERITED = None
        if not clean:  # an error, an interrupt or a closed generator: end the workers now
            for proc in list(getattr(pool, "_processes", {}).values()):
                proc.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
