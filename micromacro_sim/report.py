"""A self-contained report of a run folder: facts, tables and figures.

:func:`write_report` reads any run folder (a reproduction or a user's own grid) and
writes either one HTML file with the figures embedded as base64 PNGs, or a Markdown file
with the PNGs in a ``figures`` folder beside it. :func:`add_parser` adds the
``micromacro report RUN_DIR`` sub-command to an ``argparse`` parser.
"""

from __future__ import annotations

import argparse
import base64
import html
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .atomic import write_text
from .errors import ConfigError
from .estimators import SE_TYPES
from .storage import read_manifest, read_table
from .summarize import RunSummary, summarize_run

__all__ = ["add_parser", "write_report"]

FORMATS = ("html", "md")


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
class _Figure:
    title: str
    path: Path
    caption: str


@dataclass(frozen=True)
class _Section:
    title: str
    frame: pd.DataFrame | None = None
    note: str = ""
    figures: tuple[str, ...] = ()  # keys of the figures drawn in this section


# ---------------------------------------------------------------------------- content
def _facts(manifest: dict[str, Any], summary: RunSummary,
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


def _scenario_table(scen: pd.DataFrame, done: pd.Series) -> pd.DataFrame:
    first = [c for c in ("label", "scenario") if c in scen.columns]
    rest = [c for c in scen.columns if c not in first]
    out = scen[first + rest].copy()
    out.insert(len(first), "finished", scen["scenario"].map(done).fillna(0).astype(int))
    for c in out.columns:
        out[c] = out[c].map(_cell_text)
    return out.rename(columns={"scenario": "key"})


def _bias_table(perf: pd.DataFrame) -> pd.DataFrame:
    terms = list(dict.fromkeys(perf["term"]))
    rows = []
    for (_, label, method), g in perf.groupby(["scenario", "label", "method"], sort=False):
        row: dict[str, str] = {"scenario": label, "method": method,
                               "K": f"{int(g['k'].min())}"}
        for term in terms:
            t = g[g["term"] == term]
            if t.empty:
                row[term] = ""
                continue
            r = t.iloc[0]
            if np.isfinite(r.get("pct_bias", np.nan)):
                row[term] = _with_mcse(r["pct_bias"], r["pct_bias_mcse"], 2)
            else:  # true value 0: bias, not percent
                row[term] = "bias " + _with_mcse(r.get("bias"), r.get("bias_mcse"), 4)
        rows.append(row)
    return pd.DataFrame(rows)


def _accuracy_table(perf: pd.DataFrame, se_focus: str) -> pd.DataFrame:
    out = pd.DataFrame({
        "scenario": perf["label"],
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
    for t in dict.fromkeys(("classical", se_focus)):
        if f"modse_{t}" in perf.columns:
            out[f"modSE {t}"] = perf[f"modse_{t}"].map(lambda v: _num(v, 4))
            out[f"rel. error % {t} (mcse)"] = [
                _with_mcse(a, b, 1)
                for a, b in zip(perf[f"relerr_{t}"], perf[f"relerr_{t}_mcse"], strict=True)
            ]
    return out


def _rate_table(perf: pd.DataFrame, measure: str, alpha: float) -> pd.DataFrame:
    nominal = 1 - alpha if measure == "cover" else alpha
    types = [t for t in SE_TYPES if f"{measure}_{t}" in perf.columns]
    rows = []
    for _, r in perf.iterrows():
        target = measure == "cover" or r["theta"] == 0
        k = int(r["k"])
        half = 2 * np.sqrt(nominal * (1 - nominal) / k) if k > 0 else np.nan
        row = {"scenario": r["label"], "method": r["method"], "term": r["term"],
               "true": f"{r['theta']:g}", "K": str(k)}
        if measure == "reject":
            row["rate is"] = "Type I error" if target else "power"
        row["band"] = (f"{max(0.0, nominal - half):.3f} to {min(1.0, nominal + half):.3f}"
                       if target and np.isfinite(half) else "")
        for t in types:
            v, se = r.get(f"{measure}_{t}"), r.get(f"{measure}_{t}_mcse")
            txt = _with_mcse(v, se, 3)
            if txt and target and np.isfinite(half) and abs(float(v) - nominal) > half:
                txt += " *"
            row[t] = txt
        rows.append(row)
    return pd.DataFrame(rows)


def _in_order(frame: pd.DataFrame, order: list[str], by: list[str]) -> pd.DataFrame:
    """Rows sorted by the run's scenario order (then ``by``, e.g. method order)."""
    rank = {k: i for i, k in enumerate(order)}
    keys = frame["scenario"].map(rank).fillna(len(rank))
    return (frame.assign(_rank=keys).sort_values(["_rank", *by], kind="stable")
            .drop(columns="_rank").reset_index(drop=True))


def _flags_table(summary: RunSummary, order: list[str], methods: list[str]) -> pd.DataFrame:
    mrank = {m: i for i, m in enumerate(methods)}
    f = _in_order(summary.flags.assign(_m=summary.flags["method"].map(mrank)), order, ["_m"])
    labels = summary.datasets.set_index("scenario")["label"]
    return pd.DataFrame({
        "scenario": f["scenario"].map(labels).fillna(f["scenario"]),
        "method": f["method"],
        "replications": f["n_reps"].astype(str),
        "flagged": f["n_flagged"].astype(str),
        "flag rate": f["flag_rate"].map(lambda v: _num(v, 3)),
        "not converged": f["n_not_converged"].astype(str),
        "inadmissible": f["n_inadmissible"].astype(str),
        "reasons": f["reasons"].replace("", "none"),
    })


def _datasets_table(summary: RunSummary, order: list[str]) -> pd.DataFrame:
    d = _in_order(summary.datasets, order, [])
    return pd.DataFrame({
        "scenario": d["label"],
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


def _figures(summary: RunSummary, estimates: pd.DataFrame, scen: pd.DataFrame, folder: Path,
             *, alpha: float, include_flagged: bool) -> dict[str, _Figure]:
    from . import plots

    plots.require_matplotlib()
    perf = summary.performance
    # intervals and tests for the intercept are rarely of interest: its rates are in the
    # tables, the figures show the slopes
    terms = [t for t in dict.fromkeys(perf["term"]) if t != "intercept"] or None
    figs = {"bias": _Figure(
        "Percent bias", plots.plot_percent_bias(summary, folder / "percent_bias.png"),
        "Percent bias of each method per scenario cell, one panel per term (bias where the "
        "true value is 0); bars are +/- 2 Monte Carlo SEs.")}
    if any(f"cover_{t}" in perf.columns for t in SE_TYPES):
        figs["cover"] = (_Figure(
            "Coverage", plots.plot_coverage(summary, folder / "coverage.png", alpha=alpha,
                                          terms=terms),
            f"Coverage of the {100 * (1 - alpha):g}% intervals per SE type (slopes; the "
            "intercept is in the table); grey boxes: "
            "nominal level +/- 2 sqrt(p(1-p)/K), the range a correct method falls in 95% of "
            "the time."))
        figs["reject"] = (_Figure(
            "Rejection rate", plots.plot_rejection(summary, folder / "rejection.png",
                                                   alpha=alpha, terms=terms),
            f"Rejection of H0: term = 0 at alpha = {alpha:g} per SE type. Where the true value "
            "is 0 it is a Type I error (grey: acceptance band); elsewhere it is power."))
    if "xi" in set(estimates.get("term", pd.Series(dtype=str))):
        figs["xi"] = (_Figure(
            "Distribution of the xi estimates",
            plots.plot_estimates(estimates, scen, folder / "xi_estimates.png", term="xi",
                                 methods=list(dict.fromkeys(perf["method"])),
                                 include_flagged=include_flagged),
            "Estimates of the xi coefficient per method, one panel per scenario; dashed line: "
            "true value."))
    return figs


# ---------------------------------------------------------------------------- rendering
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1200px;padding:0 1em;color:#222;line-height:1.4}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0}
th,td{border:1px solid #ddd;padding:.25em .55em;text-align:right;vertical-align:top}
th{background:#f4f4f4}td:first-child,td:nth-child(2){text-align:left}
.facts td{text-align:left}.note{color:#555;font-size:.85em}
.partial{background:#fff3cd;border:2px solid #d39e00;color:#6b4f00;padding:.8em 1em;
font-weight:bold;font-size:1.1em;margin:1em 0}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#555;font-size:.85em}.wide{overflow-x:auto}
"""


def _partial_text(summary: RunSummary, manifest: dict[str, Any]) -> str:
    done = int(summary.datasets["n_reps"].sum())
    reps = manifest.get("replications")
    n_scen = len(manifest.get("scenarios", [])) or len(summary.datasets)
    want = f" of {int(reps) * n_scen}" if isinstance(reps, int) else ""
    empty = n_scen - len(summary.datasets)
    none = f" {empty} of {n_scen} scenarios have none yet." if empty > 0 else ""
    return (f"PARTIAL RUN: {done}{want} replications are finished.{none} Every table and "
            "figure covers only the finished ones; run the config again to resume.")


def _html(title: str, facts: list[tuple[str, str]], banner: str, sections: list[_Section],
          figures: dict[str, _Figure], intro: str) -> str:
    e = html.escape
    parts = ["<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">",
             f"<title>{e(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{e(title)}</h1>"]
    if banner:
        parts.append(f"<div class=\"partial\" id=\"partial-run\">{e(banner)}</div>")
    parts.append(f"<p class=\"note\">{e(intro)}</p>")
    parts.append("<h2>Run</h2><table class=\"facts\">")
    parts += [f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in facts]
    parts.append("</table>")
    for sec in sections:
        parts.append(f"<h2>{e(sec.title)}</h2>")
        for key in sec.figures:
            if key not in figures:
                continue
            f = figures[key]
            data = base64.b64encode(f.path.read_bytes()).decode("ascii")
            parts.append(f"<figure><img alt=\"{e(f.title)}\" "
                         f"src=\"data:image/png;base64,{data}\"><figcaption>{e(f.caption)}"
                         "</figcaption></figure>")
        if sec.note:
            parts.append(f"<p class=\"note\">{e(sec.note)}</p>")
        if sec.frame is not None:
            parts.append('<div class="wide">'
                         + sec.frame.to_html(index=False, escape=True, border=0, na_rep="")
                         + "</div>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_[]|#!~"})


def _md_text(v: Any) -> str:
    """Text shown as it is in Markdown, as the HTML report escapes it: HTML is inert,
    emphasis, links, code and table pipes are backslash-escaped, lines joined."""
    return html.escape(" ".join(str(v).splitlines()), quote=False).translate(_MD_SPECIAL)


def _md_cell(v: Any) -> str:
    return _md_text(v)


def _md_table(frame: pd.DataFrame) -> str:
    head = "| " + " | ".join(_md_cell(c) for c in frame.columns) + " |"
    sep = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(_md_cell(v) for v in row) + " |"
            for row in frame.itertuples(index=False)]
    return "\n".join([head, sep, *body])


def _markdown(title: str, facts: list[tuple[str, str]], banner: str, sections: list[_Section],
              figures: dict[str, _Figure], intro: str, base: Path) -> str:
    m = _md_text
    parts = [f"# {m(title)}", ""]
    if banner:
        parts += [f"> **{m(banner)}**", ""]
    parts += [m(intro), "", "## Run", "",
              _md_table(pd.DataFrame(facts, columns=["", "value"])), ""]
    for sec in sections:
        parts += [f"## {m(sec.title)}", ""]
        for key in sec.figures:
            if key in figures:
                f = figures[key]
                rel = f.path.relative_to(base).as_posix()
                parts += [f"![{m(f.title)}]({rel})", "", f"*{m(f.caption)}*", ""]
        if sec.note:
            parts += [m(sec.note), ""]
        if sec.frame is not None:
            parts += [_md_table(sec.frame), ""]
    return "\n".join(parts)


def _write_atomic(path: Path, text: str) -> None:
    write_text(path, text)


# ---------------------------------------------------------------------------- entry points
def write_report(run_dir: str | Path, out_dir: str | Path | None = None, *, fmt: str = "html",
                 alpha: float = 0.05, include_flagged: bool = False, se_type: str = "HC3",
                 plots: bool = True) -> Path:
    """Write a report of a run folder.

    Parameters
    ----------
    run_dir : path
        A run folder (``manifest.json``, ``scenarios.parquet`` and the shards).
    out_dir : path, optional
        Folder for the report (default ``RUN_DIR/report``).
    fmt : {"html", "md"}
        ``html``: one self-contained ``report.html`` with the figures embedded as base64
        PNGs. ``md``: ``report.md`` with the PNGs in ``figures/`` beside it.
    alpha : float
        Nominal level of intervals and tests.
    include_flagged : bool
        Also summarize flagged fits that have estimates (as ``micromacro summarize``).
    se_type : str
        Robust SE type shown beside the classical one in the accuracy table.
    plots : bool
        Draw the figures (needs matplotlib, the ``plots`` extra).

    Returns
    -------
    Path
        The report file.

    Raises
    ------
    ConfigError
        ``fmt`` is unknown, or the folder holds no run or no finished replication.
    MicroMacroError
        ``plots`` is true and matplotlib is not installed.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    if se_type not in SE_TYPES:
        raise ConfigError(f"se_type: expected one of {', '.join(SE_TYPES)}, got {se_type!r}")
    run_dir = Path(run_dir)
    summary = summarize_run(run_dir, alpha=alpha, include_flagged=include_flagged)
    manifest = read_manifest(run_dir) or {}
    scen_all = pd.read_parquet(run_dir / "scenarios.parquet")
    order = [k for k in manifest.get("scenarios", []) if k in set(scen_all["scenario"])]
    if order:
        scen_all = scen_all.set_index("scenario").loc[order].reset_index()
    keys = list(summary.datasets["scenario"])
    scen = scen_all[scen_all["scenario"].isin(keys)].reset_index(drop=True)
    estimates = read_table(run_dir, "estimates", keys)
    out = Path(out_dir) if out_dir is not None else run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)

    perf = summary.performance
    title = f"micromacro run report: {manifest.get('name', run_dir.name)}"
    banner = _partial_text(summary, manifest) if summary.partial else ""
    intro = (
        f"Performance measures after Morris, White & Crowther (2019) with Monte Carlo SEs "
        f"(mcse) in parentheses. K is the number of replications with a proper fit "
        f"({'flagged fits included' if include_flagged else 'flagged fits excluded'}). "
        f"Nominal level alpha = {alpha:g}."
    )
    sections = [
        _Section("Scenarios", _scenario_table(
                     scen_all, summary.datasets.set_index("scenario")["n_reps"]),
                 "One row per cell of the grid with its derived values; finished: replications "
                 "done; key: the folder name of its shards."),
        _Section("Flagged fits", _flags_table(summary, list(scen_all["scenario"]),
                                                  list(dict.fromkeys(perf["method"]))),
                 "Every scenario and method, zero counts included. Flagged: not converged or "
                 "inadmissible (a replication can be both)."),
        _Section("Reliability and redraws", _datasets_table(summary, list(scen_all["scenario"])),
                 "Per scenario, over generated datasets: redraws under the admissibility "
                 "policy, coefficient alpha of the wide data (balanced designs) and ICC(1), "
                 "ICC(2) from the ANOVA estimates, beside the true ICC and reliability of a "
                 "group mean."),
        _Section("Percent bias", _bias_table(perf),
                 "100 (mean estimate / true value - 1), mcse in parentheses; where the true "
                 "value is 0 the bias is shown instead. K: smallest number of estimates over "
                 "terms.", ("bias", "xi")),
        _Section("Coverage per SE type", _rate_table(perf, "cover", alpha),
                 f"Share of {100 * (1 - alpha):g}% intervals that contain the true value, mcse "
                 "in parentheses. band: nominal +/- 2 sqrt(p(1-p)/K); * marks a rate outside "
                 "it.", ("cover",)),
        _Section("Rejection rate per SE type", _rate_table(perf, "reject", alpha),
                 f"Share of replications rejecting H0: term = 0 at alpha = {alpha:g}. A Type I "
                 "error where the true value is 0 (band and * as for coverage); power "
                 "elsewhere.", ("reject",)),
        _Section("Accuracy and precision", _accuracy_table(perf, se_type),
                 "empSE: SD of the estimates; modSE: root mean squared model SE; relative "
                 "error of the model SE: 100 (modSE / empSE - 1)."),
    ]
    facts = _facts(manifest, summary, estimates)

    def render(figs: dict[str, _Figure]) -> Path:
        if fmt == "html":
            path = out / "report.html"
            _write_atomic(path, _html(title, facts, banner, sections, figs, intro))
        else:
            path = out / "report.md"
            _write_atomic(path, _markdown(title, facts, banner, sections, figs, intro, out))
        return path

    if not plots:
        return render({})
    if fmt == "html":
        with tempfile.TemporaryDirectory(dir=out, prefix=".figures-") as tmp:
            return render(_figures(summary, estimates, scen, Path(tmp), alpha=alpha,
                                   include_flagged=include_flagged))
    return render(_figures(summary, estimates, scen, out / "figures", alpha=alpha,
                           include_flagged=include_flagged))


def _cmd_report(args: argparse.Namespace) -> int:
    path = write_report(args.run_dir, args.output, fmt=args.format, alpha=args.alpha,
                        include_flagged=args.include_flagged, se_type=args.se_type,
                        plots=not args.no_plots)
    print(f"wrote {path}")
    return 0


def add_parser(subparsers: Any, *,
               func: Callable[[argparse.Namespace], int] | None = None) -> argparse.ArgumentParser:
    """Add ``report RUN_DIR [--output DIR] [--format html|md]`` to a sub-parser set.

    Parameters
    ----------
    subparsers
        The object returned by ``ArgumentParser.add_subparsers``.
    func : callable, optional
        Command function stored as ``func`` (default: write the report, print its path).

    Returns
    -------
    ArgumentParser
        The new sub-parser.
    """
    p = subparsers.add_parser("report", help="HTML or Markdown report of a run folder")
    p.add_argument("run_dir")
    p.add_argument("--output", help="folder for the report (default RUN_DIR/report)")
    p.add_argument("--format", choices=list(FORMATS), default="html",
                   help="html: one self-contained file (default); md: Markdown with PNGs")
    p.add_argument("--alpha", type=float, default=0.05, help="nominal level (default .05)")
    p.add_argument("--include-flagged", action="store_true",
                   help="also use flagged fits that have estimates")
    p.add_argument("--se-type", default="HC3", choices=[t for t in SE_TYPES if t != "classical"],
                   help="robust SE type shown beside the classical one in the accuracy table")
    p.add_argument("--no-plots", action="store_true", help="tables only (no matplotlib needed)")
    p.set_defaults(func=func or _cmd_report)
    return p
