"""Ledgers: each finished task's shards recorded in the folder's manifest.

:class:`Ledger` records a whole run's shards, rewriting the manifest at most once a
second and keeping a reserve file so that a full disk still gets the last manifest.
A part of a cluster array (:mod:`~micromacro_sim.run.parts`) opens its share of the
folder with :func:`start_part` and records through :class:`PartLedger`, which merges its
records into the shared manifest under the folder's manifest mutex (a read-modify-write
that keeps every other part's records).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from micromacro_sim.core.errors import ConfigError
from micromacro_sim.design.config import RunConfig
from micromacro_sim.run.lock import RunLock, live_locks, manifest_mutex
from micromacro_sim.run.manifest import new_manifest, write_scenarios_table
from micromacro_sim.run.ownership import identity_change
from micromacro_sim.run.parts import Part, owned_by, part_grain
from micromacro_sim.run.storage import StorageError, load_manifest, write_json_atomic
from micromacro_sim.run.tasks import TaskResult
from micromacro_sim.run.verify import verify_shards

__all__ = ["Ledger", "PartLedger", "start_part"]

def _merge_scenarios(disk: list[str], mine: list[str]) -> list[str]:
    return disk + [k for k in mine if k not in disk]


def _split(config: RunConfig, part: Part) -> dict[str, Any]:
    """What decides which replications each part runs (:func:`~.parts.chunk_owners`)."""
    return {"count": part.count, "replications": config.replications,
            "scenarios": sorted(sc.key for sc in config.scenarios)}


def _check_split(run_dir: Path, old: dict[str, Any] | None, split: dict[str, Any]) -> None:
    """Refuse a part of another split while the folder's array is unfinished: parts that
    cut the replications differently would leave some to no part."""
    prev = (old or {}).get("partition")
    if not isinstance(prev, dict) or prev == split or (old or {}).get("status") == "complete":
        return
    names = {"count": "the number of parts", "replications": "replications",
             "scenarios": "the grid's cells"}
    field = next((k for k in names if prev.get(k) != split[k]), "scenarios")
    shown = {k: (len(v) if k == "scenarios" else v) for k, v in ((k, prev.get(k)) for k in names)}
    mine = {k: (len(v) if k == "scenarios" else v) for k, v in split.items()}
    raise ConfigError(
        f"part: {str(run_dir)!r} is being filled by the parts of another split "
        f"({names[field]}: {shown[field]} -> {mine[field]}); parts of one array share N, the "
        "replications and the grid, or some replications would run in no part: finish that "
        "array (or run the config without --part), or choose another output folder")


def start_part(config: RunConfig, run_dir: Path, lock: RunLock, part: Part,
               notes: list[str]) -> dict[str, Any]:
    """With the part's lock held: check the folder's manifest against ``config``, verify
    this part's shards, merge them into the manifest and write it; returns it."""
    with manifest_mutex(run_dir):
        try:
            old = load_manifest(run_dir)
        except StorageError as exc:
            old = None
            notes.append(f"{exc}: rebuilt; only shards carrying this config's hash are kept")
        if old is not None and old.get("result_hash") != config.result_hash:
            change = identity_change(old.get("result_identity"), config.result_identity())
            raise ConfigError(
                f"output: {str(run_dir)!r} holds a run of a different config ({change}); "
                "parts cannot overwrite: choose another output folder")
        split = _split(config, part)
        _check_split(run_dir, old, split)
        if lock.taken_over is not None:
            notes.append(f"took over the lock of part {part} that is no longer running "
                         f"(pid {lock.taken_over.get('pid')})")
        manifest = new_manifest(config, old)
        if old is not None:
            manifest["scenarios"] = _merge_scenarios(list(old.get("scenarios", [])),
                                                     manifest["scenarios"])
        ledger = dict(old.get("shards", {})) if old else {}
        check = verify_shards(run_dir, ledger, config.result_hash,
                              legacy_ok=old is not None and "shards" not in old,
                              owned=owned_by(config, part_grain(config, part.count), part))
        notes.extend(check.notes)
        for rel in check.damaged:
            ledger.pop(rel, None)
            ledger.pop(rel.replace("estimates/", "datasets/", 1), None)
        ledger.update(check.ledger)
        manifest["shards"] = ledger
        manifest["partition"] = split
        write_scenarios_table(run_dir, config, manifest["scenarios"])
        write_json_atomic(run_dir / "manifest.json", manifest)
    return manifest


class PartLedger:
    """A part's ledger: its records merged into the shared manifest under the mutex.

    Parameters
    ----------
    run_dir : Path
    manifest : dict
        The manifest :func:`start_part` wrote.
    run : dict
        This part's entry of the manifest's ``runs`` (matched by its ``id``).
    complete : callable
        ``complete()``: whether every task of the config is finished (asked at close).
    """

    def __init__(self, run_dir: Path, manifest: dict[str, Any], run: dict[str, Any],
                 complete: Callable[[], bool]) -> None:
        self.run_dir, self.manifest, self.run = run_dir, manifest, run
        self.run["id"] = f"{socket.gethostname()}:{run.get('pid')}:{time.time_ns()}"
        self.complete = complete
        self.records: dict[str, dict[str, Any]] = {}
        self._last = 0.0

    def add(self, res: TaskResult) -> None:
        """Record a finished task's shards."""
        for rec in res.shards:
            self.records[rec.path] = rec.to_json()
        self.flush()

    def _merge(self, final: bool) -> None:
        path = self.run_dir / "manifest.json"
        with manifest_mutex(self.run_dir):
            try:
                disk = load_manifest(self.run_dir) or self.manifest
            except StorageError:
                disk = self.manifest
            disk.setdefault("shards", {}).update(self.records)
            runs = [r for r in disk.get("runs", []) if r.get("id") != self.run["id"]]
            disk["runs"] = [*runs, dict(self.run)]
            disk["scenarios"] = _merge_scenarios(list(disk.get("scenarios", [])),
                                                 self.manifest["scenarios"])
            disk["replications"] = max(int(disk.get("replications", 0)),
                                       int(self.manifest["replications"]))
            if final:
                disk["status"] = self._status()
                disk["finished"] = self.run.get("finished")
            else:
                disk["status"] = "running"
            write_json_atomic(path, disk)
            self.manifest = disk

    def _status(self) -> str:
        if self.complete():
            return "complete"
        others = [n for n in live_locks(self.run_dir) if n != self.run.get("lock")]
        return "running" if others else self.run.get("ended", "partial")

    def flush(self, force: bool = False) -> None:
        """Merge into the manifest (at most once a second unless ``force``)."""
        now = time.monotonic()
        if force or now - self._last >= 1.0:
            self._merge(final=False)
            self._last = now

    def close(self) -> None:
        """The final merge, with the folder's status (best effort on a full disk)."""
        with contextlib.suppress(OSError):
            self._merge(final=True)


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
