"""Clark (2020)'s score comparison: every method's group scores recomputed from the
regenerated datasets of a finished run (the datasets are not stored; their streams are).
"""

from __future__ import annotations

import numpy as np

from micromacro_sim.design.config import MethodSpec, RunConfig
from micromacro_sim.design.policy import Policy
from micromacro_sim.design.scenario import Scenario
from micromacro_sim.estimators import build
from micromacro_sim.estimators.admissibility import draw
from micromacro_sim.generate.batch import Batch

__all__ = ["regenerate_scores"]

def _score_chunk(scenario: Scenario, reps: range, specs: tuple[MethodSpec, ...], seed: int,
                 policy: Policy) -> dict[str, np.ndarray]:
    """Scores of every method on the regenerated datasets of ``reps``."""
    data = [draw(scenario, seed, rep, policy).data for rep in reps]
    batch = Batch.from_datasets(data)
    out: dict[str, np.ndarray] = {}
    for spec in specs:
        est = build(spec)
        if est.has_batch(batch.balanced) and hasattr(est, "scores_batch"):
            vals = np.asarray(est.scores_batch(batch).values, dtype=float)
        else:
            parts = []
            for d in data:
                try:
                    parts.append(np.asarray(est.scores(d).values, dtype=float).reshape(-1))
                except (np.linalg.LinAlgError, ValueError, ArithmeticError):
                    parts.append(np.full(d.n_groups, np.nan))
            vals = np.stack(parts)
        out[spec.label] = vals.reshape(-1)
    return out


def regenerate_scores(cfg: RunConfig, scenario: Scenario, methods: tuple[str, ...],
                      *, n_jobs: int = 1, chunk: int = 50) -> dict[str, np.ndarray]:
    """Every group score of every replication, recomputed from the regenerated datasets.

    The datasets are drawn again with the config's seed and admissibility policy, so
    they are the run's datasets; scores are not stored by the runner.
    """
    from joblib import Parallel, delayed

    specs = tuple(m for m in cfg.methods if m.method in methods)
    ranges = [range(a, min(a + chunk, cfg.replications))
              for a in range(0, cfg.replications, chunk)]
    parts = Parallel(n_jobs=n_jobs)(
        delayed(_score_chunk)(scenario, r, specs, cfg.seed, cfg.policy) for r in ranges
    )
    return {s.label: np.concatenate([p[s.label] for p in parts]) for s in specs}
