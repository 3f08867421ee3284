"""Output paths checked before anything is written.

:func:`check_output_dir` (a run or summary folder, created if missing) and
:func:`check_output_file` (a file in an existing folder) refuse, in one line naming the
field and the path: an empty path; the root of the file system, a path under /proc, /sys,
/dev or a system folder (/etc, /usr, /bin, /sbin, /boot, /lib...), or a device; an
existing file where a folder is wanted (or a folder where a file is); a name longer than
the file system allows; a folder on a read-only file system or one this process cannot
write; a missing parent folder (files only).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from micromacro_sim.core.errors import ConfigError

__all__ = ["check_not_input", "check_output_dir", "check_output_file", "nearest_existing"]

_SYSTEM = ("/proc", "/sys", "/dev")
#: System folders: results are never written in or under them (nor at the root itself).
_SYSTEM_TREES = ("/bin", "/boot", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/sbin",
                 "/usr")


def _fail(field: str, path: str, problem: str) -> ConfigError:
    return ConfigError(f"{field}: {path!r} {problem}")


def nearest_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists."""
    p = path
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    return p


def _basic(path: str | os.PathLike[str] | None, field: str) -> Path:
    text = os.fspath(path) if path is not None else ""
    if not text.strip():
        raise ConfigError(f"{field}: expected a path, got {text!r}")
    if "\0" in text:
        raise _fail(field, text, "contains a NUL character")
    p = Path(os.path.abspath(os.path.expanduser(text)))
    real = Path(os.path.realpath(p))
    for root in _SYSTEM:
        if any(str(q) == root or str(q).startswith(root + "/") for q in (p, real)):
            raise _fail(field, text, f"is under {root}, not a place for results")
    for q in (p, real):
        if q == Path(q.anchor):
            raise _fail(field, text, "is the root of the file system, not a place for results")
        for root in _SYSTEM_TREES:
            if str(q) == root or str(q).startswith(root + "/"):
                raise _fail(field, text, f"is in the system folder {root}, not a place for "
                                         "results")
    limit = os.pathconf(nearest_existing(p), "PC_NAME_MAX") if hasattr(os, "pathconf") else 255
    for part in p.parts:
        if len(os.fsencode(part)) > limit:
            raise _fail(field, text, f"has a name longer than {limit} bytes: {part[:40]!r}...")
    if len(os.fsencode(str(p))) >= 4096:
        raise _fail(field, text, "is longer than 4095 bytes")
    return p


def _writable(folder: Path, field: str, text: str) -> None:
    if not folder.is_dir():
        raise _fail(field, text, f"cannot be created: {str(folder)!r} is not a folder")
    try:
        flags = os.statvfs(folder).f_flag
    except OSError:
        flags = 0
    if flags & os.ST_RDONLY:
        raise _fail(field, text, f"is on a read-only file system ({str(folder)!r})")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise _fail(field, text, f"cannot be written: no permission in {str(folder)!r}")


def _kind(p: Path) -> str:
    mode = os.stat(p).st_mode
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISREG(mode):
        return "file"
    return "device or special file"


def check_output_dir(path: str | os.PathLike[str] | None, field: str = "output") -> Path:
    """Refuse a folder path that cannot hold results (see the module docstring).

    Returns
    -------
    Path
        The path as given (not resolved), for messages and manifests.
    """
    p = _basic(path, field)
    text = os.fspath(path)  # type: ignore[arg-type]
    if os.path.lexists(p):
        if not p.exists():
            raise _fail(field, text, "is a broken symbolic link")
        kind = _kind(p)
        if kind != "folder":
            raise _fail(field, text, f"is an existing {kind}, not a folder")
        _writable(p, field, text)
    else:
        _writable(nearest_existing(p), field, text)
    return Path(text)


def check_output_file(path: str | os.PathLike[str] | None, field: str = "output") -> Path:
    """Refuse a file path that cannot be written: its folder must exist."""
    p = _basic(path, field)
    text = os.fspath(path)  # type: ignore[arg-type]
    if os.path.lexists(p) and p.exists() and _kind(p) != "file":
        raise _fail(field, text, f"is an existing {_kind(p)}, not a file")
    if not p.parent.is_dir():
        what = "does not exist" if not os.path.lexists(p.parent) else "is not a folder"
        raise _fail(field, text, f"cannot be written: its folder {str(p.parent)!r} {what}")
    _writable(p.parent, field, text)
    return Path(text)


def _same(a: Path, b: str | os.PathLike[str]) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # either does not exist
        return False


def check_not_input(written: Iterable[str | os.PathLike[str]],
                    inputs: Iterable[str | os.PathLike[str]], field: str = "output", *,
                    inside: bool = False) -> None:
    """Refuse when a path a command writes is one of the files it reads.

    Paths are compared as the same file (device and inode), whatever their names, links
    or relative forms. This is the one rule every writer (``fit``, ``export``,
    ``summarize``, ``plan``, ``power``, ``report``, ``run``) applies before writing.

    Parameters
    ----------
    written : paths
        What the command writes (files or folders).
    inputs : paths
        What it reads.
    field : str
        The option named in the message.
    inside : bool
        Also refuse a written path inside an input folder.

    Raises
    ------
    ConfigError
    """
    ins = list(inputs)
    for w in written:
        wp = Path(os.path.abspath(os.fspath(w)))
        for cand in [wp, *(wp.parents if inside else ())]:
            hit = next((i for i in ins if _same(cand, i)), None)
            if hit is not None:
                where = "inside " if cand != wp else ""
                raise ConfigError(f"{field}: {os.fspath(w)!r} is {where}an input of this "
                                  f"command ({os.fspath(hit)!r}), which is never written "
                                  "over; choose another path")
