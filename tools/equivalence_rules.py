"""The equivalence rules of a numerics change, applied to two sides' tidy results.

Used by ``tools/equivalence.py`` (which runs the corpora and writes the report): rule 1
(the same status, reason codes and gate verdicts), rule 2 (never a worse optimum), rule 3
(the same optimum, the same estimates and SEs within 1e-8 relative, 1e-10 absolute), the
allow list, the counts and the report text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import equivalence_corpora as corpora
import numpy as np
import pandas as pd

OBJ_TOL = 1e-9
REL_TOL = 1e-8
ABS_TOL = 1e-10
KEY = ["corpus", "cell", "replication", "method"]
TABLES = ("verdicts", "estimates", "datasets")
EXC_COLUMNS = ["corpus", "cell", "cell_label", "replication", "method", "term", "quantity",
               "rule", "class", "severity", "optimum", "old", "new", "diff", "rel_diff",
               "listed", "note"]
SUMMARY_KEY = ["corpus", "method", "rule"]
GATE_CLASS = {"status": "gate_verdict_changed", "reason_code": "gate_reason_changed",
              "redraws": "redraws_changed"}
REMINDER = ("rule 4 (the R cross-check) is not run here: run `python -m pytest "
            "tests/test_crosscheck.py` (and `-m r` where Rscript is installed)")


class ToolError(Exception):
    """A one-line failure of the tool (printed as ``error: ...``, exit status 2)."""


ALLOW_COLUMNS = ("corpus", "cell", "replication", "method", "term", "quantity", "rule",
                 "class", "note")


@dataclass
class Side:
    """The tables and meta data a ``run`` wrote."""

    verdicts: pd.DataFrame
    estimates: pd.DataFrame
    datasets: pd.DataFrame
    meta: dict[str, Any]


def load_side(folder: Path) -> Side:
    """Read the output of ``run`` from ``folder``."""
    missing = [k for k in TABLES if not (folder / f"{k}.parquet").is_file()]
    if missing:
        raise ToolError(f"{folder}: no {missing[0]}.parquet (not the output of `run`)")
    tables = {k: pd.read_parquet(folder / f"{k}.parquet") for k in TABLES}
    meta_path = folder / "meta.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    return Side(meta=meta, **tables)


def _text(s: pd.Series) -> np.ndarray:
    """Values as text, missing as ""."""
    return np.array(["" if pd.isna(v) else str(v) for v in s], dtype=object)


def _num(s: pd.Series) -> np.ndarray:
    """Values as float, missing as NaN."""
    return pd.to_numeric(s, errors="coerce").astype(float).to_numpy()


def _fmt(values: Any) -> np.ndarray:
    """Numbers as text with every digit (17 significant), others as they are."""
    out = []
    for v in np.asarray(values, dtype=object):
        if isinstance(v, float | np.floating):
            out.append("" if np.isnan(v) else f"{v:.17g}")
        else:
            out.append("" if v is None else str(v))
    return np.array(out, dtype=object)


def _exc(rows: pd.DataFrame, rule: str, cls: Any, quantity: Any, old: Any, new: Any,
         **extra: Any) -> pd.DataFrame:
    """Exception rows for ``rows`` (one per row) with the standard columns."""
    n = len(rows)
    out = pd.DataFrame({k: rows[k].to_numpy() if k in rows else np.full(n, "")
                        for k in KEY})
    out["term"] = rows["term"].to_numpy() if "term" in rows else ""
    out["quantity"], out["rule"], out["class"] = quantity, rule, cls
    out["severity"] = extra.get("severity", "violation")
    out["optimum"] = extra.get("optimum", "")
    out["old"], out["new"] = _fmt(old), _fmt(new)
    out["diff"] = extra.get("diff", np.nan)
    out["rel_diff"] = extra.get("rel_diff", np.nan)
    return out


def _checks(rows: pd.DataFrame, rule: str, **cols: Any) -> pd.DataFrame:
    """Per corpus and method: how many comparisons ``rows`` made (plus ``cols``)."""
    frame = rows[["corpus", "method"]].assign(n=1, **cols)
    agg: dict[str, Any] = {"checked": ("n", "sum")}
    agg.update({c: (c, "max") for c in cols})
    out = frame.groupby(["corpus", "method"], as_index=False).agg(**agg)
    out["rule"] = rule
    return out


def _optimum(rows: pd.DataFrame) -> np.ndarray:
    """better / worse / same (new vs old discrepancy), or n/a without both."""
    o, n = _num(rows["discrepancy_old"]), _num(rows["discrepancy_new"])
    ok = np.isfinite(o) & np.isfinite(n) & (_text(rows["kind_old"]) == _text(rows["kind_new"]))
    return np.where(~ok, "n/a", np.where(n > o + OBJ_TOL, "worse",
                                         np.where(n < o - OBJ_TOL, "better", "same")))


def rule_verdicts(m: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rule 1 on the merged verdicts: rows on one side only, status, reason code, redraws.

    Returns
    -------
    (exceptions, checks)
    """
    excs = []
    only = m[m["_merge"] != "both"]
    if len(only):
        left = (only["_merge"] == "left_only").to_numpy()
        excs.append(_exc(only, "1", "missing_row", "row", np.where(left, "present", "absent"),
                         np.where(left, "absent", "present")))
    both = m[m["_merge"] == "both"]
    gate = both["method"].astype(str).str.startswith("gate:").to_numpy()
    for q in ("status", "reason_code", "redraws"):
        o, n = _text(both[f"{q}_old"]), _text(both[f"{q}_new"])
        d = o != n
        if d.any():
            cls = np.where(gate[d], GATE_CLASS[q], f"{q}_changed")
            excs.append(_exc(both[d], "1", cls, q, o[d], n[d], optimum=_optimum(both[d])))
    checks = _checks(m, "1")
    return (pd.concat(excs, ignore_index=True) if excs else _empty()), checks


def rule_data(old: pd.DataFrame, new: pd.DataFrame
              ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The kept datasets agree (digest) per replication.

    Returns
    -------
    (exceptions, checks, changed)
        ``changed``: corpus, cell, replication of the replications whose data differ.
    """
    key = ["corpus", "cell", "replication"]
    d = old[[*key, "digest"]].merge(new[[*key, "digest"]], on=key, suffixes=("_old", "_new"))
    bad = d[_text(d["digest_old"]) != _text(d["digest_new"])].assign(method="(data)")
    exc = _exc(bad, "data", "data_changed", "data_digest", bad["digest_old"],
               bad["digest_new"])
    return exc, _checks(d.assign(method="(data)"), "data"), bad[key]


def rule_optimum(both: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rule 2: where the old fit has a discrepancy, the new one is at most old + 1e-9.

    A new discrepancy lower by more than the tolerance is listed as a note
    (``better_optimum``): allowed by rule 2, but a different result.
    """
    o, n = _num(both["discrepancy_old"]), _num(both["discrepancy_new"])
    same_kind = _text(both["kind_old"]) == _text(both["kind_new"])
    has = np.isfinite(o) & (same_kind | ~np.isfinite(n))
    fin = has & np.isfinite(n)
    diff = n - o
    excs = []
    for mask, cls, sev in ((fin & (diff > OBJ_TOL), "worse_optimum", "violation"),
                           (has & ~np.isfinite(n), "discrepancy_lost", "violation"),
                           (fin & (diff < -OBJ_TOL), "better_optimum", "note")):
        if mask.any():
            rows = both[mask]
            excs.append(_exc(rows, "2", cls, _text(rows["kind_old"]), o[mask], n[mask],
                             diff=diff[mask], severity=sev))
    checks = _checks(both[has], "2", max_abs_diff=np.abs(np.where(fin, diff, 0.0))[has])
    return (pd.concat(excs, ignore_index=True) if excs else _empty()), checks


def same_optimum(both: pd.DataFrame) -> np.ndarray:
    """Rule 3's premise per fit: both converged with discrepancies within 1e-9, or, where
    no discrepancy is available on both sides, both ``ok``."""
    o, n = _num(both["discrepancy_old"]), _num(both["discrepancy_new"])
    avail = (np.isfinite(o) & np.isfinite(n)
             & (_text(both["kind_old"]) == _text(both["kind_new"])))
    conv = (both["converged_old"].fillna(False).astype(bool).to_numpy()
            & both["converged_new"].fillna(False).astype(bool).to_numpy())
    ok = (_text(both["status_old"]) == "ok") & (_text(both["status_new"]) == "ok")
    return np.where(avail, conv & (np.abs(n - o) <= OBJ_TOL), ok)


def rule_estimates(fits: pd.DataFrame, old: pd.DataFrame,
                   new: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rule 3: estimates and SEs of the fits at the same optimum within tolerance."""
    key = [*KEY, "term"]
    cols = list(corpora.VALUE_COLUMNS)
    sel = fits[KEY]
    e = (old[[*key, *cols]].merge(sel, on=KEY)
         .merge(new[[*key, *cols]].merge(sel, on=KEY), on=key, how="outer",
                suffixes=("_old", "_new"), indicator=True))
    excs = []
    only = e[e["_merge"] != "both"]
    if len(only):
        left = (only["_merge"] == "left_only").to_numpy()
        excs.append(_exc(only, "3", "missing_value", "term",
                         np.where(left, "present", "absent"), np.where(left, "absent",
                                                                        "present")))
    e = e[e["_merge"] == "both"]
    checks = []
    for col in cols:
        o, n = _num(e[f"{col}_old"]), _num(e[f"{col}_new"])
        one_nan = np.isnan(o) ^ np.isnan(n)
        with np.errstate(invalid="ignore"):
            diff = np.abs(n - o)
            scale = np.fmax(np.abs(o), np.abs(n))
            rel = np.where(scale > 0, diff / np.where(scale > 0, scale, 1.0), 0.0)
            bad = one_nan | (diff > np.fmax(ABS_TOL, REL_TOL * scale))
        if bad.any():
            cls = np.where(one_nan[bad], "nan_mismatch",
                           "estimate_differs" if col == "estimate" else "se_differs")
            excs.append(_exc(e[bad], "3", cls, col, o[bad], n[bad], diff=diff[bad],
                             rel_diff=rel[bad]))
        checks.append(_checks(e, "3", max_abs_diff=np.nan_to_num(diff, nan=0.0),
                              max_rel_diff=np.nan_to_num(rel, nan=0.0)))
    agg = pd.concat(checks).groupby(["corpus", "method", "rule"], as_index=False).agg(
        checked=("checked", "sum"), max_abs_diff=("max_abs_diff", "max"),
        max_rel_diff=("max_rel_diff", "max"))
    return (pd.concat(excs, ignore_index=True) if excs else _empty()), agg


def _empty() -> pd.DataFrame:
    return pd.DataFrame(columns=EXC_COLUMNS)


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate the non-empty frames (an empty exception table when none)."""
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else _empty()


def compare_sides(old: Side, new: Side) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Apply the data check and rules 1-3 to two runs.

    Returns
    -------
    (exceptions, checks)
        Every exception (columns :data:`EXC_COLUMNS`, none listed yet) and, per corpus,
        method and rule, the comparisons made (``checked``, largest differences and
        ``skipped``: fits of replications whose data differ, left out of rules 2 and 3).
    """
    labels = (pd.concat([old.verdicts, new.verdicts])[["corpus", "cell", "cell_label"]]
              .drop_duplicates(["corpus", "cell"]))
    m = old.verdicts.drop(columns="cell_label").merge(
        new.verdicts.drop(columns="cell_label"), on=KEY, how="outer",
        suffixes=("_old", "_new"), indicator=True)
    e1, c1 = rule_verdicts(m)
    ed, cd, changed = rule_data(old.datasets, new.datasets)
    both = m[m["_merge"] == "both"].drop(columns="_merge").merge(
        changed.assign(data_changed=True), on=["corpus", "cell", "replication"], how="left")
    moved = both["data_changed"].eq(True).to_numpy()
    usable = both[~moved]
    e2, c2 = rule_optimum(usable)
    gate = usable["method"].astype(str).str.startswith("gate:").to_numpy()
    fits = usable[~gate & same_optimum(usable)]
    e3, c3 = rule_estimates(fits, old.estimates, new.estimates)
    skipped = both[moved].groupby(["corpus", "method"]).size().rename("skipped").reset_index()
    c23 = pd.concat([c2, c3]).merge(skipped, on=["corpus", "method"], how="left")
    checks = pd.concat([c1, cd, c23], ignore_index=True)
    checks["skipped"] = checks["skipped"].fillna(0).astype(int)
    exc = _concat([e1, ed, e2, e3]).drop(columns="cell_label", errors="ignore")
    exc = exc.merge(labels, on=["corpus", "cell"], how="left")
    exc["listed"], exc["note"] = False, ""
    return exc[EXC_COLUMNS], checks


def apply_allow(exc: pd.DataFrame, allow: pd.DataFrame) -> pd.DataFrame:
    """Mark the exceptions an allow list names (``listed``, with its ``note``).

    Each row of ``allow`` names exceptions by any of :data:`ALLOW_COLUMNS` but ``note``;
    an empty field matches anything.
    """
    unknown = set(allow.columns) - set(ALLOW_COLUMNS)
    if unknown:
        raise ToolError(f"allow list: unknown column {sorted(unknown)[0]!r} "
                        f"(known: {', '.join(ALLOW_COLUMNS)})")
    exc = exc.copy()
    for _, row in allow.iterrows():
        mask = np.ones(len(exc), dtype=bool)
        for col in ALLOW_COLUMNS[:-1]:
            value = str(row.get(col, "") or "").strip()
            if value:
                mask &= _text(exc[col]) == value
        exc.loc[mask, "listed"] = True
        exc.loc[mask, "note"] = str(row.get("note", "") or "")
    return exc


def summarize(exc: pd.DataFrame, checks: pd.DataFrame) -> pd.DataFrame:
    """Per corpus x method x rule: comparisons, violations (listed, unlisted) and notes."""
    v = exc["severity"] == "violation"
    flags = pd.DataFrame({"corpus": exc["corpus"], "method": exc["method"],
                          "rule": exc["rule"], "violations": v,
                          "listed": v & exc["listed"].astype(bool),
                          "unlisted": v & ~exc["listed"].astype(bool),
                          "notes": exc["severity"] == "note"})
    counts = flags.groupby(SUMMARY_KEY, as_index=False).sum()
    out = checks.merge(counts, on=SUMMARY_KEY, how="outer")
    for col in ("checked", "skipped", "violations", "listed", "unlisted", "notes"):
        out[col] = out[col].fillna(0).astype(int)
    order = {c: i for i, c in enumerate(corpora.CORPORA)}
    out["_o"] = out["corpus"].map(order)
    out = out.sort_values(["_o", "corpus", "rule", "method"]).drop(columns="_o")
    cols = [*SUMMARY_KEY, "checked", "violations", "listed", "unlisted", "notes", "skipped",
            "max_abs_diff", "max_rel_diff"]
    return out.reindex(columns=cols).reset_index(drop=True)


def versions(old: Side, new: Side) -> tuple[pd.DataFrame, list[str]]:
    """Versions of each side, and lines saying whether they and the corpora agree."""
    fields = ("source", "ref", "commit", "package_version", "package_path", "python",
              "numpy", "scipy", "platform", "quick")
    table = pd.DataFrame([{"side": side, **{f: s.meta.get(f, "") for f in fields}}
                          for side, s in (("old", old), ("new", new))])
    lines = []
    for lib in ("numpy", "scipy"):
        a, b = old.meta.get(lib, "?"), new.meta.get(lib, "?")
        lines.append(f"{lib} {a} on both sides (one environment runs both)" if a == b
                     else f"{lib} differs: old {a}, new {b}")

    def definitions(meta: dict[str, Any]) -> dict[str, Any]:
        """Corpus -> its definition (the n_jobs of a run left out)."""
        return {c["name"]: {k: v for k, v in c.get("definition", {}).items() if k != "n_jobs"}
                for c in meta.get("corpora", [])}

    same = definitions(old.meta) == definitions(new.meta)
    lines.append("corpora: the same definitions on both sides" if same else
                 "WARNING corpora differ between the sides (configs, --quick or pins)")
    return table, lines


def counts_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary with one row per corpus x method: ``violations/checked`` per rule,
    notes, fits skipped (data changed), the largest change of the discrepancy (rule 2)
    and the largest relative difference of the estimates and SEs (rule 3)."""
    s = summary.assign(cell=summary["violations"].astype(str) + "/"
                       + summary["checked"].astype(str))
    key = ["corpus", "method"]
    wide = s.pivot_table(index=key, columns="rule", values="cell", aggfunc="first",
                         sort=False).reindex(columns=["data", "1", "2", "3"]).fillna("")
    wide.columns = ["data", "rule 1", "rule 2", "rule 3"]
    extra = s.groupby(key, sort=False).agg(notes=("notes", "sum"), skipped=("skipped", "max"))
    extra["max |d obj|"] = s[s["rule"] == "2"].groupby(key, sort=False)["max_abs_diff"].max()
    extra["max rel d"] = s[s["rule"] == "3"].groupby(key, sort=False)["max_rel_diff"].max()
    out = wide.join(extra).reset_index()
    order = {c: i for i, c in enumerate(corpora.CORPORA)}
    out = out.assign(_o=out["corpus"].map(order), _d=out["method"] != "(data)").sort_values(
        ["_o", "corpus", "_d", "method"]).drop(columns=["_o", "_d"])
    for col in ("max |d obj|", "max rel d"):
        out[col] = ["" if pd.isna(v) else f"{v:.3g}" for v in out[col]]
    return out


def report_text(summary: pd.DataFrame, exc: pd.DataFrame, lines: list[str],
                old: Side, new: Side) -> str:
    """The printed report: the counts, versions, verdict and the rule-4 reminder."""
    def side(s: Side) -> str:
        """The ref or folder of a side and its commit."""
        return f"{s.meta.get('ref') or s.meta.get('source', '?')} ({s.meta.get('commit', '')[:10]})"

    v = exc[exc["severity"] == "violation"]
    unlisted = int((~v["listed"].astype(bool)).sum())
    verdict = "EQUIVALENT" if unlisted == 0 else "NOT EQUIVALENT"
    with pd.option_context("display.width", 200, "display.max_rows", 500):
        table = counts_table(summary).to_string(index=False)
    text = [f"old: {side(old)}", f"new: {side(new)}",
            "violations/checked per corpus, method and rule:", "", table, "", *lines,
            f"{len(v)} violations ({len(v) - unlisted} listed, {unlisted} unlisted), "
            f"{int((exc['severity'] == 'note').sum())} notes: {verdict}", REMINDER]
    return "\n".join(text)
