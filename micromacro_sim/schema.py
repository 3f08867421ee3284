"""Column names shared by the writers and readers of estimate tables.

The estimates Parquet of a run (:mod:`micromacro_sim.runner`), the table of ``fit``
(:mod:`micromacro_sim.api`) and the summaries (:mod:`micromacro_sim.summarize`) name the
standard errors the same way, from this one list.
"""

from __future__ import annotations

from .estimators import SE_TYPES

__all__ = ["DEDUP_KEY", "SE_COLUMNS"]

#: SE type -> column name: ``classical`` is ``se``, the others ``se_<type>`` (se_HC0, ...).
SE_COLUMNS: dict[str, str] = {
    "classical": "se", **{t: f"se_{t}" for t in SE_TYPES if t != "classical"}
}

#: The columns that identify one row of the estimates table.
DEDUP_KEY = ("scenario", "replication", "method", "term")
