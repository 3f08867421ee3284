"""What in a run folder is the tool's own, and what a folder may hold: checked before writing.

The rules, enforced here and nowhere else:

- The tool deletes only what its own ledger says it wrote: the shards the manifest records
  (or that carry the run's result hash in their metadata), the manifest, the scenarios table,
  and, in a folder whose manifest is its own, the scratch and temporary files of its killed
  runs. Anything else in the way is refused with one line naming it.
- A folder whose ``manifest.json`` the tool did not write is never written into, even with
  ``--overwrite``.
- A folder holds one design: a run may extend it by grid cells or replications, but a run
  whose fixed design values differ from the folder's is refused, naming the field.
- A refusal to resume names the field of the result identity that changed (seed, methods,
  engine, package version, a plug-in and its version, ...).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from micromacro_sim.core.errors import ConfigError
from micromacro_sim.design import config as design_config
from micromacro_sim.design.config import RunConfig
from micromacro_sim.run.atomic import TMP_SUFFIX
from micromacro_sim.run.lock import LOCK_NAME, live_locks, read_holder
from micromacro_sim.run.storage import TABLES

__all__ = ["design_change", "foreign_entries", "identity_change", "is_own_manifest",
           "unlisted_files"]

#: Names the tool writes or removes at the top of a run folder (besides its locks, which
#: :mod:`~micromacro_sim.run.lock` manages): a folder without a manifest must not hold them.
RESERVED = ("manifest.json", "scenarios.parquet", ".reserve", ".scratch", *TABLES)


def is_own_manifest(manifest: Any) -> bool:
    """Whether ``manifest`` (as stored) was written by this tool: a JSON object with a
    result hash, a scenario list and a shard ledger of the right types."""
    return (isinstance(manifest, dict) and isinstance(manifest.get("result_hash"), str)
            and isinstance(manifest.get("scenarios", []), list)
            and isinstance(manifest.get("shards", {}), dict)
            and isinstance(manifest.get("config", {}), dict))


def _files_under(path: Path) -> list[Path]:
    if path.is_dir() and not path.is_symlink():
        return sorted(p for p in path.rglob("*") if not p.is_dir())
    return [path]


def foreign_entries(run_dir: Path) -> list[Path]:
    """In a folder that holds no manifest: what is in the way of a new run (a reserved
    name, or a temporary file named like the tool's own), first the files inside."""
    if not run_dir.is_dir():
        return []
    found: list[Path] = []
    for name in RESERVED:
        p = run_dir / name
        if p.is_symlink() or p.exists():
            found.extend(_files_under(p) or [p])
    found.extend(sorted(run_dir.glob(f".*{TMP_SUFFIX}")))
    return found


def unlisted_files(run_dir: Path, ledger: dict[str, Any]) -> list[Path]:
    """Files under the shard folders that the ledger does not record (``--overwrite``
    deletes only recorded ones)."""
    out = []
    for table in TABLES:
        for p in _files_under(run_dir / table):
            if p.exists() and p.relative_to(run_dir).as_posix() not in ledger:
                out.append(p)
    return out


def _show(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def identity_change(old: Any, new: dict[str, Any]) -> str:
    """The first field of the result identity that differs, as ``field: old -> new``."""
    if not isinstance(old, dict):
        return "result identity: not recorded by the earlier run"
    names = {"package": "package version", "admissibility": "admissibility policy"}
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if key == "plugins" and isinstance(a, dict | None) and isinstance(b, dict | None):
            a, b = a or {}, b or {}
            for ref in sorted(set(a) | set(b)):
                if a.get(ref) != b.get(ref):
                    return _plugin_change(ref, a.get(ref), b.get(ref))
        return f"{names.get(key, key)}: {_show(a)} -> {_show(b)}"
    return "result identity: same fields, another hash"


def _plugin_change(ref: str, a: Any, b: Any) -> str:
    if a is None or b is None:
        return f"plug-in {ref}: {'added' if a is None else 'removed'}"
    for field in ("version", "distribution", "source_sha256", "object"):
        if isinstance(a, dict) and isinstance(b, dict) and a.get(field) != b.get(field):
            return f"plug-in {ref}: {field} {_show(a.get(field))} -> {_show(b.get(field))}"
    return f"plug-in {ref}: {_show(a)} -> {_show(b)}"


def design_change(old_raw: Any, config: RunConfig) -> str | None:
    """The first design field fixed in both the folder's config and ``config`` whose value
    differs, as ``fixed.field: old -> new``; None when the designs agree (or the old one
    cannot be read: an older version's config is not second-guessed)."""
    if not isinstance(old_raw, dict):
        return None
    try:
        old = design_config.parse_config(old_raw, source="manifest", force=True)
    except (ConfigError, TypeError, ValueError):
        return None
    if not old.scenarios or not config.scenarios:
        return None
    a, b = old.scenarios[0].to_params(), config.scenarios[0].to_params()
    factors = set(old.factors) | set(config.factors)
    for name in sorted(set(a) | set(b)):
        if name in factors or a.get(name) == b.get(name):
            continue
        return f"fixed.{name}: {_show(a.get(name))} -> {_show(b.get(name))}"
    return None


def _left_by_a_run(run_dir: Path) -> bool:
    """Whether the folder holds a lock file written by a run of this tool."""
    names = [LOCK_NAME] + [p.name for p in run_dir.glob(".lock.part-*")] if run_dir.is_dir() \
        else []
    for name in names:
        holder = read_holder(run_dir, name)
        if isinstance(holder, dict) and {"pid", "host"} <= set(holder):
            return True
    return False


def refuse_foreign(run_dir: Path) -> None:
    """Refuse a folder without a manifest that holds something in the way of a run.

    A folder a live run or part of this tool holds (its lock names a running process) is
    being written by it (the parts of an array start side by side), so nothing there is
    foreign yet; so is a folder whose lock a killed run of this tool left before it wrote
    its first manifest (the lock is the first thing a run writes: its holder record names
    a process on a host)."""
    if live_locks(run_dir) or _left_by_a_run(run_dir):
        return
    found = foreign_entries(run_dir)
    if found:
        raise ConfigError(f"output: {str(found[0])!r} is in the way and was not written by a run "
                          "this folder records (it holds no manifest.json); move it or choose "
                          "another output folder")
