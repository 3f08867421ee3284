"""Foster-Johnson & Kromrey (2018): Type I error and power of group means vs adjusted
means with classical and heteroscedasticity-consistent SEs, and which of their
conclusions hold in this run.

Their tables are not available, so nothing is compared number by number; the study they
describe is built (``configs/fjk2018.yaml``) and each stated conclusion is checked.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from micromacro_sim.estimators import OLS_SE_TYPES as SE_TYPES
from micromacro_sim.reproduce import Reproduction
from micromacro_sim.reproduce._common import SUMMARY_NOTES, cell_frame, run_study, summary_tables
from micromacro_sim.reproduce._figures import rate_figure
from micromacro_sim.reproduce._verdicts import (
    AGREES,
    DISAGREES,
    INCONCLUSIVE,
    NO_ESTIMATE,
    RATE_MARGIN,
    SMALL,
    Z_CRIT,
    judge,
    rule_note,
)
from micromacro_sim.summaries.summarize import RunSummary

NAME = "fjk2018"
DESCRIPTION = ("Foster-Johnson & Kromrey 2018: Type I error and power of group means vs CV "
               "adjusted means, classical vs HC0-HC3 SEs, balanced and unbalanced groups")
CONFIG = "fjk2018.yaml"

CELL_COLUMNS = ("n_groups", "group_size", "icc", "reliability", "beta_z", "beta_xi")
TERMS = ("z", "xi")
#: Bradley's liberal criterion for a nominal .05 test: a Type I error rate in [.025, .075].
BRADLEY = (0.025, 0.075)
ROBUST = tuple(t for t in SE_TYPES if t != "classical")

CAPTIONS = {
    "nominal": "cells per verdict: Type I rate vs .05, coverage vs .95 (exact references); "
    f"margin {RATE_MARGIN.value:g} (Bradley), interval rate +/- {Z_CRIT:g} MCSE; small = "
    "small difference.",
}


def _rate_table(summary: RunSummary, cells: pd.DataFrame, kind: str) -> pd.DataFrame:
    """Rejection (``reject``) or coverage (``cover``) per cell, method, term and SE type."""
    p = summary.performance
    p = p[p["term"].isin(TERMS)]
    cols = ["scenario", "method", "term", "theta", "k"]
    for t in SE_TYPES:
        cols += [c for c in (f"{kind}_{t}", f"{kind}_{t}_mcse") if c in p.columns]
        if kind == "cover" and f"becover_{t}" in p.columns:
            cols.append(f"becover_{t}")
    out = cells.merge(p[cols], on="scenario", how="inner")
    out.insert(len(cells.columns) + 2, "test",
               np.where(out["theta"] == 0, "Type I", "power"))
    return out.drop(columns="scenario")


def _mean(frame: pd.DataFrame, col: str) -> tuple[float, float]:
    """Mean rate over cells and its MCSE (cells are independent)."""
    v = frame[col].to_numpy(dtype=float)
    m = frame[f"{col}_mcse"].to_numpy(dtype=float) if f"{col}_mcse" in frame else np.zeros_like(v)
    ok = np.isfinite(v)
    if not ok.any():
        return math.nan, math.nan
    return float(v[ok].mean()), float(np.sqrt(np.sum(m[ok] ** 2)) / ok.sum())


def _outside(frame: pd.DataFrame, col: str) -> int:
    v = frame[col].to_numpy(dtype=float)
    return int(np.sum((v < BRADLEY[0]) | (v > BRADLEY[1])))


def conclusions(reject: pd.DataFrame) -> pd.DataFrame:
    """Check each FJK conclusion on the rejection table; one row per claim with numbers.

    Parameters
    ----------
    reject : DataFrame
        Output of the rejection table: method, term, test ("Type I"/"power") and
        ``reject_<SE type>`` columns with MCSEs.

    Returns
    -------
    DataFrame
        claim, holds ("yes", "no", "partly") and evidence (the numbers).
    """
    rows = []

    def sel(method: str, term: str, test: str) -> pd.DataFrame:
        return reject[(reject["method"] == method) & (reject["term"] == term)
                      & (reject["test"] == test)]

    # 1. adjusted means give no Type I advantage (per term, classical and HC3)
    parts, verdicts = [], []
    for term in TERMS:
        u, c = sel("unadjusted", term, "Type I"), sel("croon", term, "Type I")
        if u.empty or c.empty:
            continue
        for se in ("classical", "HC3"):
            col = f"reject_{se}"
            ou, oc = _outside(u, col), _outside(c, col)
            mu, su = _mean(u, col)
            mc, sc = _mean(c, col)
            verdicts.append(oc >= ou)
            parts.append(f"{term}/{se}: unadjusted mean {mu:.3f} ({su:.3f}), {ou} of {len(u)} "
                         f"cells outside [.025, .075]; croon mean {mc:.3f} ({sc:.3f}), {oc} of "
                         f"{len(c)} outside")
    rows.append({"claim": "adjusted means give no Type I error advantage",
                 "holds": _holds(verdicts), "evidence": "; ".join(parts)})

    # 2. adjusted means have less power (xi)
    parts, verdicts = [], []
    u, c = sel("unadjusted", "xi", "power"), sel("croon", "xi", "power")
    if not u.empty and not c.empty:
        for se in ("classical", "HC3"):
            col = f"reject_{se}"
            mu, su = _mean(u, col)
            mc, sc = _mean(c, col)
            m = u[["n_groups", "group_size", "icc", "beta_z", "beta_xi", col]].merge(
                c[["n_groups", "group_size", "icc", "beta_z", "beta_xi", col]],
                on=["n_groups", "group_size", "icc", "beta_z", "beta_xi"],
                suffixes=("_u", "_c"))
            fewer = int((m[f"{col}_c"] < m[f"{col}_u"]).sum())
            verdicts.append(mc < mu)
            parts.append(f"xi/{se}: power unadjusted {mu:.3f} ({su:.3f}) vs croon {mc:.3f} "
                         f"({sc:.3f}); croon lower in {fewer} of {len(m)} cells")
    rows.append({"claim": "adjusted means have less power", "holds": _holds(verdicts),
                 "evidence": "; ".join(parts)})

    # 3. robust SEs add power (unadjusted, xi), with their Type I error beside
    parts, verdicts = [], []
    u, t1 = sel("unadjusted", "xi", "power"), sel("unadjusted", "xi", "Type I")
    if not u.empty:
        base, base_se = _mean(u, "reject_classical")
        parts.append(f"unadjusted xi power classical {base:.3f} ({base_se:.3f})")
        for se in ROBUST:
            m, s = _mean(u, f"reject_{se}")
            typ1, _ = _mean(t1, f"reject_{se}") if not t1.empty else (math.nan, math.nan)
            verdicts.append(m > base)
            parts.append(f"{se} {m:.3f} ({s:.3f}; Type I {typ1:.3f})")
    rows.append({"claim": "robust (HC) standard errors add power", "holds": _holds(verdicts),
                 "evidence": "; ".join(parts)})

    # 4. recommendation: group means with robust SEs (HC3 here)
    parts, verdicts = [], []
    u1 = sel("unadjusted", "xi", "Type I")
    up, cp = sel("unadjusted", "xi", "power"), sel("croon", "xi", "power")
    uz = sel("unadjusted", "z", "Type I")
    if not u1.empty and not up.empty:
        out1 = _outside(u1, "reject_HC3")
        verdicts.append(out1 == 0)
        parts.append(f"unadjusted+HC3 xi Type I outside [.025, .075] in {out1} of {len(u1)} cells")
        mu, su = _mean(up, "reject_HC3")
        mc, sc = _mean(cp, "reject_HC3") if not cp.empty else (math.nan, math.nan)
        verdicts.append(not mc > mu)
        parts.append(f"xi power unadjusted+HC3 {mu:.3f} ({su:.3f}) vs croon+HC3 {mc:.3f} "
                     f"({sc:.3f})")
    if not uz.empty:
        mz, sz = _mean(uz, "reject_HC3")
        parts.append(f"caveat: unadjusted+HC3 Z Type I (beta_z = 0, beta_xi != 0) {mz:.3f} "
                     f"({sz:.3f}), {_outside(uz, 'reject_HC3')} of {len(uz)} cells outside "
                     "[.025, .075] (xi leaks into Z when r(Z, xi) != 0), and the xi estimate "
                     "stays attenuated (see coverage)")
    rows.append({"claim": "recommendation: group means with robust SEs (for testing xi)",
                 "holds": _holds(verdicts), "evidence": "; ".join(parts)})
    return pd.DataFrame(rows)


#: Nominal values the rates are judged against (analytic: MCSE 0).
NOMINAL = {"Type I": ("reject", 0.05), "coverage": ("cover", 0.95)}
_COUNTS = {AGREES: "agrees", SMALL: "small", INCONCLUSIVE: "inconclusive",
           DISAGREES: "disagrees", NO_ESTIMATE: "no_est"}


def nominal_table(reject: pd.DataFrame, coverage: pd.DataFrame) -> pd.DataFrame:
    """Type I error rates (vs .05) and coverage (vs .95) judged cell by cell, counted.

    Each cell's rate is compared with the nominal value by :func:`~._verdicts.judge`
    (reference MCSE 0, margin :data:`~._verdicts.RATE_MARGIN`, Bradley's liberal band).
    The rate's MCSE is sqrt(V/K) with V the larger of P(1-P) at the estimate and at the
    nominal value, so that a rate of 0 or 1 in few replications is not taken as exact.

    Parameters
    ----------
    reject, coverage : DataFrame
        Rejection and coverage tables: method, term, test, k and ``reject_<SE>`` /
        ``cover_<SE>`` columns.

    Returns
    -------
    DataFrame
        method, term, se, measure, cells, mean rate and the count of each verdict.
    """
    rows = []
    for measure, (kind, nominal) in NOMINAL.items():
        frame = reject[reject["test"] == "Type I"] if kind == "reject" else coverage
        for (method, term), g in frame.groupby(["method", "term"], sort=False):
            for se in SE_TYPES:
                col = f"{kind}_{se}"
                if col not in g.columns:
                    continue
                p = g[col].to_numpy(dtype=float)
                k = g["k"].to_numpy(dtype=float)
                var = np.maximum(p * (1 - p), nominal * (1 - nominal))
                with np.errstate(divide="ignore", invalid="ignore"):
                    mcse = np.sqrt(var / k)
                verdicts = [judge(a, b, nominal, 0.0, RATE_MARGIN.value)["verdict"]
                            for a, b in zip(p, mcse, strict=True)]
                row = {"method": method, "term": term, "se": se, "measure": measure,
                       "cells": len(p), "mean": float(np.nanmean(p)) if len(p) else math.nan}
                row.update({name: verdicts.count(v) for v, name in _COUNTS.items()})
                rows.append(row)
    return pd.DataFrame(rows)


def _holds(verdicts: list[bool]) -> str:
    if not verdicts:
        return "not tested"
    if all(verdicts):
        return "yes"
    return "no" if not any(verdicts) else "partly"


def reproduce(run_dir: str | Path, *, replications: int | None = None, n_jobs: int | None = None,
              engine: str | None = None, overwrite: bool = False) -> Reproduction:
    """Run (or resume) the fjk2018 config in ``run_dir`` and check FJK's conclusions.

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
    cells = cell_frame(cfg, CELL_COLUMNS)
    reject = _rate_table(summary, cells, "reject")
    coverage = _rate_table(summary, cells, "cover")
    tables = {
        "conclusions": conclusions(reject),
        "nominal": nominal_table(reject, coverage),
        "rejection": reject,
        "coverage": coverage,
        **summary_tables(summary, cells),
    }
    notes = [
        "FJK's tables are not available: the design they describe is rebuilt (Type I error with "
        "a zero coefficient, power with beta_xi .15 and .3, balanced and unbalanced groups, "
        "classical vs HC0-HC3 SEs, unadjusted vs CV-adjusted means) and each conclusion is "
        "checked; 'holds' is yes / partly / no over the comparisons listed in its evidence.",
        "nominal: every cell's Type I error rate (cells with a zero coefficient) against .05 "
        "and every cell's coverage against .95, judged by the verdict rule below with the "
        f"nominal value as an exact reference; {RATE_MARGIN.describe()}. The columns count "
        "cells per verdict; 'disagrees' means significantly outside Bradley's band.",
        rule_note(Z_CRIT),
        "rejection: two-sided t tests at .05 with the residual df; 'Type I' rows have a true "
        "coefficient of 0, 'power' rows a non-zero one. MCSE = sqrt(P(1-P)/K); means over cells "
        "carry the MCSE sqrt(sum mcse^2)/cells. Bradley's liberal criterion [.025, .075] judges "
        "a Type I error rate.",
        "coverage: 95% intervals per SE type; becover_* is bias-eliminated coverage (interval "
        "checked against the mean estimate), which separates the attenuation of the group-mean "
        "estimate from SE trouble.",
        "Rates use the fits that are converged and admissible (K per row); croon's "
        "inadmissible solutions (S_xixi <= 0 or R <= 0) are left out and counted in failures, "
        "so its rates are conditional on an admissible adjustment.",
        "Two-step SEs ignore the first step's uncertainty (croon's scores are estimated).",
        *SUMMARY_NOTES,
    ]
    return Reproduction(study=NAME, description=DESCRIPTION, run_dir=run_dir,
                        replications=cfg.replications, tables=tables, notes=notes,
                        partial=summary.partial, captions=CAPTIONS,
                        figures={"rates": rate_figure(reject, alpha=0.05, power=0.80,
                                                      band=BRADLEY)})
