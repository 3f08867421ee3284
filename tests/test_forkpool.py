"""The ``processes`` backend (run/forkpool): inherited tasks, dead workers, orphans."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pytest

from micromacro_sim.core.errors import ConfigError
from micromacro_sim.run.backends import require_backend, resolve_backend
from micromacro_sim.run.forkpool import fork_available, run_forked

pytestmark = pytest.mark.skipif(not fork_available(), reason="forked workers need Linux")

ROOT = Path(__file__).resolve().parents[1]


def test_tasks_are_inherited_not_pickled():
    seen = []  # a closure over a local list: pickle refuses it, a fork inherits it
    offset = 100

    def task(i):
        seen.append(i)  # in the worker's copy: the parent's list stays empty
        return (i + offset, os.getpid())

    out = list(run_forked(task, list(range(6)), 2))
    assert sorted(v for v, _ in out) == [100, 101, 102, 103, 104, 105]
    assert os.getpid() not in {pid for _, pid in out} and seen == []


def test_a_dead_worker_breaks_the_pool_with_its_exit_code():
    def task(i):
        if i == 1:
            os._exit(7)
        return i

    with pytest.raises(BrokenProcessPool, match=r"exit codes of the workers are \{EXIT\(7\)\}"):
        list(run_forked(task, [0, 1, 2], 2))


def test_a_raising_task_raises_in_the_parent_and_the_pool_can_run_again():
    def task(i):
        if i == 2:
            raise ValueError("task 2 failed")
        return i

    with pytest.raises(ValueError, match="task 2 failed"):
        list(run_forked(task, [0, 1, 2, 3], 2))
    assert sorted(run_forked(lambda i: i * i, [1, 2, 3], 2)) == [1, 4, 9]


def test_workers_end_when_the_run_process_is_killed(tmp_path):
    """SIGKILL of the run's process alone (not its group): no worker is left running."""
    pids = tmp_path / "pids"
    code = textwrap.dedent(f"""
        import os, time
        from micromacro_sim.run.forkpool import run_forked
        def task(i):
            with open({str(pids)!r}, "a") as f:
                f.write(f"{{os.getpid()}}\\n")
            time.sleep(60)
        list(run_forked(task, [0, 1], 2))
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    deadline = time.time() + 30
    while time.time() < deadline and (not pids.exists()
                                      or len(pids.read_text().split()) < 2):
        time.sleep(0.05)
    workers = [int(p) for p in pids.read_text().split()]
    assert len(workers) == 2
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    deadline = time.time() + 10
    alive = workers
    while alive and time.time() < deadline:
        alive = [p for p in workers if _running(p)]
        time.sleep(0.05)
    assert not alive, f"workers {alive} outlived the killed run"


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended


def test_auto_is_processes_here_and_every_name_is_checked(monkeypatch):
    with monkeypatch.context() as m:  # the command line: one thread
        m.setattr(threading, "active_count", lambda: 1)
        assert resolve_backend("auto") == "processes"
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:  # another thread running: a fork could inherit a lock it holds
        assert resolve_backend("auto") == "loky"
    finally:
        stop.set()
        other.join()
    assert resolve_backend("loky") == "loky"
    require_backend("processes")
    with pytest.raises(ConfigError, match=r"^backend: expected one of auto, processes"):
        require_backend("forks")
