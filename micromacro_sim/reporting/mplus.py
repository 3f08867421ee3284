"""The Mplus MONTECARLO table with Monte Carlo SEs and the Muthen & Muthen (2002) checks.

Columns as Mplus prints them: Population (true value), Average (mean estimate), Std. Dev.
(SD of the estimates), S.E. Average (mean model SE), M.S.E. (mean squared error),
95% Cover and % Sig Coeff (share of replications whose test of the coefficient against
0 rejects at alpha; Mplus's z test, here the SE type's test with the residual df). Each
value has its Monte Carlo SE (Morris, White & Crowther 2019).

Muthen & Muthen (2002, Structural Equation Modeling 9(4), 599-620) take a sample size as
adequate when: parameter bias and SE bias are below 10% (in absolute value), the SE bias
of the parameter whose power is assessed (the *focal* term) is below 5%, coverage is
between .91 and .98, and power for the focal parameter is at least .80. Parameter bias
is ``(Average - Population) / Population``; SE bias is ``(S.E. Average - Std. Dev.) /
Std. Dev.``. Parameter bias is not defined where the population value is 0, and power
only applies where it is not.

By default (``se_type`` None) S.E. Average, coverage and % Sig Coeff use each method's
default SE type (the model SE of a one-step method, HC3 for the two-step methods, HC2 for
croon); an SE type uses that one for every method.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from micromacro_sim.core.errors import ConfigError
from micromacro_sim.reporting.se_types import check_se_type, se_list
from micromacro_sim.reporting.summary_text import select_rows
from micromacro_sim.reporting.terminal import render_table, wrap_text

__all__ = ["CRITERIA", "FLAG_LABELS", "format_mplus", "mplus_table"]

#: Muthen & Muthen (2002) criteria.
CRITERIA = {"param_bias": 0.10, "se_bias": 0.10, "se_bias_focal": 0.05,
            "cover_low": 0.91, "cover_high": 0.98, "power": 0.80}
#: Text of each check (shown where a check fails).
FLAG_LABELS = {"flag_param_bias": "param bias >= 10%", "flag_se_bias": "SE bias >= 10%",
               "flag_se_bias_focal": "focal SE bias >= 5%",
               "flag_cover": "cover outside .91-.98", "flag_power": "power < .80"}
_COLUMNS = {  # Mplus heading -> (summary column, its MCSE column); {t}: "_<SE type>" or ""
    "Population": ("theta", None), "Average": ("mean", "bias_mcse"),
    "Std. Dev.": ("empse", "empse_mcse"), "S.E. Average": ("meanse{t}", "meanse{t}_mcse"),
    "M.S.E.": ("mse", "mse_mcse"), "95% Cover": ("cover{t}", "cover{t}_mcse"),
    "% Sig Coeff": ("reject{t}", "reject{t}_mcse"),
}


def mplus_table(summary, *, se_type: str | None = None, focal: str | None = None,
                methods: Sequence[str] | None = None,
                terms: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per scenario x method x term with the Mplus columns, MCSEs and checks.

    Parameters
    ----------
    summary : RunSummary
    se_type : str, optional
        SE type behind S.E. Average, coverage and % Sig Coeff (default: each method's
        default type, the summary's bare columns).
    focal : str, optional
        Term whose power is assessed (default: the last term of the model).
    methods, terms : sequence of str, optional
        Rows to keep.

    Returns
    -------
    DataFrame
        scenario, label, method, term, the seven Mplus columns each followed by
        ``<column> MCSE``, ``param_bias``, ``se_bias`` (proportions), and boolean
        ``flag_*`` columns (:data:`FLAG_LABELS`; True where a check fails).
    """
    se_type = check_se_type(se_type)
    suffix = "" if se_type is None else f"_{se_type}"
    perf = select_rows(summary.performance, methods, terms)
    all_terms = list(dict.fromkeys(summary.performance["term"]))
    focal = focal or all_terms[-1]
    if focal not in all_terms:
        raise ConfigError(f"focal: unknown term {focal!r} (available: {', '.join(all_terms)})")
    out = perf[["scenario", "label", "method", "term"]].copy()
    for head, (col, se) in _COLUMNS.items():
        col = col.format(t=suffix)
        out[head] = perf[col].astype(float) if col in perf.columns else np.nan
        if se is not None:
            se = se.format(t=suffix)
            out[f"{head} MCSE"] = perf[se].astype(float) if se in perf.columns else np.nan
    pop, avg = out["Population"], out["Average"]
    sd, sebar = out["Std. Dev."], out["S.E. Average"]
    with np.errstate(divide="ignore", invalid="ignore"):
        out["param_bias"] = np.where(pop != 0, (avg - pop) / pop.abs(), np.nan)
        out["se_bias"] = np.where(sd > 0, (sebar - sd) / sd, np.nan)
    is_focal = out["term"] == focal
    c = CRITERIA
    out["flag_param_bias"] = out["param_bias"].abs() >= c["param_bias"]
    out["flag_se_bias"] = out["se_bias"].abs() >= c["se_bias"]
    out["flag_se_bias_focal"] = is_focal & (out["se_bias"].abs() >= c["se_bias_focal"])
    cover = out["95% Cover"]
    out["flag_cover"] = cover.notna() & ((cover < c["cover_low"]) | (cover > c["cover_high"]))
    out["flag_power"] = is_focal & (pop != 0) & (out["% Sig Coeff"] < c["power"])
    return out.reset_index(drop=True)


def _checks(row: pd.Series) -> str:
    failed = [FLAG_LABELS[k] for k in FLAG_LABELS if bool(row[k])]
    return "; ".join(failed) if failed else "ok"


def format_mplus(summary, *, se_type: str | None = None, focal: str | None = None,
                 methods: Sequence[str] | None = None, terms: Sequence[str] | None = None,
                 width: int | None = None) -> str:
    """The Mplus-style table as text: one block per scenario and method, MCSE rows below.

    See :func:`mplus_table` for the parameters.
    """
    table = mplus_table(summary, se_type=se_type, focal=focal, methods=methods, terms=terms)
    focal = focal or list(dict.fromkeys(summary.performance["term"]))[-1]
    labels = dict(zip(summary.datasets["scenario"], summary.datasets["cell"], strict=True))
    heads = list(_COLUMNS)
    se_type = check_se_type(se_type)
    which = (f"{se_type} SEs" if se_type is not None else
             f"each method's default SEs: {se_list(summary.performance)}")
    lines = [wrap_text(
        f"MODEL RESULTS (Monte Carlo, {which}; focal term {focal}). Each parameter's "
        "second row holds the Monte Carlo SEs. Checks after Muthen & Muthen (2002): "
        "parameter and SE bias below 10%, SE bias of the focal term below 5%, coverage in "
        ".91-.98, power of the focal term at least .80.", width)]
    k = summary.performance.set_index(["scenario", "method", "term"])["k"]
    for (key, method), g in table.groupby(["scenario", "method"], sort=False):
        rows = []
        for _, r in g.iterrows():
            rows.append({"term": r["term"], **{h: _fmt(h, r[h]) for h in heads}})
            rows.append({"term": "  mcse", "Population": "",
                         **{h: _fmt(h, r[f"{h} MCSE"]) for h in heads[1:]}})
        n = int(k.loc[(key, method, g["term"].iloc[0])])
        title = f"{labels.get(key, key)} | {method} | K = {n}"
        checks = "; ".join(f"{r['term']}: {_checks(r)}" for _, r in g.iterrows())
        lines += ["", render_table(pd.DataFrame(rows), width=width, title=title,
                                   keep=["term"], right=heads),
                  wrap_text(f"M&M checks: {checks}", width, indent="  ")]
    return "\n".join(lines)


def _fmt(head: str, v: float) -> str:
    if not np.isfinite(v):
        return ""
    return f"{v:.3f}" if head in ("95% Cover", "% Sig Coeff") else f"{v:.4f}"
