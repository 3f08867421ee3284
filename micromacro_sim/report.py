"""``micromacro report RUN_DIR``: the report of a run folder.

Kept as the command's entry module; the report is built in
:mod:`micromacro_sim.reporting.report` (tables in ``report_tables``, figures in
``report_figures``, HTML and Markdown in ``render``).
"""

from __future__ import annotations

from .reporting.report import FORMATS, add_parser, write_report

__all__ = ["FORMATS", "add_parser", "write_report"]
