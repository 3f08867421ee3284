"""``micromacro_sim.dataset``, kept for imports written against it: it re-exports
:mod:`micromacro_sim.generate.dataset` (docs/architecture.md lists these paths)."""

from micromacro_sim.generate.dataset import (  # noqa: F401
    Dataset,
)

__all__ = [
    "Dataset",
]
