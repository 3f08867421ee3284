"""A terminal progress line with rate and time left (no dependency)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h:d}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """Progress over ``total`` units, redrawn in place on a terminal.

    Parameters
    ----------
    total : int
    unit : str
    enabled : bool
    stream : file, optional
        Defaults to stderr.
    """

    def __init__(self, total: int, unit: str = "reps", *, enabled: bool = True,
                 stream: TextIO | None = None, width: int = 30) -> None:
        self.total, self.unit, self.enabled = total, unit, enabled and total > 0
        self.stream = stream or sys.stderr
        self.width, self.done = width, 0
        self.start = time.perf_counter()
        self._last = 0.0
        if self.enabled:
            self._draw()

    def line(self) -> str:
        """The current progress line."""
        elapsed = time.perf_counter() - self.start
        frac = self.done / self.total if self.total else 1.0
        filled = int(self.width * frac)
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        eta = _clock(left) if left == left else "--:--"
        return (f"[{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total} "
                f"{self.unit} {rate:.1f}/s elapsed {_clock(elapsed)} left {eta}")

    def _draw(self) -> None:
        self.stream.write("\r" + self.line())
        self.stream.flush()

    def update(self, n: int) -> None:
        """Record ``n`` more finished units."""
        self.done += n
        now = time.perf_counter()
        if self.enabled and (now - self._last > 0.2 or self.done >= self.total):
            self._last = now
            self._draw()

    def close(self) -> None:
        """Finish the line."""
        if self.enabled:
            self._draw()
            self.stream.write("\n")
            self.stream.flush()
