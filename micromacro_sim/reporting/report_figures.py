"""The figures of a run report, and the published comparison tables found beside a run."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from micromacro_sim.core.errors import ConfigError
from micromacro_sim.core.results import SE_TYPES
from micromacro_sim.reporting.bias_stat import check_stat
from micromacro_sim.reporting.report_tables import Figure
from micromacro_sim.reporting.se_types import measure_column, se_note
from micromacro_sim.summaries.summarize import RunSummary

__all__ = ["EST_CELLS", "draw_figures", "published_tables"]

#: The per-replication estimate figure shows at most this many cells (those whose tails
#: reach farthest; the nested-loop plot shows every cell).
EST_CELLS = 8


def published_tables(run_dir: Path) -> dict[str, pd.DataFrame]:
    """Comparison tables of a reproduction whose run folder is ``run_dir``.

    A reproduction writes its tables as CSV and a ``notes.txt`` into the folder that
    holds its ``run`` folder; a table with ``published`` and ``this_run`` columns is a
    comparison. Returns name -> table (empty for an ordinary run).
    """
    parent = Path(run_dir).resolve().parent
    if not (parent / "notes.txt").is_file():
        return {}
    out = {}
    for csv in sorted(parent.glob("*.csv")):
        try:
            frame = pd.read_csv(csv, keep_default_na=False, na_values=[""])
        except (OSError, ValueError, pd.errors.ParserError):
            continue
        if {"published", "this_run"} <= set(frame.columns):
            out[csv.stem] = frame
    return out


def _terms(perf: pd.DataFrame, terms: list[str] | None) -> list[str]:
    """The terms that get figures: ``terms`` checked, or every slope."""
    known = list(dict.fromkeys(perf["term"]))
    if terms is not None:
        bad = [t for t in terms if t not in known]
        if bad:
            raise ConfigError(f"terms: unknown term {bad[0]!r} (available: {', '.join(known)})")
        return terms
    # the intercept's rates are in the tables; the figures show the slopes
    return [t for t in known if t != "intercept"] or known


def draw_figures(summary: RunSummary, estimates: pd.DataFrame, scen: pd.DataFrame,
                 folder: Path, *, alpha: float, include_flagged: bool, se_type: str | None,
                 published: dict[str, pd.DataFrame],
                 terms: list[str] | None = None, bias: str = "mean") -> dict[str, Figure]:
    """Draw every report figure into ``folder``; key -> :class:`Figure` in display order.

    Keys: ``failures`` (when a fit failed), ``bias:<term>``, ``est:<term>``,
    ``cover:<term>``, ``zip:<term>``, ``reject:<term>``, ``nested:<term>`` and
    ``published:<table>``. ``bias`` is the statistic of the bias figures and of the
    nested-loop plots' bias panel: ``mean`` or ``median``. ``se_type`` None shows every
    method with its default SE type (zip and nested-loop plots; a first column of the
    coverage and rejection panels); an SE type shows every method with that one.
    """
    from micromacro_sim.reporting.figures import common, failure_map, nested_loop
    from micromacro_sim.reporting.figures import published as pubfig

    common.require_matplotlib()
    check_stat(bias)
    perf = summary.performance
    terms = _terms(perf, terms)
    has_se = measure_column("cover", se_type) in perf.columns or "cover_classical" in perf.columns
    figs: dict[str, Figure] = {}
    heat = failure_map.plot_failure_heatmap(summary, folder / "failures.png",
                                            methods=list(dict.fromkeys(perf["method"])))
    if heat is not None:
        figs["failures"] = Figure(
            "Failed fits per scenario and method", heat,
            "Share of replications whose fit was not ok (flagged, not applicable or an "
            "error) per scenario and method; scenarios without any failure are left out.")
    figs.update(_bias_figures(summary, estimates, folder, terms, bias, include_flagged))
    if has_se:
        figs.update(_rate_figures(summary, estimates, folder, terms, alpha=alpha,
                                  se_type=se_type, include_flagged=include_flagged))
    for t in terms:
        measures = ("median_bias" if bias == "median" else "bias", "rmse",
                    *(("cover", "reject") if has_se else ()))
        figs[f"nested:{t}"] = Figure(
            f"Nested-loop plot of {t}",
            nested_loop.plot_nested_loop(summary, folder / f"nested_loop_{t}.png", term=t,
                                         measures=measures, se_type=se_type, alpha=alpha),
            f"Nested-loop plot of {t}: {bias} bias, RMSE, coverage and rejection "
            f"({se_note(perf, se_type)}) over every cell, with the design factors as steps "
            "beneath.")
    for name, frame in published.items():
        labels = [c for c in ("cell", "method", "term", "statistic") if c in frame.columns]
        figs[f"published:{name}"] = Figure(
            f"Published values: {name}",
            pubfig.plot_published(frame, folder / f"published_{name}.png",
                                  label_columns=labels, xlabel=name.replace("_", " ")),
            f"{name}: this run (+/- 2 MCSE) beside the published value (+/- 2 of its MCSE "
            "where known).")
    return figs


def _bias_figures(summary: RunSummary, estimates: pd.DataFrame, folder: Path,
                  terms: list[str], stat: str, include_flagged: bool) -> dict[str, Figure]:
    """Percent bias and the per-replication estimates of every term."""
    from micromacro_sim.reporting.figures import bias
    from micromacro_sim.reporting.figures import estimates as estfig

    figs: dict[str, Figure] = {}
    for t in terms:
        figs[f"bias:{t}"] = Figure(
            f"Percent {stat} bias of {t}" if stat == "median" else f"Percent bias of {t}",
            bias.plot_percent_bias(summary, folder / f"percent_bias_{t}.png", term=t,
                                   stat=stat, estimates=estimates),
            f"Percent {stat} bias of {t} per method, +/- 2 MCSE, faceted by two design factors; "
            "rows are the remaining factors' levels. Values far beyond the others' are "
            "triangles at the axis edge, their value written beside.")
    for t in terms:
        cells = estfig.estimate_cells(estimates, summary, t, EST_CELLS,
                                      include_flagged=include_flagged)
        if not cells:
            continue
        figs[f"est:{t}"] = Figure(
            f"Estimates of {t} per replication",
            estfig.plot_estimate_strips(estimates, summary, folder / f"estimates_{t}.png",
                                        term=t, cells=cells, include_flagged=include_flagged),
            f"Every replication's estimate of {t} per method and cell (at most {EST_CELLS} "
            "cells: those whose tails reach farthest), with the true value dashed: the tails "
            "behind a mean bias.")
    return figs


def _rate_figures(summary: RunSummary, estimates: pd.DataFrame, folder: Path,
                  terms: list[str], *, alpha: float, se_type: str | None,
                  include_flagged: bool) -> dict[str, Figure]:
    """Coverage, zip plots and rejection of every term."""
    from micromacro_sim.reporting.figures import rates, zip_plot

    figs: dict[str, Figure] = {}
    # default: a first column of each method's default SE type, then every SE type
    panels = None if se_type is None else SE_TYPES
    first = ("; first column: each method's default SE type, named in the legend"
             if se_type is None else "")
    for t in terms:
        figs[f"cover:{t}"] = Figure(
            f"Coverage of {t}",
            rates.plot_coverage(summary, folder / f"coverage_{t}.png", term=t, alpha=alpha,
                                se_types=panels),
            f"Coverage of the {100 * (1 - alpha):g}% intervals of {t} per cell and SE "
            "type; grey: nominal level +/- 2 sqrt(p(1-p)/K), the range a correct method "
            f"falls in 95% of the time{first}.")
    for t in terms:
        figs[f"zip:{t}"] = Figure(
            f"Zip plot of {t}",
            zip_plot.plot_zip(estimates, summary, folder / f"zip_{t}.png", term=t,
                              se_type=se_type, alpha=alpha, include_flagged=include_flagged),
            f"Zip plot (Morris, White & Crowther 2019) of the intervals of {t} "
            f"({se_note(summary.performance, se_type)}) in the cells with the lowest "
            "coverage (every cell when there are four or fewer).")
    for t in terms:
        figs[f"reject:{t}"] = Figure(
            f"Type I error and power of {t}",
            rates.plot_rejection(summary, folder / f"rejection_{t}.png", term=t, alpha=alpha,
                                 se_types=panels),
            f"Rejection of H0: {t} = 0 at alpha = {alpha:g}: Type I error where the true "
            "value is 0 (grey: acceptance band) and power elsewhere (dashed: .80), in "
            f"separate panels{first}.")
    return figs
