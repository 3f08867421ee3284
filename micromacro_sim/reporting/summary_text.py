"""The printed ``micromacro summarize`` tables: performance, reliability, flags.

Rows and columns are chosen by the caller (``--methods``, ``--terms``, ``--measures``);
scenarios are shown by their label (words every label shares dropped), flags by their
reason text, numbers in the formats of :func:`~.terminal.number_format`. The SE-based
measures (``modse``, ``cover``, ``reject``, ...) are each method's default SE type, named
in the column ``SE`` (``model``: a one-step method's model-based SE); ``se_type`` adds
that type's values beside them (``cover HC3``).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from micromacro_sim.core.errors import ConfigError
from micromacro_sim.reporting.se_types import check_se_type, method_se_labels
from micromacro_sim.reporting.terminal import render_table, wrap_text
from micromacro_sim.summaries.tidy import MEASURES, SE_MEASURES

__all__ = ["DEFAULT_MCSE", "DEFAULT_MEASURES", "KNOWN_MEASURES", "LEGEND", "SE_LEGEND",
           "format_summary", "legend", "select_rows"]

#: Measures printed when ``--measures`` is not given.
DEFAULT_MEASURES = ("k", "theta", "mean", "pct_bias", "empse", "modse", "cover", "reject",
                    "rmse")
#: Every measure ``--measures`` accepts.
KNOWN_MEASURES = ("k", "theta", "n_flagged", *MEASURES, *SE_MEASURES)
#: Measures printed with their Monte Carlo SE by default (``--mcse``: all; ``--no-mcse``: none).
DEFAULT_MCSE = ("bias", "pct_bias", "cover")
#: What each printed measure means (the legend under the table).
LEGEND = {
    "k": "K replications with an estimate", "theta": "true the value estimated",
    "mean": "mean estimate", "bias": "bias mean minus true",
    "pct_bias": "%bias bias in % of true", "empse": "empse SD of the estimates",
    "modse": "modse mean model SE", "cover": "cover share of CIs holding true",
    "reject": "reject share of tests rejecting 0 (power; Type I error where true is 0)",
    "rmse": "rmse root mean squared error",
}
#: The legend's words for the ``SE`` column (shown with any SE-based measure).
SE_LEGEND = ("SE the SE type of modse, cover and reject: each method's default (model: a "
             "one-step method's model-based SE)")
_HEADER = {"theta": "true", "pct_bias": "%bias", "n_flagged": "flagged", "k": "K"}


def _pick(name: str, wanted: Sequence[str] | None, available: Sequence[str]) -> list[str]:
    if not wanted:
        return list(available)
    bad = [w for w in wanted if w not in available]
    if bad:
        raise ConfigError(f"{name}: unknown {name[:-1]} {bad[0]!r} in this run "
                          f"(available: {', '.join(available)})")
    return list(wanted)


def select_rows(perf: pd.DataFrame, methods: Sequence[str] | None = None,
                terms: Sequence[str] | None = None) -> pd.DataFrame:
    """Rows of the performance table for the chosen methods and terms (run order kept).

    Raises
    ------
    ConfigError
        A method or term the run does not have (the message lists those it has).
    """
    m = _pick("methods", methods, list(dict.fromkeys(perf["method"])))
    t = _pick("terms", terms, list(dict.fromkeys(perf["term"])))
    return perf[perf["method"].isin(m) & perf["term"].isin(t)]


def _measure_columns(perf: pd.DataFrame, measures: Sequence[str], se_type: str | None,
                     mcse: Sequence[str]) -> dict[str, pd.Series]:
    """Printed column -> values: a bare SE-based measure is the method's default type
    (``SE`` names it); ``se_type`` adds ``<measure> <type>`` beside it."""
    cols: dict[str, pd.Series] = {}
    if any(m in SE_MEASURES for m in measures) and "se_type" in perf.columns:
        cols["SE"] = perf["method"].map(method_se_labels(perf))
    for m in measures:
        if m in SE_MEASURES:
            pairs = [(m, m)] + ([(f"{m}_{se_type}", f"{m} {se_type}")] if se_type else [])
            for col, label in pairs:
                if col in perf.columns:
                    cols[label] = _with_mcse(perf, col, f"{col}_mcse", label, m in mcse)
        elif m in perf.columns:
            se = MEASURES.get(m)
            cols[_HEADER.get(m, m)] = _with_mcse(perf, m, se, _HEADER.get(m, m), m in mcse)
    return cols


def _mcse_measures(mcse: bool | None) -> tuple[str, ...]:
    """The measures shown with their MCSE: None the default ones, True all, False none."""
    if mcse is None:
        return DEFAULT_MCSE
    return KNOWN_MEASURES if mcse else ()


def legend(measures: Sequence[str] | None, mcse: bool | None, slopes_only: bool) -> str:
    """One line saying what the printed columns mean."""
    measures = measures or DEFAULT_MEASURES
    shown = [LEGEND[m] for m in measures if m in LEGEND]
    if any(m in SE_MEASURES for m in measures):
        shown.append(SE_LEGEND)
    parts = ["; ".join(shown)]
    if _mcse_measures(mcse):
        parts.append("(x): Monte Carlo SE")
    if slopes_only:
        parts.append("Intercepts left out (--terms to choose)")
    return ". ".join(parts) + "."


def _with_mcse(perf: pd.DataFrame, col: str, se: str | None, label: str,
               mcse: bool) -> pd.Series:
    if not mcse or se is None or se not in perf.columns:
        return perf[col]
    from micromacro_sim.reporting.terminal import number_format

    spec = number_format(label)
    return pd.Series([f"{v:{spec}} ({s:{spec}})" if pd.notna(v) else ""
                      for v, s in zip(perf[col], perf[se], strict=True)], index=perf.index)


def performance_frame(summary, *, measures: Sequence[str] | None = None,
                      methods: Sequence[str] | None = None,
                      terms: Sequence[str] | None = None, se_type: str | None = None,
                      mcse: bool | None = False) -> pd.DataFrame:
    """The performance table as printed: scenario, method, term and the chosen measures
    (SE-based ones of each method's default SE type, and of ``se_type`` beside them)."""
    se_type = check_se_type(se_type)
    measures = list(measures) if measures else list(DEFAULT_MEASURES)
    bad = [m for m in measures if m not in KNOWN_MEASURES]
    if bad:
        raise ConfigError(f"measures: unknown measure {bad[0]!r} "
                          f"(known: {', '.join(KNOWN_MEASURES)})")
    perf = select_rows(summary.performance, methods, terms)
    labels = dict(zip(summary.datasets["scenario"], summary.datasets["cell"], strict=True))
    frame = pd.DataFrame({"scenario": perf["scenario"].map(labels).fillna(perf["label"]),
                          "method": perf["method"], "term": perf["term"]})
    for name, values in _measure_columns(perf, measures, se_type,
                                         _mcse_measures(mcse)).items():
        frame[name] = values
    return frame.reset_index(drop=True)


def format_summary(summary, *, se_type: str | None = None,
                   measures: Sequence[str] | None = None,
                   methods: Sequence[str] | None = None, terms: Sequence[str] | None = None,
                   mcse: bool | None = None, width: int | None = None) -> str:
    """The printed summary: performance, reliability and flagged fits, fitted to ``width``.

    Parameters
    ----------
    summary : RunSummary
    se_type : str, optional
        An SE type whose values are shown beside each method's default ones (default:
        none; the column ``SE`` names each method's default type).
    measures, methods, terms : sequence of str, optional
        What to show (default :data:`DEFAULT_MEASURES`, every method, every term but the
        intercept).
    mcse : bool, optional
        Monte Carlo SEs in parentheses: None (default) for bias and coverage, True for
        every measure, False for none.
    width : int, optional
        Window width (default: the terminal's).
    """
    lines = []
    if summary.partial:
        lines.append(wrap_text("PARTIAL RUN: some replications are not finished; figures "
                               "cover those done.", width))
    slopes_only = not terms and "intercept" in set(summary.performance["term"]) and len(
        set(summary.performance["term"])) > 1
    if slopes_only:
        terms = [t for t in dict.fromkeys(summary.performance["term"]) if t != "intercept"]
    perf = performance_frame(summary, measures=measures, methods=methods, terms=terms,
                             se_type=se_type, mcse=mcse)
    lines += [render_table(perf, width=width, title="Performance"),
              wrap_text(legend(measures, mcse, slopes_only), width), ""]
    d = summary.datasets
    rel = pd.DataFrame({
        "scenario": d["cell"], "reps": d["n_reps"],
        "reliability": d["reliability"], "alpha mean": d["alpha_std_mean"],
        "alpha min": d["alpha_std_min"], "alpha max": d["alpha_std_max"],
        "icc1 mean": d["icc1_mean"], "icc2 mean": d["icc2_mean"],
        "redraw rate": d["redraw_rate"], "redraws": d["redraws"].astype("int64"),
    })
    lines += [render_table(rel, width=width, title="Reliability and redraws"), ""]
    lines.append(flags_text(summary, methods=methods, width=width))
    return "\n".join(lines)


def flags_text(summary, *, methods: Sequence[str] | None = None,
               width: int | None = None) -> str:
    """Flagged fits per scenario and method, by scenario label and reason text."""
    f = summary.flags
    if methods:
        f = f[f["method"].isin(list(methods))]
    f = f[f["n_flagged"] > 0]
    if f.empty:
        return "No flagged fits."
    labels = dict(zip(summary.datasets["scenario"], summary.datasets["cell"], strict=True))
    reasons = f["reasons_text"] if "reasons_text" in f.columns else f["reasons"]
    frame = pd.DataFrame({"scenario": f["scenario"].map(labels).fillna(f["scenario"]),
                          "method": f["method"], "reps": f["n_reps"],
                          "flagged": f["n_flagged"], "flag rate": f["flag_rate"],
                          "reasons": reasons})
    return render_table(frame, width=width, title="Flagged fits", keep=["scenario", "method"])
