"""Check a run folder's shards before a resume; drop what is damaged so it runs again.

Every shard file is checked:

* recorded in the manifest's ledger: its size and SHA-256 must match the record;
* not recorded (the run was killed between writing the shard and recording it, or the
  folder predates the ledger): it must read in full and carry this config's result hash in
  its Parquet metadata (or, for a folder written before shards carried it, the intact
  manifest must have this config's hash); a file that does not is not the run's own, so
  the run is refused naming it and nothing is deleted (see :mod:`.ownership`). It must
  also hold exactly its replication range.

A shard of the run's own that fails is deleted together with its task's other shard, so
the task runs again; a ``datasets`` shard of its own without its ``estimates`` shard (a
task cut short) is deleted; leftover temporary files are removed. Each finding is
returned as a note.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from micromacro_sim.run.atomic import TMP_SUFFIX
from micromacro_sim.run.storage import (
    HASH_KEY,
    TABLES,
    StorageError,
    file_sha256,
    shard_name,
    shard_parts,
)

__all__ = ["Verification", "clean_temporary", "verify_shards"]


@dataclass
class Verification:
    """The outcome of :func:`verify_shards`.

    Attributes
    ----------
    ledger : dict
        Shard path (relative to the run folder) -> record, for every shard kept.
    damaged : list of str
        Shards found damaged and deleted (their tasks run again).
    notes : list of str
        One line per finding, for the user.
    """

    ledger: dict[str, dict[str, Any]] = field(default_factory=dict)
    damaged: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def clean_temporary(run_dir: Path) -> int:
    """Remove temporary files left by killed writers; returns how many."""
    n = 0
    folders = [run_dir] + [p for t in TABLES if (run_dir / t).is_dir()
                           for p in (run_dir / t).iterdir() if p.is_dir()]
    for folder in folders:
        for f in folder.glob(f".*{TMP_SUFFIX}"):
            with contextlib.suppress(OSError):
                f.unlink()
                n += 1
    return n


def _check_unrecorded(path: Path, table: str, start: int, stop: int, result_hash: str,
                      legacy_ok: bool) -> tuple[str | None, int]:
    """Why an unrecorded shard cannot be kept (None when it can), and its row count."""
    import pyarrow.parquet as pq

    try:
        tab = pq.read_table(path)
    except (OSError, ValueError) as exc:
        text = str(exc).strip()
        raise _not_ours(path, f"unreadable ({text.splitlines()[0] if text else type(exc).__name__})"
                        ) from None
    stored = (tab.schema.metadata or {}).get(HASH_KEY)
    if stored is None and not legacy_ok:
        raise _not_ours(path, "written by an unknown run (no result hash)")
    if stored is not None and stored.decode() != result_hash:
        raise _not_ours(path, f"of a run of a different config (result hash {stored.decode()} "
                              f"!= {result_hash})")
    if "replication" not in tab.column_names:
        return "without a replication column", 0
    reps = tab.column("replication").to_numpy()
    want = stop - start
    uniq = sorted(set(reps.tolist()))
    if uniq != list(range(start, stop)) or (table == "datasets" and len(reps) != want):
        return f"holding replications other than [{start}, {stop})", 0
    return None, tab.num_rows


def _not_ours(path: Path, why: str) -> StorageError:
    """An unrecorded file the run cannot prove it wrote: refused, never deleted."""
    return StorageError(f"output: {str(path)!r} is {why} and not in this run's ledger, so it "
                        "is not deleted; move it away or choose another output folder")


def _own_orphan(path: Path, rel: str, ledger: dict[str, Any], result_hash: str,
                legacy_ok: bool) -> None:
    """Refuse to delete a lone shard unless the ledger records it or it carries the run's
    result hash."""
    import pyarrow.parquet as pq

    if rel in ledger:
        return
    try:
        stored = (pq.read_schema(path).metadata or {}).get(HASH_KEY)
    except (OSError, ValueError):
        raise _not_ours(path, "unreadable") from None
    if stored is None and legacy_ok:
        return
    if stored is None or stored.decode() != result_hash:
        raise _not_ours(path, "a shard of another run")


def _drop(run_dir: Path, key: str, start: int, stop: int) -> None:
    for table in ("estimates", "datasets"):  # estimates first: the task is then unfinished
        with contextlib.suppress(FileNotFoundError):
            (run_dir / shard_name(table, key, start, stop)).unlink()


def verify_shards(run_dir: Path, ledger: dict[str, dict[str, Any]], result_hash: str,
                  *, legacy_ok: bool,
                  owned: Callable[[str, int, int], bool] | None = None) -> Verification:
    """Check every shard of ``run_dir`` (see the module docstring).

    Parameters
    ----------
    run_dir : Path
    ledger : dict
        The manifest's ``shards`` as recorded ({} when it has none or is damaged).
    result_hash : str
        The hash of the config being resumed.
    legacy_ok : bool
        Whether shards without a result hash in their metadata may be kept (the
        manifest is intact and of this config).
    owned : callable, optional
        ``owned(key, start, stop)``: only those tasks' shards are checked (a part of a
        cluster array checks its own; the others may be being written).
    """
    out = Verification()
    tasks: dict[tuple[str, int, int], dict[str, Path]] = {}
    for table in TABLES:
        for key, a, b, path in shard_parts(run_dir, table):
            tasks.setdefault((key, a, b), {})[table] = path
    for (key, a, b), files in sorted(tasks.items()):
        if owned is not None and not owned(key, a, b):
            continue
        if "estimates" not in files:  # a task cut short: its datasets shard alone
            _own_orphan(files["datasets"], shard_name("datasets", key, a, b), ledger,
                        result_hash, legacy_ok)
            _drop(run_dir, key, a, b)
            continue
        problem = None
        records = {}
        for table, path in files.items():
            rel = shard_name(table, key, a, b)
            rec = ledger.get(rel)
            if rec is not None:
                size = path.stat().st_size
                if size != rec.get("bytes"):
                    problem = f"{rel} is {size} bytes, the manifest recorded {rec.get('bytes')}"
                elif file_sha256(path) != rec.get("sha256"):
                    problem = f"{rel} does not match the checksum the manifest recorded"
                records[rel] = rec
            else:
                why, rows = _check_unrecorded(path, table, a, b, result_hash, legacy_ok)
                if why:
                    problem = f"{rel} is {why}"
                else:
                    records[rel] = {"rows": rows, "bytes": path.stat().st_size,
                                    "sha256": file_sha256(path)}
            if problem:
                break
        if "datasets" not in files and problem is None:
            problem = f"{shard_name('datasets', key, a, b)} is missing"
        if problem:
            _drop(run_dir, key, a, b)
            out.damaged.append(shard_name("estimates", key, a, b))
            out.notes.append(f"shard {problem}: deleted; its replications run again")
        else:
            out.ledger.update(records)
    return out
