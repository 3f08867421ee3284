"""Figures of a run (kept for imports written against this module).

The figures live in :mod:`micromacro_sim.reporting.figures`, one family per module:
:mod:`~micromacro_sim.reporting.figures.rates` (coverage; Type I error and power apart),
:mod:`~micromacro_sim.reporting.figures.bias` (percent bias faceted by two factors),
:mod:`~micromacro_sim.reporting.figures.nested_loop`,
:mod:`~micromacro_sim.reporting.figures.zip_plot`,
:mod:`~micromacro_sim.reporting.figures.spread` (distribution of the estimates),
:mod:`~micromacro_sim.reporting.figures.estimates` (every replication's estimate, tails
shown), :mod:`~micromacro_sim.reporting.figures.failure_map` (failed fits per scenario and
method) and :mod:`~micromacro_sim.reporting.figures.published` (published values beside
this run). Robust axes are in :mod:`~micromacro_sim.reporting.figures.offscale`.
"""

from __future__ import annotations

from micromacro_sim.reporting.figures.bias import plot_percent_bias
from micromacro_sim.reporting.figures.common import Z_MCSE, acceptance_band, require_matplotlib
from micromacro_sim.reporting.figures.estimates import plot_estimate_strips
from micromacro_sim.reporting.figures.failure_map import plot_failure_heatmap
from micromacro_sim.reporting.figures.nested_loop import plot_nested_loop
from micromacro_sim.reporting.figures.published import plot_published
from micromacro_sim.reporting.figures.rates import plot_coverage, plot_rejection
from micromacro_sim.reporting.figures.spread import plot_estimates
from micromacro_sim.reporting.figures.zip_plot import plot_zip
from micromacro_sim.summaries.factors import short_labels

__all__ = [
    "Z_MCSE",
    "acceptance_band",
    "plot_coverage",
    "plot_estimate_strips",
    "plot_estimates",
    "plot_failure_heatmap",
    "plot_nested_loop",
    "plot_percent_bias",
    "plot_published",
    "plot_rejection",
    "plot_zip",
    "require_matplotlib",
    "short_labels",
]
