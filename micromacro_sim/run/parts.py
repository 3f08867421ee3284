"""Parts of a run for cluster arrays: ``micromacro run CONFIG --part I/N``.

The tasks of a config are cut at fixed replication boundaries (multiples of the chunk
size) in every scenario; sorted by (scenario key, first replication), chunk ``c`` belongs
to part ``c mod N + 1``. N independent processes, one per part (a SLURM or PBS array),
fill one run folder on a shared file system; any assignment gives the same rows, since
a replication's numbers depend on its own stream only.

Each part holds its own lock (:func:`~micromacro_sim.run.lock.part_lock_name`), checks and
cleans only its own shards, and merges its ledger records into the shared manifest
under the folder's manifest mutex (:class:`PartLedger`): a read-modify-write that keeps
every other part's records.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from micromacro_sim.core.errors import ConfigError
from micromacro_sim.run.lock import part_lock_name

if TYPE_CHECKING:
    from micromacro_sim.design.config import RunConfig

__all__ = ["Part", "chunk_owners", "owned_by", "part_grain"]

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
    """Replications per chunk of the split into ``count`` parts: about four chunks per part
    (10 to 1000 replications).

    It depends only on the scenarios, their replication count and ``count`` (never on
    ``chunk_size``, ``--n-jobs``, the memory budget or the machine), so every part of an
    array cuts the same chunks even when the parts are started with different execution
    options; ``chunk_size`` then only cuts each part's chunks into tasks.
    """
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


