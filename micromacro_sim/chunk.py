"""One task's numbers, without I/O: :func:`simulate_chunk`.

It draws each replication's dataset (under the admissibility policy, from the
replication's own stream) and applies every method to the same datasets, returning the
estimates and datasets tables that :mod:`.runner` writes as shards.
"""

from __future__ import annotations

import numpy as np

from .admissibility import Policy, draw_many
from .batch import Batch
from .config import MethodSpec
from .models.cfa import CFAMemo
from .reliability import reliability_rows
from .results import SE_COLUMNS, BatchResult
from .scenario import Scenario

__all__ = ["simulate_chunk"]

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
    generator: str | None = None,
):
    """Generate and analyse a range of replications of one scenario (no I/O).

    Every method sees the same datasets. With the fast engine each method fits the
    whole range at once; the reference engine fits one dataset at a time.
    ``generator`` names a user's generator (see :mod:`~micromacro_sim.plugins`).

    Returns
    -------
    estimates, datasets : pyarrow.Table
        One row per (replication, method, term), and one per replication.
    """
    estimators = [m.build() for m in methods]
    key = scenario.key
    gen = None
    if generator is not None:
        from .plugins import load_generator

        gen = load_generator(generator)
    memo = CFAMemo()  # the gate's CFA fits, reused by factor_score; dropped with the chunk
    draws = draw_many(scenario, seed, replications, policy, batch_gate=engine != "reference",
                      memo=memo, generator=gen)
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
