"""Run folder layout, atomic Parquet shards and the manifest.

::

    RUN_DIR/
      manifest.json                  config, hashes, versions, times, counts
      scenarios.parquet              one row per scenario (key, parameters, derived values)
      datasets/<key>/part-AAAAAA-BBBBBB.parquet    replications [A, B) of one scenario
      estimates/<key>/part-AAAAAA-BBBBBB.parquet

A shard is written to a temporary name and renamed, so a reader never sees a partial
file. A task is finished when its ``estimates`` shard exists (it is renamed last).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = [
    "TABLES",
    "clear_run",
    "completed_ranges",
    "read_manifest",
    "read_table",
    "write_frame_atomic",
    "write_json_atomic",
    "write_shard",
]

TABLES = ("datasets", "estimates")
_PART = re.compile(r"^part-(\d{6,})-(\d{6,})\.parquet$")


def _tmp_name(path: Path) -> Path:
    """A hidden temporary name beside ``path``, unique to this process."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_frame_atomic(path: Path, frame) -> Path:
    """Write a pyarrow Table (or a pandas DataFrame) as Parquet through a temporary file
    and a rename."""
    tmp = _tmp_name(path)
    table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame,
                                                                            preserve_index=False)
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


def write_shard(run_dir: Path, table: str, key: str, start: int, stop: int, frame) -> Path:
    """Write one shard atomically (temporary file, then rename)."""
    folder = Path(run_dir) / table / key
    folder.mkdir(parents=True, exist_ok=True)
    return write_frame_atomic(folder / f"part-{start:06d}-{stop:06d}.parquet", frame)


def _parts(run_dir: Path, table: str, key: str | None = None) -> list[tuple[str, int, int, Path]]:
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
    return sorted((a, b) for _, a, b, _ in _parts(run_dir, "estimates", key))


def read_table(run_dir: str | Path, table: str, scenarios: Iterable[str] | None = None):
    """Read a table from the finished shards, sorted by scenario and replication.

    Only shards of finished tasks are read (a ``datasets`` shard whose ``estimates``
    shard is missing belongs to an interrupted task and is ignored).
    """
    import pandas as pd  # lazy: the runner writes shards without pandas

    if table not in TABLES:
        raise ValueError(f"table: expected one of {TABLES}, got {table!r}")
    run_dir = Path(run_dir)
    wanted = set(scenarios) if scenarios is not None else None
    done = {(k, a, b) for k, a, b, _ in _parts(run_dir, "estimates")}
    frames = [
        pq.read_table(f).to_pandas()
        for k, a, b, f in _parts(run_dir, table)
        if (k, a, b) in done and (wanted is None or k in wanted)
    ]
    if not frames:
        return pd.DataFrame()
    df = pd.concat(frames, ignore_index=True)
    order = ["scenario", "replication"]
    if "method_index" in df.columns:
        order += ["method_index", "term_index"]
    return df.sort_values(order, kind="stable").reset_index(drop=True)


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON to ``path`` through a temporary file."""
    tmp = _tmp_name(path)
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)


def read_manifest(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's manifest, or None when the folder holds no run."""
    path = Path(run_dir) / "manifest.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def clear_run(run_dir: Path) -> None:
    """Remove a run's tables and manifest (used by ``--overwrite``)."""
    for table in TABLES:
        shutil.rmtree(run_dir / table, ignore_errors=True)
    for name in ("manifest.json", "scenarios.parquet"):
        (run_dir / name).unlink(missing_ok=True)
