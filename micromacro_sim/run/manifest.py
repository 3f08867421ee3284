"""A run folder's bookkeeping: its manifest, shard ledger and the start of a run.

:func:`previous_manifest` reads and checks what an earlier run left (writing nothing);
:func:`start_run` (with the folder's lock held) cleans up after a killed run, verifies
the shards (:mod:`.verify`) and returns the new manifest; :class:`Ledger` records each
finished shard in it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import platform
import shutil
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from micromacro_sim.core.errors import ConfigError
from micromacro_sim.run.arrow_columns import table_from_rows
from micromacro_sim.run.lock import RunLock
from micromacro_sim.run.storage import (
    StorageError,
    clear_run,
    load_manifest,
    write_frame_atomic,
)
from micromacro_sim.run.verify import clean_temporary, verify_shards

if TYPE_CHECKING:
    from micromacro_sim.design.config import RunConfig

__all__ = ["now", "previous_manifest", "start_run", "storage_error", "write_scenarios_table"]


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


def new_manifest(config: RunConfig, old: dict[str, Any] | None) -> dict[str, Any]:
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
    manifest = new_manifest(config, old)
    ledger = dict(old.get("shards", {})) if old else {}
    legacy = old is not None and "shards" not in old
    check = verify_shards(run_dir, ledger, config.result_hash, legacy_ok=legacy)
    notes.extend(check.notes)
    manifest["shards"] = check.ledger
    return manifest
