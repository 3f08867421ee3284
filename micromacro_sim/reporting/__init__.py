"""Presentation of run results: tidy tables, terminal tables, Mplus-style tables, reports.

- :mod:`.factors`: the design factors of a run as typed columns (from the field table).
- :mod:`.tidy`: the long summary table, the wide one with factors, and ``export``.
- :mod:`.terminal`: width-aware terminal tables (shared by ``summarize`` and ``reproduce``).
- :mod:`.mplus`: the Mplus MONTECARLO table with the Muthen & Muthen (2002) checks.
- :mod:`.report_tables`, :mod:`.render` and :mod:`.report`: the HTML / Markdown report;
  :mod:`.failures` its failure report, :mod:`.bias_stat` its mean or median bias.

Figures are in :mod:`micromacro_sim.reporting.figures`.
"""
