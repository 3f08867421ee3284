"""Size limits: what a config may ask of this machine, checked before anything is written.

:func:`plan_budget` estimates a run's number of tasks, peak memory per task and disk
use from the design alone, and refuses (one line naming the field, exit 2) what cannot
fit: more than :data:`MAX_TASKS` tasks, one replication larger than the memory the
workers can share, a ``chunk_size`` too large for memory, output larger than the free
disk space. ``force`` (``--force``) insists. A default chunk size too large for memory
is lowered instead (the chunk size never changes results). The estimates are
deliberately generous; their constants were measured on the shipped methods.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass

__all__ = ["MAX_CELLS", "MAX_TASKS", "MAX_YAML_BYTES", "MAX_YAML_NODES"]

#: Largest config file read (bytes).
MAX_YAML_BYTES = 1 << 20
#: Largest number of YAML nodes after expanding aliases (an alias bomb exceeds it).
MAX_YAML_NODES = 100_000
#: Largest grid (cells) expanded without ``--force``.
MAX_CELLS = 10_000
#: Largest number of tasks (each writes two shard files) without ``--force``.
MAX_TASKS = 10_000

#: Peak bytes per member per replication in a task (measured: about 730 with the five
#: methods of cv2007 at G = 100, n = 40), per group, and per worker process at rest.
BYTES_PER_MEMBER = 1_000
BYTES_PER_GROUP = 2_000
BYTES_PER_WORKER = 400 << 20
#: Parquet bytes per estimates row and per datasets row (measured: about 50 and 65),
#: and per shard file.
BYTES_PER_ROW = 100
BYTES_PER_FILE = 8 << 10


