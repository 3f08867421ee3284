"""``micromacro_sim.status``, kept for imports written against it: it re-exports
:mod:`micromacro_sim.core.status` (docs/architecture.md lists these paths)."""

from micromacro_sim.core.status import (  # noqa: F401
    ERROR_REASONS,
    NOT_APPLICABLE_REASONS,
    REASON_TEXT,
    Flag,
    Reason,
    Status,
    add_flags,
    derive_status,
    flag,
    flags_text,
    no_flags,
    primary_code,
)

__all__ = [
    "ERROR_REASONS",
    "Flag",
    "NOT_APPLICABLE_REASONS",
    "REASON_TEXT",
    "Reason",
    "Status",
    "add_flags",
    "derive_status",
    "flag",
    "flags_text",
    "no_flags",
    "primary_code",
]
