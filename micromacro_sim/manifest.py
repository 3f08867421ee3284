"""A run folder's bookkeeping: its manifest, shard ledger and the start of a run.

:func:`previous_manifest` reads and checks what an earlier run left (writing nothing);
:func:`start_run` (with the folder's lock held) cleans up after a killed run, verifies
the shards (:mod:`.verify`) and returns the new manifest; :class:`Ledger` records each
finished shard in it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import platform
import shutil
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .arrow_columns import table_from_rows
from .errors import ConfigError
from .lock import RunLock
from .storage import (
    StorageError,
    clear_run,
    load_manifest,
    write_frame_atomic,
    write_json_atomic,
)
from .verify import clean_temporary, verify_shards

if TYPE_CHECKING:
    from .config import RunConfig
    from .runner import TaskResult

__all__ = ["Ledger", "now", "previous_manifest", "start_run", "storage_error",
           "write_scenarios_table"]


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("micromacro-sim", "numpy", "scipy", "pandas", "statsmodels", "semopy",
                "joblib", "pyarrow", "PyYAML"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def previous_manifest(config: RunConfig, run_dir: Path, overwrite: bool
              ) -> tuple[dict[str, Any] | None, list[str]]:
    """The folder's previous manifest (None when absent or damaged), checked against
    ``config``; nothing is written."""
    notes = []
    try:
        old = load_manifest(run_dir)
    except StorageError as exc:
        old = None
        if not overwrite:
            notes.append(f"{exc}: rebuilt; only shards carrying this config's hash are kept")
    if old is not None and not overwrite and old.get("result_hash") != config.result_hash:
        raise ConfigError(
            f"output: {str(run_dir)!r} holds a run of a different config "
            f"(result hash {old.get('result_hash')} != {config.result_hash}: another seed, "
            "methods, admissibility, engine, package or plug-in version; replications and "
            "grid cells may change); choose another output folder or pass --overwrite"
        )
    return (None if overwrite else old), notes


def _manifest(config: RunConfig, old: dict[str, Any] | None) -> dict[str, Any]:
    """The manifest to write for this run of ``config``."""
    keys = [sc.key for sc in config.scenarios]
    previous = [] if old is None else list(old.get("scenarios", []))
    return {
        "name": config.name,
        "description": config.description,
        "status": "running",
        "result_hash": config.result_hash,
        "result_identity": config.result_identity(),
        "config": config.raw,
        "seed": config.seed,
        "replications": max(config.replications, int(old.get("replications", 0)) if old else 0),
        "replications_requested": config.replications,
        "scenarios": previous + [k for k in keys if k not in previous],
        "methods": [m.label for m in config.methods],
        "versions": _versions(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "created": old.get("created") if old else now(),
        "runs": (old.get("runs", []) if old else []),
        "shards": {},
    }


def write_scenarios_table(run_dir: Path, config: RunConfig, keys: list[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = run_dir / "scenarios.parquet"
    rows = {row["scenario"]: row for row in config.scenario_rows()}
    if path.is_file():
        with contextlib.suppress(OSError, ValueError):  # damaged: rebuilt from the config
            for row in pq.read_table(path).to_pylist():
                rows.setdefault(row["scenario"], row)
    listed = [rows[k] for k in keys if k in rows]
    # cells differ in their columns (one per Z, one per construct): every row gets all
    columns = list(dict.fromkeys(c for row in listed for c in row))
    full = [{c: row.get(c) for c in columns} for row in listed]
    write_frame_atomic(path, table_from_rows(full) if full else pa.Table.from_pylist(full))


class Ledger:
    """Records finished shards in the manifest, rewriting it at most once a second.

    While the run lasts, a reserve file (``RUN_DIR/.reserve``) holds room for the last
    manifest: when the disk fills, :meth:`close` frees it first, so the manifest still
    records every finished shard and the run's true end.
    """

    #: Bytes reserved per task still to run (two ledger entries) and in all.
    RESERVE_PER_TASK = 512
    RESERVE_MIN = 64 << 10

    def __init__(self, path: Path, manifest: dict[str, Any], tasks: int = 0) -> None:
        self.path, self.manifest, self._last = path, manifest, 0.0
        self.reserve = path.with_name(".reserve")
        size = self.RESERVE_MIN + tasks * self.RESERVE_PER_TASK
        size += len(json.dumps(manifest, default=str))
        try:
            with open(self.reserve, "wb") as fh:
                os.posix_fallocate(fh.fileno(), 0, size)
        except (OSError, AttributeError):
            with contextlib.suppress(OSError):  # no room even for that: run without it
                self.reserve.unlink()

    def add(self, res: TaskResult) -> None:
        """Record a finished task's shards."""
        for rec in res.shards:
            self.manifest["shards"][rec.path] = rec.to_json()
        self.flush()

    def flush(self, force: bool = False) -> None:
        """Rewrite the manifest (at most once a second unless ``force``)."""
        now = time.monotonic()
        if force or now - self._last >= 1.0:
            write_json_atomic(self.path, self.manifest)
            self._last = now

    def close(self) -> None:
        """Free the reserve and write the final manifest (best effort on a full disk)."""
        with contextlib.suppress(OSError):
            self.reserve.unlink()
        with contextlib.suppress(OSError):
            self.flush(force=True)


def storage_error(exc: OSError, run_dir: Path) -> StorageError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageError(
            f"output: no space left on the device of {str(run_dir)!r}; finished shards are "
            "kept: free space and run again to resume"
        )
    where = f" {exc.filename!r}" if exc.filename else ""
    return StorageError(f"output: cannot write{where} ({exc.strerror or exc}); finished "
                        "shards are kept: fix it and run again to resume")


def start_run(config: RunConfig, run_dir: Path, lock: RunLock, old: dict[str, Any] | None,
           overwrite: bool, notes: list[str]) -> dict[str, Any]:
    """With the lock held: clean up after an earlier run, verify its shards, return the
    manifest of this run."""
    if lock.taken_over is not None:
        h = lock.taken_over
        notes.append(f"took over the lock of an earlier run that is no longer running "
                     f"(pid {h.get('pid')}, started {h.get('started')})")
        if old is not None and old.get("runs") and "finished" not in old["runs"][-1]:
            old["runs"][-1]["ended"] = "killed"
    with contextlib.suppress(OSError):
        shutil.rmtree(run_dir / ".scratch")
    clean_temporary(run_dir)
    if overwrite:
        clear_run(run_dir)
    manifest = _manifest(config, old)
    ledger = dict(old.get("shards", {})) if old else {}
    legacy = old is not None and "shards" not in old
    check = verify_shards(run_dir, ledger, config.result_hash, legacy_ok=legacy)
    notes.extend(check.notes)
    manifest["shards"] = check.ledger
    return manifest
