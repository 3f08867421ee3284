"""``micromacro_sim.storage``, kept for imports written against it: it re-exports
:mod:`micromacro_sim.run.storage` (docs/architecture.md lists these paths)."""

from micromacro_sim.run.storage import (  # noqa: F401
    TABLES,
    ShardRecord,
    StorageError,
    clear_run,
    completed_ranges,
    overlapping_shards,
    read_manifest,
    read_table,
    shard_parts,
    write_frame_atomic,
    write_json_atomic,
    write_shard,
)

__all__ = [
    "ShardRecord",
    "StorageError",
    "TABLES",
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
