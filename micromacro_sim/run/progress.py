"""Progress of a run on stderr: a line redrawn in place on a terminal, plain lines elsewhere.

On a terminal the line is redrawn as tasks finish. Where stderr is not a terminal (a
cluster job's log, a pipe) a redrawn line would be one growing line, so the progress is
written as plain lines instead: at each task's end (at most one a second) and, while
tasks run, at least every :data:`HEARTBEAT` seconds (:meth:`Progress.tick`, called by the
executor while it waits). No dependency.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["HEARTBEAT", "Progress"]

#: Longest silence, in seconds, of the plain progress lines while a run works.
HEARTBEAT = 10.0
#: Shortest interval between two plain lines at task ends.
MIN_INTERVAL = 1.0


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h:d}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """Progress over ``total`` units on ``stream``.

    Parameters
    ----------
    total : int
    unit : str
    enabled : bool
    stream : file, optional
        Defaults to stderr.
    width : int
        Width of the bar on a terminal.
    plain : bool, optional
        Plain lines instead of a redrawn line (default: when ``stream`` is not a terminal).
    clock : callable, optional
        Seconds, monotonic (tests pass a fake one).
    """

    def __init__(self, total: int, unit: str = "reps", *, enabled: bool = True,
                 stream: TextIO | None = None, width: int = 30, plain: bool | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.total, self.unit, self.enabled = total, unit, enabled and total > 0
        self.stream = stream or sys.stderr
        if plain is None:
            isatty = getattr(self.stream, "isatty", None)
            plain = not (isatty is not None and isatty())
        self.plain, self.clock = plain, clock
        self.width, self.done = width, 0
        self.start = clock()
        self._last = -float("inf")
        self._printed = -1
        self._lock = threading.Lock()
        if self.enabled and not self.plain:
            self._draw()

    def line(self) -> str:
        """The current progress line."""
        elapsed = self.clock() - self.start
        frac = self.done / self.total if self.total else 1.0
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        eta = _clock(left) if left == left else "--:--"
        counts = (f"{self.done}/{self.total} {self.unit} {rate:.1f}/s elapsed "
                  f"{_clock(elapsed)} left {eta}")
        if self.plain:
            return f"progress: {100 * frac:.0f}% {counts}"
        filled = int(self.width * frac)
        return f"[{'#' * filled}{'.' * (self.width - filled)}] {counts}"

    def _draw(self) -> None:
        self._last = self.clock()
        if self.plain:
            self._printed = self.done
            self.stream.write(self.line() + "\n")
        else:
            self.stream.write("\r" + self.line())
        self.stream.flush()

    def note(self, text: str) -> None:
        """One line of information before the progress (what runs where)."""
        if self.enabled:
            with self._lock:
                self.stream.write(("" if self.plain else "\r") + text + "\n")
                self.stream.flush()
                if not self.plain:
                    self._draw()

    def update(self, n: int) -> None:
        """Record ``n`` more finished units (a task's end)."""
        with self._lock:
            self.done += n
            if not self.enabled:
                return
            since = self.clock() - self._last
            if self.done >= self.total or since > (MIN_INTERVAL if self.plain else 0.2):
                self._draw()

    def tick(self) -> None:
        """While tasks run: a plain line when the last is :data:`HEARTBEAT` seconds old."""
        with self._lock:
            if self.enabled and self.plain and self.clock() - self._last >= HEARTBEAT:
                self._draw()

    def close(self) -> None:
        """Finish the line (a plain last line unless the current state was just written)."""
        if not self.enabled:
            return
        with self._lock:
            if not self.plain:
                self._draw()
                self.stream.write("\n")
                self.stream.flush()
            elif self._printed != self.done:
                self._draw()
