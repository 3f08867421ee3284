"""Run folder layout, atomic Parquet shards, the manifest and shard verification.

::

    RUN_DIR/
      manifest.json                  config, hashes, versions, times, the shard ledger
      scenarios.parquet              one row per scenario (key, parameters, derived values)
      datasets/<key>/part-AAAAAA-BBBBBB.parquet    replications [A, B) of one scenario
      estimates/<key>/part-AAAAAA-BBBBBB.parquet
      .lock                          while a run holds the folder (see :mod:`.lock`)

A shard is written to a temporary name and renamed (:mod:`.atomic`), so a reader never
sees a partial file. A task is finished when its ``estimates`` shard exists (it is renamed
last). Each shard carries the run's result hash in its Parquet metadata, and the manifest's
ledger (``shards``) records each shard's row count, size and SHA-256; a resume checks every
shard against both (:mod:`.verify`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from micromacro_sim.core.errors import MicroMacroError
from micromacro_sim.run.atomic import write_atomic, write_json
from micromacro_sim.run.schema import DEDUP_KEY

__all__ = [
    "TABLES",
    "ShardRecord",
    "StorageError",
    "clear_run",
    "completed_ranges",
    "overlapping_shards",
    "read_manifest",
    "read_table",
    "shard_parts",
    "write_frame_atomic",
    "write_json_atomic",
    "write_shard",
]

TABLES = ("datasets", "estimates")
_PART = re.compile(r"^part-(\d{6,})-(\d{6,})\.parquet$")
#: Parquet metadata key holding the result hash of the run that wrote a shard.
HASH_KEY = b"micromacro.result_hash"


class StorageError(MicroMacroError):
    """The run folder cannot be written or read as it is (message starts with the field)."""


@dataclass(frozen=True)
class ShardRecord:
    """What the manifest's ledger records of one shard."""

    path: str
    rows: int
    bytes: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        """Ledger form."""
        return {"rows": self.rows, "bytes": self.bytes, "sha256": self.sha256}


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_frame_atomic(path: Path, frame, metadata: dict[bytes, bytes] | None = None) -> Path:
    """Write a pyarrow Table (or a pandas DataFrame) as Parquet, atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame,
                                                                            preserve_index=False)
    if metadata:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), **metadata})
    return write_atomic(path, lambda tmp: pq.write_table(table, tmp))


def shard_name(table: str, key: str, start: int, stop: int) -> str:
    """A shard's path relative to the run folder (the ledger's key)."""
    return f"{table}/{key}/part-{start:06d}-{stop:06d}.parquet"


def write_shard(run_dir: Path, table: str, key: str, start: int, stop: int, frame,
                result_hash: str = "") -> ShardRecord:
    """Write one shard atomically and return its ledger record."""
    rel = shard_name(table, key, start, stop)
    path = Path(run_dir) / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {HASH_KEY: result_hash.encode()} if result_hash else None
    write_frame_atomic(path, frame, meta)
    return ShardRecord(rel, int(frame.num_rows), path.stat().st_size, file_sha256(path))


def shard_parts(run_dir: Path, table: str,
                key: str | None = None) -> list[tuple[str, int, int, Path]]:
    """(scenario key, start, stop, path) of every shard file of ``table``."""
    base = Path(run_dir) / table
    if not base.is_dir():
        return []
    out = []
    folders = [base / key] if key else sorted(p for p in base.iterdir() if p.is_dir())
    for folder in folders:
        if not folder.is_dir():
            continue
        for f in sorted(folder.iterdir()):
            m = _PART.match(f.name)
            if m:
                out.append((folder.name, int(m.group(1)), int(m.group(2)), f))
    return out


def completed_ranges(run_dir: Path, key: str) -> list[tuple[int, int]]:
    """Replication ranges [start, stop) of a scenario whose estimates shard exists."""
    return sorted((a, b) for _, a, b, _ in shard_parts(run_dir, "estimates", key))


def overlapping_shards(run_dir: str | Path) -> list[tuple[str, tuple[int, int], tuple[int, int]]]:
    """Pairs of estimates shards of one scenario whose replication ranges overlap.

    A run holding its folder's lock never writes them; they come from folders filled
    by two runs at once before the lock existed, or copied together by hand.
    """
    found = []
    by_key: dict[str, list[tuple[int, int]]] = {}
    for k, a, b, _ in shard_parts(Path(run_dir), "estimates"):
        by_key.setdefault(k, []).append((a, b))
    for k, ranges in by_key.items():
        ranges.sort()
        reach = (0, 0)
        for r in ranges:
            if r[0] < reach[1]:
                found.append((k, reach, r))
            if r[1] > reach[1]:
                reach = r
    return found


def _dedup(df, table: str, run_dir: Path):
    """Drop rows repeated by overlapping shards; refuse when the repeats disagree."""
    key = list(DEDUP_KEY) if table == "estimates" else ["scenario", "replication"]
    dup = df.duplicated(key, keep="first")
    if not dup.any():
        return df
    exact = df.duplicated(keep="first")
    if (dup & ~exact).any():
        row = df.loc[dup & ~exact].iloc[0]
        raise StorageError(
            f"{table}: overlapping shards in {str(run_dir)!r} disagree for scenario "
            f"{row['scenario']} replication {row['replication']}; rerun into a new folder"
        )
    return df.loc[~dup].reset_index(drop=True)


def read_table(run_dir: str | Path, table: str, scenarios: Iterable[str] | None = None):
    """Read a table from the finished shards, sorted by scenario and replication.

    Only shards of finished tasks are read (a ``datasets`` shard whose ``estimates``
    shard is missing belongs to an interrupted task and is ignored). Rows repeated by
    overlapping shards (see :func:`overlapping_shards`) are counted once, keyed by
    (scenario, replication, method, term); repeats that disagree raise
    :class:`StorageError`.
    """
    import pandas as pd  # lazy: the runner writes shards without pandas
    import pyarrow.parquet as pq

    if table not in TABLES:
        raise ValueError(f"table: expected one of {TABLES}, got {table!r}")
    run_dir = Path(run_dir)
    wanted = set(scenarios) if scenarios is not None else None
    done = {(k, a, b) for k, a, b, _ in shard_parts(run_dir, "estimates")}
    frames = []
    for k, a, b, f in shard_parts(run_dir, table):
        if (k, a, b) not in done or (wanted is not None and k not in wanted):
            continue
        try:
            frames.append(pq.read_table(f).to_pandas())
        except (OSError, ValueError) as exc:
            raise StorageError(
                f"{table}: shard {str(f)!r} is damaged ({_first_line(exc)}); "
                "run the config again into this folder to redo it"
            ) from None
    if not frames:
        return pd.DataFrame()
    df = pd.concat(frames, ignore_index=True)
    order = ["scenario", "replication"]
    if "method_index" in df.columns:
        order += ["method_index", "term_index"]
    df = df.sort_values(order, kind="stable").reset_index(drop=True)
    return _dedup(df, table, run_dir)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON to ``path`` atomically."""
    write_json(path, payload)


def load_manifest(run_dir: str | Path) -> dict[str, Any] | None:
    """The manifest as stored, or None when the folder holds none.

    Raises
    ------
    StorageError
        The file exists but is not a JSON object (truncated or corrupt).
    """
    path = Path(run_dir) / "manifest.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, OSError) as exc:
        raise StorageError(f"manifest: {str(path)!r} is damaged ({_first_line(exc)})") from None
    if not isinstance(data, dict):
        raise StorageError(f"manifest: {str(path)!r} is damaged (not a JSON object)")
    return data


def read_manifest(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's manifest, with its true status, or None when the folder holds no run.

    A manifest left saying ``running`` by a run that was killed (no live process holds
    the folder's lock) is reported as ``interrupted``.
    """
    from micromacro_sim.run.lock import holder_alive

    data = load_manifest(run_dir)
    if data is not None and data.get("status") == "running" and not holder_alive(run_dir):
        data = {**data, "status": "interrupted"}
    return data


def clear_run(run_dir: Path, ledger: dict[str, Any]) -> None:
    """Remove a run's recorded shards, its manifest and scenarios table (``--overwrite``);
    nothing its ledger does not record, and no folder that still holds anything."""
    for rel in ledger:
        (run_dir / rel).unlink(missing_ok=True)
    for table in TABLES:
        folders = sorted((p for p in (run_dir / table).rglob("*") if p.is_dir()),
                         key=lambda p: len(p.parts), reverse=True)
        for folder in [*folders, run_dir / table]:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty
    for name in ("manifest.json", "scenarios.parquet"):
        (run_dir / name).unlink(missing_ok=True)


def missing_ranges(done: list[tuple[int, int]], total: int) -> list[tuple[int, int]]:
    """The ranges of [0, total) that no range in ``done`` covers (overlaps allowed)."""
    gaps, reach = [], 0
    for a, b in sorted(done):
        if a > reach:
            gaps.append((reach, min(a, total)))
        reach = max(reach, b)
        if reach >= total:
            break
    if reach < total:
        gaps.append((reach, total))
    return [(a, b) for a, b in gaps if a < b]
