"""One task's numbers, without I/O: :func:`simulate_chunk`.

It draws each replication's dataset (under the admissibility policy, from the
replication's own stream) and applies every method to the same datasets, returning the
estimates and datasets tables that :mod:`.runner` writes as shards. A task's range is cut
into batches whose working set fits a memory budget (:mod:`.budget`); every batch path is
bitwise stable across batch companions, so the results do not depend on that cut.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from micromacro_sim.core.results import SE_COLUMNS, BatchResult
from micromacro_sim.design.config import MethodSpec
from micromacro_sim.design.policy import Policy
from micromacro_sim.design.scenario import Scenario
from micromacro_sim.estimators import build
from micromacro_sim.estimators.admissibility import draw_many
from micromacro_sim.estimators.base import fit_recorded
from micromacro_sim.generate.batch import Batch
from micromacro_sim.models.cfa import CFAMemo
from micromacro_sim.models.reliability import reliability_rows
from micromacro_sim.run.arrow_columns import table_from_columns
from micromacro_sim.run.memory import batch_ranges, batch_size

__all__ = ["simulate_chunk"]

_EST_COLUMNS = [
    "scenario", "replication", "method", "method_index", "term", "term_index", "estimate",
    *SE_COLUMNS.values(), "df_resid", "ci_low", "ci_high", "ci_level", "converged",
    "admissible", "status", "reason_code", "reason", "two_step", "engine",
]


def _table(columns: dict[str, np.ndarray]):
    """A pyarrow table from numpy columns (object arrays hold strings), without pandas."""
    return table_from_columns(columns)


def _estimate_columns(results: list[BatchResult], key: str,
                      reps: np.ndarray) -> dict[str, np.ndarray]:
    """Estimate rows as numpy columns, ordered by replication, method, term."""
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
            **_interval_columns(res, R * k),
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
    return {c: v[order] for c, v in columns.items()}


def _interval_columns(res: BatchResult, n: int) -> dict[str, np.ndarray]:
    """``ci_low``, ``ci_high`` and ``ci_level``: the method's own intervals (NaN when it
    reports none)."""
    if res.ci is None or res.ci_level is None:
        nan = np.full(n, np.nan)
        return {"ci_low": nan, "ci_high": nan.copy(), "ci_level": nan.copy()}
    return {"ci_low": res.ci[..., 0].reshape(-1).astype(float),
            "ci_high": res.ci[..., 1].reshape(-1).astype(float),
            "ci_level": np.full(n, float(res.ci_level))}


def _simulate_batch(scenario: Scenario, replications: range, estimators: list[Any], seed: int,
                    policy: Policy, engine: str, gen: Any
                    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """One batch of :func:`simulate_chunk`: both tables as numpy columns."""
    key = scenario.key
    memo = CFAMemo()  # the gate's CFA fits, reused by factor_score; dropped with the batch
    draws = draw_many(scenario, seed, replications, policy, batch_gate=engine != "reference",
                      memo=memo, generator=gen)
    batch = Batch.from_datasets([d.data for d in draws], memo=memo)
    results = [fit_recorded(est, batch, engine) for est in estimators]
    del batch
    reps = np.asarray(replications, dtype=np.int64)
    est = _estimate_columns(results, key, reps)
    datasets = {
        "scenario": np.full(len(reps), key, dtype=object),
        "replication": reps,
        "redraws": np.array([d.redraws for d in draws], dtype=np.int64),
        "gate_passed": np.array([not d.gate_reason for d in draws], dtype=bool),
        "gate_reason": np.array([d.gate_reason for d in draws], dtype=object),
        "n_groups": np.array([d.data.n_groups for d in draws], dtype=np.int64),
        "n_persons": np.array([d.data.n_persons for d in draws], dtype=np.int64),
        **reliability_rows([d.data for d in draws]),
    }
    return est, datasets


def simulate_chunk(
    scenario: Scenario,
    replications: range,
    methods: tuple[MethodSpec, ...],
    seed: int,
    policy: Policy,
    engine: str = "auto",
    generator: str | None = None,
    memory_budget: int | None = None,
):
    """Generate and analyse a range of replications of one scenario (no I/O).

    Every method sees the same datasets. With the fast engine each method fits a batch
    of replications at once; the reference engine fits one dataset at a time. What a
    method's code raises becomes that method's ``error`` results
    (:func:`~micromacro_sim.estimators.base.fit_recorded`); a user's generator that fails
    stops the run (:class:`~micromacro_sim.core.errors.PluginError`). The range
    is cut into batches whose estimated working set fits ``memory_budget`` (bytes,
    default :data:`~micromacro_sim.design.budget.DEFAULT_MEMORY_BUDGET`); every replication's
    results are the same whatever the batch size. ``generator`` names a user's generator
    (see :mod:`~micromacro_sim.estimators.plugins`).

    Returns
    -------
    estimates, datasets : pyarrow.Table
        One row per (replication, method, term), and one per replication.
    """
    estimators = [build(m) for m in methods]
    gen = None
    if generator is not None:
        from micromacro_sim.estimators.plugins import load_generator

        gen = load_generator(generator)
    size = batch_size(scenario, methods, engine, memory_budget)
    est_parts, ds_parts = [], []
    for part in batch_ranges(replications, size):
        est, ds = _simulate_batch(scenario, part, estimators, seed, policy, engine, gen)
        est_parts.append(est)
        ds_parts.append(ds)
    if not est_parts:  # an empty range: the one-batch path gives the empty tables
        est, ds = _simulate_batch(scenario, replications, estimators, seed, policy, engine,
                                  gen)
        est_parts, ds_parts = [est], [ds]
    return _table(_concat(est_parts)), _table(_concat(ds_parts))


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if len(parts) == 1:
        return parts[0]
    return {c: np.concatenate([p[c] for p in parts]) for c in parts[0]}
