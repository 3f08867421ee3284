"""Replications per batch: a task's batches sized to its memory budget.

The budget itself and the per-method working sets are declared in
:mod:`micromacro_sim.design.budget`; here they meet the method registry (which methods
have a batch path for a design). The budget is an execution option: it changes neither
the results nor the run's result identity.
"""

from __future__ import annotations

from micromacro_sim.design.budget import (
    BYTES_AT_REST,
    DATA_PER_GROUP,
    DATA_PER_MEMBER,
    DATA_PER_REPLICATION,
    DEFAULT_MEMORY_BUDGET,
    method_bytes,
)
from micromacro_sim.design.config import MethodSpec
from micromacro_sim.design.scenario import Scenario
from micromacro_sim.estimators import method_class

__all__ = ["batch_ranges", "batch_size", "replication_bytes"]

def _largest_group(sc: Scenario) -> int:
    return int(sc.group_size.max_size)


def replication_bytes(sc: Scenario, methods: tuple[MethodSpec, ...], engine: str) -> int:
    """Estimated working set of one replication of ``sc`` in a batch, every method included.

    A method fitted one dataset at a time (engine ``reference``, or ``auto`` where it has
    no batch path for the design) holds one dataset's arrays at a time: only the data
    count per replication.
    """
    G, n = sc.n_groups, _largest_group(sc)
    data = DATA_PER_MEMBER * G * n + DATA_PER_GROUP * G + DATA_PER_REPLICATION
    work = 0
    if engine != "reference":
        for m in methods:
            if method_class(m.method).has_batch(sc.balanced):
                work = max(work, method_bytes(m.method, G, n, sc.n_z))
    return data + work


def batch_size(sc: Scenario, methods: tuple[MethodSpec, ...], engine: str,
               budget: int | None = None) -> int:
    """Replications per batch such that a task's resident memory (the process at rest plus
    the batch's estimated working set) fits ``budget`` (at least 1)."""
    budget = DEFAULT_MEMORY_BUDGET if budget is None else budget
    usable = max(budget - BYTES_AT_REST, budget // 4)
    return max(1, int(usable // replication_bytes(sc, methods, engine)))


def batch_ranges(replications: range, size: int) -> list[range]:
    """``replications`` cut into consecutive ranges of at most ``size``."""
    step = max(1, size)
    return [range(a, min(a + step, replications.stop))
            for a in range(replications.start, replications.stop, step)]
