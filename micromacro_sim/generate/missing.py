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

from functools import lru_cache

import numpy as np

from micromacro_sim.design.fleishman import Fleishman

__all__ = ["expected_rate", "mar_intercept", "observed_mask"]

#: Gauss-Hermite (probabilists') nodes for expectations over a standard normal.
_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(120)
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()


def _logistic(t: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * t))


def expected_rate(intercept: float, strength: float, poly: Fleishman) -> float:
    """E[logistic(intercept + strength * poly(U))], U standard normal (quadrature)."""
    w = poly.apply(_NODES)
    return float(_WEIGHTS @ _logistic(intercept + strength * w))


@lru_cache(maxsize=256)
def mar_intercept(rate: float, strength: float, poly: Fleishman) -> float:
    """The intercept ``a`` with ``E[logistic(a + s w)] = rate`` (w = poly(U))."""
    from scipy.optimize import brentq

    lo, hi = -50.0 - abs(strength) * 20, 50.0 + abs(strength) * 20
    return float(brentq(lambda a: expected_rate(a, strength, poly) - rate, lo, hi,
                        xtol=1e-14, rtol=1e-14, maxiter=500))


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
