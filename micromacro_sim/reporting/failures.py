"""The failure report of a run: how often each method failed, and how failures were handled.

Reported even when nothing failed, as simulation studies should (Pawel et al. 2026): per
scenario and method the share of replications whose fit was flagged (not converged, or
converged to an inadmissible solution), not applicable or an error, by reason code; the
share of replications whose dataset was redrawn and the extra datasets drawn; and the
handling rule (the run's admissibility policy, and which fits enter the performance
measures).

The counts come from the summary's flags table (per scenario and method) and datasets
table (per scenario: redraws). The statuses are exclusive: every fit is ``ok``,
``flagged``, ``not_applicable`` or ``error``.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

from micromacro_sim.core.status import ERROR_REASONS, NOT_APPLICABLE_REASONS, REASON_TEXT, Reason

__all__ = ["failure_counts", "failure_table", "handling_text", "has_failures", "headline",
           "method_lines", "reason_table"]

_REASON = re.compile(r"(\S+) \((\d+)\)")


def _parse_reasons(text: str) -> dict[str, int]:
    return {code: int(n) for code, n in _REASON.findall(text or "")}


def failure_counts(summary: Any) -> pd.DataFrame:
    """Exclusive failure counts per scenario x method, with the scenario's redraws.

    Columns: ``scenario``, ``cell``, ``method``, ``n_reps``, ``failed`` (any status but
    ok), ``flagged``, ``not_converged`` and ``inadmissible`` (the flagged fits that did
    not converge, and those that converged to an inadmissible solution), ``not_applicable``,
    ``error``, ``reasons`` (code -> fits), and per scenario ``ds_reps``, ``reps_redrawn``,
    ``redraws`` (extra datasets drawn) and ``gate_failed_kept``.
    """
    f = summary.flags
    out = pd.DataFrame({"scenario": f["scenario"], "method": f["method"],
                        "n_reps": f["n_reps"].astype(int)})
    na = f.get("n_not_applicable", pd.Series(0, index=f.index)).astype(int)
    err = f.get("n_error", pd.Series(0, index=f.index)).astype(int)
    out["failed"] = f["n_flagged"].astype(int)
    out["flagged"] = (out["failed"] - na - err).clip(lower=0)
    # fits without estimates (not applicable, error) are recorded as not converged
    nc = (f["n_not_converged"].astype(int) - na - err).clip(lower=0)
    out["not_converged"] = np.minimum(nc, out["flagged"])
    out["inadmissible"] = out["flagged"] - out["not_converged"]
    out["not_applicable"], out["error"] = na, err
    out["reasons"] = f["reasons"].map(_parse_reasons)
    d = summary.datasets.set_index("scenario")
    cells = d["cell"] if "cell" in d.columns else d["label"]
    out.insert(1, "cell", out["scenario"].map(cells).fillna(out["scenario"]).astype(str))
    out["ds_reps"] = out["scenario"].map(d["n_reps"]).fillna(0).astype(int)
    for col in ("reps_redrawn", "redraws", "gate_failed_kept"):
        vals = d[col] if col in d.columns else pd.Series(0, index=d.index)
        out[col] = out["scenario"].map(vals).fillna(0).astype(int)
    return out


def has_failures(counts: pd.DataFrame) -> bool:
    """Any fit not ok, any dataset redrawn, or any gate failure kept."""
    cols = ["failed", "reps_redrawn", "redraws", "gate_failed_kept"]
    return bool((counts[cols].to_numpy() > 0).any())


def _policy(manifest: dict[str, Any]) -> dict[str, Any]:
    ident = manifest.get("result_identity", {}) or {}
    cfg = manifest.get("config", {}) or {}
    adm = ident.get("admissibility") or cfg.get("admissibility") or {}
    return {"policy": adm.get("policy", "redraw"), "gate": adm.get("gate", "cfa") or "none",
            "max_redraws": adm.get("max_redraws", 100)}


def handling_text(manifest: dict[str, Any], include_flagged: bool) -> str:
    """The handling rule: the admissibility policy and which fits enter the measures."""
    p = _policy(manifest)
    if p["policy"] == "redraw":
        rule = (f"Admissibility policy: redraw (gate {p['gate']}, max_redraws "
                f"{p['max_redraws']}): a dataset is generated again while the {p['gate']} gate "
                f"finds it improper, up to {p['max_redraws']} times per replication; then the "
                "last dataset is kept and counted as a gate failure kept.")
    else:
        rule = (f"Admissibility policy: flag (gate {p['gate']}): datasets are never redrawn "
                "(max_redraws does not apply)"
                + (f"; the {p['gate']} gate's verdict is recorded." if p["gate"] != "none"
                   else "."))
    use = ("Flagged fits that have estimates are included in the performance measures "
           "(--include-flagged); " if include_flagged else
           "Flagged fits are excluded from the performance measures (micromacro report "
           "--include-flagged includes those that have estimates); ")
    return (f"{rule} Every fit is ok, flagged (not converged, or converged to an inadmissible "
            "solution), not applicable (the method cannot be used on the dataset) or an error "
            f"(the method's code raised). {use}fits that are not applicable or an error have no "
            "estimates. K in the tables counts the fits used.")


def headline(counts: pd.DataFrame) -> str:
    """One line: no failures in K cells, or how many cells and fits failed."""
    n_cells = len(counts)
    if not has_failures(counts):
        return (f"No failures in {n_cells} scenario x method cells: every fit converged to an "
                "admissible solution, every method was applicable, none raised an error, and "
                "no dataset was redrawn.")
    bad = int((counts["failed"] > 0).sum())
    fits, failed = int(counts["n_reps"].sum()), int(counts["failed"].sum())
    per = counts.drop_duplicates("scenario")
    reps, redrawn = int(per["ds_reps"].sum()), int(per["reps_redrawn"].sum())
    text = (f"Failures in {bad} of {n_cells} scenario x method cells: {failed} of {fits} fits "
            f"({_pct(failed, fits)}) were not ok.")
    if redrawn or int(per["redraws"].sum()):
        text += (f" Datasets redrawn in {redrawn} of {reps} replications "
                 f"({_pct(redrawn, reps)}), {int(per['redraws'].sum())} extra datasets drawn.")
    kept = int(per["gate_failed_kept"].sum())
    if kept:
        text += f" Gate failures kept: {kept} of {reps} replications."
    return text


def method_lines(counts: pd.DataFrame) -> str:
    """Per method over every scenario: the fits not ok and their share."""
    g = counts.groupby("method", sort=False)[["failed", "n_reps"]].sum()
    return "By method, fits not ok: " + "; ".join(
        f"{m} {int(r.failed)} of {int(r.n_reps)} ({_pct(r.failed, r.n_reps)})"
        for m, r in g.iterrows()) + "."


def _pct(n: float, d: float) -> str:
    if not d:
        return ""
    p = 100 * n / d
    return "0%" if n == 0 else ("<0.1%" if p < 0.1 else f"{p:.1f}%")


def _share(n: int, d: int) -> str:
    return "0" if n == 0 else f"{_pct(n, d)} ({n})"


def failure_table(counts: pd.DataFrame) -> pd.DataFrame:
    """Shares of replications per scenario x method with any failure or redraw (count in
    parentheses); the reason codes with their shares."""
    rows = counts[(counts[["failed", "reps_redrawn", "redraws", "gate_failed_kept"]]
                   .to_numpy() > 0).any(axis=1)]
    out = []
    for r in rows.itertuples(index=False):
        n = int(r.n_reps)
        out.append({
            "scenario": r.cell, "method": r.method, "replications": str(n),
            "any failure": _share(r.failed, n), "flagged": _share(r.flagged, n),
            "not converged": _share(r.not_converged, n),
            "inadmissible": _share(r.inadmissible, n),
            "not applicable": _share(r.not_applicable, n), "error": _share(r.error, n),
            "redrawn": _share(r.reps_redrawn, r.ds_reps), "redraws": str(r.redraws),
            "gate failed, kept": _share(r.gate_failed_kept, r.ds_reps),
            "by reason code": "; ".join(f"{c} {_pct(k, n)} ({k})"
                                        for c, k in r.reasons.items()) or "none",
        })
    table = pd.DataFrame(out)
    if not table.empty and not (rows["gate_failed_kept"] > 0).any():
        table = table.drop(columns="gate failed, kept")
    return table


def _meaning(code: str) -> str:
    try:
        return REASON_TEXT[Reason(code)]
    except ValueError:  # a code this version does not know: shown as stored
        return code


def _kind(code: str) -> str:
    try:
        reason = Reason(code)
    except ValueError:
        return "flagged"
    if reason in NOT_APPLICABLE_REASONS:
        return "not applicable"
    return "error" if reason in ERROR_REASONS else "flagged"


def reason_table(counts: pd.DataFrame) -> pd.DataFrame:
    """Every reason code of the run: its meaning, status, fits, share of the methods' fits
    and the methods it concerns."""
    tally: dict[str, dict[str, int]] = {}
    for r in counts.itertuples(index=False):
        for code, k in r.reasons.items():
            tally.setdefault(code, {})
            tally[code][r.method] = tally[code].get(r.method, 0) + k
    reps = counts.groupby("method", sort=False)["n_reps"].sum()
    rows = []
    for code, per in sorted(tally.items(), key=lambda kv: -sum(kv[1].values())):
        n = sum(per.values())
        rows.append({"reason code": code, "meaning": _meaning(code), "status": _kind(code),
                     "fits": str(n),
                     "share of the methods' fits": _pct(n, int(reps[list(per)].sum())),
                     "methods": ", ".join(f"{m} ({k})" for m, k in per.items())})
    return pd.DataFrame(rows)
