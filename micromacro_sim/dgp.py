"""``micromacro_sim.dgp``, kept for imports written against it: it re-exports
:mod:`micromacro_sim.generate.dgp` (docs/architecture.md lists these paths)."""

from micromacro_sim.generate.dgp import (  # noqa: F401
    Plan,
    child_rng,
    generate,
    plan,
)

__all__ = [
    "Plan",
    "child_rng",
    "generate",
    "plan",
]
