"""The tables of a run report (text cells, formatted), built from a :class:`RunSummary`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from micromacro_sim.core.results import SE_TYPES
from micromacro_sim.reporting.bias_stat import bias_columns
from micromacro_sim.reporting.failures import failure_counts
from micromacro_sim.reporting.se_types import method_se_labels
from micromacro_sim.summaries.summarize import RunSummary

__all__ = ["Figure", "Section", "accuracy_table", "bias_table", "datasets_table", "facts",
           "flags_all_zero", "flags_table", "rate_table", "scenario_table"]

# ---------------------------------------------------------------------------- formatting
def _num(v: Any, digits: int = 3) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if not np.isfinite(f):
        return ""
    return f"{f:.{digits}f}"


def _with_mcse(v: Any, se: Any, digits: int) -> str:
    a = _num(v, digits)
    if not a:
        return ""
    b = _num(se, digits)
    return f"{a} ({b})" if b else a


def _cell_text(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple, np.ndarray)):
        return "[" + ", ".join(map(str, v)) + "]"
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    return str(v)


@dataclass(frozen=True)
class Figure:
    """A drawn PNG with its title and caption."""

    title: str
    path: Path
    caption: str


@dataclass(frozen=True)
class Section:
    """One titled part of the report, under a study ``question``.

    The figures of a section are shown under its question; its table goes to the tables
    at the end of the report (folded when long), unless ``inline``, when it follows the
    figures. A section without figures drawn and not ``inline`` has only its table.

    Attributes
    ----------
    title : str
    frame : DataFrame, optional
        The table (text cells).
    note : str
        What the table shows.
    figures : tuple of str
        Keys of the figures drawn for this section.
    question : str
        The study question the section answers.
    collapsed : bool
        Fold the table even when it is short.
    summary : str
        The summary line of a folded table (what it holds).
    lines : tuple of str
        Paragraphs shown before the figures.
    inline : bool
        Show the table in the section, after the figures.
    """

    title: str
    frame: pd.DataFrame | None = None
    note: str = ""
    figures: tuple[str, ...] = ()  # keys of the figures drawn in this section
    question: str = ""
    collapsed: bool = False
    summary: str = ""
    lines: tuple[str, ...] = ()
    inline: bool = False


# ---------------------------------------------------------------------------- content
def facts(manifest: dict[str, Any], summary: RunSummary,
           estimates: pd.DataFrame) -> list[tuple[str, str]]:
    ident = manifest.get("result_identity", {}) or {}
    cfg = manifest.get("config", {}) or {}
    done = summary.datasets["n_reps"]
    reps = manifest.get("replications", "")
    done_txt = (f"{int(done.min())}" if done.min() == done.max()
                else f"{int(done.min())} to {int(done.max())}")
    methods = cfg.get("methods") or ident.get("methods") or manifest.get("methods", [])
    engine = ident.get("engine", cfg.get("engine", "auto"))
    used = ""
    if "engine" in estimates.columns and not estimates.empty:
        per = (estimates.drop_duplicates(["scenario", "replication", "method"])
               .groupby("method", sort=False)["engine"]
               .agg(lambda s: ", ".join(f"{e} ({n})" for e, n in s.value_counts().items())))
        used = "; ".join(f"{m}: {e}" for m, e in per.items())
    adm = ident.get("admissibility", cfg.get("admissibility"))
    runs = manifest.get("runs", []) or []
    seconds = sum(float(r.get("seconds", 0) or 0) for r in runs)
    facts = [
        ("config name", str(manifest.get("name", ""))),
        ("description", str(manifest.get("description", "") or "")),
        ("status", str(manifest.get("status", "unknown"))),
        ("seed", str(manifest.get("seed", ""))),
        ("replications per scenario", f"{reps} configured, {done_txt} finished"),
        ("scenarios", _scenario_count(manifest, summary)),
        ("methods", ", ".join(_method_text(m) for m in methods)),
        ("admissibility policy", _mapping_text(adm)),
        ("engine", f"{engine}" + (f" (fits by engine, per method: {used})" if used else "")),
        ("result hash", str(manifest.get("result_hash", ""))),
        ("created", str(manifest.get("created", ""))),
        ("finished", str(manifest.get("finished", ""))),
        ("compute time", f"{seconds:.1f} s over {len(runs)} invocation(s)" if runs else ""),
        ("machine", _mapping_text(manifest.get("machine"))),
        ("versions", _mapping_text(manifest.get("versions"))),
    ]
    return [(k, v) for k, v in facts if v]


def _scenario_count(manifest: dict[str, Any], summary: RunSummary) -> str:
    total = len(manifest.get("scenarios", [])) or len(summary.datasets)
    with_results = len(summary.datasets)
    return str(total) if with_results == total else f"{total} ({with_results} with results)"


def _mapping_text(m: Any) -> str:
    if isinstance(m, dict):
        return ", ".join(f"{k} {v}" for k, v in m.items())
    return "" if m is None else str(m)


def _method_text(m: Any) -> str:
    if isinstance(m, dict) and len(m) == 1:
        label, opts = next(iter(m.items()))
        return f"{label} ({_mapping_text(opts)})" if opts else str(label)
    return str(m)


def scenario_table(scen: pd.DataFrame, done: pd.Series) -> pd.DataFrame:
    """One row per scenario: its cell label, key, finished replications and every column."""
    from micromacro_sim.summaries.factors import cell_labels

    cells = cell_labels(scen)
    rest = [c for c in scen.columns if c not in ("label", "scenario")]
    out = scen[["scenario", *rest]].copy()
    out.insert(0, "cell", scen["scenario"].map(cells))
    out.insert(2, "finished", scen["scenario"].map(done).fillna(0).astype(int))
    for c in out.columns:
        out[c] = out[c].map(_cell_text)
    return out.rename(columns={"scenario": "key"})


#: How the report names the intercept origins.
_ORIGIN_TEXT = {"x_zero": "x = 0", "latent_mean": "latent mean", "score_mean": "score mean"}


def estimands_table(summary: RunSummary, order: list[str]) -> pd.DataFrame | None:
    """Every term's estimand per scenario and scale (and origin, for the intercept) with
    the methods scored against it and how it was obtained; only the rows a method uses."""
    est = getattr(summary, "estimands", None)
    if est is None or est.empty:
        return None
    cells = dict(zip(summary.performance["scenario"], summary.performance["cell"],
                     strict=False))
    used = est[est["methods"] != ""].copy()
    used["_s"] = used["scenario"].map({k: i for i, k in enumerate(order)})
    used = used.sort_values("_s", kind="stable")
    return pd.DataFrame({
        "scenario": used["scenario"].map(cells).fillna(used["scenario"]),
        "term": used["term"], "scale": used["scale"],
        "origin": used["origin"].map(lambda o: _ORIGIN_TEXT.get(o, o)),
        "true value": used["theta"].map(lambda v: f"{v:.6g}"),
        "obtained by": used["source"], "methods": used["methods"],
    }).reset_index(drop=True)


def bias_table(perf: pd.DataFrame, stat: str = "mean", estimates: pd.DataFrame | None = None,
               *, include_flagged: bool = False) -> pd.DataFrame:
    """Percent bias (or bias where the true value is 0) of every term, per scenario and
    method, of the mean (default) or median estimate, with its MCSE."""
    perf = bias_columns(perf, stat, estimates, include_flagged=include_flagged)
    terms = list(dict.fromkeys(perf["term"]))
    rows = []
    for (_, label, method), g in perf.groupby(["scenario", "cell", "method"], sort=False):
        row: dict[str, str] = {"scenario": label, "method": method,
                               "K": f"{int(g['k'].min())}"}
        for term in terms:
            t = g[g["term"] == term]
            if t.empty:
                row[term] = ""
                continue
            r = t.iloc[0]
            if np.isfinite(r.get("shown_pct_bias", np.nan)):
                row[term] = _with_mcse(r["shown_pct_bias"], r["shown_pct_bias_mcse"], 2)
            else:  # true value 0: bias, not percent
                row[term] = "bias " + _with_mcse(r.get("shown_bias"), r.get("shown_bias_mcse"),
                                                 4)
        rows.append(row)
    return pd.DataFrame(rows)


def accuracy_table(perf: pd.DataFrame, se_focus: str | None = None) -> pd.DataFrame:
    """Point estimates, empirical SE and RMSE, and the model SE with its relative error:
    of each method's default SE type (``se_focus`` None; column ``SE`` names it), else
    classical and ``se_focus``."""
    out = pd.DataFrame({
        "scenario": perf["cell"],
        "method": perf["method"],
        "term": perf["term"],
        "true": perf["theta"].map(lambda v: f"{v:g}"),
        "K": perf["k"].astype(int).astype(str),
        "mean": perf["mean"].map(lambda v: _num(v, 4)),
        "median": perf["median"].map(lambda v: _num(v, 4)),
        "trimmed mean": perf["trimmed_mean"].map(lambda v: _num(v, 4)),
        "empSE (mcse)": [_with_mcse(a, b, 4) for a, b in zip(perf["empse"], perf["empse_mcse"],
                                                              strict=True)],
        "RMSE (mcse)": [_with_mcse(a, b, 4) for a, b in zip(perf["rmse"], perf["rmse_mcse"],
                                                             strict=True)],
    })
    if se_focus is None:
        out["SE"] = perf["method"].map(method_se_labels(perf))
        out["modSE"] = perf["modse"].map(lambda v: _num(v, 4)) if "modse" in perf else ""
        out["rel. error % (mcse)"] = (
            [_with_mcse(a, b, 1) for a, b in zip(perf["relerr"], perf["relerr_mcse"],
                                                 strict=True)]
            if "relerr" in perf else "")
        return out
    for t in dict.fromkeys(("classical", se_focus)):
        if f"modse_{t}" in perf.columns:
            out[f"modSE {t}"] = perf[f"modse_{t}"].map(lambda v: _num(v, 4))
            out[f"rel. error % {t} (mcse)"] = [
                _with_mcse(a, b, 1)
                for a, b in zip(perf[f"relerr_{t}"], perf[f"relerr_{t}_mcse"], strict=True)
            ]
    return out


def rate_table(perf: pd.DataFrame, measure: str, alpha: float,
               se_type: str | None = None) -> pd.DataFrame:
    """Coverage or rejection (``measure``) per row of ``perf`` and SE type, with the
    acceptance band; a * marks a rate outside it. With ``se_type`` None the columns
    ``default SE`` (each method's default type) and ``default`` (its rate) come first."""
    nominal = 1 - alpha if measure == "cover" else alpha
    types = [t for t in SE_TYPES if f"{measure}_{t}" in perf.columns]
    default = se_type is None and measure in perf.columns
    labels = method_se_labels(perf) if default else {}
    rows = []
    for _, r in perf.iterrows():
        target = measure == "cover" or bool(r.get("null", r["theta"] == 0))
        k = int(r["k"])
        half = 2 * np.sqrt(nominal * (1 - nominal) / k) if k > 0 else np.nan
        row = {"scenario": r["cell"], "method": r["method"], "term": r["term"],
               "true": f"{r['theta']:g}", "K": str(k)}
        if measure == "reject":
            row["rate is"] = "Type I error" if target else "power"
        inside = target and np.isfinite(half)
        if default:
            row["default SE"] = labels.get(r["method"], "")
            row["default"] = _rate_text(r, measure, nominal, half if inside else None)
        row["band"] = (f"{max(0.0, nominal - half):.3f} to {min(1.0, nominal + half):.3f}"
                       if inside else "")
        for t in types:
            row[t] = _rate_text(r, f"{measure}_{t}", nominal, half if inside else None)
        rows.append(row)
    return pd.DataFrame(rows)


def _rate_text(r: pd.Series, col: str, nominal: float, half: float | None) -> str:
    """A rate with its MCSE, `` *`` when outside ``nominal +/- half`` (None: no band)."""
    v = r.get(col)
    txt = _with_mcse(v, r.get(f"{col}_mcse"), 3)
    if txt and half is not None and abs(float(v) - nominal) > half:
        txt += " *"
    return txt


def _in_order(frame: pd.DataFrame, order: list[str], by: list[str]) -> pd.DataFrame:
    """Rows sorted by the run's scenario order (then ``by``, e.g. method order)."""
    rank = {k: i for i, k in enumerate(order)}
    keys = frame["scenario"].map(rank).fillna(len(rank))
    return (frame.assign(_rank=keys).sort_values(["_rank", *by], kind="stable")
            .drop(columns="_rank").reset_index(drop=True))


def flags_table(summary: RunSummary, order: list[str], methods: list[str]) -> pd.DataFrame:
    """Fit status counts per scenario and method, zero counts included (exclusive: every
    fit is ok, flagged, not applicable or an error)."""
    mrank = {m: i for i, m in enumerate(methods)}
    c = failure_counts(summary)
    f = _in_order(c.assign(_m=c["method"].map(mrank)), order, ["_m"])
    return pd.DataFrame({
        "scenario": f["cell"],
        "method": f["method"],
        "replications": f["n_reps"].astype(str),
        "not ok": f["failed"].astype(str),
        "share not ok": (f["failed"] / f["n_reps"]).map(lambda v: _num(v, 3)),
        "flagged": f["flagged"].astype(str),
        "not converged": f["not_converged"].astype(str),
        "inadmissible": f["inadmissible"].astype(str),
        "not applicable": f["not_applicable"].astype(str),
        "error": f["error"].astype(str),
        "reasons": f["reasons"].map(lambda r: "; ".join(f"{k} ({n})" for k, n in r.items())
                                    or "none"),
    })


def datasets_table(summary: RunSummary, order: list[str]) -> pd.DataFrame:
    d = _in_order(summary.datasets, order, [])
    return pd.DataFrame({
        "scenario": d["cell"],
        "replications": d["n_reps"].astype(str),
        "redraws": d["redraws"].astype(int).astype(str),
        "replications redrawn": d["reps_redrawn"].astype(str),
        "redraw rate": d["redraw_rate"].map(lambda v: _num(v, 3)),
        "gate failed, kept": d["gate_failed_kept"].astype(str),
        "ICC (true)": d["icc"].map(lambda v: _num(v, 3)),
        "reliability (true)": d["reliability"].map(lambda v: _num(v, 3)),
        "alpha raw (mean)": d["alpha_raw_mean"].map(lambda v: _num(v, 3)),
        "alpha std (mean)": d["alpha_std_mean"].map(lambda v: _num(v, 3)),
        "alpha std (min to max)": [f"{_num(a)} to {_num(b)}" if _num(a) else ""
                                   for a, b in zip(d["alpha_std_min"], d["alpha_std_max"],
                                                   strict=True)],
        "ICC(1) (mean)": d["icc1_mean"].map(lambda v: _num(v, 3)),
        "ICC(2) (mean)": d["icc2_mean"].map(lambda v: _num(v, 3)),
    })


def flags_all_zero(summary: Any) -> bool:
    """No fit of any scenario and method was flagged, not applicable or an error."""
    f = summary.flags
    cols = [c for c in ("n_flagged", "n_not_converged", "n_inadmissible", "n_not_applicable",
                        "n_error") if c in f.columns]
    return bool((f[cols].to_numpy() == 0).all())
