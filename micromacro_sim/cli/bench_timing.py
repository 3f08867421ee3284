"""The measurements of ``micromacro bench``: the machine, both engines per method, a
``micromacro run`` from the command line (cold or warm), the parallel ceiling and the R
pipeline.

A command-line run is **cold** when it runs in a new process after this package's
bytecode has been deleted (its ``__pycache__`` files for this interpreter, where the
package folder is writable), so the package is compiled from source while its
dependencies load the bytecode their installation wrote: a first run right after
``pip install -e .`` (README's commands) or an upgrade. A **warm** run reads the bytecode
the runs before it wrote. Every run writes bytecode in place whatever the calling
environment says (``PYTHONDONTWRITEBYTECODE`` and ``PYTHONPYCACHEPREFIX`` are dropped for
the runs): otherwise each "warm" run would compile the package again.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
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
from micromacro_sim.run.tasks import single_threaded_blas

__all__ = ["COLD_DEFINITION", "ROW16", "bench_jackknife", "bench_methods", "bench_r", "cli_run",
           "cold_and_warm", "datasets", "drop_package_bytecode", "machine_info",
           "parallel_ceiling"]

ROW16 = dict(n_groups=100, group_size=10, icc=0.1, r_zxi=0.3)
#: Whether a run of this bench invocation has written the package's bytecode.
_PRIMED = False

COLD_DEFINITION = (
    "cold = the first run of that command in this bench invocation, in a new process, after "
    "the package's own bytecode was deleted (it is compiled from source, its dependencies "
    "load the bytecode their installation wrote: a first run after pip install -e . or an "
    "upgrade); warm = median of the runs that follow it, reading the bytecode the cold run "
    "wrote"
)


def drop_package_bytecode(roots: list[Path] | None = None) -> int:
    """Delete this package's bytecode for the running interpreter (its ``__pycache__``
    files under ``roots``, by default the package folder); the number deleted (0 where
    the folder is not writable)."""
    tag = sys.implementation.cache_tag
    done = 0
    for root in roots or [Path(__file__).resolve().parents[1]]:
        for pyc in Path(root).rglob(f"__pycache__/*.{tag}*.pyc"):
            try:
                pyc.unlink()
                done += 1
            except OSError:
                pass
    return done

#: Run in the child process: ``micromacro`` with the given arguments, then one line with
#: its wall seconds, peak RSS (KiB, largest process), exit code and CPU seconds. Only the
#: standard library is imported after the run, so that the peak is the run's own.
#: ``VmHWM`` starts afresh at ``exec`` (``ru_maxrss`` of this process would keep the peak
#: of the benchmark that started it); joblib's reusable workers are stopped first so that
#: their peak counts in ``RUSAGE_CHILDREN``.
_PROBE = """
import resource, sys, time
t = time.perf_counter()
from micromacro_sim.cli.main import main
rc = main(sys.argv[1:])
w = time.perf_counter() - t
if "joblib" in sys.modules:
    from joblib.externals.loky import get_reusable_executor
    get_reusable_executor().shutdown(wait=True)
s, c = (resource.getrusage(k) for k in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
own = s.ru_maxrss
try:
    with open("/proc/self/status") as f:
        own = next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:"))
except (OSError, StopIteration, ValueError):
    pass
print("BENCH", w, max(own, c.ru_maxrss), rc, s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime)
"""


def machine_info() -> dict[str, Any]:
    """Processor, cores, memory, load, Python and numpy/BLAS of this machine.

    Returns
    -------
    dict
        ``cpu``, ``cores``, ``memory``, ``load`` (1-minute load average at the start),
        ``platform``, ``python``, ``numpy`` and ``blas`` (empty without threadpoolctl).
    """
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
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return {"cpu": cpu, "cores": os.cpu_count(), "memory": mem, "load": round(load, 2),
            "platform": platform.platform(), "python": platform.python_version(),
            "numpy": np.__version__, "blas": blas}


def datasets(n: int, seed: int = 2026, **params: Any) -> list[Any]:
    """``n`` datasets of one design cell (row 16 unless ``params`` override it)."""
    sc = Scenario.from_params({**ROW16, **params})
    policy = Policy(mode="flag", gate="none")
    return [draw(sc, seed, r, policy).data for r in range(n)]


def _seconds(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _median_time(fn: Callable[[], Any], repeats: int) -> float:
    return float(np.median([_seconds(fn) for _ in range(repeats)]))


def bench_methods(params: dict[str, Any] | None = None, n_fast: int = 1000, n_ref: int = 20,
                  repeats: int = 3) -> list[dict[str, Any]]:
    """Milliseconds per replication of every method in one design cell, both engines.

    Parameters
    ----------
    params : dict, optional
        The cell's design parameters over row 16's (G = 100, n = 10, ICC .1, r .3).
    n_fast, n_ref : int
        Datasets of the fast (batch) engine's batch and of the reference engine's loop.
    repeats : int
        Timed calls whose median is the warm figure.

    Returns
    -------
    list of dict
        Per method: ``reference_ms`` (median of ``repeats`` after a one-dataset warm-up),
        ``fast_first_ms`` (the method's first fast call in this process: includes one-off
        costs not yet paid by the methods before it), ``fast_ms`` (median of the
        ``repeats`` calls after it) and ``speedup`` (reference / fast warm); None where a
        method has no batch implementation.
    """
    data = datasets(max(n_fast, n_ref), **(params or {}))
    fast_batch = Batch.from_datasets(data[:n_fast])
    ref_batch = Batch.from_datasets(data[:n_ref])
    with single_threaded_blas():  # as a run's tasks are
        return [_time_method(name, data[0], fast_batch, ref_batch, repeats)
                for name in available()]


def bench_jackknife(params: dict[str, Any] | None = None, n: int = 100,
                    repeats: int = 3) -> list[dict[str, Any]]:
    """Milliseconds per replication of every two-step method with ``se: jackknife``.

    Parameters
    ----------
    params : dict, optional
        The cell's design parameters over row 16's.
    n : int
        Datasets of the batch (the fast engine where the method has one).
    repeats : int
        Timed calls whose median is the figure (after one warm-up call).

    Returns
    -------
    list of dict
        Per two-step method: ``plain_ms`` (the default ``se: ols``), ``jackknife_ms`` and
        ``ratio`` (their quotient; a method that refits its first step pays about G of
        its own fits, a method whose scores are local only the OLS downdate).
    """
    batch = Batch.from_datasets(datasets(n, **(params or {})))
    rows = []
    with single_threaded_blas():
        for name, cls in registry().items():
            if not cls.two_step or "se" not in cls.options:
                continue
            plain, jk = get_estimator(name), get_estimator(name, se="jackknife")
            times = []
            for est in (plain, jk):
                est.fit_batch(batch, "auto")
                times.append(1000 * _median_time(lambda e=est: e.fit_batch(batch, "auto"),
                                                 repeats) / n)
            rows.append({"method": name, "plain_ms": times[0], "jackknife_ms": times[1],
                         "ratio": times[1] / times[0],
                         "refits": "downdate" if cls.scores_local else "G refits"})
    return rows


def _time_method(name: str, one: Any, fast_batch: Batch, ref_batch: Batch,
                 repeats: int) -> dict[str, Any]:
    """One row of :func:`bench_methods`."""
    n_fast, n_ref = fast_batch.n_reps, ref_batch.n_reps
    est = get_estimator(name)
    cls = registry()[name]
    first = fast = None
    if cls.mcmc:  # seconds per replication: one timed call on a tenth of the batch
        fast_batch = Batch.from_datasets(fast_batch.datasets[:max(1, n_fast // 10)])
        n_fast, repeats = fast_batch.n_reps, 1
    if cls.has_batch(fast_batch.balanced) and not cls.batch_refused(
            several_x=fast_batch.reference_only, member_ids=fast_batch.member_ids):
        first = 1000 * _seconds(lambda: est.fit_batch(fast_batch, "fast")) / n_fast
        fast = (first if cls.mcmc else
                1000 * _median_time(lambda: est.fit_batch(fast_batch, "fast"), repeats) / n_fast)
    est.fit(one)  # warm-up of the reference path (imports, caches)
    ref = 1000 * _median_time(lambda: est.fit_batch(ref_batch, "reference"), repeats) / n_ref
    return {"method": name, "reference_ms": ref, "fast_first_ms": first, "fast_ms": fast,
            "speedup": ref / fast if fast else None}


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
            one = _seconds(lambda: (_spin(n), _spin(n)))
            two = _seconds(lambda: list(pool.map(_spin, [n, n])))
            ratios.append(one / two)
    return float(np.median(ratios))


def _cli_run_once(config: dict[str, Any], workdir: Path) -> tuple[float, int, float]:
    """One ``micromacro run --quiet`` in a new process writing its bytecode in place: wall
    seconds (including start-up), peak RSS (KiB) and CPU seconds."""
    cfg = workdir / f"cfg-{time.monotonic_ns()}.yaml"
    out = workdir / f"out-{time.monotonic_ns()}"
    cfg.write_text(yaml.safe_dump({**config, "output": str(out)}))
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
    try:
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", _PROBE, "run", str(cfg), "--quiet"],
                              capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t
    finally:
        shutil.rmtree(out, ignore_errors=True)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH")]
    if proc.returncode != 0 or not line:
        raise RuntimeError(f"benchmark run failed: {proc.stderr.strip()[-500:]}")
    fields = line[0].split()
    return wall, int(fields[2]), float(fields[4])


def cli_run(config: dict[str, Any], workdir: Path, repeats: int = 1,
            cold: bool = False) -> dict[str, float | int]:
    """``micromacro run`` on a config, ``repeats`` times.

    Returns
    -------
    dict
        ``wall`` and ``cpu`` (medians, seconds; CPU = user + system of every process),
        ``peak_mib`` (largest process, workers included, largest over the runs) and
        ``runs``.
    """
    global _PRIMED
    if cold:  # the package compiles from source and writes the bytecode the warm runs read
        drop_package_bytecode()
        result = _cli_run_once(config, workdir)
        _PRIMED = True
        return {"wall": result[0], "cpu": result[2], "peak_mib": result[1] / 1024, "runs": 1}
    if not _PRIMED:  # an untimed run writes the bytecode first
        _cli_run_once(config, workdir)
        _PRIMED = True
    walls, cpus, peak = [], [], 0
    for _ in range(repeats):
        wall, rss, cpu = _cli_run_once(config, workdir)
        walls.append(wall)
        cpus.append(cpu)
        peak = max(peak, rss)
    return {"wall": float(np.median(walls)), "cpu": float(np.median(cpus)),
            "peak_mib": peak / 1024, "runs": repeats}


def cold_and_warm(config: dict[str, Any], workdir: Path, warm_runs: int
                  ) -> dict[str, dict[str, float | int]]:
    """One cold run of a config, then ``warm_runs`` warm ones (see :data:`COLD_DEFINITION`)."""
    return {"cold": cli_run(config, workdir, cold=True),
            "warm": cli_run(config, workdir, repeats=warm_runs)}


def _r_versions(rscript: str) -> str | None:
    """R's and the three packages' versions, or None when a package is missing."""
    code = ("suppressPackageStartupMessages({library(lavaan); library(lme4); library(glmmTMB)});"
            "cat(paste0('R ', getRversion(), ', lavaan ', packageVersion('lavaan'), ', lme4 ',"
            " packageVersion('lme4'), ', glmmTMB ', packageVersion('glmmTMB')))")
    check = subprocess.run([rscript, "-e", code], capture_output=True, text=True)
    return check.stdout.strip() if check.returncode == 0 else None


def bench_r(n: int, workdir: Path) -> dict[str, Any] | None:
    """The R pipeline on ``n`` row-16 datasets (None without Rscript and its packages).

    Returns
    -------
    dict or None
        ``versions``, ``datasets`` (``n``), ``measured_seconds`` (wall of the whole R
        process, start-up included) and ``per_method`` (median seconds per replication).
    """
    rscript = shutil.which("Rscript")
    script = Path(__file__).resolve().parents[2] / "tools" / "r" / "bench_pipeline.R"
    if rscript is None or not script.is_file():
        return None
    versions = _r_versions(rscript)
    if versions is None:
        return None
    frames = []
    for i, d in enumerate(datasets(n)):
        f = d.to_frame()
        f.insert(0, "dataset", i)
        frames.append(f)
    src, out = workdir / "r_datasets.csv", workdir / "r_times.csv"
    pd.concat(frames).to_csv(src, index=False)
    t = time.perf_counter()
    subprocess.run([rscript, str(script), str(src), str(out)], check=True, capture_output=True)
    measured = time.perf_counter() - t
    med = pd.read_csv(out).groupby("method", sort=False)["seconds"].median()
    return {"versions": versions, "datasets": n, "measured_seconds": measured,
            "per_method": [{"method": m, "seconds": float(s)} for m, s in med.items()]}
