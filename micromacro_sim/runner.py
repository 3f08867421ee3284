"""Run a config: generate, analyse, write shards; resume what is missing.

The steps are separate and pure until the last: :func:`simulate_chunk` draws each
replication's dataset (under the admissibility policy) and applies every method to
that one dataset, returning two tables; :func:`run_task` writes them as shards;
:func:`run` enumerates the missing (scenario, replication range) tasks and hands them
to joblib.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from .admissibility import Policy, draw_many
from .backends import backend_context
from .batch import Batch
from .config import MethodSpec, RunConfig
from .errors import ConfigError
from .models.cfa import CFAMemo
from .progress import Progress
from .reliability import reliability_rows
from .results import SE_COLUMNS, BatchResult
from .scenario import Scenario
from .storage import (
    clear_run,
    completed_ranges,
    read_manifest,
    write_frame_atomic,
    write_json_atomic,
    write_shard,
)

__all__ = ["RunResult", "plan_tasks", "run", "simulate_chunk"]

#: Estimated sequential seconds below which starting loky workers does not pay off: each
#: costs about a second of start-up (imports), and the first task, which the estimate is
#: based on, runs cold and overstates the rest.
LOKY_WORTHWHILE_SECONDS = 3.0



_EST_COLUMNS = [
    "scenario", "replication", "method", "method_index", "term", "term_index", "estimate",
    *SE_COLUMNS.values(), "df_resid", "converged", "admissible", "status", "reason_code",
    "reason", "two_step", "engine",
]


def _table(columns: dict[str, np.ndarray]):
    """A pyarrow table from numpy columns (object arrays hold strings)."""
    import pyarrow as pa

    return pa.table({name: pa.array(values.tolist() if values.dtype == object else values)
                     for name, values in columns.items()})


def _estimate_table(results: list[BatchResult], key: str, reps: np.ndarray):
    """Rows ordered by replication, method, term."""
    R = len(reps)
    parts: dict[str, list[np.ndarray]] = {c: [] for c in _EST_COLUMNS}
    for m_idx, res in enumerate(results):
        k = len(res.terms)
        cols = {
            "scenario": np.full(R * k, key, dtype=object),
            "replication": np.repeat(reps, k).astype(np.int64),
            "method": np.full(R * k, res.method, dtype=object),
            "method_index": np.full(R * k, m_idx, dtype=np.int16),
            "term": np.tile(np.array(res.terms, dtype=object), R),
            "term_index": np.tile(np.arange(k, dtype=np.int16), R),
            "estimate": res.params.reshape(-1),
            **{col: res.bse[t].reshape(-1) for t, col in SE_COLUMNS.items()},
            "df_resid": np.repeat(res.df_resid, k).astype(float),
            "converged": np.repeat(res.converged, k).astype(bool),
            "admissible": np.repeat(res.admissible, k).astype(bool),
            "status": np.repeat(res.status, k).astype(object),
            "reason_code": np.repeat(res.reason_code, k).astype(object),
            "reason": np.repeat(res.reason, k).astype(object),
            "two_step": np.full(R * k, res.two_step),
            "engine": np.full(R * k, res.engine, dtype=object),
        }
        for c in _EST_COLUMNS:
            parts[c].append(cols[c])
    columns = {c: np.concatenate(v) for c, v in parts.items()}
    order = np.lexsort((columns["term_index"], columns["method_index"], columns["replication"]))
    return _table({c: v[order] for c, v in columns.items()})


def simulate_chunk(
    scenario: Scenario,
    replications: range,
    methods: tuple[MethodSpec, ...],
    seed: int,
    policy: Policy,
    engine: str = "auto",
):
    """Generate and analyse a range of replications of one scenario (no I/O).

    Every method sees the same datasets. With the fast engine each method fits the
    whole range at once; the reference engine fits one dataset at a time.

    Returns
    -------
    estimates, datasets : pyarrow.Table
        One row per (replication, method, term), and one per replication.
    """
    estimators = [m.build() for m in methods]
    key = scenario.key
    memo = CFAMemo()  # the gate's CFA fits, reused by factor_score; dropped with the chunk
    draws = draw_many(scenario, seed, replications, policy, batch_gate=engine != "reference",
                      memo=memo)
    batch = Batch.from_datasets([d.data for d in draws], memo=memo)
    results = [est.fit_batch(batch, engine) for est in estimators]
    reps = np.asarray(replications, dtype=np.int64)
    est = _estimate_table(results, key, reps)
    datasets = _table({
        "scenario": np.full(len(reps), key, dtype=object),
        "replication": reps,
        "redraws": np.array([d.redraws for d in draws], dtype=np.int64),
        "gate_passed": np.array([not d.gate_reason for d in draws], dtype=bool),
        "gate_reason": np.array([d.gate_reason for d in draws], dtype=object),
        "n_groups": np.array([d.data.n_groups for d in draws], dtype=np.int64),
        "n_persons": np.array([d.data.n_persons for d in draws], dtype=np.int64),
        **reliability_rows([d.data for d in draws]),
    })
    return est, datasets


def _single_threaded_blas():
    """Limit BLAS to one thread: the matrices here are small, and threads only contend
    (about 20% faster on one core, and workers do not oversubscribe the machine)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: without it BLAS keeps its own setting
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def run_task(run_dir: str, scenario: Scenario, start: int, stop: int,
             methods: tuple[MethodSpec, ...], seed: int, policy: Policy,
             engine: str = "auto") -> tuple[str, int, int]:
    """Simulate replications [start, stop) of ``scenario`` and write both shards.

    The datasets shard is written first and the estimates shard last, so the
    estimates shard marks a finished task.
    """
    with _single_threaded_blas():
        est, ds = simulate_chunk(scenario, range(start, stop), methods, seed, policy, engine)
    write_shard(Path(run_dir), "datasets", scenario.key, start, stop, ds)
    write_shard(Path(run_dir), "estimates", scenario.key, start, stop, est)
    return scenario.key, start, stop


def _missing(done: list[tuple[int, int]], total: int) -> list[tuple[int, int]]:
    covered = np.zeros(total, dtype=bool)
    for a, b in done:
        covered[a : min(b, total)] = True
    gaps, i = [], 0
    while i < total:
        if covered[i]:
            i += 1
            continue
        j = i
        while j < total and not covered[j]:
            j += 1
        gaps.append((i, j))
        i = j
    return gaps


def plan_tasks(config: RunConfig, run_dir: Path) -> list[tuple[Scenario, int, int]]:
    """(scenario, start, stop) tasks for every replication not yet finished in ``run_dir``."""
    size = config.resolved_chunk_size()
    tasks = []
    for sc in config.scenarios:
        for a, b in _missing(completed_ranges(run_dir, sc.key), config.replications):
            for s in range(a, b, size):
                tasks.append((sc, s, min(s + size, b)))
    return tasks


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("micromacro-sim", "numpy", "scipy", "pandas", "statsmodels", "semopy",
                "joblib", "pyarrow", "PyYAML"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _prepare(config: RunConfig, run_dir: Path, overwrite: bool) -> dict[str, Any]:
    """Check the folder's previous run (if any) and return the manifest to write."""
    old = read_manifest(run_dir)
    keys = [sc.key for sc in config.scenarios]
    if old is not None and not overwrite and old.get("result_hash") != config.result_hash:
        raise ConfigError(
            f"output: {str(run_dir)!r} holds a run of a different config "
            f"(result hash {old.get('result_hash')} != {config.result_hash}); "
            "choose another output folder or pass --overwrite"
        )
    if old is not None and overwrite:
        clear_run(run_dir)
        old = None
    previous = [] if old is None else list(old.get("scenarios", []))
    all_keys = previous + [k for k in keys if k not in previous]
    return {
        "name": config.name,
        "description": config.description,
        "status": "running",
        "result_hash": config.result_hash,
        "result_identity": config.result_identity(),
        "config": config.raw,
        "seed": config.seed,
        "replications": config.replications,
        "scenarios": all_keys,
        "methods": [m.label for m in config.methods],
        "versions": _versions(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "created": old.get("created") if old else _now(),
        "runs": (old.get("runs", []) if old else []),
    }


@dataclass(frozen=True)
class RunResult:
    """What :func:`run` did."""

    run_dir: Path
    tasks_run: int
    replications_run: int
    seconds: float


def _scenarios_table(run_dir: Path, config: RunConfig, keys: list[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = run_dir / "scenarios.parquet"
    rows = {sc.key: sc.describe() for sc in config.scenarios}
    if path.is_file():
        for row in pq.read_table(path).to_pylist():
            rows.setdefault(row["scenario"], row)
    write_frame_atomic(path, pa.Table.from_pylist([rows[k] for k in keys if k in rows]))


def run(
    config: RunConfig,
    *,
    run_dir: str | Path | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
    max_tasks: int | None = None,
) -> RunResult:
    """Run (or resume) every missing task of ``config``.

    Parameters
    ----------
    config : RunConfig
    run_dir : path, optional
        Output folder (default: the config's ``output``, else ``results/<name>``).
    overwrite : bool
        Discard an existing run of a different config in ``run_dir``.
    progress : bool, optional
        Show a progress line on stderr (default: when stderr is a terminal).
    max_tasks : int, optional
        Stop after this many tasks (used to test interruption and resume).

    Returns
    -------
    RunResult
    """
    from joblib import Parallel, delayed

    run_dir = Path(run_dir or config.output or Path("results") / config.name)
    manifest = _prepare(config, run_dir, overwrite)
    run_dir.mkdir(parents=True, exist_ok=True)
    _scenarios_table(run_dir, config, manifest["scenarios"])
    tasks = plan_tasks(config, run_dir)
    if max_tasks is not None:
        tasks = tasks[:max_tasks]
    started = time.perf_counter()
    manifest["runs"].append({"started": _now(), "n_jobs": config.n_jobs,
                             "chunk_size": config.resolved_chunk_size(),
                             "backend": config.backend, "tasks": len(tasks)})
    write_json_atomic(run_dir / "manifest.json", manifest)

    show = sys.stderr.isatty() if progress is None else progress
    bar = Progress(total=sum(b - a for _, a, b in tasks), unit="reps", enabled=show)

    def args(task: tuple[Scenario, int, int]) -> tuple:
        sc, a, b = task
        return (str(run_dir), sc, a, b, config.methods, config.seed, config.policy,
                config.engine)

    backend = config.backend
    if backend in ("loky", "threading") and (config.n_jobs == 1 or len(tasks) <= 1):
        backend = "sequential"
    if backend == "loky" and tasks:
        # Worker processes cost about a second to start; when the first task shows the
        # whole run is shorter than that, the rest runs in this process. Where a task
        # runs never changes its results.
        t0 = time.perf_counter()
        _key, a, b = run_task(*args(tasks[0]))
        bar.update(b - a)
        tasks_left = tasks[1:]
        if (time.perf_counter() - t0) * len(tasks_left) < LOKY_WORTHWHILE_SECONDS:
            backend = "sequential"
    else:
        tasks_left = tasks
    if tasks_left:
        n_jobs = 1 if backend == "sequential" else config.n_jobs
        with backend_context(backend, n_jobs=n_jobs, scratch=run_dir / ".scratch",
                             address=config.address):
            # Ray's joblib backend returns all results at once (no generators): its
            # progress line moves at the end only.
            order = "list" if backend == "ray" else "generator_unordered"
            calls = (delayed(run_task)(*args(t)) for t in tasks_left)
            for _key, a, b in Parallel(return_as=order)(calls):
                bar.update(b - a)
    bar.close()

    seconds = time.perf_counter() - started
    remaining = plan_tasks(config, run_dir)
    manifest["status"] = "complete" if not remaining else "partial"
    manifest["runs"][-1].update(finished=_now(), seconds=round(seconds, 3))
    manifest["finished"] = _now()
    write_json_atomic(run_dir / "manifest.json", manifest)
    return RunResult(
        run_dir=run_dir,
        tasks_run=len(tasks),
        replications_run=sum(b - a for _, a, b in tasks),
        seconds=seconds,
    )
