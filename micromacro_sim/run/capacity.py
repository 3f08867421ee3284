"""Will the run fit this machine? Tasks, memory per task and disk, checked before writing.

:func:`plan_budget` estimates a run's number of tasks, peak memory per task and disk
use from the design alone, and refuses (one line naming the field, exit 2) what cannot
fit: more than :data:`~micromacro_sim.design.limits.MAX_TASKS` tasks, one replication
larger than the memory the workers can share, a ``chunk_size`` too large for memory,
output larger than the free disk space. ``force`` (``--force``) insists. A default chunk
size too large for memory is lowered instead (the chunk size never changes results). The
estimates are deliberately generous; their constants (in :mod:`~micromacro_sim.design.limits`)
were measured on the shipped methods.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from micromacro_sim.core.errors import ConfigError
from micromacro_sim.design import limits
from micromacro_sim.design.config import RunConfig
from micromacro_sim.design.limits import (
    BYTES_PER_FILE,
    BYTES_PER_GROUP,
    BYTES_PER_MEMBER,
    BYTES_PER_ROW,
    BYTES_PER_WORKER,
)
from micromacro_sim.design.scenario import Scenario
from micromacro_sim.run.paths import nearest_existing

__all__ = ["Budget", "available_memory", "plan_budget", "replication_bytes"]

def available_memory() -> int | None:
    """Bytes of memory available to new work (Linux ``MemAvailable``), None if unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _gib(n: float) -> str:
    return f"{n / (1 << 30):.3g} GiB"


def _largest_group(sc: Scenario) -> int:
    return int(sc.group_size.max_size)


def replication_bytes(sc: Scenario) -> int:
    """Peak memory of one replication of ``sc`` in a task, every method included."""
    return sc.n_groups * (_largest_group(sc) * BYTES_PER_MEMBER
                          + (sc.n_z + 1) * BYTES_PER_GROUP)


@dataclass(frozen=True)
class Budget:
    """A run's estimated size.

    Attributes
    ----------
    chunk_size : int
        Replications per task to use (the configured one, or a default lowered to fit).
    tasks : int
        Tasks still to run.
    task_bytes : int
        Peak memory of the largest task.
    workers : int
    disk_bytes : int
        Disk space the remaining shards need.
    notes : tuple of str
    """

    chunk_size: int
    tasks: int
    task_bytes: int
    workers: int
    disk_bytes: int
    notes: tuple[str, ...] = ()


def _workers(config: RunConfig) -> int:
    if config.backend == "sequential":
        return 1
    return (os.cpu_count() or 1) if config.n_jobs == -1 else config.n_jobs


def _chunk(config: RunConfig, per_rep: int, workers: int, force: bool) -> tuple[int, list[str]]:
    """The chunk size that fits memory (or a refusal)."""
    big = max(config.scenarios, key=replication_bytes)
    field = "group_size" if _largest_group(big) > big.n_groups else "n_groups"
    chunk = config.resolved_chunk_size()
    avail = available_memory()
    if avail is None or force or config.address:
        return chunk, []
    share = avail / max(1, workers) - BYTES_PER_WORKER
    fits = int(share // per_rep) if share > 0 else 0
    if fits < 1:
        raise ConfigError(
            f"{field}: one replication needs about {_gib(per_rep)} for each of {workers} "
            f"worker(s), more than the {_gib(avail)} of memory available; reduce n_groups, "
            "group_size or n_jobs, or pass --force to insist"
        )
    if chunk <= fits:
        return chunk, []
    if config.chunk_size:
        raise ConfigError(
            f"chunk_size: {config.chunk_size} replications per task need about "
            f"{_gib(per_rep * chunk)} for each of {workers} worker(s), more than the "
            f"{_gib(avail)} available; use chunk_size {fits} or less, or pass --force"
        )
    return fits, [f"chunk size lowered from {chunk} to {fits} replications to fit memory"]


def plan_budget(config: RunConfig, run_dir: Path, done: dict[str, int], *,
                force: bool = False) -> Budget:
    """Estimate the remaining run and refuse what cannot fit (see the module docstring).

    Parameters
    ----------
    config : RunConfig
    run_dir : Path
        The output folder (it may not exist yet).
    done : dict
        Scenario key -> replications already finished.
    force : bool
        Skip the refusals (the estimates are still returned).
    """
    workers = max(1, _workers(config))
    per_rep = max(replication_bytes(sc) for sc in config.scenarios)
    chunk, notes = _chunk(config, per_rep, workers, force)
    left = {sc.key: max(0, config.replications - done.get(sc.key, 0)) for sc in config.scenarios}
    tasks = sum(math.ceil(n / chunk) for n in left.values())
    if tasks > limits.MAX_TASKS and not force:
        raise ConfigError(
            f"replications: {config.replications} x {len(config.scenarios)} scenario(s) in "
            f"chunks of {chunk} is {tasks} tasks ({2 * tasks} files), more than "
            f"{limits.MAX_TASKS}; "
            "raise chunk_size, reduce replications or the grid, or pass --force"
        )
    rows = 0
    n_methods = len(config.methods)
    for sc in config.scenarios:
        rows += left[sc.key] * (1 + 2 * n_methods * len(sc.terms))
    disk = rows * BYTES_PER_ROW + 2 * tasks * BYTES_PER_FILE
    try:
        free = shutil.disk_usage(nearest_existing(Path(run_dir).absolute())).free
    except OSError:
        free = None
    if free is not None and disk > free and not force:
        raise ConfigError(
            f"output: the run needs about {_gib(disk)} of disk, more than the {_gib(free)} "
            f"free at {str(run_dir)!r}; free space, choose another folder, or pass --force"
        )
    return Budget(chunk_size=chunk, tasks=tasks, task_bytes=per_rep * chunk, workers=workers,
                  disk_bytes=disk, notes=tuple(notes))
