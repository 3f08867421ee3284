"""Random streams derived from (root seed, scenario key, replication, draw attempt).

Every replication's generator comes from
``SeedSequence(root, spawn_key=(*scenario.key_words, replication, attempt))``, so any
replication can be regenerated alone, and results do not depend on worker count,
chunking, order or resume. ``attempt`` counts redraws under the admissibility policy
(0 for the first draw).
"""

from __future__ import annotations

import numpy as np

from micromacro_sim.design.scenario import Scenario

__all__ = ["replication_rng", "seed_sequence"]


def seed_sequence(root: int, scenario: Scenario, replication: int, attempt: int = 0):
    """The :class:`numpy.random.SeedSequence` of one replication's draw attempt."""
    if replication < 0 or attempt < 0:
        raise ValueError("replication and attempt must be non-negative")
    return np.random.SeedSequence(
        root, spawn_key=(*scenario.key_words, int(replication), int(attempt))
    )


def replication_rng(
    root: int, scenario: Scenario, replication: int, attempt: int = 0
) -> np.random.Generator:
    """A PCG64 generator for one replication's draw attempt."""
    return np.random.Generator(np.random.PCG64(seed_sequence(root, scenario, replication, attempt)))
