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
from equivalence_rules import (  # noqa: E402
    ALLOW_COLUMNS,
    TABLES,
    Side,
    ToolError,
    apply_allow,
    compare_sides,
    load_side,
    report_text,
    summarize,
    versions,
)

__all__ = ["ALLOW_COLUMNS", "Side", "ToolError", "compare_dirs", "compare_sides", "main",
           "run_refs", "run_source", "summarize"]

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
