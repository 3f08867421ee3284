"""``micromacro_sim.options``, kept for imports written against it: it re-exports
:mod:`micromacro_sim.core.options` (docs/architecture.md lists these paths)."""

from micromacro_sim.core.options import (  # noqa: F401
    Option,
    validate_options,
)

__all__ = [
    "Option",
    "validate_options",
]
