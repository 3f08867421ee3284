"""A run folder's bookkeeping: its manifest, shard ledger and the start of a run.

:func:`previous_manifest` reads and checks what an earlier run left (writing nothing);
:func:`start_run` (with the folder's lock held) cleans up after a killed run, verifies
the shards (:mod:`.verify`) and returns the new manifest; :class:`Ledger` records each
finished shard in it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
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
from micromacro_sim.run.ownership import (
    design_change,
    identity_change,
    is_own_manifest,
    refuse_foreign,
    unlisted_files,
)
from micromacro_sim.run.storage import (
    StorageError,
    clear_run,
    load_manifest,
    write_frame_atomic,
    write_json_atomic,
)
from micromacro_sim.run.verify import clean_temporary, verify_shards

if TYPE_CHECKING:
    from micromacro_sim.design.config import RunConfig

__all__ = ["STALE_TAIL", "SUMMARY_RECORD", "ledger_digest", "mark_summary_stale", "now",
           "previous_manifest", "start_run", "storage_error", "write_scenarios_table"]

#: What a summary of a run folder records of the run it summarized (written beside
#: ``summary.csv`` by :func:`micromacro_sim.summaries.tidy.write_summary_tables`).
SUMMARY_RECORD = "summary.json"
#: The end of the note that a summary went stale (the command line drops it when it
#: summarizes again at once).
STALE_TAIL = "(marked stale in summary.json): run micromacro summarize to refresh it"


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
    ``config`` by the rules of :mod:`~micromacro_sim.run.ownership`; nothing is written.

    With ``overwrite`` the manifest of a different config is returned too: its ledger
    says which files :func:`start_run` may delete.
    """
    notes: list[str] = []
    try:
        old = load_manifest(run_dir)
    except StorageError as exc:
        if overwrite:
            raise StorageError(f"{exc}: cannot tell which files the earlier run wrote, so "
                               "--overwrite deletes nothing; move the folder away or choose "
                               "another output folder") from None
        notes.append(f"{exc}: rebuilt; only shards carrying this config's hash are kept")
        return None, notes
    if old is None:
        refuse_foreign(run_dir)
        return None, notes
    if not is_own_manifest(old):
        raise ConfigError(f"output: {str(run_dir / 'manifest.json')!r} was not written by this "
                          "tool (no result hash or ledger); choose another output folder")
    if overwrite:
        unlisted = unlisted_files(run_dir, old.get("shards") or {})
        if unlisted:
            raise ConfigError(f"output: {str(unlisted[0])!r} is not in the ledger of the run "
                              "--overwrite would replace, so it is not deleted; move it away "
                              "first")
        return old, notes
    if old.get("result_hash") != config.result_hash:
        change = identity_change(old.get("result_identity"), config.result_identity())
        raise ConfigError(f"output: {str(run_dir)!r} holds a run of a different config "
                          f"({change}); choose another output folder or pass --overwrite")
    change = design_change(old.get("config"), config)
    if change is not None:
        raise ConfigError(f"output: {str(run_dir)!r} holds another design ({change}); a "
                          "folder holds one design, extended only by grid cells or "
                          "replications: choose another output folder")
    return old, notes


def _adaptive_carry(config: RunConfig, old: dict[str, Any] | None) -> dict[str, Any]:
    """What an adaptive run keeps of the folder's earlier adaptive record: the SE type
    each target used per method (null when that record predates it), so that
    :func:`~micromacro_sim.run.adaptive.run_rounds` replays the rule it started with."""
    before = (old or {}).get("adaptive")
    if config.adaptive is None or not isinstance(before, dict):
        return {}
    return {"adaptive": {"se_types": before.get("se_types")}}


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
        **_adaptive_carry(config, old),
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
    if old is not None:  # the folder's own scratch and temporary files of a killed run
        with contextlib.suppress(OSError):
            shutil.rmtree(run_dir / ".scratch")
        clean_temporary(run_dir)
    if overwrite and old is not None:
        clear_run(run_dir, old.get("shards") or {})
        old = None
    manifest = new_manifest(config, old)
    ledger = dict(old.get("shards", {})) if old else {}
    legacy = old is not None and "shards" not in old
    check = verify_shards(run_dir, ledger, config.result_hash, legacy_ok=legacy)
    notes.extend(check.notes)
    manifest["shards"] = check.ledger
    return manifest


def ledger_digest(manifest: dict[str, Any]) -> str:
    """A digest of the shards a manifest records: equal digests, the same finished rows."""
    shards = manifest.get("shards") or {}
    text = json.dumps(sorted((k, v.get("sha256") if isinstance(v, dict) else v)
                             for k, v in shards.items()), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def mark_summary_stale(run_dir: Path, manifest: dict[str, Any]) -> str | None:
    """Mark the folder's summary stale when its ledger changed since it was summarized;
    returns a note for the user (None when there is no summary or it is current)."""
    path = run_dir / SUMMARY_RECORD
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("ledger") == ledger_digest(manifest):
        return None
    if not record.get("stale"):
        record["stale"] = True
        with contextlib.suppress(OSError):
            write_json_atomic(path, record)
    return (f"{str(run_dir / 'summary.csv')!r} summarizes the folder as it was before this "
            f"run {STALE_TAIL}")
