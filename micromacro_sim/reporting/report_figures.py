"""The figures of a run report, and the published comparison tables found beside a run."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from micromacro_sim.core.errors import ConfigError
from micromacro_sim.reporting.report_tables import Figure
from micromacro_sim.summaries.summarize import RunSummary

__all__ = ["MAX_SPREAD_CELLS", "draw_figures", "published_tables"]

#: Above this many cells the per-cell distribution panels are left out (the nested-loop
#: plot shows every cell instead).
MAX_SPREAD_CELLS = 16


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


def draw_figures(summary: RunSummary, estimates: pd.DataFrame, scen: pd.DataFrame,
                 folder: Path, *, alpha: float, include_flagged: bool, se_type: str,
                 published: dict[str, pd.DataFrame],
                 terms: list[str] | None = None) -> dict[str, Figure]:
    """Draw every report figure into ``folder``; key -> :class:`Figure` in display order.

    Keys: ``bias:<term>``, ``spread:xi``, ``cover:<term>``, ``zip:<term>``,
    ``reject:<term>``, ``nested:<term>`` and ``published:<table>``.
    """
    from micromacro_sim.reporting.figures import bias, common, nested_loop, rates, spread, zip_plot
    from micromacro_sim.reporting.figures import published as pubfig

    common.require_matplotlib()
    perf = summary.performance
    # the intercept's rates are in the tables; the figures show the slopes
    known = list(dict.fromkeys(perf["term"]))
    if terms is not None:
        bad = [t for t in terms if t not in known]
        if bad:
            raise ConfigError(f"terms: unknown term {bad[0]!r} (available: {', '.join(known)})")
    else:
        terms = [t for t in known if t != "intercept"] or known
    n_cells = perf["scenario"].nunique()
    has_se = f"cover_{se_type}" in perf.columns or "cover_classical" in perf.columns
    figs: dict[str, Figure] = {}

    def add(key: str, title: str, path: Path, caption: str) -> None:
        figs[key] = Figure(title, path, caption)

    for t in terms:
        add(f"bias:{t}", f"Percent bias of {t}",
            bias.plot_percent_bias(summary, folder / f"percent_bias_{t}.png", term=t),
            f"Percent bias of {t} per method, +/- 2 MCSE, faceted by two design factors; rows "
            "are the remaining factors' levels.")
    if "xi" in terms and n_cells <= MAX_SPREAD_CELLS:
        add("spread:xi", "Distribution of the xi estimates",
            spread.plot_estimates(estimates, scen, folder / "xi_estimates.png", term="xi",
                                  methods=list(dict.fromkeys(perf["method"])),
                                  include_flagged=include_flagged),
            "Estimates of the xi coefficient per method, one panel per cell; dashed line: "
            "true value.")
    if has_se:
        for t in terms:
            add(f"cover:{t}", f"Coverage of {t}",
                rates.plot_coverage(summary, folder / f"coverage_{t}.png", term=t, alpha=alpha),
                f"Coverage of the {100 * (1 - alpha):g}% intervals of {t} per cell and SE "
                "type; grey: nominal level +/- 2 sqrt(p(1-p)/K), the range a correct method "
                "falls in 95% of the time.")
        for t in terms:
            add(f"zip:{t}", f"Zip plot of {t}",
                zip_plot.plot_zip(estimates, summary, folder / f"zip_{t}.png", term=t,
                                  se_type=se_type, alpha=alpha,
                                  include_flagged=include_flagged),
                f"Zip plot (Morris, White & Crowther 2019) of the {se_type} intervals of {t} in "
                "the cells with the lowest coverage (every cell when there are four or fewer).")
        for t in terms:
            add(f"reject:{t}", f"Type I error and power of {t}",
                rates.plot_rejection(summary, folder / f"rejection_{t}.png", term=t,
                                     alpha=alpha),
                f"Rejection of H0: {t} = 0 at alpha = {alpha:g}: Type I error where the true "
                "value is 0 (grey: acceptance band) and power elsewhere (dashed: .80), in "
                "separate panels.")
    for t in terms:
        measures = ("bias", "rmse", "cover", "reject") if has_se else ("bias", "rmse")
        add(f"nested:{t}", f"Nested-loop plot of {t}",
            nested_loop.plot_nested_loop(summary, folder / f"nested_loop_{t}.png", term=t,
                                         measures=measures, se_type=se_type, alpha=alpha),
            f"Nested-loop plot of {t}: bias, RMSE, coverage and rejection ({se_type} SE) over "
            "every cell, with the design factors as steps beneath.")
    for name, frame in published.items():
        labels = [c for c in ("cell", "method", "term", "statistic") if c in frame.columns]
        add(f"published:{name}", f"Published values: {name}",
            pubfig.plot_published(frame, folder / f"published_{name}.png",
                                  label_columns=labels, xlabel=name.replace("_", " ")),
            f"{name}: this run (+/- 2 MCSE) beside the published value (+/- 2 of its MCSE "
            "where known).")
    return figs
