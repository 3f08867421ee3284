"""Sums over padded member arrays that do not depend on the padding.

A :class:`~micromacro_sim.generate.batch.Batch` pads every group of every replication to
the batch's largest group. A plain sum over the padded member axis would depend on that
width (numpy's pairwise summation blocks move with it), and so on which replications
share the batch. Every kernel sums over exactly a group's members instead, by cutting
arrays to a width: :func:`width_classes` is the one helper; :func:`member_sums` applies
it per group size, :func:`width_groups` per replication's widest group.
"""

from __future__ import annotations

import numpy as np

__all__ = ["member_sums", "width_classes", "width_groups"]


def width_classes(widths: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Each distinct value of ``widths`` with the flat indices where it occurs.

    Parameters
    ----------
    widths : ndarray of int, any shape

    Returns
    -------
    list of (int, ndarray)
        ``(w, rows)`` in increasing ``w``; ``rows`` index ``widths.ravel()``.
    """
    flat = np.asarray(widths).ravel()
    return [(int(w), np.flatnonzero(flat == w)) for w in np.unique(flat)]


def member_sums(x: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Sums over the members of each group of a padded stack, independent of the padding.

    Parameters
    ----------
    x : ndarray (R, G, m)
        Member values in the first ``sizes[r, g]`` slots of each group (m >= every size).
    sizes : ndarray (R, G)

    Returns
    -------
    ndarray (R, G)
        ``x[r, g, :sizes[r, g]].sum()`` (numpy's pairwise sum over exactly the members):
        bitwise what ``x.sum(axis=2)`` gives for a balanced stack of that group size, and
        unchanged by the width m a batch pads to.
    """
    rows_of = x.reshape(-1, x.shape[-1])
    out = np.empty(sizes.size)
    for s, rows in width_classes(sizes):
        out[rows] = rows_of[rows][:, :s].sum(axis=-1)
    return out.reshape(sizes.shape)


def width_groups(sizes: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Replications grouped by their own largest group size ``J_r``, as (J, rows).

    The kernels work on each replication's arrays cut to its own width, so its
    arithmetic is the same whatever its batch companions.

    Parameters
    ----------
    sizes : ndarray (R, G)
    """
    return width_classes(sizes.max(axis=1))
