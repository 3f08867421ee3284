"""Memory per batch: how many replications of a cell a task fits at once.

A task (one scenario, one replication range) draws its datasets and fits every method
on them in batches small enough for the task's resident memory (the process at rest
plus one batch's estimated working set) to fit a memory budget (default
:data:`DEFAULT_MEMORY_BUDGET`); the results of the batches are concatenated. Every
batch path gives each replication the same numbers whatever its batch companions, so
the budget is an execution option: it changes neither the results nor the run's
result identity.

The working set of one replication is estimated from the design (groups G, largest
group n, covariates q), the methods and the engine: the datasets and the output rows,
plus the largest working set of one method (methods run one after another). The
constants were measured with ``tracemalloc`` on the shipped methods (G from 30 to 500,
n from 10 to 60, peaks per replication of a 40-replication batch) and rounded up; an
unknown (user-registered) method gets a generous default.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from micromacro_sim.core.errors import ConfigError

if TYPE_CHECKING:
    pass

__all__ = ["DEFAULT_MEMORY_BUDGET", "MIN_MEMORY_BUDGET", "method_bytes", "parse_memory_budget"]

#: Default working set of a task's batch (bytes).
DEFAULT_MEMORY_BUDGET = 512 << 20
#: Smallest budget accepted (a budget is a bound on batches, not on single replications).
MIN_MEMORY_BUDGET = 64 << 20
#: Resident memory of a worker at rest (interpreter, numpy, scipy, pandas, pyarrow and
#: the methods imported; measured: about 125 MiB): the part of the budget batches
#: cannot use. At least a quarter of the budget is always left to the batches.
BYTES_AT_REST = 128 << 20

#: Datasets, the batch arrays and the output rows: bytes per member, per group and per
#: replication (measured: 26-66 per member, 30-130 KB per replication).
DATA_PER_MEMBER = 80
DATA_PER_GROUP = 400
DATA_PER_REPLICATION = 160_000

#: Per-replication working set of a batch path: (per member, per group, per n^2) bytes
#: (measured as the peak of traced allocations of one batch, divided by its size).
#: ``sem`` also holds derivative arrays of size K p^2 (see :func:`method_bytes`).
_PER_METHOD = {
    "true": (8, 400, 0),
    "unadjusted": (8, 400, 0),
    "croon": (12, 400, 0),
    "zcond_score": (20, 400, 0),
    "blup": (24, 800, 0),
    "blup_hetvar": (48, 800, 40),
    "factor_score": (24, 800, 900),  # the profiled CFA (0.3.0): peaks of 640-840 per n^2
    "sam": (24, 800, 300),
    "sem_2level": (8, 400, 0),
    "sem": (24, 400, 0),
}
#: An unknown method's batch path, as above (about twice the largest shipped one).
_DEFAULT_METHOD = (64, 2_000, 600)
#: Bytes per element of the ``sem`` derivative arrays (two float arrays of K p^2, and
#: smaller ones; measured: 19-21).
_SEM_DERIVATIVE_BYTES = 22

_UNITS = {"": 1 << 20, "k": 1 << 10, "kb": 1 << 10, "kib": 1 << 10, "m": 1 << 20,
          "mb": 1 << 20, "mib": 1 << 20, "g": 1 << 30, "gb": 1 << 30, "gib": 1 << 30}


def parse_memory_budget(value: object) -> int:
    """Bytes from a config value: a number of MiB, or a string such as ``"2 GiB"``.

    Raises
    ------
    ConfigError
        Not a positive size, or smaller than :data:`MIN_MEMORY_BUDGET`.
    """
    size: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        size = float(value) * (1 << 20)
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", value)
        if m and m.group(2).lower() in _UNITS:
            size = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if size is None or not size == size or size < MIN_MEMORY_BUDGET:
        raise ConfigError(f"memory_budget: expected a size of at least "
                          f"{MIN_MEMORY_BUDGET >> 20} MiB (a number of MiB or e.g. '2 GiB'), "
                          f"got {value!r}")
    return int(size)


def method_bytes(method: str, n_groups: int, n: int, n_z: int = 1) -> int:
    """Estimated working set of one replication in ``method``'s batch path.

    Parameters
    ----------
    method : str
        Registered method id.
    n_groups, n : int
        Groups and largest group size.
    n_z : int
        Group-level covariates.
    """
    per_member, per_group, per_n2 = _PER_METHOD.get(method, _DEFAULT_METHOD)
    out = per_member * n_groups * n + per_group * n_groups + per_n2 * n * n
    if method == "sem":  # derivatives of the implied covariance: K matrices of p x p
        p = n + 1 + n_z
        k = n + 4 + 3 * n_z + n_z * (n_z + 1) // 2
        out += _SEM_DERIVATIVE_BYTES * k * p * p
    return out


