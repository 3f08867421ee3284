"""Tidy tables of a run: the long summary, the written summary files and ``export``.

The long summary has one row per scenario x method x term x measure (x SE type), with
the run's design factors as typed columns (:mod:`.factors`), so that R, pandas, polars
or duckdb can filter and facet it without parsing column names. ``export`` writes the
per-replication estimates joined with the (typed) scenarios as one CSV or Parquet file.
Every column is listed in ``docs/schema.md``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from micromacro_sim.core.errors import ConfigError
from micromacro_sim.core.results import SE_TYPES
from micromacro_sim.run.atomic import write_atomic
from micromacro_sim.run.manifest import SUMMARY_RECORD
from micromacro_sim.run.paths import check_output_dir
from micromacro_sim.run.reading import open_run_folder, output_inside_run
from micromacro_sim.run.storage import (
    read_table,
    write_frame_atomic,
    write_json_atomic,
)
from micromacro_sim.summaries.factors import typed_scenarios
from micromacro_sim.summaries.truth import run_truth

__all__ = ["EXPORT_FORMATS", "MEASURES", "SE_MEASURES", "export_estimates", "long_summary",
           "write_summary_tables"]

#: Measures without an SE type: measure -> column of its Monte Carlo SE (None: none).
MEASURES: dict[str, str | None] = {
    "mean": "bias_mcse", "bias": "bias_mcse", "pct_bias": "pct_bias_mcse", "median": None,
    "median_bias": None, "trimmed_mean": None, "trimmed_bias": None, "empse": "empse_mcse",
    "mse": "mse_mcse", "rmse": "rmse_mcse",
}
#: Measures with one value per SE type ``T`` (columns ``<measure>_T`` and ``<measure>_T_mcse``).
SE_MEASURES: tuple[str, ...] = ("modse", "meanse", "relerr", "cover", "becover", "reject")
EXPORT_FORMATS = ("csv", "parquet")
_ID = ("scenario", "label", "cell")
_LONG_KEYS = ("method", "term", "theta", "k")


def long_summary(perf: pd.DataFrame, factors: list[str] | tuple[str, ...] = ()) -> pd.DataFrame:
    """The wide performance table in long form.

    Parameters
    ----------
    perf : DataFrame
        :attr:`RunSummary.performance` (one row per scenario x method x term).
    factors : sequence of str
        Design-factor columns of ``perf`` to carry (:attr:`RunSummary.factors`).

    Returns
    -------
    DataFrame
        Columns ``scenario, label, <factors>, method, term, theta, k, measure, se_type,
        estimate, mcse``; ``se_type`` is null for measures that have none, ``mcse`` is
        NaN where no Monte Carlo SE is defined. Rows whose value is missing are dropped.
    """
    ids = [c for c in (*_ID, *factors, *_LONG_KEYS) if c in perf.columns]
    parts = []
    specs: list[tuple[str, str | None, str, str | None]] = [
        (m, None, m, se) for m, se in MEASURES.items()]
    specs += [(m, t, f"{m}_{t}", f"{m}_{t}_mcse") for m in SE_MEASURES for t in SE_TYPES]
    for measure, se_type, col, mcse in specs:
        if col not in perf.columns:
            continue
        part = perf[ids].copy()
        part["measure"] = measure
        part["se_type"] = se_type
        part["estimate"] = perf[col].astype(float)
        part["mcse"] = perf[mcse].astype(float) if mcse in perf.columns else np.nan
        parts.append(part[np.isfinite(part["estimate"].to_numpy())])
    out = pd.concat(parts, ignore_index=True)
    out["se_type"] = out["se_type"].astype("string")
    out["k"] = out["k"].astype("int64")
    order = {c: i for i, c in enumerate(dict.fromkeys(perf["scenario"]))}
    morder = {c: i for i, c in enumerate(dict.fromkeys(perf["method"]))}
    out = out.assign(_s=out["scenario"].map(order), _m=out["method"].map(morder))
    out = out.sort_values(["_s", "_m"], kind="stable").drop(columns=["_s", "_m"])
    return out.reset_index(drop=True)


def _write_csv(path: Path, frame: pd.DataFrame) -> Path:
    write_atomic(path, lambda tmp: frame.to_csv(tmp, index=False))
    return path


def _write(path: Path, frame: pd.DataFrame) -> Path:
    if path.suffix == ".parquet":
        return write_frame_atomic(path, frame)
    return _write_csv(path, frame)


def write_summary_tables(summary, folder: str | Path) -> list[Path]:
    """Write ``summary``, ``summary_long``, ``flags``, ``reliability`` and ``estimands`` as
    CSV and Parquet,
    and ``summary.json``: what was summarized (the run's ledger digest, replications per
    scenario); a run that later changes the folder marks it stale.

    Parameters
    ----------
    summary : RunSummary
    folder : path
        Created if missing.

    Returns
    -------
    list of Path
        The files written.
    """
    out = check_output_dir(folder)
    if summary.provenance.get("run_dir"):
        output_inside_run(out, summary.provenance["run_dir"])
    out.mkdir(parents=True, exist_ok=True)
    tables = {
        "summary": summary.performance,
        "summary_long": long_summary(summary.performance, summary.factors),
        "flags": summary.flags,
        "reliability": summary.datasets,
    }
    if getattr(summary, "estimands", None) is not None:
        tables["estimands"] = summary.estimands
    written = [_write(out / f"{name}.{ext}", frame)
               for name, frame in tables.items() for ext in ("csv", "parquet")]
    if summary.provenance:  # what was summarized, so that a later run can mark it stale
        write_json_atomic(out / SUMMARY_RECORD, summary.provenance)
        written.append(out / SUMMARY_RECORD)
    return written


def export_estimates(run_dir: str | Path, fmt: str = "csv",
                     output: str | Path | None = None) -> Path:
    """Write the per-replication estimates joined with the scenarios as one file.

    Parameters
    ----------
    run_dir : path
        A run folder.
    fmt : {"csv", "parquet"}
    output : path, optional
        File to write (default ``RUN_DIR/estimates_export.<fmt>``).

    Returns
    -------
    Path
        The file written. Columns: ``scenario, label``, the scenario's fields in typed
        form (:func:`~.factors.typed_scenarios`), then the estimates columns, with
        ``true_value`` (the term's estimand for the row's method: docs/estimands.md),
        ``scale`` and ``origin`` (the intercept's) after ``estimate``.

    Raises
    ------
    ConfigError
        Unknown format, no run in the folder, or no finished replication.
    """
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"format: expected one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    folder = open_run_folder(run_dir)
    run_dir, scen, keys = folder.path, folder.scenarios, folder.keys
    path = Path(output) if output is not None else run_dir / f"estimates_export.{fmt}"
    check_output_dir(path.parent)
    output_inside_run(path, run_dir)
    est = read_table(run_dir, "estimates", keys)
    if est.empty:
        raise ConfigError(f"RUN_DIR: {str(run_dir)!r} has no finished replications yet")
    truth = run_truth(folder.manifest, scen)
    cells = est[["scenario", "method", "term"]].drop_duplicates().itertuples(index=False)
    found = {kmt: truth.estimand(*kmt) for kmt in cells}
    at = list(est.columns).index("estimate") + 1
    keys = list(zip(est["scenario"], est["method"], est["term"], strict=True))
    for i, (name, part) in enumerate((("true_value", "theta"), ("scale", "scale"),
                                      ("origin", "origin"))):
        est.insert(at + i, name, [getattr(found[kmt], part) for kmt in keys])
    typed = typed_scenarios(scen)
    frame = typed.merge(est, on="scenario", how="inner", validate="one_to_many")
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        return write_frame_atomic(path, frame)
    return _write_csv(path, frame)
