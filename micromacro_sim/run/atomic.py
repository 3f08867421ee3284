"""The package's one atomic file writer.

Every file the package writes (shards, manifests, tables, reports) goes through
:func:`write_atomic`: the content is written to a hidden temporary name beside the
target, flushed to disk, and renamed over the target. A reader therefore sees the old
file or the new one, never a partial one; a writer that fails (a full disk, an
interrupt) removes its temporary file and leaves the target as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["TMP_SUFFIX", "tmp_name", "write_atomic", "write_json", "write_text"]

#: Suffix of the temporary files (hidden, process-unique); see :func:`tmp_name`.
TMP_SUFFIX = ".tmp"


def tmp_name(path: Path) -> Path:
    """A hidden temporary name beside ``path``, unique to this process."""
    return path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")


def write_atomic(path: str | Path, writer: Callable[[Path], None]) -> Path:
    """Call ``writer(tmp)`` to write a temporary file, then rename it to ``path``.

    Parameters
    ----------
    path : path
        The target.
    writer : callable
        Writes the whole content to the path it is given.

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    tmp = tmp_name(path)
    try:
        writer(tmp)
        with open(tmp, "rb+") as fh:  # the content is on disk before the rename
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 text atomically."""
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: str | Path, payload: Any) -> Path:
    """Write JSON (indented, one trailing newline) atomically."""
    return write_text(path, json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")
