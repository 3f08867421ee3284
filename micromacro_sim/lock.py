"""One run at a time per run folder: ``RUN_DIR/.lock``.

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
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import MicroMacroError

__all__ = ["LOCK_NAME", "RunLock", "RunLocked", "holder_alive", "read_holder"]

LOCK_NAME = ".lock"


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


def read_holder(run_dir: str | Path) -> dict[str, Any] | None:
    """The holder named by the folder's lock file, or None when there is none.

    An unreadable lock file (cut short by a kill while it was written) is returned as
    ``{}``.
    """
    path = Path(run_dir) / LOCK_NAME
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


def holder_alive(run_dir: str | Path) -> bool:
    """Whether a live run holds ``run_dir``."""
    holder = read_holder(run_dir)
    return holder is not None and bool(holder) and _alive(holder)


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

    @property
    def path(self) -> Path:
        """The lock file."""
        return Path(self.run_dir) / LOCK_NAME

    def _me(self) -> dict[str, Any]:
        pid = os.getpid()
        return {"pid": pid, "host": socket.gethostname(), "tick": _start_tick(pid),
                "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}

    def _create(self) -> bool:
        """Create the lock file, complete, in one step (a hard link fails if it exists)."""
        tmp = self.path.with_name(f"{LOCK_NAME}.{os.getpid()}.tmp")
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
        aside = self.path.with_name(f"{LOCK_NAME}.stale.{os.getpid()}")
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
            holder = read_holder(self.run_dir)
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
            holder = read_holder(self.run_dir)
            if holder and holder.get("pid") == os.getpid():
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
