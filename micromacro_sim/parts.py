"""Parts of a run for cluster arrays: ``micromacro run CONFIG --part I/N``.

The tasks of a config are cut at fixed replication boundaries (multiples of the chunk
size) in every scenario; sorted by (scenario key, first replication), chunk ``c`` belongs
to part ``c mod N + 1``. N independent processes, one per part (a SLURM or PBS array),
fill one run folder on a shared file system; any assignment gives the same rows, since
a replication's numbers depend on its own stream only.

Each part holds its own lock (:func:`~micromacro_sim.lock.part_lock_name`), checks and
cleans only its own shards, and merges its ledger records into the shared manifest
under the folder's manifest mutex (:class:`PartLedger`): a read-modify-write that keeps
every other part's records.
"""

from __future__ import annotations

import contextlib
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ConfigError
from .lock import RunLock, live_locks, manifest_mutex, part_lock_name
from .storage import StorageError, load_manifest, write_json_atomic

if TYPE_CHECKING:
    from .config import RunConfig
    from .runner import TaskResult

__all__ = ["Part", "PartLedger", "ScenarioProgress", "chunk_owners", "folder_progress",
           "format_progress", "owned_by", "part_grain", "start_part"]

_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Part:
    """Part ``index`` (1-based) of ``count``."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Part:
        """``"I/N"`` with 1 <= I <= N.

        Raises
        ------
        ConfigError
            Naming ``part`` and the value.
        """
        m = _SPEC.match(str(text))
        if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
            raise ConfigError(f"part: expected I/N with 1 <= I <= N (for example 3/8), "
                              f"got {text!r}")
        return cls(int(m.group(1)), int(m.group(2)))

    @property
    def lock_name(self) -> str:
        """This part's lock file name."""
        return part_lock_name(self.index, self.count)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def part_grain(config: RunConfig, count: int) -> int:
    """Replications per chunk of the split into ``count`` parts: the config's
    ``chunk_size``, else about four chunks per part (10 to 1000 replications).

    It depends on the config and ``count`` only (not on a machine or ``--n-jobs``), so
    every part of an array cuts the same chunks.
    """
    if config.chunk_size:
        return config.chunk_size
    total = config.replications * len(config.scenarios)
    return int(min(config.replications, 1000, max(10, -(-total // (4 * count)))))


def chunk_owners(config: RunConfig, chunk: int, count: int) -> dict[tuple[str, int], int]:
    """(scenario key, chunk start) -> owning part (1-based), for ``count`` parts."""
    keys = sorted(sc.key for sc in config.scenarios)
    starts = [(k, s) for k in keys for s in range(0, config.replications, chunk)]
    return {ks: i % count + 1 for i, ks in enumerate(starts)}


def owned_by(config: RunConfig, chunk: int, part: Part) -> Callable[[str, int, int], bool]:
    """``owned(key, start, stop)``: whether the shard starting at ``start`` is this part's."""
    owners = chunk_owners(config, chunk, part.count)

    def owned(key: str, start: int, stop: int) -> bool:
        return owners.get((key, start - start % chunk)) == part.index

    return owned


def _merge_scenarios(disk: list[str], mine: list[str]) -> list[str]:
    return disk + [k for k in mine if k not in disk]


def start_part(config: RunConfig, run_dir: Path, lock: RunLock, part: Part,
               notes: list[str]) -> dict[str, Any]:
    """With the part's lock held: check the folder's manifest against ``config``, verify
    this part's shards, merge them into the manifest and write it; returns it."""
    from .manifest import _manifest, write_scenarios_table
    from .verify import verify_shards

    with manifest_mutex(run_dir):
        try:
            old = load_manifest(run_dir)
        except StorageError as exc:
            old = None
            notes.append(f"{exc}: rebuilt; only shards carrying this config's hash are kept")
        if old is not None and old.get("result_hash") != config.result_hash:
            raise ConfigError(
                f"output: {str(run_dir)!r} holds a run of a different config (result hash "
                f"{old.get('result_hash')} != {config.result_hash}); parts cannot overwrite: "
                "choose another output folder")
        if lock.taken_over is not None:
            notes.append(f"took over the lock of part {part} that is no longer running "
                         f"(pid {lock.taken_over.get('pid')})")
        manifest = _manifest(config, old)
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


@dataclass(frozen=True)
class ScenarioProgress:
    """What a run folder holds of one scenario."""

    key: str
    label: str
    done: int
    total: int
    missing: tuple[tuple[int, int], ...]


def folder_progress(run_dir: str | Path) -> tuple[dict[str, Any], list[ScenarioProgress]]:
    """The manifest (status corrected as by :func:`~micromacro_sim.storage.read_manifest`)
    and, per scenario, the finished and missing replications.

    Raises
    ------
    ConfigError
        The folder holds no run.
    """
    import pyarrow.parquet as pq

    from .runner import _missing
    from .storage import completed_ranges, read_manifest

    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    if manifest is None:
        raise ConfigError(f"RUN_DIR: {str(run_dir)!r} holds no run (manifest.json missing)")
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
        missing = tuple(_missing(completed_ranges(run_dir, key), total))
        rows.append(ScenarioProgress(key, labels.get(key, ""), total - sum(b - a for a, b in
                                                                        missing), total, missing))
    return manifest, rows


def format_progress(run_dir: str | Path) -> str:
    """The text of ``micromacro status RUN_DIR``."""
    manifest, rows = folder_progress(run_dir)
    done, total = sum(r.done for r in rows), sum(r.total for r in rows)
    lines = [f"{manifest.get('name', '?')}: {manifest.get('status', '?')}; {done} of {total} "
             f"replications finished in {len(rows)} scenario(s), "
             f"{sum(r.done == r.total for r in rows)} scenario(s) complete"]
    cells = (manifest.get("adaptive") or {}).get("cells", {})
    if cells:
        lines.append(f"adaptive replications: {sum(c['finished'] for c in cells.values())} of "
                     f"{len(cells)} cell(s) finished, {sum(c['met'] for c in cells.values())} "
                     "met every target")
    for name, holder in live_locks(run_dir).items():
        lines.append(f"running: {name.removeprefix('.lock').lstrip('.') or 'whole run'} "
                     f"(pid {holder.get('pid')} on {holder.get('host')}, "
                     f"since {holder.get('started')})")
    width = max([len(r.label) for r in rows] + [8])
    lines.append(f"{'scenario':16s}  {'label':{width}s}  {'done':>7s}  {'of':>7s}  missing")
    for r in rows:
        gaps = ", ".join(f"{a}-{b - 1}" if b - a > 1 else str(a) for a, b in r.missing[:4])
        if len(r.missing) > 4:
            gaps += f", ... ({len(r.missing)} ranges)"
        lines.append(f"{r.key:16s}  {r.label:{width}s}  {r.done:7d}  {r.total:7d}  "
                     f"{gaps or '-'}")
    return "\n".join(lines)
