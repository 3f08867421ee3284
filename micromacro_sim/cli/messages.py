"""What the command line prints besides results: one line per error or warning.

:func:`os_error_text` turns a file-system error met while working (a read-only folder, a
full disk, a file that vanished) into one line naming the file; :func:`one_line_warnings`
shows each warning of numpy, pandas or matplotlib once, in one line without source paths
or code.
"""

from __future__ import annotations

import contextlib
import errno
import sys
import warnings
from collections.abc import Iterator
from typing import Any

__all__ = ["one_line_warnings", "os_error_text"]


def os_error_text(exc: OSError) -> str:
    """``<file>: <problem>`` for an OSError, in one line."""
    where = exc.filename if exc.filename is not None else "a file"
    problem = exc.strerror or type(exc).__name__
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        problem += " (nothing more was written)"
    elif exc.errno in (errno.ENOSPC, errno.EDQUOT):
        problem += " (free space and run again)"
    return f"{str(where)!r}: {problem}"


@contextlib.contextmanager
def one_line_warnings() -> Iterator[None]:
    """Inside the block, each distinct warning prints once as ``warning: <text>``."""
    seen: set[tuple[type, str]] = set()

    def show(message: Any, category: type[Warning], filename: str, lineno: int,
             file: Any = None, line: str | None = None) -> None:
        text = " ".join(str(message).split())
        if (category, text) in seen:
            return
        seen.add((category, text))
        print(f"warning: {text}", file=sys.stderr if file is None else file)

    with warnings.catch_warnings():  # the filters stay as they are; only the display changes
        warnings.showwarning = show
        yield
