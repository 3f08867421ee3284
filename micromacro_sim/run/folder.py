"""What a run folder holds: finished and missing replications per scenario, live parts.

The text of ``micromacro status RUN_DIR`` (:func:`format_progress`), read from the
manifest and the shards on disk; nothing is written. A manifest left saying ``running`` by
a process that is gone (killed, or ended by code it ran, such as a plug-in calling
``os._exit``) reads as ``interrupted``, and the text says which process held the folder.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from micromacro_sim.core.errors import ConfigError
from micromacro_sim.run.lock import live_locks, read_holder
from micromacro_sim.run.manifest import SUMMARY_RECORD, ledger_digest
from micromacro_sim.run.reading import check_manifest
from micromacro_sim.run.storage import completed_ranges, missing_ranges, read_manifest

__all__ = ["ScenarioProgress", "dead_holders", "folder_progress", "format_progress",
           "summary_state"]

#: The lock files of a whole run and of parts (see :mod:`.lock`).
_LOCK_FILE = re.compile(r"^\.lock(\.part-\d+-of-\d+)?$")


@dataclass(frozen=True)
class ScenarioProgress:
    """What a run folder holds of one scenario."""

    key: str
    label: str
    done: int
    total: int
    missing: tuple[tuple[int, int], ...]


def folder_progress(run_dir: str | Path) -> tuple[dict[str, Any], list[ScenarioProgress]]:
    """The manifest (status corrected as by :func:`~micromacro_sim.run.storage.read_manifest`)
    and, per scenario, the finished and missing replications.

    Raises
    ------
    ConfigError
        The folder holds no run.
    StorageError
        The manifest is damaged or was not written by this tool.
    """
    import pyarrow.parquet as pq

    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    if manifest is None:
        raise ConfigError(f"RUN_DIR: {str(run_dir)!r} holds no run (manifest.json missing)")
    check_manifest(manifest, run_dir)
    labels: dict[str, str] = {}
    with contextlib.suppress(OSError, ValueError, KeyError):
        tab = pq.read_table(run_dir / "scenarios.parquet", columns=["scenario", "label"])
        labels = dict(zip(tab.column("scenario").to_pylist(), tab.column("label").to_pylist(),
                          strict=True))
    # adaptive replications: each cell's current count
    counts = {k: int(c["replications"]) for k, c in
              (manifest.get("adaptive") or {}).get("cells", {}).items()}
    rows = []
    for key in manifest.get("scenarios", []):
        total = counts.get(key, int(manifest.get("replications", 0)))
        missing = tuple(missing_ranges(completed_ranges(run_dir, key), total))
        rows.append(ScenarioProgress(key, labels.get(key, ""), total - sum(b - a for a, b in
                                                                        missing), total, missing))
    return manifest, rows


def dead_holders(run_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Lock file name -> holder, of every lock of ``run_dir`` whose process is gone (it
    ended without releasing the lock: killed, or ended by code it ran)."""
    try:
        names = sorted(p.name for p in Path(run_dir).iterdir() if _LOCK_FILE.match(p.name))
    except OSError:
        return {}
    live = live_locks(run_dir)
    return {n: h for n in names if n not in live and (h := read_holder(run_dir, n)) is not None}


def _holder_text(name: str, holder: dict[str, Any]) -> str:
    who = (f"pid {holder.get('pid')} on {holder.get('host')}, since {holder.get('started')}"
           if holder else "its lock file is unreadable")
    return f"{name.removeprefix('.lock').lstrip('.') or 'whole run'} ({who})"


def format_progress(run_dir: str | Path) -> str:
    """The text of ``micromacro status RUN_DIR``."""
    manifest, rows = folder_progress(run_dir)
    done, total = sum(r.done for r in rows), sum(r.total for r in rows)
    lines = [f"{manifest.get('name', '?')}: {manifest.get('status', '?')}; {done} of {total} "
             f"replications finished in {len(rows)} scenario(s), "
             f"{sum(r.done == r.total for r in rows)} scenario(s) complete"]
    if manifest.get("status") == "interrupted":
        for name, holder in dead_holders(run_dir).items():
            lines.append(f"interrupted: {_holder_text(name, holder)} is no longer running and "
                         "recorded no end (killed, or its process was ended by code it ran); "
                         "run again to resume")
    cells = (manifest.get("adaptive") or {}).get("cells", {})
    if cells:
        lines.append(f"adaptive replications: {sum(c['finished'] for c in cells.values())} of "
                     f"{len(cells)} cell(s) finished, {sum(c['met'] for c in cells.values())} "
                     "met every target")
    for name, holder in live_locks(run_dir).items():
        lines.append(f"running: {_holder_text(name, holder)}")
    summary = summary_state(Path(run_dir), manifest)
    if summary:
        lines.append(summary)
    width = max([len(r.label) for r in rows] + [8])
    lines.append(f"{'scenario':16s}  {'label':{width}s}  {'done':>7s}  {'of':>7s}  missing")
    for r in rows:
        gaps = ", ".join(f"{a}-{b - 1}" if b - a > 1 else str(a) for a, b in r.missing[:4])
        if len(r.missing) > 4:
            gaps += f", ... ({len(r.missing)} ranges)"
        lines.append(f"{r.key:16s}  {r.label:{width}s}  {r.done:7d}  {r.total:7d}  "
                     f"{gaps or '-'}")
    return "\n".join(lines)


def summary_state(run_dir: Path, manifest: dict[str, Any]) -> str:
    """One line on the folder's summary: current, or stale since the folder changed ("" when
    the folder holds no summary record)."""
    import json

    try:
        record = json.loads((run_dir / SUMMARY_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    if not isinstance(record, dict):
        return ""
    counts = record.get("replications") or {}
    n = sum(v for v in counts.values() if isinstance(v, int)) if isinstance(counts, dict) else 0
    when = record.get("created", "?")
    if record.get("ledger") == ledger_digest(manifest) and not record.get("stale"):
        return f"summary: current ({n} replications summarized, {when})"
    return (f"summary: stale ({n} replications summarized, {when}; the folder changed since): "
            "run micromacro summarize to refresh it")
