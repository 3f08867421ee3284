"""Croon & van Veldhoven (2007), Table 1: the 16 cells, the unadjusted regression
against its analytic limit, row 16 against the published numbers, and how often the
CV adjustment is inadmissible."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from micromacro_sim.core.errors import ConfigError
from micromacro_sim.design.config import RunConfig
from micromacro_sim.reproduce import PCT_FORMATS, Reproduction
from micromacro_sim.reproduce._common import (
    SUMMARY_NOTES,
    cell_frame,
    find_scenario,
    published,
    run_study,
    summary_tables,
)
from micromacro_sim.reproduce._figures import cell_label, comparison
from micromacro_sim.reproduce._verdicts import PCT_MARGIN, Z_CRIT, judge, rule_note
from micromacro_sim.summaries.summarize import RunSummary

NAME = "cv2007"
DESCRIPTION = ("Croon & van Veldhoven 2007 Table 1: 16 cells, unadjusted vs its analytic limit, "
               "row 16 vs the published numbers, inadmissible CV solutions")
CONFIG = "cv2007.yaml"

#: Row 16 of CV Table 1 (the published cell ``row16``) as scenario attributes.
ROW16 = {"n_groups": 100, "group_size": 10, "icc": 0.1, "r_zxi": 0.3}
CELL_COLUMNS = ("n_groups", "group_size", "icc", "r_zxi", "reliability")
TERMS = ("intercept", "z", "xi")
#: Critical value of the verdicts against the analytic limits (48 cell-terms: 3 MCSE
#: keeps chance excursions rare).
LIMIT_MCSE = 3.0

CAPTIONS = {
    "unadjusted_limits": f"percent bias vs the analytic large-G limit (MCSE 0, so se_diff = "
    f"mcse); margin {PCT_MARGIN.value:g} percentage points, interval diff +/- {LIMIT_MCSE:g} "
    "mcse.",
    "row16": f"margin {PCT_MARGIN.value:g} percentage points, interval diff +/- {Z_CRIT:g} "
    "se_diff; CV's MCSE is unknown: se_diff is this run's MCSE alone; croon = CV's 'adjusted'.",
}


def limits_table(summary: RunSummary, cfg: RunConfig) -> pd.DataFrame:
    """The unadjusted regression's mean in every cell against its large-G limit.

    Compared as percent bias: the limit is analytic (its MCSE is 0), the margin is
    :data:`~._verdicts.PCT_MARGIN` and the critical value :data:`LIMIT_MCSE` (SPEC
    section 5: the limits are sharp targets in every cell).
    """
    perf = summary.performance
    rows = []
    for sc in cfg.scenarios:
        lim = sc.unadjusted_limit()
        d = sc.describe()
        for term in TERMS:
            hit = perf[(perf["scenario"] == sc.key) & (perf["method"] == "unadjusted")
                       & (perf["term"] == term)]
            if hit.empty:
                continue
            r = hit.iloc[0]
            theta = float(r["theta"])
            limit_pct, mcse = _pct(lim[term], theta), float(r["pct_bias_mcse"])
            c = judge(float(r["pct_bias"]), mcse, limit_pct, 0.0, PCT_MARGIN.value,
                      z_crit=LIMIT_MCSE)
            c.pop("se_diff")  # = mcse: the limit has no Monte Carlo error
            rows.append({**{col: d[col] for col in CELL_COLUMNS}, "term": term,
                         "limit_pct": limit_pct, "this_run": float(r["pct_bias"]), "mcse": mcse,
                         **c})
    return pd.DataFrame(rows)


def blup_reference_table(summary: RunSummary, cfg: RunConfig) -> pd.DataFrame:
    """blup's mean and median beside its large-G limit: a reference, not a verdict.

    In balanced data the blup scores are the group means shrunk by the reliability, so
    its xi coefficient tends to the unadjusted limit / lambda and its Z coefficient to
    the unadjusted one. At G = 50 or 100 the noise in the estimated reliability moves
    the mean away from that limit (SPEC section 5).
    """
    perf = summary.performance
    rows = []
    for sc in cfg.scenarios:
        if not sc.group_size.balanced:
            continue
        lim = sc.unadjusted_limit()
        blup_lim = {"intercept": lim["intercept"], "z": lim["z"],
                    "xi": lim["xi"] / sc.reliability}
        d = sc.describe()
        for term in ("z", "xi"):
            hit = perf[(perf["scenario"] == sc.key) & (perf["method"] == "blup")
                       & (perf["term"] == term)]
            if hit.empty:
                continue
            r = hit.iloc[0]
            theta = float(r["theta"])
            rows.append({
                **{col: d[col] for col in CELL_COLUMNS}, "term": term,
                "limit_pct": _pct(blup_lim[term], theta), "this_run": float(r["pct_bias"]),
                "mcse": float(r["pct_bias_mcse"]), "median_pct": _pct(float(r["median"]), theta),
                "k": int(r["k"]),
                "role": "reference only",
            })
    return pd.DataFrame(rows)


def row16_table(summary: RunSummary, cfg: RunConfig, pub: pd.DataFrame) -> pd.DataFrame:
    """CV's published row 16 (unadjusted and adjusted) beside this run.

    The published numbers are printed to one decimal (a difference within .05 is none).
    CV's replications and per-replication estimates are not in the data file: their MCSE
    is unknown and the verdict (:func:`~._verdicts.judge`, margin
    :data:`~._verdicts.PCT_MARGIN`) uses this run's MCSE alone.
    """
    sc = find_scenario(cfg, **ROW16)
    if sc is None:
        raise ConfigError("cv2007: the config has no row 16 cell (G=100, n=10, ICC .1, r .3)")
    perf = summary.performance
    rows = []
    sel = pub[(pub["table"] == "percent_bias") & (pub["cell"] == "row16")]
    for p in sel.itertuples(index=False):
        hit = perf[(perf["scenario"] == sc.key) & (perf["method"] == p.method)
                   & (perf["term"] == p.term)]
        if hit.empty:
            continue
        r = hit.iloc[0]
        mcse = float(r["pct_bias_mcse"])
        rows.append({
            "method": p.method, "term": p.term, "published": float(p.value),
            "this_run": float(r["pct_bias"]), "mcse": mcse,
            "median_pct": _pct(float(r["median"]), float(r["theta"])), "k": int(r["k"]),
            **judge(float(r["pct_bias"]), mcse, float(p.value), math.nan, PCT_MARGIN.value,
                    rounding=0.05),
        })
    return pd.DataFrame(rows)


def inadmissible_table(summary: RunSummary, cfg: RunConfig, method: str = "croon") -> pd.DataFrame:
    """Rate of flagged (inadmissible or not converged) fits of ``method`` per cell."""
    f = summary.flags
    cells = cell_frame(cfg, CELL_COLUMNS)
    sel = f[f["method"] == method][["scenario", "n_reps", "n_inadmissible", "n_not_converged",
                                    "n_flagged", "flag_rate", "reasons"]]
    out = cells.merge(sel, on="scenario", how="left").drop(columns="scenario")
    out.insert(0, "method", method)
    return out


def _pct(value: float, theta: float) -> float:
    return 100 * (value / theta - 1) if theta else math.nan


def reproduce(run_dir: str | Path, *, replications: int | None = None, n_jobs: int | None = None,
              engine: str | None = None, overwrite: bool = False) -> Reproduction:
    """Run (or resume) the cv2007 config in ``run_dir`` and compare with CV Table 1.

    Parameters
    ----------
    run_dir : path
        Simulation run folder.
    replications, n_jobs, engine : optional
        Override the packaged config.
    overwrite : bool
        Discard a run of a different config in ``run_dir``.
    """
    run_dir = Path(run_dir)
    cfg, summary = run_study(CONFIG, run_dir, replications=replications, n_jobs=n_jobs,
                             engine=engine, overwrite=overwrite)
    pub = published(NAME)
    lim = limits_table(summary, cfg)
    counts = lim["verdict"].value_counts() if len(lim) else pd.Series(dtype=int)
    tally = ", ".join(f"{n} {v}" for v, n in counts.items()) or "none"
    tables = {
        "unadjusted_limits": lim,
        "blup_reference": blup_reference_table(summary, cfg),
        "row16": row16_table(summary, cfg, pub),
        "croon_inadmissible": inadmissible_table(summary, cfg),
        **summary_tables(summary, cell_frame(cfg, CELL_COLUMNS)),
    }
    notes = [
        rule_note(Z_CRIT),
        PCT_MARGIN.describe() + ".",
        "unadjusted_limits: large-G limit of OLS on the group means, b_xi -> beta_xi lambda "
        "(1 - rho^2)/(1 - lambda rho^2), b_Z -> beta_Z + beta_xi rho (1 - lambda)/(1 - lambda "
        "rho^2), compared as percent bias. The limit is analytic (MCSE 0) and the interval is "
        f"diff +/- {LIMIT_MCSE:g} MCSE (48 cell-terms: {LIMIT_MCSE:g} rather than {Z_CRIT:g} "
        f"keeps chance excursions rare); verdicts here: {tally}. The "
        "limits are sharp targets in every cell (SPEC section 5).",
        "blup_reference: blup's limit (b_xi -> beta_xi (1 - rho^2)/(1 - lambda rho^2), b_Z as "
        "unadjusted) is shown as a reference only, without a verdict: at G = 50 or 100 the noise "
        "in the estimated reliability moves the mean well away from it (heavy right tail; compare "
        "the median).",
        "row16: CV's published percent bias (unadjusted 0.6 / 15.3 / -50.4, adjusted -1.1 / -1.3 "
        "/ 5.0 as given in the data file) beside this run's unadjusted and croon (median_pct: "
        "the median's percent bias; croon has a heavy right tail). The published values are "
        "printed to one decimal (no difference within .05); CV's replications and estimates are "
        "not in the data file, so their MCSE is unknown and se_diff is this run's MCSE alone "
        "(the verdict is optimistic: a true se_diff is larger).",
        "croon_inadmissible: Croon-van Veldhoven solutions with S_xixi <= 0 or R <= 0 are "
        "inadmissible (flagged, not used in the performance measures); the rate is read from "
        "the run's flags.",
        *SUMMARY_NOTES,
    ]
    return Reproduction(study=NAME, description=DESCRIPTION, run_dir=run_dir,
                        replications=cfg.replications, tables=tables, notes=notes,
                        partial=summary.partial, captions=CAPTIONS, figures=figures(tables),
                        formats={"unadjusted_limits": PCT_FORMATS, "blup_reference": PCT_FORMATS,
                                 "row16": {**PCT_FORMATS, "published": ".1f"}})


def figures(tables: dict[str, pd.DataFrame]) -> dict[str, Callable[[Path], Path]]:
    """Row 16 beside CV's published numbers, and every cell beside its analytic limit."""
    lim = tables["unadjusted_limits"]
    lim = lim.assign(cell=cell_label(lim, ("n_groups", "group_size", "icc", "r_zxi")))
    return {
        "row16": comparison(
            tables["row16"], label_columns=("method",), facet="term", published_mcse=None,
            rounding=0.05, reference=0.0, xlabel="percent bias",
            title="CV 2007 Table 1, row 16 (croon = CV's adjusted)",
            note="bars: +/- 2 MCSE of this run; published: half a unit of its last digit "
            "(CV's MCSE is unknown)"),
        "unadjusted_limits": comparison(
            lim, label_columns=("cell",), facet="term", published="limit_pct",
            published_mcse=None, published_label="analytic limit (large G)", reference=0.0,
            xlabel="percent bias of the unadjusted regression",
            title="Unadjusted regression vs its analytic limit",
            note="bars: +/- 2 MCSE of this run; the analytic limit has no Monte Carlo error"),
    }
