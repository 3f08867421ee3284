"""One run at a time per run folder: ``RUN_DIR/.lock``; or several parts of one run.

A whole run holds ``RUN_DIR/.lock``; part I of N of a cluster array (``--part I/N``)
holds ``RUN_DIR/.lock.part-I-of-N`` instead, so the N parts run side by side while a
whole run and any part (or parts of another split) exclude each other: each process
takes its own lock file first and then looks for the others' (:func:`conflicting`),
so of two that start together at least one sees the other. The parts share the
manifest through a short-lived mutex, ``RUN_DIR/.manifest.lock`` (:func:`manifest_mutex`).

The lock file is created atomically and complete (written under a temporary name, then
hard-linked to ``.lock``, which fails like ``O_CREAT | O_EXCL`` when the file exists) and
names its holder: process
id, host, the process's start tick (so a recycled pid is not mistaken for the holder) and
the time the run started. A second run finds the file and refuses while the holder lives.
A lock whose holder is dead on this host (a killed run) is stale: the next run takes it
over (moving the old file aside first, so two runs taking over at once cannot both win)
and says so. A lock held from another host cannot be checked and is never taken over.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from micromacro_sim.core.errors import MicroMacroError

__all__ = ["LOCK_NAME", "MUTEX_NAME", "RunLock", "RunLocked", "conflicting", "holder_alive",
           "live_locks", "manifest_mutex", "part_lock_name", "read_holder"]

LOCK_NAME = ".lock"
#: The manifest's mutex (held for a read-modify-write of the manifest only).
MUTEX_NAME = ".manifest.lock"
_PART_LOCK = re.compile(r"^\.lock\.part-(\d+)-of-(\d+)$")


def part_lock_name(index: int, count: int) -> str:
    """The lock file of part ``index`` of ``count``."""
    return f"{LOCK_NAME}.part-{index}-of-{count}"


class RunLocked(MicroMacroError):
    """Another live run holds the folder."""


def _start_tick(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return fields[19] if len(fields) > 19 else None


def _pid_alive(pid: int, tick: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        state = ""
    if state in ("Z", "X"):  # killed, not yet reaped
        return False
    now = _start_tick(pid)
    return tick is None or now is None or now == tick


def read_holder(run_dir: str | Path, name: str = LOCK_NAME) -> dict[str, Any] | None:
    """The holder named by the folder's lock file, or None when there is none.

    An unreadable lock file (cut short by a kill while it was written) is returned as
    ``{}``.
    """
    path = Path(run_dir) / name
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _alive(holder: dict[str, Any]) -> bool:
    """Whether ``holder`` may still be running (True when it cannot be checked)."""
    if holder.get("host") != socket.gethostname():
        return True
    pid = holder.get("pid")
    if not isinstance(pid, int):
        return False
    return _pid_alive(pid, holder.get("tick"))


def live_locks(run_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Lock file name -> holder, of every live run or part holding ``run_dir``."""
    out = {}
    try:
        names = [p.name for p in Path(run_dir).iterdir()
                 if p.name == LOCK_NAME or _PART_LOCK.match(p.name)]
    except OSError:
        return {}
    for name in sorted(names):
        holder = read_holder(run_dir, name)
        if holder and _alive(holder):
            out[name] = holder
    return out


def holder_alive(run_dir: str | Path) -> bool:
    """Whether a live run (or a part of one) holds ``run_dir``."""
    return bool(live_locks(run_dir))


def conflicting(run_dir: str | Path, mine: str) -> tuple[str, dict[str, Any]] | None:
    """A live lock that may not coexist with lock ``mine`` (the whole run's lock with
    anything; a part with the whole run or with parts of another split), or None."""
    m = _PART_LOCK.match(mine)
    for name, holder in live_locks(run_dir).items():
        if name == mine:
            continue
        other = _PART_LOCK.match(name)
        if m is None or other is None or other.group(2) != m.group(2):
            return name, holder
    return None


def _describe(holder: dict[str, Any]) -> str:
    return (f"pid {holder.get('pid')} on host {holder.get('host')!r} "
            f"since {holder.get('started')}")


@dataclass
class RunLock:
    """The lock of one run folder; use as a context manager.

    Attributes
    ----------
    taken_over : dict or None
        The stale holder this run replaced, if any.
    """

    run_dir: Path
    taken_over: dict[str, Any] | None = None
    _held: bool = False
    name: str = LOCK_NAME

    @property
    def path(self) -> Path:
        """The lock file."""
        return Path(self.run_dir) / self.name

    def _me(self) -> dict[str, Any]:
        pid = os.getpid()
        return {"pid": pid, "host": socket.gethostname(), "tick": _start_tick(pid),
                "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}

    def _create(self) -> bool:
        """Create the lock file, complete, in one step (a hard link fails if it exists)."""
        tmp = self.path.with_name(f"{self.name}.{socket.gethostname()}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self._me()))
        try:
            os.link(tmp, self.path)
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: exclusive create
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w") as fh:
                fh.write(tmp.read_text())
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        return True

    def _take_over(self, holder: dict[str, Any]) -> None:
        """Move a stale lock aside; put it back if it turned out to be live."""
        aside = self.path.with_name(f"{self.name}.stale.{socket.gethostname()}.{os.getpid()}")
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:
            return  # another run moved it first; try to create ours
        moved = read_holder_file(aside)
        if moved != holder and moved and _alive(moved):
            with contextlib.suppress(OSError):
                os.link(aside, self.path)  # restore a live lock taken by mistake
        with contextlib.suppress(OSError):
            aside.unlink()

    def acquire(self) -> RunLock:
        """Take the lock or raise :class:`RunLocked` (one line naming the holder)."""
        for _attempt in range(5):
            if self._create():
                self._held = True
                return self
            holder = read_holder(self.run_dir, self.name)
            if holder is None:
                continue  # released between our attempt and the read
            if holder and _alive(holder):
                raise RunLocked(
                    f"output: {str(self.run_dir)!r} is in use by another run "
                    f"({_describe(holder)}); wait for it to finish or choose another folder"
                )
            self._take_over(holder)
            self.taken_over = holder
        raise RunLocked(f"output: {str(self.run_dir)!r}: could not take its lock file "
                        f"{str(self.path)!r}")

    def release(self) -> None:
        """Remove the lock file if this process still holds it."""
        if self._held:
            holder = read_holder(self.run_dir, self.name)
            if holder and holder.get("pid") == os.getpid() and (
                    holder.get("host") == socket.gethostname()):
                with contextlib.suppress(OSError):
                    self.path.unlink()
            self._held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def read_holder_file(path: Path) -> dict[str, Any]:
    """The holder recorded in a lock file at ``path`` ({} when unreadable)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@contextlib.contextmanager
def manifest_mutex(run_dir: str | Path, timeout: float = 120.0) -> Iterator[None]:
    """Hold ``RUN_DIR/.manifest.lock`` for a read-modify-write of the manifest.

    Waits (polling) while another live process holds it; a holder that died on this
    host is taken over as for :class:`RunLock`.

    Raises
    ------
    RunLocked
        Not obtained within ``timeout`` seconds (a holder on another host that died).
    """
    lock = RunLock(Path(run_dir), name=MUTEX_NAME)
    deadline = time.monotonic() + timeout
    while True:
        try:
            lock.acquire()
            break
        except RunLocked:
            if time.monotonic() > deadline:
                raise RunLocked(f"output: could not take {str(lock.path)!r} within "
                                f"{timeout:g} s; if no run uses the folder, delete it") from None
            time.sleep(0.02)
    try:
        yield
    finally:
        lock.release()
