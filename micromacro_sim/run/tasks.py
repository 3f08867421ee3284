"""Tasks: replication ranges of one scenario, planned from the design and the folder.

:func:`plan_tasks` enumerates the ranges a folder still lacks (for a whole run, a part
of it, or an adaptive round's counts); :func:`run_task` simulates one
(:func:`~micromacro_sim.run.chunk.simulate_chunk`) and writes its two shards.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

from micromacro_sim.design.config import MethodSpec, RunConfig
from micromacro_sim.design.policy import Policy
from micromacro_sim.design.scenario import Scenario
from micromacro_sim.run.chunk import simulate_chunk
from micromacro_sim.run.parts import Part, chunk_owners, part_grain
from micromacro_sim.run.storage import ShardRecord, completed_ranges, missing_ranges, write_shard

__all__ = ["Task", "TaskResult", "finished_counts", "plan_tasks", "run_task",
           "single_threaded_blas"]

def single_threaded_blas():
    """Limit BLAS to one thread inside the block: the matrices here are small, and
    threads only contend (a stack of 40 x 40 eigen-decompositions ran 18 times slower
    with two BLAS threads on a machine whose other core was busy); workers do not
    oversubscribe the machine."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: without it BLAS keeps its own setting
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


@dataclass(frozen=True)
class Task:
    """Replications [start, stop) of one scenario, and everything needed to run them."""

    run_dir: str
    scenario: Scenario
    start: int
    stop: int
    methods: tuple[MethodSpec, ...]
    seed: int
    policy: Policy
    engine: str = "auto"
    result_hash: str = ""
    generator: str | None = None
    memory_budget: int | None = None

    @property
    def size(self) -> int:
        """Number of replications."""
        return self.stop - self.start


@dataclass(frozen=True)
class TaskResult:
    """What :func:`run_task` wrote: the task's range and its shards' ledger records."""

    key: str
    start: int
    stop: int
    shards: tuple[ShardRecord, ...]


def run_task(task: Task) -> TaskResult:
    """Simulate one task and write both shards.

    The datasets shard is written first and the estimates shard last, so the
    estimates shard marks a finished task.
    """
    sc = task.scenario
    with single_threaded_blas():
        est, ds = simulate_chunk(sc, range(task.start, task.stop), task.methods, task.seed,
                                 task.policy, task.engine, task.generator,
                                 task.memory_budget)
    where = Path(task.run_dir)
    records = tuple(write_shard(where, table, sc.key, task.start, task.stop, frame,
                                task.result_hash)
                    for table, frame in (("datasets", ds), ("estimates", est)))
    return TaskResult(sc.key, task.start, task.stop, records)


def finished_counts(config: RunConfig, run_dir: Path) -> dict[str, int]:
    """Scenario key -> replications of ``config`` already finished in ``run_dir``."""
    return {sc.key: config.replications - sum(b - a for a, b in missing_ranges(
        completed_ranges(run_dir, sc.key), config.replications)) for sc in config.scenarios}


def plan_tasks(config: RunConfig, run_dir: Path, chunk_size: int | None = None,
               part: Part | None = None, counts: dict[str, int] | None = None) -> list[Task]:
    """A task for every replication range not yet finished in ``run_dir``.

    With ``part``, only the ranges of that part's chunks (see :mod:`.parts`): its tasks
    never cross a multiple of :func:`~micromacro_sim.run.parts.part_grain`. With ``counts``
    (scenario key -> replications), only those scenarios, each up to its own count.
    """
    size = chunk_size or config.resolved_chunk_size()
    grain = config.replications if part is None else part_grain(config, part.count)
    owners = None if part is None else chunk_owners(config, grain, part.count)
    tasks = []
    for sc in config.scenarios:
        if counts is not None and sc.key not in counts:
            continue
        total = config.replications if counts is None else counts[sc.key]
        for a, b in missing_ranges(completed_ranges(run_dir, sc.key), total):
            s = a
            while s < b:
                # a part's tasks end at the next multiple of its grain
                stop = min(b, s + size, s - s % grain + grain)
                if owners is None or owners[(sc.key, s - s % grain)] == part.index:
                    tasks.append(Task(str(run_dir), sc, s, stop, config.methods,
                                      config.seed, config.policy, config.engine,
                                      config.result_hash, config.generator,
                                      config.memory_budget))
                s = stop
    return tasks
