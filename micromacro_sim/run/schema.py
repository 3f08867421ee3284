"""Column names shared by the writers and readers of estimate tables.

The estimates Parquet of a run (:mod:`micromacro_sim.run.runner`), the table of ``fit``
(:mod:`micromacro_sim.api.fitting`) and the summaries
(:mod:`micromacro_sim.summaries.summarize`) name the
standard errors the same way, from this one list.
"""

from __future__ import annotations

from micromacro_sim.core.results import SE_COLUMNS

__all__ = ["DEDUP_KEY", "SE_COLUMNS"]

# SE_COLUMNS (SE type -> column name: ``classical`` is ``se``, the others ``se_<type>``) is
# defined once, beside the result types, and re-exported here for the table readers.

#: The columns that identify one row of the estimates table.
DEDUP_KEY = ("scenario", "replication", "method", "term")
