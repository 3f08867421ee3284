"""Progress on stderr: plain lines where stderr is not a terminal (logs, pipes)."""

from __future__ import annotations

import io
import time

from micromacro_sim.run.forkpool import run_forked
from micromacro_sim.run.progress import HEARTBEAT, Progress


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_at_task_ends_and_a_heartbeat_while_tasks_run():
    clock, out = FakeClock(), io.StringIO()
    bar = Progress(100, stream=out, clock=clock)  # a StringIO is not a terminal: plain
    assert bar.plain and out.getvalue() == ""
    bar.note("100 replications in 4 task(s)")
    clock.now = 3.0
    bar.update(25)  # a task ends: a line
    clock.now = 3.5
    bar.update(25)  # within a second of the last line: none
    clock.now = 3.5 + HEARTBEAT - 0.1
    bar.tick()  # not yet silent for the heartbeat's interval
    clock.now = 3.0 + HEARTBEAT + 0.1
    bar.tick()  # silent for 10 s while tasks run: a line
    clock.now = 20.0
    bar.update(50)  # the last task: a line
    bar.close()  # the state was just written: nothing more
    lines = out.getvalue().splitlines()
    assert lines[0] == "100 replications in 4 task(s)"
    assert [ln.split()[1:3] for ln in lines[1:]] == [["25%", "25/100"], ["50%", "50/100"],
                                                    ["100%", "100/100"]]
    assert all(ln.startswith("progress: ") and "\r" not in ln for ln in lines[1:])
    assert "elapsed 00:20 left 00:00" in lines[-1]


def test_a_terminal_gets_one_line_redrawn_and_quiet_gets_nothing():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    clock, tty = FakeClock(), Tty()
    bar = Progress(10, stream=tty, clock=clock)
    clock.now = 1.0
    bar.update(10)
    bar.close()
    text = tty.getvalue()
    assert not bar.plain and text.count("\n") == 1 and text.count("\r") >= 2
    quiet = io.StringIO()
    off = Progress(10, stream=quiet, enabled=False)
    off.update(10)
    off.tick()
    off.close()
    assert quiet.getvalue() == ""


def test_forked_workers_tick_while_no_task_ends():
    ticks = []

    def slow(i):
        time.sleep(2.5)
        return i

    assert sorted(run_forked(slow, [0, 1], 2, tick=lambda: ticks.append(1))) == [0, 1]
    assert len(ticks) >= 1  # about once a second (a loaded machine may run late)
