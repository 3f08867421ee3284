"""Shared pieces of the reproductions: run a packaged config, read published values,
and the summary tables every study reports (verdicts: :mod:`._verdicts`)."""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from micromacro_sim.design.config import RunConfig
from micromacro_sim.design.scenario import Scenario
from micromacro_sim.run.configure import load_config
from micromacro_sim.run.runner import run
from micromacro_sim.summaries.summarize import RunSummary, summarize_run

__all__ = [
    "cell_frame",
    "find_scenario",
    "packaged_config",
    "published",
    "published_value",
    "run_study",
    "summary_tables",
]

PUBLISHED_COLUMNS = ("study", "table", "cell", "method", "published_label", "term",
                     "statistic", "value", "source")


def packaged_config(name: str) -> Path:
    """Path of a config file shipped in ``micromacro_sim/configs``."""
    return Path(str(resources.files("micromacro_sim").joinpath("configs", name)))


def published(study: str) -> pd.DataFrame:
    """The published values of ``study`` (``micromacro_sim/data/published/<study>.csv``)."""
    path = resources.files("micromacro_sim").joinpath("data", "published", f"{study}.csv")
    frame = pd.read_csv(str(path), keep_default_na=False, na_values=[""])
    missing = [c for c in PUBLISHED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"published/{study}.csv: missing column(s) {', '.join(missing)}")
    for col in ("cell", "method", "published_label", "term", "table", "statistic"):
        frame[col] = frame[col].fillna("").astype(str)
    return frame


def published_value(pub: pd.DataFrame, **where: str) -> float:
    """The single value matching ``where`` (column=value), NaN when there is none."""
    mask = np.ones(len(pub), dtype=bool)
    for col, val in where.items():
        mask &= (pub[col] == val).to_numpy()
    hits = pub.loc[mask, "value"]
    if len(hits) > 1:
        raise ValueError(f"published: {len(hits)} rows match {where}")
    return float(hits.iloc[0]) if len(hits) else math.nan


def run_study(config_name: str, run_dir: str | Path, *, replications: int | None = None,
              n_jobs: int | None = None, engine: str | None = None,
              overwrite: bool = False) -> tuple[RunConfig, RunSummary]:
    """Run (or resume) a packaged config in ``run_dir`` and summarize it."""
    cfg = load_config(packaged_config(config_name), replications=replications, n_jobs=n_jobs,
                      engine=engine)
    run(cfg, run_dir=Path(run_dir), overwrite=overwrite)
    return cfg, summarize_run(run_dir)


def find_scenario(cfg: RunConfig, **params: Any) -> Scenario | None:
    """The scenario of ``cfg`` whose attributes equal ``params`` (None when absent).

    ``group_size`` compares with the balanced size; floats compare to 1e-9.
    """
    for sc in cfg.scenarios:
        ok = True
        for name, want in params.items():
            have = sc.group_size.value if name == "group_size" else getattr(sc, name)
            while isinstance(have, tuple) and len(have) == 1:  # (0.3,) or ((0.3,),)
                have = have[0]
            if isinstance(have, float) or isinstance(want, float):
                ok &= abs(float(have) - float(want)) < 1e-9
            else:
                ok &= have == want
        if ok:
            return sc
    return None


def cell_frame(cfg: RunConfig, columns: tuple[str, ...]) -> pd.DataFrame:
    """Scenario key plus the design columns that tell the cells apart."""
    rows = []
    for sc in cfg.scenarios:
        d = sc.describe()
        rows.append({"scenario": sc.key, **{c: d[c] for c in columns}})
    return pd.DataFrame(rows)


_PERF_COLUMNS = (
    "method", "term", "theta", "n_reps", "n_flagged", "k", "mean", "bias", "bias_mcse",
    "pct_bias", "pct_bias_mcse", "median_bias", "trimmed_bias", "empse", "empse_mcse",
    "rmse", "cover_classical", "cover_classical_mcse", "becover_classical", "cover_HC3",
    "cover_HC3_mcse", "becover_HC3",
)


def summary_tables(summary: RunSummary, cells: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The tables every reproduction reports, read from :func:`summarize_run`.

    ``performance``: bias with MCSE, median and trimmed-mean bias (robust to heavy
    tails), empirical SE, coverage and bias-eliminated coverage (classical and HC3).
    ``failures``: per cell and method, flagged / not converged / inadmissible counts and
    reasons, zeros included. ``redraws``: per cell, datasets redrawn by the
    admissibility policy and gate failures kept, zeros included.
    """
    p = summary.performance
    cols = [c for c in _PERF_COLUMNS if c in p.columns]
    # inner merges keep the order of the cells (the config's grid order)
    perf = cells.merge(p[["scenario", *cols]], on="scenario", how="inner")
    f = summary.flags
    fail = cells.merge(
        f[["scenario", "method", "n_reps", "n_flagged", "flag_rate", "n_not_converged",
           "n_inadmissible", "reasons"]], on="scenario", how="inner")
    d = summary.datasets
    redraw = cells.merge(
        d[["scenario", "n_reps", "reps_redrawn", "redraw_rate", "redraws", "gate_failed_kept"]],
        on="scenario", how="inner")
    return {
        "performance": perf.drop(columns="scenario"),
        "failures": fail.drop(columns="scenario"),
        "redraws": redraw.drop(columns="scenario"),
    }


SUMMARY_NOTES = (
    "performance: bias MCSE = SD/sqrt(K); median_bias and trimmed_bias (10% cut from each tail) "
    "are robust to the heavy tails of some methods; becover_* is bias-eliminated coverage (the "
    "interval is checked against the mean estimate instead of the true value), which separates "
    "bias from SE trouble.",
    "failures and redraws are listed for every cell and method, zeros included; flagged fits are "
    "left out of the performance measures and counted here.",
)
