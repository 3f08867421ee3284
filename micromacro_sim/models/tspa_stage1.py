"""Stage 1 of two-stage path analysis: group means and their error variances.

Each group's score is the mean of its observed members, ``s_g = xbar_g``, with error
variance ``ev_g = sigma2_w / n_g`` (``sigma2_w`` the pooled within-group variance, within
sums of squares over N - G). :func:`stage1_batch` computes it for a padded stack of
replications with padding-free member sums and a fixed-order sum over groups, so a
replication's numbers are the same alone or in any batch; :func:`stage1` is the same
arithmetic for one dataset.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from micromacro_sim.generate.padding import member_sums
from micromacro_sim.models.linalg import sum_first

__all__ = ["Stage1", "stage1", "stage1_batch"]


@dataclass(frozen=True)
class Stage1:
    """Stage-1 scores of one dataset.

    Attributes
    ----------
    score : ndarray (G,)
        Mean of each group's observed members.
    ev : ndarray (G,)
        Error variance of each score, ``sigma2_w / n_g``.
    sigma2_w : float
        Pooled within-group variance (within sums of squares / (N - G)).
    sizes : ndarray of int (G,)
        Observed members per group.
    """

    score: np.ndarray
    ev: np.ndarray
    sigma2_w: float
    sizes: np.ndarray


def stage1(group: np.ndarray, x: np.ndarray, n_groups: int) -> Stage1:
    """Group means and their error variances (pooled within-group variance / n_g).

    Parameters
    ----------
    group : ndarray of int (N,)
        Group code 0..G-1 of every member, sorted (every code present).
    x : ndarray (N,)
        Member values, in group order.
    n_groups : int
        G.

    Returns
    -------
    Stage1
        ``sigma2_w`` is NaN when no group has two members (N = G).
    """
    group = np.asarray(group, dtype=np.int64)
    x = np.asarray(x, dtype=float)
    sizes = np.bincount(group, minlength=n_groups)
    m = int(sizes.max())
    padded = np.zeros((1, n_groups, m))
    padded[0][np.arange(m)[None, :] < sizes[:, None]] = x
    score, ev, s2w = stage1_batch(padded, sizes[None])
    return Stage1(score=score[0], ev=ev[0], sigma2_w=float(s2w[0]), sizes=sizes)


def stage1_batch(x: np.ndarray, sizes: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stage 1 of a padded stack of replications.

    Parameters
    ----------
    x : ndarray (R, G, m)
        Member values in the first ``sizes[r, g]`` slots of each group (0 beyond).
    sizes : ndarray of int (R, G)

    Returns
    -------
    score, ev : ndarray (R, G)
        Group means and their error variances.
    sigma2_w : ndarray (R,)
        Pooled within-group variance (NaN when N = G).
    """
    score = member_sums(x, sizes) / sizes
    mask = np.arange(x.shape[2])[None, None, :] < sizes[:, :, None]
    dev = np.where(mask, x - score[:, :, None], 0.0)
    ssw = sum_first(np.ascontiguousarray(member_sums(dev * dev, sizes).T))
    df = sizes.sum(axis=1) - sizes.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        s2w = np.where(df > 0, ssw / np.maximum(df, 1), np.nan)
    return score, s2w[:, None] / sizes, s2w
