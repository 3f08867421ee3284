"""Do two versions of the package give equivalent results on pinned corpora?

For a change of the numerics (a new algorithm, compiled kernels, a new numpy), run the
corpora of ``tools/equivalence_corpora.py`` with an old and a new checkout and compare::

    python tools/equivalence.py run --source OLD_CHECKOUT --out old_out [--quick]
    python tools/equivalence.py run --source NEW_CHECKOUT --out new_out [--quick]
    python tools/equivalence.py compare old_out new_out --report report [--allow allow.csv]
    python tools/equivalence.py refs OLD_REF NEW_REF --out DIR [--quick]  # both, from git

``run`` runs each corpus config with ``micromacro run`` of the checkout (what ``python -m
micromacro_sim`` runs) and tabulates the results, each in a child process started in the
checkout with ``PYTHONPATH=SOURCE`` and an editable install of the package hidden, so that
the installed package is not used; the worker checks and records where ``micromacro_sim``
came from. It writes tidy Parquet tables to ``--out``: ``verdicts`` (per corpus, cell,
replication and method: status, reason code, converged, admissible, discrepancy; the
redraw gate as method ``gate:<gate>`` with its verdict and redraws), ``estimates`` (per
term: estimate and SEs) and ``datasets`` (per replication: redraws, gate verdict, a digest
of the kept dataset), and ``meta.json`` (versions, package folder, commit, timings).

The discrepancy (objective) of a fit: for factor_score and the ``cfa``/``lavaan_cfa``
gates, the free-loading CFA's ``fmin`` (``fit_cfa_batch``) on the kept dataset's wide
matrix, the dataset regenerated from its stream with attempt = ``redraws``; for methods
whose per-dataset fit reports a log-likelihood (blup, blup_hetvar, sem_2level), minus the
log-likelihood per person of that fit on the regenerated dataset; for the others none.

``compare`` applies the rules:

1. the same status, reason code and gate verdict (and redraws) per (corpus, cell,
   replication, method);
2. never a worse optimum: where the old fit has a discrepancy, new <= old + 1e-9;
3. at the same optimum (both converged and discrepancies within 1e-9; without a
   discrepancy on both sides, both ``ok``) estimates and SEs within 1e-8 relative
   (1e-10 absolute).

Before rules 2 and 3 the kept datasets are compared by digest: a replication whose data
differ (another generator or redraw count) is listed (rule ``data``) and left out of
rules 2 and 3. Every difference goes to ``exceptions.csv`` (``severity`` ``violation``,
or ``note`` for a better optimum, which rule 2 allows); ``--allow`` takes a CSV naming
the accepted ones (columns among corpus, cell, replication, method, term, quantity, rule,
class, note; an empty field matches anything). ``summary.csv`` counts per corpus x method
x rule; ``versions.csv`` and ``report.txt`` hold the versions of each side and the printed
counts. The exit status is 0 when every violation is listed, 1 otherwise, 2 on an error.
Rule 4, the R cross-check, is run by the test suite, not here.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import re
import runpy
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

TOOL = Path(__file__).resolve()
ROOT = TOOL.parents[1]
if str(TOOL.parent) not in sys.path:
    sys.path.insert(0, str(TOOL.parent))

import equivalence_corpora as corpora  # noqa: E402

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


# ------------------------------------------------------------------------------ run


def isolate() -> None:
    """Hide an editable install of ``micromacro_sim`` from the imports of this process.

    Such an install adds an import finder that resolves any ``micromacro_sim.*`` module the
    checkout on PYTHONPATH lacks from the installed tree; without it, a module missing
    from the checkout is missing. Called first in every child process.
    """
    def installed(obj: Any) -> bool:
        """``obj`` comes from the module an editable install of the package generated."""
        module = sys.modules.get(getattr(obj, "__module__", "") or "")
        return "micromacro_sim" in (getattr(module, "MAPPING", None) or {})

    sys.meta_path[:] = [f for f in sys.meta_path if not installed(f)]
    sys.path_hooks[:] = [h for h in sys.path_hooks if not installed(getattr(h, "__self__", h))]
    sys.path_importer_cache.clear()


def check_origin(source: Path) -> Path:
    """The folder ``micromacro_sim`` is imported from, which must be in ``source``.

    Raises
    ------
    ToolError
        The package came from elsewhere (an installed copy, another checkout).
    """
    import micromacro_sim

    pkg = Path(micromacro_sim.__file__).resolve().parent
    if source.resolve() not in pkg.parents:
        raise ToolError(f"micromacro_sim was imported from {pkg}, not from {source}")
    return pkg


def exec_cli(source: Path, args: list[str]) -> int:
    """Child process: the ``micromacro`` command of the checkout ``source``.

    What ``python -m micromacro_sim ARGS`` runs (the package's ``__main__``); a version
    without one runs the ``micromacro`` console script its pyproject.toml declares.
    """
    check_origin(source)
    sys.argv = ["micromacro", *args]
    if (source / "micromacro_sim" / "__main__.py").is_file():
        try:
            runpy.run_module("micromacro_sim", run_name="__main__", alter_sys=True)
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        return 0
    text = (source / "pyproject.toml").read_text(encoding="utf-8")
    entry = re.search(r'^micromacro\s*=\s*"([\w.]+):(\w+)"', text, re.MULTILINE)
    if entry is None:
        raise ToolError(f"{source}: no micromacro_sim/__main__.py and no `micromacro` script")
    return int(getattr(importlib.import_module(entry[1]), entry[2])() or 0)


def child_env(source: Path) -> dict[str, str]:
    """The environment of a child process: ``source`` alone on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(source)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _call(cmd: list[str], source: Path, log: Path, what: str) -> float:
    """Run ``cmd`` (``what``, for messages) in ``source`` with :func:`child_env`; its
    output goes to ``log``.

    Returns
    -------
    float
        Seconds taken.

    Raises
    ------
    ToolError
        The command failed (the message holds the end of its log).
    """
    t0 = time.perf_counter()
    with open(log, "w", encoding="utf-8") as fh:
        rc = subprocess.run(cmd, cwd=source, env=child_env(source), stdout=fh,
                            stderr=subprocess.STDOUT, check=False).returncode
    if rc:
        tail = " | ".join(log.read_text(encoding="utf-8").strip().splitlines()[-5:])
        raise ToolError(f"{what} exited {rc} (log {log}): {tail}")
    return time.perf_counter() - t0


def _git_commit(source: Path) -> str:
    """The commit checked out in ``source`` ("" when it is not a git checkout)."""
    res = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True,
                         text=True, check=False)
    return res.stdout.strip() if res.returncode == 0 else ""


def write_plan(source: Path, out: Path, *, quick: bool, n_jobs: int,
               configs: Path) -> dict[str, Any]:
    """Create ``out`` with the derived configs and ``plan.json``; returns the plan."""
    if out.exists() and any(out.iterdir()):
        raise ToolError(f"--out {out} is not empty")
    if not (source / "micromacro_sim" / "__init__.py").is_file():
        raise ToolError(f"--source {source} holds no micromacro_sim package")
    for sub in ("corpora", "runs", "logs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    plan: dict[str, Any] = {"source": str(source), "quick": quick, "n_jobs": n_jobs,
                            "corpora": []}
    for name in corpora.RUN_CORPORA:
        cfg = corpora.derive_config(configs, name, quick=quick, n_jobs=n_jobs)
        path = out / "corpora" / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
        plan["corpora"].append({"name": name, "kind": "run", "config": str(path),
                                "run_dir": str(out / "runs" / name), "definition": cfg})
    n = corpora.QUICK_DATASETS if quick else corpora.CROSSCHECK_DATASETS
    plan["corpora"].append({"name": corpora.CROSSCHECK, "kind": "crosscheck", "datasets": n,
                            "definition": {"seed": corpora.CROSSCHECK_SEED, "datasets": n,
                                           "designs": corpora.CROSSCHECK_DESIGNS,
                                           "methods": corpora.CROSSCHECK_METHODS}})
    (out / "plan.json").write_text(json.dumps(plan, indent=1), encoding="utf-8")
    return plan


def run_source(source: Path, out: Path, *, quick: bool = False, n_jobs: int = 1,
               configs: Path = ROOT) -> dict[str, Any]:
    """Run every corpus with the package of ``source``; tables and meta.json in ``out``.

    Parameters
    ----------
    source : Path
        A checkout of the repository (its ``micromacro_sim`` is the package used).
    out : Path
        Output folder (absent or empty).
    quick : bool
        A few replications per cell and datasets per design (for tests).
    n_jobs : int
        Worker processes of each ``micromacro run`` (results do not depend on it).
    configs : Path
        Repository holding the shipped configs the corpora derive from (default: the
        one of this tool, so that both sides of a comparison run the same corpora).

    Returns
    -------
    dict
        The meta data written to ``out/meta.json``.
    """
    source, out = source.resolve(), out.resolve()
    plan = write_plan(source, out, quick=quick, n_jobs=n_jobs, configs=configs)
    seconds: dict[str, float] = {}
    for c in plan["corpora"]:
        if c["kind"] == "run":
            cmd = [sys.executable, str(TOOL), "_exec", str(source), "run", c["config"],
                   "--output", c["run_dir"], "--n-jobs", str(n_jobs), "--quiet"]
            seconds[c["name"]] = _call(cmd, source, out / "logs" / f"{c['name']}.log",
                                       f"micromacro run ({c['name']})")
    seconds["collect"] = _call([sys.executable, str(TOOL), "_collect", str(out)], source,
                               out / "logs" / "collect.log", "tabulating the corpora")
    meta = json.loads((out / "meta.json").read_text(encoding="utf-8"))
    meta.update(commit=_git_commit(source), seconds=seconds)
    (out / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    counts = pd.read_parquet(out / "verdicts.parquet").groupby("corpus").size()
    print(f"{source} (micromacro_sim {meta['package_version']}, numpy {meta['numpy']}, "
          f"scipy {meta['scipy']}) -> {out}")
    for name, n in counts.items():
        took = f" (run {seconds[str(name)]:.1f} s)" if str(name) in seconds else ""
        print(f"  {name}: {n} fits{took}")
    print(f"  tabulated in {seconds['collect']:.1f} s")
    return meta


def collect(out: Path) -> None:
    """Worker (child process): tabulate every corpus of ``out/plan.json``.

    Raises
    ------
    ToolError
        ``micromacro_sim`` was not imported from the plan's source.
    """
    import scipy

    import micromacro_sim

    plan = json.loads((out / "plan.json").read_text(encoding="utf-8"))
    pkg = check_origin(Path(plan["source"]))
    parts: dict[str, list[pd.DataFrame]] = {k: [] for k in TABLES}
    for c in plan["corpora"]:
        if c["kind"] == "run":
            tables = corpora.collect_run(c["name"], Path(c["config"]), Path(c["run_dir"]))
        else:
            tables = corpora.collect_crosscheck(int(c["datasets"]))
        for k in TABLES:
            parts[k].append(tables[k])
    for k in TABLES:
        pd.concat(parts[k], ignore_index=True).to_parquet(out / f"{k}.parquet", index=False)
    meta = {**plan, "package_version": micromacro_sim.__version__, "package_path": str(pkg),
            "numpy": np.__version__, "scipy": scipy.__version__,
            "python": platform.python_version(), "platform": platform.platform()}
    (out / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")


# -------------------------------------------------------------------------- compare


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


ALLOW_COLUMNS = ("corpus", "cell", "replication", "method", "term", "quantity", "rule",
                 "class", "note")


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


def compare_dirs(old_dir: Path, new_dir: Path, report: Path, allow: Path | None = None) -> int:
    """``compare``: write exceptions.csv, summary.csv, versions.csv and report.txt.

    Returns
    -------
    int
        0 when every violation is listed, else 1.
    """
    old, new = load_side(old_dir), load_side(new_dir)
    exc, checks = compare_sides(old, new)
    if allow is not None:
        exc = apply_allow(exc, pd.read_csv(allow, dtype=str, keep_default_na=False))
    summary = summarize(exc, checks)
    table, lines = versions(old, new)
    report.mkdir(parents=True, exist_ok=True)
    exc.to_csv(report / "exceptions.csv", index=False)
    summary.to_csv(report / "summary.csv", index=False)
    table.to_csv(report / "versions.csv", index=False)
    text = report_text(summary, exc, lines, old, new)
    (report / "report.txt").write_text(text + "\n", encoding="utf-8")
    print(text)
    print(f"report: {report}")
    unlisted = (exc["severity"] == "violation") & ~exc["listed"].astype(bool)
    return 1 if unlisted.any() else 0


# ----------------------------------------------------------------------------- refs


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                          check=False)


def run_refs(old_ref: str, new_ref: str, out: Path, *, quick: bool = False, n_jobs: int = 1,
             allow: Path | None = None) -> int:
    """``refs``: check out both refs as worktrees in a temporary folder, run, compare.

    The corpora derive from the configs of this tool's repository (both sides run the
    same ones). The worktrees are removed at the end, whatever happens.

    Returns
    -------
    int
        The exit status of :func:`compare_dirs`.
    """
    out = out.resolve()
    if out.exists() and any(out.iterdir()):
        raise ToolError(f"--out {out} is not empty")
    commits = {}
    for ref in (old_ref, new_ref):  # resolved once: a commit made meanwhile changes nothing
        res = _git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
        if res.returncode:
            raise ToolError(f"{ref!r} is not a commit of {ROOT}")
        commits[ref] = res.stdout.strip()
    tmp = Path(tempfile.mkdtemp(prefix="equivalence-"))
    trees: list[Path] = []
    try:
        for side, ref in (("old", old_ref), ("new", new_ref)):
            tree = tmp / side
            res = _git("worktree", "add", "--detach", str(tree), commits[ref])
            if res.returncode:
                raise ToolError(f"git worktree add {ref}: {res.stderr.strip()}")
            trees.append(tree)
            run_source(tree, out / side, quick=quick, n_jobs=n_jobs, configs=ROOT)
            meta_path = out / side / "meta.json"
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            meta_path.write_text(json.dumps({**meta, "ref": ref}, indent=1), encoding="utf-8")
        return compare_dirs(out / "old", out / "new", out / "report", allow)
    finally:
        for tree in trees:
            _git("worktree", "remove", "--force", str(tree))
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------------ CLI


def build_parser() -> argparse.ArgumentParser:
    """The command line: ``run``, ``compare`` and ``refs``."""
    ap = argparse.ArgumentParser(prog="equivalence.py", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run every corpus with the package of --source")
    run.add_argument("--source", type=Path, required=True, help="a checkout of the package")
    run.add_argument("--out", type=Path, required=True, help="output folder (empty)")
    cmp = sub.add_parser("compare", help="apply rules 1-3 to two outputs of `run`")
    cmp.add_argument("old", type=Path)
    cmp.add_argument("new", type=Path)
    cmp.add_argument("--report", type=Path, required=True, help="folder for the report")
    refs = sub.add_parser("refs", help="run and compare two git refs (temporary worktrees)")
    refs.add_argument("old_ref")
    refs.add_argument("new_ref")
    refs.add_argument("--out", type=Path, required=True, help="output folder (empty)")
    for p in (run, refs):
        p.add_argument("--quick", action="store_true",
                       help=f"{corpora.QUICK_REPLICATIONS} replications per cell, "
                            f"{corpora.QUICK_DATASETS} datasets per cross-check design")
        p.add_argument("--n-jobs", type=int, default=1, help="workers of each run")
    for p in (cmp, refs):
        p.add_argument("--allow", type=Path, default=None,
                       help="CSV of accepted exceptions (columns: "
                            f"{', '.join(ALLOW_COLUMNS)}; empty fields match anything)")
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (0 equivalent, 1 not, 2 error)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv[:1] == ["_collect"] and len(argv) == 2:  # the worker, in a child process
            isolate()
            collect(Path(argv[1]))
            return 0
        if argv[:1] == ["_exec"] and len(argv) > 2:  # `micromacro ...`, in a child process
            isolate()
            return exec_cli(Path(argv[1]), argv[2:])
        args = build_parser().parse_args(argv)
        if args.command == "run":
            run_source(args.source, args.out, quick=args.quick, n_jobs=args.n_jobs)
            return 0
        if args.command == "compare":
            return compare_dirs(args.old, args.new, args.report, args.allow)
        return run_refs(args.old_ref, args.new_ref, args.out, quick=args.quick,
                        n_jobs=args.n_jobs, allow=args.allow)
    except ToolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
