"""``micromacro bench``: speed of both engines, the CLI end to end, and the R pipeline.

Everything is measured in one run on this machine and printed with the machine's
description, so ratios compare like with like. Timings are medians of repeats; CPU
seconds (user + system of every process) are printed beside wall times, since a shared
machine slows the wall clock but hardly the CPU time. The one extrapolated figure, the
R pipeline's time for a full study (measured per replication on a few datasets), is
labelled as such.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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

from micromacro_sim.design.policy import Policy
from micromacro_sim.design.scenario import Scenario
from micromacro_sim.estimators import available, get_estimator, registry
from micromacro_sim.estimators.admissibility import draw
from micromacro_sim.generate.batch import Batch

__all__ = ["add_parser", "machine_info", "run_bench"]

ROW16 = dict(n_groups=100, group_size=10, icc=0.1, r_zxi=0.3)


def machine_info() -> dict[str, Any]:
    """Processor, cores, memory, Python and numpy/BLAS of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    blas = ""
    try:
        from threadpoolctl import threadpool_info

        blas = ", ".join(f"{i['internal_api']} {i.get('version', '')} ({i['num_threads']} thr)"
                         for i in threadpool_info())
    except ImportError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory": mem,
            "platform": platform.platform(), "python": platform.python_version(),
            "numpy": np.__version__, "blas": blas}


def _datasets(n: int, seed: int = 2026, **params: Any):
    sc = Scenario.from_params({**ROW16, **params})
    policy = Policy(mode="flag", gate="none")
    return [draw(sc, seed, r, policy).data for r in range(n)]


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def bench_methods(n_fast: int = 1000, n_ref: int = 20, repeats: int = 3) -> pd.DataFrame:
    """Per-replication milliseconds of every method on row 16, both engines."""
    data = _datasets(max(n_fast, n_ref))
    fast_batch = Batch.from_datasets(data[:n_fast])
    ref_batch = Batch.from_datasets(data[:n_ref])
    rows = []
    for name in available():
        est = get_estimator(name)
        est.fit(data[0])  # warm-up (imports, caches)
        ref = _median_time(lambda e=est: e.fit_batch(ref_batch, "reference"), repeats) / n_ref
        fast = np.nan
        if registry()[name].has_batch(True):
            fast = _median_time(lambda e=est: e.fit_batch(fast_batch, "fast"), repeats) / n_fast
        rows.append({"method": name, "reference_ms": 1000 * ref, "fast_ms": 1000 * fast,
                     "speedup": ref / fast if fast == fast else np.nan})
    return pd.DataFrame(rows)


def _spin(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i
    return total


def parallel_ceiling(repeats: int = 3) -> float:
    """Speed-up of two processes over one on a trivial CPU-bound loop (no I/O, no sharing).

    The most any two-worker run can gain on this machine: virtual CPUs that share a
    physical core, or a throttled host, show values well below 2.
    """
    from concurrent.futures import ProcessPoolExecutor

    n = 4_000_000
    ratios = []
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(_spin, [1000, 1000]))  # start the workers
        for _ in range(repeats):
            t = time.perf_counter()
            _spin(n)
            _spin(n)
            one = time.perf_counter() - t
            t = time.perf_counter()
            list(pool.map(_spin, [n, n]))
            ratios.append(one / (time.perf_counter() - t))
    return float(np.median(ratios))


def _own_peak_kib() -> int:
    """Peak resident memory of this process (KiB): ``VmHWM``, which starts afresh at
    ``exec`` (``ru_maxrss`` keeps the peak of the process that forked it, here the
    benchmark itself)."""
    import resource

    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _reap_workers() -> None:
    """Stop joblib's reusable worker processes, so that their peak resident memory
    counts in this process's ``RUSAGE_CHILDREN``."""
    if "joblib" not in sys.modules:
        return
    from joblib.externals.loky import get_reusable_executor

    get_reusable_executor().shutdown(wait=True)


def _cli_run(config: dict[str, Any], workdir: Path, extra: list[str] | None = None,
             repeats: int = 1) -> tuple[float, int, float]:
    """``micromacro run`` on a config: median wall seconds over ``repeats`` runs, peak
    RSS (KiB, largest process, workers included) and median CPU seconds (user + system,
    every process)."""
    walls, cpus, peak = [], [], 0
    for _ in range(repeats):
        wall, rss, cpu = _cli_run_once(config, workdir, extra)
        walls.append(wall)
        cpus.append(cpu)
        peak = max(peak, rss)
    return float(np.median(walls)), peak, float(np.median(cpus))


def _cli_run_once(config: dict[str, Any], workdir: Path, extra: list[str] | None
                  ) -> tuple[float, int, float]:
    cfg = workdir / f"cfg-{time.monotonic_ns()}.yaml"
    out = workdir / f"out-{time.monotonic_ns()}"
    cfg.write_text(yaml.safe_dump({**config, "output": str(out)}))
    code = (
        "import resource, sys, time; t = time.perf_counter(); "
        "from micromacro_sim.cli.main import main; rc = main(sys.argv[1:]); "
        "w = time.perf_counter() - t; "
        "from micromacro_sim.cli.bench import _own_peak_kib, _reap_workers; _reap_workers(); "
        "s, c = (resource.getrusage(k) for k in (resource.RUSAGE_SELF, "
        "resource.RUSAGE_CHILDREN)); "
        "print('BENCH', w, max(_own_peak_kib(), c.ru_maxrss), rc, "
        "s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime)"
    )
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, "run", str(cfg), "--quiet",
                           *(extra or [])], capture_output=True, text=True)
    wall = time.perf_counter() - t
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH")]
    if proc.returncode != 0 or not line:
        raise RuntimeError(f"benchmark run failed: {proc.stderr.strip()[-500:]}")
    shutil.rmtree(out, ignore_errors=True)
    fields = line[0].split()
    return wall, int(fields[2]), float(fields[4])


def bench_r(n: int, workdir: Path) -> pd.DataFrame | None:
    """Seconds per replication of the R pipeline on ``n`` row-16 datasets (None without R)."""
    rscript = shutil.which("Rscript")
    script = Path(__file__).resolve().parents[1] / "tools" / "r" / "bench_pipeline.R"
    if rscript is None or not script.is_file():
        return None
    check = subprocess.run([rscript, "-e", "library(lavaan); library(lme4); library(glmmTMB)"],
                           capture_output=True)
    if check.returncode != 0:
        return None
    frames = []
    for i, d in enumerate(_datasets(n)):
        f = d.to_frame()
        f.insert(0, "dataset", i)
        frames.append(f)
    src, out = workdir / "r_datasets.csv", workdir / "r_times.csv"
    pd.concat(frames).to_csv(src, index=False)
    subprocess.run([rscript, str(script), str(src), str(out)], check=True, capture_output=True)
    times = pd.read_csv(out)
    return times.groupby("method", sort=False)["seconds"].median().rename("r_seconds").reset_index()


def _config(name: str) -> dict[str, Any]:
    from importlib import resources

    return yaml.safe_load(resources.files("micromacro_sim").joinpath("configs", name).read_text())


def run_bench(*, quick: bool = False, r_datasets: int = 20) -> dict[str, Any]:
    """Run every benchmark; returns a dict of tables and figures (also printed)."""
    info = machine_info()
    out: dict[str, Any] = {"machine": info}
    print(f"machine: {info['cpu']}, {info['cores']} cores, {info['memory']}, "
          f"{info['platform']}, Python {info['python']}, numpy {info['numpy']}")
    if info["blas"]:
        print(f"BLAS: {info['blas']}")
    methods = bench_methods(n_fast=200 if quick else 1000, n_ref=5 if quick else 20)
    out["methods"] = methods
    print("\nper replication, CV row 16 (G=100, n=10), milliseconds:")
    print(methods.to_string(index=False, float_format=lambda v: f"{v:.3f}"))

    work = Path(tempfile.mkdtemp(prefix="mm-bench-"))
    try:
        _bench_cli(out, work, quick, r_datasets)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not quick:
        print_targets(out)
    return out


#: The speed and memory targets (figure, comparison, bound, text), checked by
#: :func:`print_targets` on the full-size figures of one run.
TARGETS = (
    ("clark_row16_seconds", "<=", 1.2, "seed study (row 16, 1000 replications) wall, s"),
    ("cv2007_all_seconds", "<=", 10.0, "cv2007 with every method wall, s"),
    ("cv2007_all_peak_mib", "<=", 600.0, "cv2007 with every method peak RSS, MiB"),
    ("r_ratio", ">=", 300.0, "R pipeline / seed study (measured, R extrapolated)"),
)


def print_targets(out: dict[str, Any]) -> dict[str, bool | None]:
    """Print and return each target's verdict on this run's figures (None: not measured)."""
    print("\ntargets:")
    verdicts: dict[str, bool | None] = {}
    for key, op, bound, text in TARGETS:
        value = out.get(key)
        if value is None:
            verdicts[key] = None
            print(f"  {text}: not measured in this run")
            continue
        ok = value <= bound if op == "<=" else value >= bound
        verdicts[key] = bool(ok)
        print(f"  {text}: {value:.4g} (target {op} {bound:g}): {'met' if ok else 'NOT MET'}")
    return verdicts


def _bench_cli(out: dict[str, Any], work: Path, quick: bool, r_datasets: int) -> None:
    """The command-line figures of :func:`run_bench` (added to ``out``)."""
    print("\ncommand line, wall clock including Python start-up (all measured in this run; "
          "CPU = user + system seconds of every process):")
    clark = _config("clark2020.yaml")
    row16 = {**clark, "grid": {"sigma2_nu": [9]}, "engine": "auto"}
    reps = 200 if quick else 1000
    wall, rss, cpu = _cli_run({**row16, "replications": reps}, work, repeats=3)
    out.update(clark_row16_seconds=wall, clark_row16_cpu=cpu)
    print(f"  clark2020 row 16, {reps} replications, every method, n_jobs "
          f"{row16.get('n_jobs', 1)}: {wall:.2f} s wall (median of 3), {cpu:.2f} s CPU, "
          f"peak RSS {rss / 1024:.0f} MiB")
    wall_all, _, cpu_all = _cli_run({**clark, "engine": "auto", "replications": reps}, work,
                                    repeats=3)
    out.update(clark_seconds=wall_all, clark_cpu=cpu_all)
    print(f"  clark2020 (both scenarios), {reps} replications: {wall_all:.2f} s wall, "
          f"{cpu_all:.2f} s CPU")
    _bench_r_ratio(out, work, 5 if quick else r_datasets, reps, wall)
    _bench_cv(out, work, quick)
    _bench_parallel(out, work, row16, quick)


def _bench_r_ratio(out: dict[str, Any], work: Path, n: int, reps: int, wall: float) -> None:
    """The R pipeline measured on ``n`` datasets, extrapolated to ``reps``, and its ratio
    to this run's measured row-16 wall time."""
    t = time.perf_counter()
    r = bench_r(n, work)
    if r is None:
        print("R pipeline: Rscript with lavaan, lme4 and glmmTMB not available; skipped")
        return
    measured = time.perf_counter() - t
    per_rep = float(r["r_seconds"].sum())
    out.update(r=r, r_measured_datasets=n, r_measured_seconds=measured)
    print(f"\nR pipeline, measured on {n} row-16 datasets ({measured:.1f} s wall including R "
          "start-up); median seconds per replication: "
          + ", ".join(f"{m} {s:.4f}" for m, s in zip(r["method"], r["r_seconds"], strict=True)))
    r_total = per_rep * reps
    out.update(r_extrapolated_seconds=r_total, r_ratio=r_total / wall)
    print(f"R pipeline for {reps} replications (one core): {r_total:.1f} s EXTRAPOLATED "
          f"({per_rep:.4f} s per replication measured x {reps}); the measured command-line "
          f"run above is {r_total / wall:.0f}x faster")


def _bench_cv(out: dict[str, Any], work: Path, quick: bool) -> None:
    """cv2007 with its five methods and with every method: wall, CPU and peak memory."""
    cv = {**_config("cv2007.yaml"), "engine": "auto", "replications": 200 if quick else 1000}
    wall_cv, rss_cv, cpu_cv = _cli_run(cv, work)
    out.update(cv2007_seconds=wall_cv, cv2007_cpu=cpu_cv, cv2007_peak_mib=rss_cv / 1024)
    print(f"\n  cv2007, 16 cells x {cv['replications']} replications, {len(cv['methods'])} "
          f"methods: {wall_cv:.2f} s wall, {cpu_cv:.2f} s CPU, peak RSS {rss_cv / 1024:.0f} MiB")
    every = {**cv, "methods": available()}
    wall_all, rss_all, cpu_all = _cli_run(every, work)
    out.update(cv2007_all_seconds=wall_all, cv2007_all_cpu=cpu_all,
               cv2007_all_peak_mib=rss_all / 1024)
    print(f"  cv2007, 16 cells x {cv['replications']} replications, every method "
          f"({len(every['methods'])}), n_jobs {cv.get('n_jobs', 1)}, default memory budget: "
          f"{wall_all:.2f} s wall, {cpu_all:.2f} s CPU, peak RSS {rss_all / 1024:.0f} MiB "
          "(largest process)")


def _bench_parallel(out: dict[str, Any], work: Path, row16: dict[str, Any], quick: bool) -> None:
    """Reference-engine parallel speed-up, the machine's ceiling, and memory vs grid size."""
    # long enough (about half a minute on one core) for the workers' start-up (about
    # 1.5 s each: imports) to be a small part, as in a real reference-engine study
    ref = {**row16, "engine": "reference", "replications": 16 if quick else 600,
           "admissibility": {"policy": "flag", "gate": "none"}, "chunk_size": 10}
    w1, _, _ = _cli_run({**ref, "n_jobs": 1}, work)
    w2, _, _ = _cli_run({**ref, "n_jobs": 2}, work)
    out["parallel_speedup"] = w1 / w2
    ceiling = parallel_ceiling()
    out["parallel_ceiling"] = ceiling
    print(f"\nreference engine, {ref['replications']} replications: n_jobs=1 {w1:.2f} s, "
          f"n_jobs=2 {w2:.2f} s, speed-up {w1 / w2:.2f}x; this machine's two-process "
          f"ceiling on a trivial CPU-bound loop: {ceiling:.2f}x")

    small = {"name": "mem", "seed": 1, "replications": 20, "methods": ["unadjusted"],
             "admissibility": {"policy": "flag", "gate": "none"}, "n_jobs": 1,
             "fixed": {"group_size": 10, "icc": 0.1, "r_zxi": 0.3}}
    _, m2, _ = _cli_run({**small, "grid": {"n_groups": [50, 51]}}, work)
    _, m200, _ = _cli_run({**small, "grid": {"n_groups": list(range(50, 250))}}, work)
    out["memory_ratio"] = m200 / m2
    print(f"peak memory: 2-cell grid {m2 / 1024:.0f} MiB, 200-cell grid {m200 / 1024:.0f} MiB,"
          f" ratio {m200 / m2:.2f}")


def add_parser(sub: Any) -> None:
    """Add ``bench`` to the CLI."""
    p = sub.add_parser("bench", help="time both engines, the CLI end to end and the R pipeline")
    p.add_argument("--quick", action="store_true", help="smaller sizes (a smoke test)")
    p.add_argument("--json", help="also write the figures to this JSON file")

    def _cmd(args: argparse.Namespace) -> int:
        res = run_bench(quick=args.quick)
        if args.json:
            flat = {k: (v.to_dict("records") if isinstance(v, pd.DataFrame) else v)
                    for k, v in res.items()}
            Path(args.json).write_text(json.dumps(flat, indent=2, default=float) + "\n")
        return 0

    p.set_defaults(func=_cmd)
