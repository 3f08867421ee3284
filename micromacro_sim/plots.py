"""Figures of a run (kept for imports written against this module).

The figures live in :mod:`micromacro_sim.figures`, one family per module:
:mod:`~micromacro_sim.figures.rates` (coverage; Type I error and power apart),
:mod:`~micromacro_sim.figures.bias` (percent bias faceted by two factors),
:mod:`~micromacro_sim.figures.nested_loop`, :mod:`~micromacro_sim.figures.zip_plot`,
:mod:`~micromacro_sim.figures.spread` (distribution of the estimates) and
:mod:`~micromacro_sim.figures.published` (published values beside this run).
"""

from __future__ import annotations

from .figures._base import Z_MCSE, acceptance_band, require_matplotlib
from .figures.bias import plot_percent_bias
from .figures.nested_loop import plot_nested_loop
from .figures.published import plot_published
from .figures.rates import plot_coverage, plot_rejection
from .figures.spread import plot_estimates
from .figures.zip_plot import plot_zip
from .reporting.factors import short_labels

__all__ = [
    "Z_MCSE",
    "acceptance_band",
    "plot_coverage",
    "plot_estimates",
    "plot_nested_loop",
    "plot_percent_bias",
    "plot_published",
    "plot_rejection",
    "plot_zip",
    "require_matplotlib",
    "short_labels",
]
