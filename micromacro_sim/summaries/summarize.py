"""Performance measures with Monte Carlo SEs (Morris, White & Crowther 2019, Table 6).

:func:`performance` turns one estimator's replications of one term into every measure
of SPEC section 4; :func:`summarize_run` applies it per scenario x method x term of a
run folder and adds reliability, failure and redraw summaries.

The SE-based measures come per SE type (``cover_HC3``) and once more under their bare
name (``cover``, ``reject``, ``modse``, ...) for the method's default SE type
(:attr:`~micromacro_sim.estimators.base.Estimator.default_se`, named in column
``se_type``): the model SE of a one-step method, HC3 for the two-step methods, HC2 for
croon. So every method has coverage and rejection under the same column names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from micromacro_sim.core.errors import ConfigError
from micromacro_sim.core.results import SE_COLUMNS
from micromacro_sim.core.status import REASON_TEXT, Reason
from micromacro_sim.design.measures import check_interval_level
from micromacro_sim.run.manifest import ledger_digest
from micromacro_sim.run.reading import open_run_folder
from micromacro_sim.run.storage import read_table
from micromacro_sim.summaries.default_se import (
    DEFAULT_SE_MEASURES,
    default_se_types,
    with_default_se,
)
from micromacro_sim.summaries.factors import cell_labels, design_factors
from micromacro_sim.summaries.performance import performance
from micromacro_sim.summaries.truth import RunTruth, run_truth

__all__ = ["DEFAULT_SE_MEASURES", "RunSummary", "default_se_types", "performance",
           "summarize_run"]


@dataclass(frozen=True)
class RunSummary:
    """Tables summarizing one run folder.

    Attributes
    ----------
    performance : DataFrame
        One row per scenario x method x term; ``cell`` (a label naming every design
        factor's level) and the design factors (typed, see
        :mod:`micromacro_sim.summaries.factors`) follow ``label``.
    flags : DataFrame
        Per scenario x method: replications, flagged and failed counts and reasons.
    datasets : DataFrame
        Per scenario: reliability (alpha, ICC) and redraw counts; for adaptive
        replications also ``target_finished``, ``target_met``, ``target_binding``
        (``method/term/measure``), ``binding_mcse`` and ``binding_target``, and
        ``n_reps`` is the replications the cell used.
    partial : bool
        The run is not finished: counts are below the configured replications.
    factors : tuple of str
        Design-factor columns of ``performance`` (the fields that vary over the run's
        scenarios).
    scenarios : DataFrame or None
        Rows of the run's ``scenarios.parquet`` with results, in run order.
    estimands : DataFrame or None
        Every term's estimand per scenario on each scale (and origin, for the
        intercept), how it was obtained and the methods scored against it
        (docs/estimands.md).
    provenance : dict
        What was summarized: the folder, the digest of its shard ledger, the replications
        per scenario and any limit asked for (written as ``summary.json``).
    """

    performance: pd.DataFrame
    flags: pd.DataFrame
    datasets: pd.DataFrame
    partial: bool
    factors: tuple[str, ...] = ()
    scenarios: pd.DataFrame | None = None
    provenance: dict = field(default_factory=dict)
    estimands: pd.DataFrame | None = None


def _reasons(s: pd.Series) -> str:
    """Counts of reason codes, most frequent first: ``negative_variance (12); ...``."""
    counts = s[s != ""].value_counts()
    return "; ".join(f"{r} ({n})" for r, n in counts.items())


def _reason_texts(s: pd.Series) -> str:
    """As :func:`_reasons`, with each code's human text (for display)."""
    counts = s[s != ""].value_counts()
    return "; ".join(f"{_text(r)} ({n})" for r, n in counts.items())


def _text(code: str) -> str:
    try:
        return REASON_TEXT[Reason(code)]
    except ValueError:  # a code this version does not know: show it as stored
        return code


def _status_counts(est: pd.DataFrame) -> pd.DataFrame:
    """Per-replication status and reason code (derived for runs written before they were
    stored)."""
    if "status" not in est:
        ok = est["converged"] & est["admissible"] & np.isfinite(est["estimate"])
        est["status"] = np.where(ok, "ok", "flagged")
    if "reason_code" not in est:
        est["reason_code"] = ""
    return est


def summarize_run(run_dir: str | Path, *, alpha: float = 0.05,
                  include_flagged: bool = False, replications: int | None = None,
                  scenarios: list[str] | None = None) -> RunSummary:
    """Summarize every scenario x method x term of a run folder.

    Parameters
    ----------
    run_dir : path
    alpha : float
        Nominal level for coverage and rejection rates.
    include_flagged : bool
        Use flagged (non-converged or inadmissible) replications that have estimates
        too; by default only proper fits are summarized and the rest are counted.
    replications : int, optional
        Summarize only replications ``0 .. replications - 1`` of each scenario (what a
        config asked for; default: every replication the folder holds).
    scenarios : list of str, optional
        Summarize only these scenario keys (default: every scenario of the folder).
    """
    if not 0 < alpha < 1:  # also refuses nan
        raise ConfigError(f"alpha: expected a level strictly between 0 and 1, got {alpha!r}")
    folder = open_run_folder(run_dir)
    run_dir, manifest = folder.path, folder.manifest
    scen = folder.scenarios.set_index("scenario")
    keys = [k for k in manifest["scenarios"] if k in scen.index
            and (scenarios is None or k in scenarios)]
    est = read_table(run_dir, "estimates", keys)
    ds = read_table(run_dir, "datasets", keys)
    if replications is not None:
        est, ds = (t[t["replication"] < replications].reset_index(drop=True) for t in (est, ds))
    if est.empty:
        raise ConfigError(f"RUN_DIR: {str(run_dir)!r} has no finished replications yet")
    reps = int(manifest["replications"]) if replications is None else replications
    outcome = (manifest.get("adaptive") or {}).get("cells")
    if outcome:  # adaptive: each cell's first replications, as many as its rule used
        est, ds = (_first(t, outcome) for t in (est, ds))
    check_alpha_intervals(est, alpha)
    est = _status_counts(est)
    est["ok"] = est["status"] == "ok"
    rank = {k: i for i, k in enumerate(keys)}
    mrank = {m: i for i, m in enumerate(manifest["methods"])}
    cells = cell_labels(scen.loc[keys].reset_index())
    factors = design_factors(scen.loc[keys].reset_index())
    names = [c for c in factors.columns if c != "scenario"]
    truth = run_truth(manifest, folder.scenarios)
    perf_df = _performance_table(est, scen, truth, alpha, include_flagged, rank, mrank,
                                 default_se_types(manifest, est))
    perf_df = perf_df.merge(factors, on="scenario", how="left")
    perf_df.insert(2, "cell", perf_df["scenario"].map(cells))
    lead = ["scenario", "label", "cell", *names]
    perf_df = perf_df[lead + [c for c in perf_df.columns if c not in lead]]
    flags = _flag_table(est, rank, mrank)
    dsum = _dataset_table(ds, scen, cells, rank)
    done = set(dsum["scenario"])
    if outcome:
        dsum = _adaptive_columns(dsum, outcome)
        partial = manifest.get("status") != "complete" or not bool(dsum["target_finished"].all())
    else:
        partial = manifest.get("status") != "complete" or bool((dsum["n_reps"] < reps).any())
    counts = ds.groupby("scenario")["replication"].nunique()
    provenance = {"run_dir": str(run_dir), "ledger": ledger_digest(manifest),
                  "replications": {k: int(counts.get(k, 0)) for k in keys},
                  "replications_limit": replications, "alpha": alpha,
                  "include_flagged": include_flagged, "stale": False,
                  "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    return RunSummary(performance=perf_df.reset_index(drop=True), flags=flags,
                      datasets=dsum.reset_index(drop=True), partial=partial, factors=tuple(names),
                      scenarios=scen.loc[[k for k in keys if k in done]].reset_index(),
                      provenance=provenance,
                      estimands=truth.table([k for k in keys if k in done],
                                            list(manifest["methods"])))


def _first(table: pd.DataFrame, cells: dict) -> pd.DataFrame:
    """Rows of each adaptive cell's first ``replications``."""
    used = table["scenario"].map({k: c["replications"] for k, c in cells.items()})
    return table[table["replication"] < used.fillna(0)].reset_index(drop=True)


def _adaptive_columns(dsum: pd.DataFrame, cells: dict) -> pd.DataFrame:
    """Per cell: whether the adaptive rule finished, whether every target holds, the
    measure closest to (or furthest beyond) its target, its MCSE and target."""
    def col(name: str, default: object) -> pd.Series:
        return dsum["scenario"].map(lambda k: cells.get(k, {}).get(name, default))

    dsum = dsum.copy()
    dsum["target_finished"] = col("finished", False).astype(bool)
    dsum["target_met"] = col("met", False).astype(bool)
    dsum["target_binding"] = col("binding", "")
    dsum["binding_mcse"] = col("mcse", None).astype(float)
    dsum["binding_target"] = col("target", None).astype(float)
    return dsum


def _performance_table(est: pd.DataFrame, scen: pd.DataFrame, truth: RunTruth, alpha: float,
                       include_flagged: bool, rank: dict, mrank: dict,
                       se_types: dict[str, str]) -> pd.DataFrame:
    """One row of :func:`performance` measures per scenario x method x term, scored
    against the method's estimand (``truth``), with the bare measures of the method's
    default SE type (``se_types``)."""
    rows = []
    for (key, method, term), g in est.groupby(["scenario", "method", "term"], sort=False):
        used = g if include_flagged else g[g["ok"]]
        target = truth.estimand(key, method, term)
        theta = target.theta
        ses = {t: used[c].to_numpy() for t, c in SE_COLUMNS.items() if used[c].notna().any()}
        level = _interval_level(used)
        ci = ((used["ci_low"].to_numpy(), used["ci_high"].to_numpy())
              if level is not None else None)
        perf = performance(used["estimate"].to_numpy(), theta, ses,
                           used["df_resid"].to_numpy(), alpha=alpha, ci=ci)
        rows.append({
            "scenario": key,
            "label": scen.loc[key, "label"],
            "method": method,
            "term": term,
            "theta": theta,
            "scale": target.scale,
            "origin": target.origin,
            "theta_source": target.source,
            "null": truth.is_null(key, method, term),
            "n_reps": len(g),
            "n_flagged": int((~g["ok"]).sum()),
            "n_no_estimate": int((~np.isfinite(g["estimate"])).sum()),
            **with_default_se(perf, se_types.get(method, "classical"), level),
        })
    perf_df = pd.DataFrame(rows)
    perf_df["_m"] = perf_df["method"].map(mrank)
    perf_df["_s"] = perf_df["scenario"].map(rank)
    return perf_df.sort_values(["_s", "_m"], kind="stable").drop(columns=["_m", "_s"])


def _interval_level(rows: pd.DataFrame) -> float | None:
    """Level of the method's own intervals in ``rows`` (None when it reports none, or
    the folder predates the interval columns)."""
    if "ci_level" not in rows.columns:
        return None
    levels = rows["ci_level"].to_numpy(dtype=float)
    levels = levels[np.isfinite(levels)]
    return float(levels[0]) if levels.size else None


def check_alpha_intervals(est: pd.DataFrame, alpha: float) -> None:
    """Refuse an ``alpha`` that is not 1 - the level of a method's own intervals (its
    coverage and rejection come from them)."""
    if "ci_level" not in est.columns:
        return
    rows = est[np.isfinite(est["ci_level"].to_numpy(dtype=float))]
    for method, level in rows.groupby("method", sort=False)["ci_level"].first().items():
        check_interval_level(float(level), alpha, str(method))


def _flag_table(est: pd.DataFrame, rank: dict, mrank: dict) -> pd.DataFrame:
    """Per scenario x method: replications, flag counts by status and by reason code."""
    first = est.drop_duplicates(["scenario", "replication", "method"])
    flags = (
        first.groupby(["scenario", "method"], sort=False)
        .agg(
            n_reps=("ok", "size"),
            n_flagged=("ok", lambda s: int((~s).sum())),
            n_not_converged=("converged", lambda s: int((~s).sum())),
            n_inadmissible=("admissible", lambda s: int((~s).sum())),
            n_not_applicable=("status", lambda s: int((s == "not_applicable").sum())),
            n_error=("status", lambda s: int((s == "error").sum())),
            reasons=("reason_code", _reasons),
            reasons_text=("reason_code", _reason_texts),
        )
        .reset_index()
    )
    flags["flag_rate"] = flags["n_flagged"] / flags["n_reps"]
    return flags.sort_values(["scenario", "method"], kind="stable", key=lambda s: s.map(
        rank if s.name == "scenario" else mrank)).reset_index(drop=True)


def _dataset_table(ds: pd.DataFrame, scen: pd.DataFrame, cells: dict,
                   rank: dict) -> pd.DataFrame:
    """Per scenario: redraws, gate verdicts kept, alpha and ICC summaries."""
    dsum = (
        ds.groupby("scenario", sort=False)
        .agg(
            n_reps=("replication", "size"),
            redraws=("redraws", "sum"),
            reps_redrawn=("redraws", lambda s: int((s > 0).sum())),
            gate_failed_kept=("gate_passed", lambda s: int((~s).sum())),
            alpha_raw_mean=("alpha_raw", "mean"),
            alpha_std_mean=("alpha_std", "mean"),
            alpha_std_min=("alpha_std", "min"),
            alpha_std_max=("alpha_std", "max"),
            icc1_mean=("icc1", "mean"),
            icc2_mean=("icc2", "mean"),
        )
        .reset_index()
    )
    dsum["redraw_rate"] = dsum["reps_redrawn"] / dsum["n_reps"]
    dsum.insert(1, "cell", dsum["scenario"].map(cells))
    dsum = dsum.sort_values("scenario", key=lambda s: s.map(rank), kind="stable")
    return dsum.merge(scen[["label", "icc", "reliability"]], left_on="scenario",
                      right_index=True, how="left")
