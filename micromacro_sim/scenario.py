"""``micromacro_sim.scenario``, kept for imports written against it: it re-exports
:mod:`micromacro_sim.design.scenario` (docs/architecture.md lists these paths)."""

from micromacro_sim.design.scenario import (  # noqa: F401
    GroupSizes,
    Scenario,
)

__all__ = [
    "GroupSizes",
    "Scenario",
]
