"""``micromacro_sim.seeding``, kept for imports written against it: it re-exports
:mod:`micromacro_sim.generate.seeding` (docs/architecture.md lists these paths)."""

from micromacro_sim.generate.seeding import (  # noqa: F401
    replication_rng,
    seed_sequence,
)

__all__ = [
    "replication_rng",
    "seed_sequence",
]
