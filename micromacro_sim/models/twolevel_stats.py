"""Two-level ML with one x: the sufficient statistics and the centring of a dataset.

Each replication's statistics pooled per group-size class (:class:`BatchStats`), from its
own dataset alone (:func:`batch_stats`) or, for a balanced batch, from the stacked
arrays with the same operations (:func:`balanced_centred_stats`); the centring that both
the batch and the per-dataset fits apply (:func:`centre`, :func:`uncentre`). Used by
:mod:`.twolevel_batch` and :mod:`.twolevel`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from micromacro_sim.generate.batch import Batch
from micromacro_sim.generate.dataset import Dataset

__all__ = ["BatchStats", "balanced_centred_stats", "batch_stats", "centre", "class_stats",
           "rowdot", "standard_errors", "uncentre"]


def rowdot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """sum_p a[r, p] b[r, p] in a fixed order."""
    out = a[:, 0] * b[:, 0]
    for i in range(1, a.shape[1]):
        out = out + a[:, i] * b[:, i]
    return out


@dataclass(frozen=True, eq=False)
class BatchStats:
    """Sufficient statistics of R replications, pooled over groups of equal size.

    Groups of one size share Sigma_g, so the likelihood needs per size class only the
    count and the moment matrix of (y, xbar, 1, z); C classes (1 for balanced data).
    """

    count: np.ndarray  # (R, C) groups of each size
    inv_n: np.ndarray  # (R, C) 1 / size
    M: np.ndarray  # (R, C, 2 + k, 2 + k): sum over the class of [u, X]' [u, X]
    ssw: np.ndarray  # (R,) within sum of squares
    n_within: np.ndarray  # (R,) N - G
    n_groups: int


def class_stats(u: np.ndarray, X: np.ndarray, sizes: np.ndarray, ssw: np.ndarray
                 ) -> BatchStats:
    """Pool (R, G) group data (u: y, xbar; X: 1, z) into size classes."""
    R, G, k = X.shape
    sizes = np.asarray(sizes, dtype=int)
    lo = int(sizes.min())
    C = int(sizes.max()) - lo + 1
    onehot = (sizes[:, :, None] == lo + np.arange(C)).astype(float)  # (R, G, C)
    V = np.concatenate([u, X], axis=2)
    outer = (V[:, :, :, None] * V[:, :, None, :]).reshape(R, G, -1)
    M = (onehot.transpose(0, 2, 1) @ outer).reshape(R, C, 2 + k, 2 + k)
    return BatchStats(
        count=onehot.sum(axis=1), inv_n=np.broadcast_to(1.0 / (lo + np.arange(C)), (R, C)),
        M=M, ssw=np.asarray(ssw, dtype=float), n_within=sizes.sum(axis=1) - float(G),
        n_groups=G,
    )


def centre(data: Dataset) -> tuple[Dataset, np.ndarray]:
    """``data`` with x centred at its grand mean, y and z at their means, and those means.

    The model is location-invariant: fitted to the centred copy, its slopes, variance
    components and likelihood are those of ``data`` and only the intercept moves
    (:func:`uncentre` moves it back), while the moment matrices stay well conditioned when
    a variable lies far from 0 relative to its spread. The one place where both the batch
    and the per-dataset path centre; a dataset's means depend on that dataset alone.

    Returns
    -------
    centred : Dataset
        A plain :class:`Dataset` of x - c_x, y - c_y and z - c_z (xi - c_x when present).
    shift : ndarray (1 + q + p,)
        c_y, c_z, c_x: the means subtracted, in the order of the terms.
    """
    cy, cz, cx = data.y.mean(), data.z.mean(axis=0), data.x.mean(axis=0)
    centred = Dataset(group=data.group, x=data.x - cx, y=data.y - cy, z=data.z - cz,
                      xi=None if data.xi is None else data.xi - cx, x_names=data.x_names,
                      z_names=data.z_names, y_name=data.y_name, group_labels=data.group_labels,
                      member=data.member)
    return centred, np.concatenate([[cy], cz, cx])


def uncentre(params: np.ndarray, cov: np.ndarray, shift: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    """Estimates and their covariance at the data's own location, from a centred fit.

    Parameters
    ----------
    params : ndarray (R, k)
        b0, b_z, b_x of the fits to the centred data (:func:`centre`).
    cov : ndarray (R, k, k)
        Their covariance (NaN where there is none).
    shift : ndarray (R, k)
        The means subtracted (c_y, c_z, c_x).

    Returns
    -------
    params, cov : ndarray
        b0 = b0' + c_y - c'b with c = (c_z, c_x) and the slopes unchanged, and T V T' with
        T = [[1, -c'], [0, I]] (so Var(b0) = t' V t, t = (1, -c): the full covariance,
        not only the variances). Every sum is written out, so a replication's numbers do
        not depend on its batch.
    """
    k = params.shape[1]
    c = shift[:, 1:]
    out = params.copy()
    out[:, 0] = (params[:, 0] + shift[:, 0]) - rowdot(params[:, 1:], c)
    TV = cov.copy()
    for j in range(k):  # T V: row 0 becomes t' V
        TV[:, 0, j] = cov[:, 0, j] - rowdot(c, cov[:, 1:, j])
    TVT = TV.copy()
    for i in range(k):  # (T V) T': column 0 becomes (T V) t
        TVT[:, i, 0] = TV[:, i, 0] - rowdot(TV[:, i, 1:], c)
    return out, TVT


def standard_errors(cov: np.ndarray) -> np.ndarray:
    """Square roots of the diagonal of stacked covariances, NaN where not positive."""
    var = np.diagonal(cov, axis1=-2, axis2=-1)
    return np.sqrt(np.where(var > 0, var, np.nan))


def batch_stats(batch: Batch, datasets: Sequence[Dataset] | None = None
                 ) -> tuple[BatchStats, np.ndarray, np.ndarray]:
    """Class statistics of a batch, and Var(y), Var(xbar) per replication.

    ``datasets`` replaces the batch's own (the fit passes their centred copies). Each
    replication's statistics are computed from its own dataset alone (and placed in the
    batch's size classes, which adds exact zeros), so they do not depend on which other
    replications share the batch (the padded arrays of :class:`Batch` would).
    """
    sizes = batch.sizes.astype(int)
    lo, C = int(sizes.min()), int(sizes.max() - sizes.min()) + 1
    R, G = batch.y.shape
    k = batch.z.shape[2] + 1
    count, M = np.zeros((R, C)), np.zeros((R, C, 2 + k, 2 + k))
    ssw, var_y, var_xbar = np.empty(R), np.empty(R), np.empty(R)
    for r, d in enumerate(batch.datasets if datasets is None else datasets):
        xbar = d.xbar[:, 0]
        within = d.x[:, 0] - np.repeat(xbar, d.sizes)
        u = np.column_stack([d.y, xbar])
        X = np.column_stack([np.ones(G), d.z])
        one = class_stats(u[None], X[None], d.sizes[None], np.array([within @ within]))
        c0 = int(d.sizes.min()) - lo
        count[r, c0 : c0 + one.count.shape[1]] = one.count[0]
        M[r, c0 : c0 + one.count.shape[1]] = one.M[0]
        ssw[r], var_y[r], var_xbar[r] = one.ssw[0], np.var(d.y), np.var(xbar)
    s = BatchStats(count=count, inv_n=np.broadcast_to(1.0 / (lo + np.arange(C)), (R, C)),
                    M=M, ssw=ssw, n_within=sizes.sum(axis=1) - float(G), n_groups=G)
    return s, var_y, var_xbar


def balanced_centred_stats(batch: Batch
                            ) -> tuple[BatchStats, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`batch_stats` of the centred datasets (:func:`centre`) of a balanced batch,
    with the shifts, from the stacked arrays.

    The same operations as the per-dataset path, on stacks: means along each
    replication's own axis, group sums by ``np.add.reduceat`` over each group's members in
    order, the within sum of squares as one dot product per replication; bitwise the
    numbers of ``batch_stats([centre(d)[0] for d in datasets])`` (a test holds them so),
    without building a centred copy of every dataset.
    """
    R, G, n = batch.x.shape
    X = batch.x.reshape(R, G * n, 1)
    cx, cy, cz = X.mean(axis=1), batch.y.mean(axis=1), batch.z.mean(axis=1)
    xc = X - cx[:, None, :]
    xbar = np.add.reduceat(xc, np.arange(0, G * n, n), axis=1)[:, :, 0] / n
    within = xc[:, :, 0] - np.repeat(xbar, n, axis=1)
    ssw = (within[:, None, :] @ within[:, :, None])[:, 0, 0]
    yc = batch.y - cy[:, None]
    u = np.stack([yc, xbar], axis=2)
    Xd = np.concatenate([np.ones((R, G, 1)), batch.z - cz[:, None, :]], axis=2)
    s = class_stats(u, Xd, batch.sizes, ssw)
    shift = np.concatenate([cy[:, None], cz, cx], axis=1)
    return s, np.var(yc, axis=1), np.var(xbar, axis=1), shift
