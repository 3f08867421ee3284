"""Moment estimators of the equal-loading, equal-residual one-factor model (balanced data).

The ML moments behind ``sam`` and ``zcond_score`` (and the closed-form SEM): the
residual variance is the within variance of member-position-centred x over G(n - 1),
the factor variance ``Var_ML(xbar) - v/n``. Reference and batch versions side by side.
"""

from __future__ import annotations

import numpy as np

from ..batch import Batch
from ..dataset import Dataset

__all__ = ["ml_moments", "ml_moments_batch"]


def ml_moments(data: Dataset) -> dict[str, np.ndarray | float]:
    """Unbounded ML of the equal-loading, equal-residual one-factor model (balanced data).

    Returns
    -------
    dict
        ``n`` members per group, ``v`` ML residual variance (the within variance of
        member-position-centred x over G(n-1)), ``psi`` ML factor variance
        ``Var_ML(xbar) - v/n``, ``mu_x`` grand mean, ``xbar`` (G,), ``a`` = 1'S1/n,
        ``var_items`` ML variances of the n member positions.
    """
    X = data.wide(0)
    G, n = X.shape
    if n < 2:
        raise ValueError("the measurement model needs at least 2 members per group")
    xc = X - X.mean(axis=0)
    xbar = X.mean(axis=1)
    tot = n * np.sum((xbar - xbar.mean()) ** 2) / G  # 1'S1/n with S the ML covariance
    v = (np.sum(xc**2) / G - tot) / (n - 1)
    return {"n": n, "v": float(v), "psi": float((tot - v) / n), "mu_x": float(xbar.mean()),
            "xbar": xbar, "a": float(tot), "var_items": np.sum(xc**2, axis=0) / G}


def ml_moments_batch(batch: Batch) -> dict[str, np.ndarray | int]:
    """:func:`ml_moments` of every replication of a balanced batch (arrays over R)."""
    X = batch.x  # (R, G, n)
    R, G, n = X.shape
    xc = X - X.mean(axis=1, keepdims=True)
    xbar = X.mean(axis=2)
    tot = n * np.sum((xbar - xbar.mean(axis=1, keepdims=True)) ** 2, axis=1) / G
    var_items = np.sum(xc**2, axis=1) / G  # (R, n)
    v = (var_items.sum(axis=1) - tot) / (n - 1)
    return {"n": n, "v": v, "psi": (tot - v) / n, "mu_x": xbar.mean(axis=1), "xbar": xbar,
            "a": tot, "var_items": var_items}
