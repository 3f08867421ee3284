"""What the measurement factors of a scenario fix before anything is drawn: the ordinal
thresholds and the intercept of the MAR selection.

Both the generator (:mod:`micromacro_sim.generate`) and the population quantities of
:mod:`micromacro_sim.design.population` use them, so they live with the design.

``symmetric`` thresholds are ``t_j = Phi^-1(j / k)`` (equally likely categories under a
standard normal response, symmetric about 0); ``skewed`` ones give category
probabilities proportional to 1, 2, ..., k (``t_j = Phi^-1(sum_{i<=j} i / (k(k+1)/2))``).
The MAR selection is ``p_g = logistic(a + s w_g)`` with ``a`` solved so that
``E[p_g] = rate`` over the distribution of ``w`` (normal, or the Fleishman polynomial of
a normal when xi is non-normal), by Gauss-Hermite quadrature.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from micromacro_sim.design.fleishman import Fleishman

__all__ = ["expected_rate", "logistic", "mar_intercept", "threshold_values"]

#: Gauss-Hermite (probabilists') nodes for expectations over a standard normal.
_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(120)
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()


def threshold_values(spec: str | tuple[float, ...], k: int) -> np.ndarray:
    """The k - 1 thresholds of a ``thresholds`` field value."""
    from scipy.stats import norm

    if spec == "symmetric":
        return norm.ppf(np.arange(1, k) / k)
    if spec == "skewed":
        w = np.arange(1, k + 1, dtype=float)
        return norm.ppf(np.cumsum(w)[:-1] / w.sum())
    return np.asarray(spec, dtype=float)


def logistic(t: np.ndarray) -> np.ndarray:
    """The logistic function, as the generator evaluates it."""
    return 0.5 * (1.0 + np.tanh(0.5 * t))


def expected_rate(intercept: float, strength: float, poly: Fleishman) -> float:
    """E[logistic(intercept + strength * poly(U))], U standard normal (quadrature)."""
    w = poly.apply(_NODES)
    return float(_WEIGHTS @ logistic(intercept + strength * w))


@lru_cache(maxsize=256)
def mar_intercept(rate: float, strength: float, poly: Fleishman) -> float:
    """The intercept ``a`` with ``E[logistic(a + s w)] = rate`` (w = poly(U))."""
    from scipy.optimize import brentq

    lo, hi = -50.0 - abs(strength) * 20, 50.0 + abs(strength) * 20
    return float(brentq(lambda a: expected_rate(a, strength, poly) - rate, lo, hi,
                        xtol=1e-14, rtol=1e-14, maxiter=500))
