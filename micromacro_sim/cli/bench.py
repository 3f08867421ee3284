"""``micromacro bench``: speed of both engines, the CLI end to end, and the R pipeline.

Everything is measured in one run on this machine and printed with the machine's
description, so ratios compare like with like; ``--markdown FILE`` writes the same run's
figures into FILE between ``<!-- bench:begin -->`` and ``<!-- bench:end -->``. Timings
are medians of repeats; CPU seconds (user + system of every process) are printed beside
wall times, since a shared machine slows the wall clock but hardly the CPU time. The one
extrapolated figure, the R pipeline's time for a full study (measured per replication on
``r_datasets`` datasets), is labelled as such.

Every command-line timing that a target judges is measured cold and warm, and each target
gets two verdicts. **Cold** is the first run of that command in this bench invocation, in a
new process, after the package's own bytecode was deleted: the package is compiled from
source while its dependencies load the bytecode their installation wrote (a first run
after ``pip install -e .`` or an upgrade). **Warm** is the median of the runs that follow
it (3 for the seed study, 1 for cv2007 with every method).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from micromacro_sim.cli.bench_report import write_markdown
from micromacro_sim.cli.bench_timing import (
    COLD_DEFINITION,
    ROW16,
    bench_jackknife,
    bench_methods,
    bench_r,
    cli_run,
    cold_and_warm,
    machine_info,
    parallel_ceiling,
)
from micromacro_sim.estimators import available, registry

__all__ = ["TARGETS", "add_parser", "print_targets", "run_bench", "target_rows"]

#: The speed and memory targets (figure, comparison, bound, text), checked by
#: :func:`print_targets` on the full-size figures of one run, cold and warm: the figures
#: are ``<figure>_cold`` and ``<figure>_warm``.
TARGETS = (
    ("clark_row16_seconds", "<=", 1.2, "seed study (row 16, 1000 replications) wall, s"),
    ("cv2007_all_seconds", "<=", 10.0, "cv2007 with every method wall, s"),
    ("cv2007_all_peak_mib", "<=", 600.0, "cv2007 with every method peak RSS, MiB"),
    ("r_ratio", ">=", 500.0, "R pipeline / seed study (measured, R extrapolated)"),
    ("bayes_row16_seconds", "<=", 60.0, "bayes, row 16, 1000 replications, n_jobs 2, wall, s"),
)

KINDS = ("cold", "warm")

#: The cv2007 cell of the second per-method table: row 16's G, ICC and r(Z, xi) at n = 40.
CV_N40 = dict(n_groups=100, group_size=40, icc=0.1, r_zxi=0.3)


def target_rows(out: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with its cold and warm figure and verdict (None: not measured)."""
    rows = []
    for key, op, bound, text in TARGETS:
        row: dict[str, Any] = {"key": key, "op": op, "bound": bound, "text": text}
        for kind in KINDS:
            value = out.get(f"{key}_{kind}")
            row[kind] = value
            row[f"met_{kind}"] = (None if value is None
                                  else bool(value <= bound if op == "<=" else value >= bound))
        rows.append(row)
    return rows


def print_targets(out: dict[str, Any]) -> dict[str, dict[str, bool | None]]:
    """Print and return each target's cold and warm verdicts on this run's figures.

    Returns
    -------
    dict
        Per target key, ``{"cold": verdict, "warm": verdict}``; a verdict is None when its
        figure (``<key>_cold`` or ``<key>_warm`` in ``out``) was not measured.
    """
    print("\ntargets (cold: first run with the package's bytecode deleted; warm: median of "
          "the runs after it):")
    verdicts: dict[str, dict[str, bool | None]] = {}
    for row in target_rows(out):
        parts = []
        for kind in KINDS:
            if row[kind] is None:
                parts.append(f"{kind} not measured in this run")
            else:
                parts.append(f"{kind} {row[kind]:.4g}: "
                             f"{'met' if row[f'met_{kind}'] else 'NOT MET'}")
        print(f"  {row['text']} (target {row['op']} {row['bound']:g}): {'; '.join(parts)}")
        verdicts[row["key"]] = {kind: row[f"met_{kind}"] for kind in KINDS}
    return verdicts


def _config(name: str) -> dict[str, Any]:
    from importlib import resources

    return yaml.safe_load(resources.files("micromacro_sim").joinpath("configs", name).read_text())


def _cell_title(p: dict[str, Any]) -> str:
    return (f"G = {p['n_groups']}, n = {p['group_size']}, ICC {p['icc']:g}, "
            f"r(Z, xi) {p['r_zxi']:g}")


def _against(rows: list[dict[str, Any]], base: list[dict[str, Any]]) -> None:
    """Add each method's cost on the path it takes (fast where it has one, else reference)
    relative to the same on the balanced cell ``base`` (``vs_balanced``)."""
    def taken(r: dict[str, Any]) -> float:
        return r["fast_ms"] if r["fast_ms"] is not None else r["reference_ms"]

    ref = {r["method"]: taken(r) for r in base}
    for r in rows:
        r["vs_balanced"] = taken(r) / ref[r["method"]] if ref.get(r["method"]) else None


def _bench_method_tables(out: dict[str, Any], quick: bool) -> None:
    """The per-method tables: CV row 16, row 16 with absent members and with unequal
    groups (each against the balanced row 16), and one cv2007 cell with n = 40."""
    n_fast, n_ref = (200, 5) if quick else (1000, 20)
    cells = [("CV row 16", ROW16, n_fast, n_ref),
             ("CV row 16, 20% of members missing (MCAR)", {"missing_mcar": 0.2}, n_fast, n_ref),
             ("CV row 16, group sizes 2 + Poisson(8)", {"group_size": {"poisson": 10, "min": 2}},
              n_fast, n_ref),
             ("cv2007, n = 40", CV_N40, 40 if quick else 200, 2 if quick else 5)]
    base: list[dict[str, Any]] = []
    for name, params, n_fast, n_ref in cells:
        rows = bench_methods(params, n_fast=n_fast, n_ref=n_ref)
        if name == "CV row 16":
            base = rows
        elif "row 16" in name:
            _against(rows, base)
        table = {"title": f"{name} ({_cell_title({**ROW16, **params})})",
                 "n_fast": n_fast, "n_ref": n_ref, "rows": rows}
        out["method_tables"].append(table)
        print(f"\nper replication, {table['title']}, milliseconds (fast: batch of {n_fast}, "
              f"first call and median of the next 3; reference: {n_ref} datasets one at a "
              "time, median of 3):")
        print(pd.DataFrame(rows).to_string(index=False, na_rep="-",
                                           float_format=lambda v: f"{v:.3f}"))


def _bench_jackknife(out: dict[str, Any], quick: bool) -> None:
    """The cost of ``se: jackknife`` per two-step method: row 16 and a few-groups cell."""
    cells = [("CV row 16", {}), ("G = 30, group sizes 2 + Poisson(8), ICC .1",
                                 {"n_groups": 30, "group_size": {"poisson": 10, "min": 2}})]
    n = 20 if quick else 100
    for name, params in cells:
        rows = bench_jackknife(params, n=n)
        out["jackknife"].append({"title": name, "n": n, "rows": rows})
        print(f"\nse: jackknife, {name}, milliseconds per replication (batch of {n}, median "
              "of 3):")
        print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def run_bench(*, quick: bool = False, r_datasets: int = 20) -> dict[str, Any]:
    """Run every benchmark and print its figures.

    Parameters
    ----------
    quick : bool
        Smaller sizes (a smoke test); no target verdicts.
    r_datasets : int
        Row-16 datasets the R pipeline is timed on (5 when ``quick``).

    Returns
    -------
    dict
        Every figure of the run (plain values, lists and dicts): what
        :func:`~micromacro_sim.cli.bench_report.render_markdown` renders.
    """
    info = machine_info()
    out: dict[str, Any] = {"date": datetime.now().strftime("%Y-%m-%d %H:%M"), "quick": quick,
                           "machine": info, "cold_definition": COLD_DEFINITION,
                           "method_tables": [], "jackknife": [], "cli": [], "targets": None}
    print(f"machine: {info['cpu']}, {info['cores']} cores, {info['memory']}, "
          f"{info['platform']}, Python {info['python']}, numpy {info['numpy']}, "
          f"load average {info['load']}")
    if info["blas"]:
        print(f"BLAS: {info['blas']}")
    _bench_method_tables(out, quick)
    _bench_jackknife(out, quick)
    work = Path(tempfile.mkdtemp(prefix="mm-bench-"))
    try:
        _bench_cli(out, work, quick, r_datasets)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not quick:
        print_targets(out)
        out["targets"] = target_rows(out)
    return out


def _fmt(fig: dict[str, Any] | None) -> str:
    if fig is None:
        return "-"
    return f"{fig['wall']:.2f} s wall, {fig['cpu']:.2f} s CPU, peak RSS {fig['peak_mib']:.0f} MiB"


def _record(out: dict[str, Any], key: str, label: str, cold: dict[str, Any] | None,
            warm: dict[str, Any]) -> None:
    """Add a command-line row to ``out`` and print it."""
    out["cli"].append({"key": key, "run": label, "cold": cold, "warm": warm})
    runs = f"median of {warm['runs']}" if warm["runs"] > 1 else "1 run"
    text = f"warm ({runs}) {_fmt(warm)}"
    if cold is not None:
        text = f"cold {_fmt(cold)}; {text}"
    print(f"  {label}: {text}")


def _bench_cli(out: dict[str, Any], work: Path, quick: bool, r_datasets: int) -> None:
    """The command-line figures of :func:`run_bench` (added to ``out``)."""
    print("\ncommand line, wall clock including Python start-up (all measured in this run; "
          f"CPU = user + system seconds of every process; {COLD_DEFINITION}):")
    clark = _config("clark2020.yaml")
    row16 = {**clark, "grid": {"sigma2_nu": [9]}, "engine": "auto"}
    reps = 200 if quick else 1000
    adm = clark["admissibility"]
    fig = cold_and_warm({**row16, "replications": reps}, work, warm_runs=3)
    _record(out, "clark_row16", f"clark2020 row 16, {reps} replications, every method "
            f"({len(clark['methods'])}), {adm['policy']} with gate {adm['gate']}, n_jobs "
            f"{row16.get('n_jobs', 1)}", fig["cold"], fig["warm"])
    out.update(clark_row16_seconds_cold=fig["cold"]["wall"],
               clark_row16_seconds_warm=fig["warm"]["wall"])
    both = cli_run({**clark, "engine": "auto", "replications": reps}, work, repeats=3)
    _record(out, "clark", f"clark2020, both scenarios (2 x {reps} replications)", None, both)
    _bench_r_ratio(out, work, 5 if quick else r_datasets, reps)
    _bench_cv(out, work, quick)
    _bench_bayes(out, work, row16, quick)
    _bench_parallel(out, work, row16, quick)


def _bench_r_ratio(out: dict[str, Any], work: Path, n: int, reps: int) -> None:
    """The R pipeline measured on ``n`` datasets, extrapolated to ``reps``, and its ratio
    to this run's cold and warm row-16 wall times."""
    r = bench_r(n, work)
    out["r"] = r
    if r is None:
        print("\nR pipeline: Rscript with lavaan, lme4 and glmmTMB not available; skipped")
        return
    per_rep = sum(m["seconds"] for m in r["per_method"])
    total = per_rep * reps
    ratios = {kind: total / out[f"clark_row16_seconds_{kind}"] for kind in ("cold", "warm")}
    r.update(per_replication=per_rep, replications=reps, extrapolated_seconds=total,
             ratio_cold=ratios["cold"], ratio_warm=ratios["warm"])
    out.update(r_ratio_cold=ratios["cold"], r_ratio_warm=ratios["warm"])
    print(f"\nR pipeline ({r['versions']}), measured on {n} row-16 datasets "
          f"({r['measured_seconds']:.1f} s wall including R start-up); median seconds per "
          "replication: " + ", ".join(f"{m['method']} {m['seconds']:.4f}"
                                      for m in r["per_method"]))
    print(f"R pipeline for {reps} replications (one core): {total:.1f} s EXTRAPOLATED "
          f"({per_rep:.4f} s per replication measured x {reps}); the measured command-line "
          f"row-16 run above is {ratios['cold']:.0f}x (cold) and {ratios['warm']:.0f}x "
          "(warm) faster")


def _bench_cv(out: dict[str, Any], work: Path, quick: bool) -> None:
    """cv2007 with its five methods and with every method: wall, CPU and peak memory."""
    cv = {**_config("cv2007.yaml"), "engine": "auto", "replications": 200 if quick else 1000}
    print()
    five = cli_run(cv, work)
    _record(out, "cv2007", f"cv2007, 16 cells x {cv['replications']} replications, "
            f"{len(cv['methods'])} methods", None, five)
    every = {**cv, "methods": [m for m in available() if not registry()[m].mcmc]}
    fig = cold_and_warm(every, work, warm_runs=1)
    _record(out, "cv2007_all", f"cv2007, 16 cells x {cv['replications']} replications, every "
            f"method but the samplers ({len(every['methods'])}), n_jobs {cv.get('n_jobs', 1)}, "
            "default memory budget", fig["cold"], fig["warm"])
    for kind in KINDS:
        out[f"cv2007_all_seconds_{kind}"] = fig[kind]["wall"]
        out[f"cv2007_all_peak_mib_{kind}"] = fig[kind]["peak_mib"]


def _bench_bayes(out: dict[str, Any], work: Path, row16: dict[str, Any], quick: bool) -> None:
    """``bayes`` alone on row 16, on 2 cores: the Gibbs sampler's wall time."""
    reps = 100 if quick else 1000
    cfg = {**row16, "methods": ["bayes"], "replications": reps, "n_jobs": 2,
           "admissibility": {"policy": "flag", "gate": "none"}}
    print()
    fig = cold_and_warm(cfg, work, warm_runs=1)
    _record(out, "bayes_row16", f"bayes alone, row 16, {reps} replications, n_jobs 2",
            fig["cold"], fig["warm"])
    for kind in KINDS:
        out[f"bayes_row16_seconds_{kind}"] = fig[kind]["wall"]


def _bench_parallel(out: dict[str, Any], work: Path, row16: dict[str, Any], quick: bool) -> None:
    """Reference-engine parallel speed-up, the machine's ceiling, and memory vs grid size."""
    # long enough (about half a minute on one core) for the workers' start-up (about
    # 1.5 s each: imports) to be a small part, as in a real reference-engine study
    ref = {**row16, "engine": "reference", "replications": 16 if quick else 600,
           "admissibility": {"policy": "flag", "gate": "none"}, "chunk_size": 10}
    w1 = cli_run({**ref, "n_jobs": 1}, work)["wall"]
    w2 = cli_run({**ref, "n_jobs": 2}, work)["wall"]
    ceiling = parallel_ceiling()
    out["parallel"] = {"replications": ref["replications"], "n_jobs_1": w1, "n_jobs_2": w2,
                       "speedup": w1 / w2, "ceiling": ceiling}
    print(f"\nreference engine, {ref['replications']} replications: n_jobs=1 {w1:.2f} s, "
          f"n_jobs=2 {w2:.2f} s, speed-up {w1 / w2:.2f}x; this machine's two-process "
          f"ceiling on a trivial CPU-bound loop: {ceiling:.2f}x")

    small = {"name": "mem", "seed": 1, "replications": 20, "methods": ["unadjusted"],
             "admissibility": {"policy": "flag", "gate": "none"}, "n_jobs": 1,
             "fixed": {"group_size": 10, "icc": 0.1, "r_zxi": 0.3}}
    m2 = cli_run({**small, "grid": {"n_groups": [50, 51]}}, work)["peak_mib"]
    m200 = cli_run({**small, "grid": {"n_groups": list(range(50, 250))}}, work)["peak_mib"]
    out["memory"] = {"cells_2_mib": m2, "cells_200_mib": m200, "ratio": m200 / m2}
    print(f"peak memory: 2-cell grid {m2:.0f} MiB, 200-cell grid {m200:.0f} MiB, "
          f"ratio {m200 / m2:.2f}")


def add_parser(sub: Any) -> None:
    """Add ``bench`` to the CLI."""
    p = sub.add_parser("bench", help="time both engines, the CLI end to end and the R pipeline")
    p.add_argument("--quick", action="store_true",
                   help="smaller sizes (a smoke test; no target verdicts)")
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.add_argument("--markdown", metavar="FILE",
                   help="write the figures into FILE between <!-- bench:begin --> and "
                   "<!-- bench:end --> (appended when the markers are absent)")

    def _cmd(args: argparse.Namespace) -> int:
        res = run_bench(quick=args.quick)
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=2, default=float) + "\n")
        if args.markdown:
            write_markdown(Path(args.markdown), res)
            print(f"\nfigures written to {args.markdown}")
        return 0

    p.set_defaults(func=_cmd)
