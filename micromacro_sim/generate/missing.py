"""Members missing completely at random or at random given a group-level variable.

A member of group g is missing with probability ``m_g = 1 - (1 - mcar)(1 - p_g)``: the
MCAR and MAR mechanisms act independently. The MAR part is a logistic selection on a
standardized group-level variable ``w_g`` (the first Z, or the first latent mean):
``p_g = logistic(a + s w_g)``, with the intercept ``a`` solved so that ``E[p_g] = rate``
over the distribution of ``w`` (normal, or the Fleishman polynomial of a normal when xi
is non-normal), by Gauss-Hermite quadrature.

Every group keeps at least one member: when all of a group's members are selected as
missing, the member with the largest selection draw (``u_ig`` compared with ``m_g``, the
same for every member of the group, so a member chosen at random) is kept. The number of
groups therefore never changes.
"""

from __future__ import annotations

import numpy as np

from micromacro_sim.design.measurement import expected_rate, mar_intercept

__all__ = ["expected_rate", "mar_intercept", "observed_mask"]


def observed_mask(u: np.ndarray, missing_prob: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Which members are observed: ``u >= m_g``, keeping at least one member per group.

    Parameters
    ----------
    u : ndarray (N,)
        Uniform selection draws, one per member (group-sorted).
    missing_prob : ndarray (G,)
        Probability ``m_g`` that a member of group g is missing.
    sizes : ndarray (G,)
        Designed group sizes (before missingness).
    """
    m = np.repeat(missing_prob, sizes)
    keep = u >= m
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    empty = np.add.reduceat(keep.astype(np.int64), starts) == 0
    for g in np.flatnonzero(empty):
        s = starts[g]
        keep[s + int(np.argmax(u[s:s + sizes[g]]))] = True
    return keep
