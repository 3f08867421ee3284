"""Ordinal members: a continuous latent response cut into k categories 1..k.

The latent response of member i of group g is standardized by the scenario's total
standard deviation ``s = sqrt(var_xi + sigma2_nu)`` and compared with the thresholds
``t_1 < ... < t_{k-1}``: the answer is ``1 + #{j : t_j < x*_ig / s}``.

``symmetric`` thresholds are ``t_j = Phi^-1(j / k)`` (equally likely categories under a
standard normal response, symmetric about 0); ``skewed`` ones give category
probabilities proportional to 1, 2, ..., k (``t_j = Phi^-1(sum_{i<=j} i / (k(k+1)/2))``),
so the upper categories are the more frequent, as with agreement items.
"""

from __future__ import annotations

import numpy as np

from micromacro_sim.design.measurement import threshold_values

__all__ = ["categorize", "threshold_values"]


def categorize(standardized: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Categories 1..k (as floats) of standardized latent responses."""
    return 1.0 + np.searchsorted(thresholds, standardized, side="left").astype(float)
