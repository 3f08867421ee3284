"""Many replications of one scenario as stacked arrays, for the fast engine.

A :class:`Batch` holds R datasets of the same scenario. Balanced designs stack into
``x`` of shape (R, G, n); unbalanced ones are padded to the largest group with a
``mask``. The original :class:`~micromacro_sim.generate.dataset.Dataset` objects are kept so a
method without a batch implementation can loop over them (the reference path).

The stacked arrays hold one x, members in row order. Datasets with several x still form a
batch (the arrays then hold the first x), but :attr:`Batch.reference_only` is true and
every method fits them one dataset at a time. Datasets whose members carry ids (absent
members) form a batch with :attr:`Batch.member_ids` set: methods that use member positions
fit them one at a time, the others (group means and sums) take their batch path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from micromacro_sim.generate.dataset import Dataset
from micromacro_sim.generate.padding import member_sums

__all__ = ["Batch"]


@dataclass(frozen=True, eq=False)
class Batch:
    """R datasets with equal G and q (the stacked arrays hold the first x).

    Attributes
    ----------
    datasets : tuple of Dataset
    x : ndarray (R, G, m)
        Member values, padded with 0 beyond each group's size (m = largest size).
    mask : ndarray of bool (R, G, m)
        True where a member exists.
    sizes : ndarray (R, G)
    y : ndarray (R, G)
    z : ndarray (R, G, q)
    xi : ndarray (R, G) or None
    balanced : bool
        Every group of every replication has the same size.
    memo : object or None
        Fits the chunk being simulated has already made of these datasets (a
        :class:`~micromacro_sim.models.cfa.CFAMemo`), for methods that can reuse them.
    reference_only : bool
        Some dataset has several x: the stacked arrays do not describe it, so methods
        must use the reference path.
    member_ids : bool
        Some dataset's members carry ids (absent members): the arrays hold the members in
        row order, not at their positions, so methods that use positions must use the
        reference path.
    """

    datasets: tuple[Dataset, ...]
    x: np.ndarray = field(repr=False)
    mask: np.ndarray = field(repr=False)
    sizes: np.ndarray = field(repr=False)
    y: np.ndarray = field(repr=False)
    z: np.ndarray = field(repr=False)
    xi: np.ndarray | None = field(repr=False)
    balanced: bool
    memo: Any = field(default=None, repr=False)
    reference_only: bool = False
    member_ids: bool = False

    @classmethod
    def from_datasets(cls, datasets: Sequence[Dataset], memo: Any = None) -> Batch:
        """Stack datasets (same G, q and number of x); ``memo`` as the attribute."""
        ds = tuple(datasets)
        if not ds:
            raise ValueError("a batch needs at least one dataset")
        G, q, p = ds[0].n_groups, ds[0].n_z, ds[0].n_x
        if any(d.n_groups != G or d.n_z != q or d.n_x != p for d in ds):
            raise ValueError("datasets of a batch need equal G, q and number of x")
        sizes = np.stack([d.sizes for d in ds])
        m = int(sizes.max())
        R = len(ds)
        balanced = bool(np.all(sizes == sizes[0, 0]))
        if balanced:
            x = np.stack([d.x[:, 0].reshape(G, m) for d in ds])
            mask = np.ones_like(x, dtype=bool)
        else:
            x = np.zeros((R, G, m))
            mask = np.arange(m)[None, None, :] < sizes[:, :, None]
            for r, d in enumerate(ds):
                x[r][mask[r]] = d.x[:, 0]
        xi = None
        if all(d.xi is not None for d in ds):
            xi = np.stack([d.xi[:, 0] for d in ds])
        return cls(
            datasets=ds,
            x=x,
            mask=mask,
            sizes=sizes,
            y=np.stack([d.y for d in ds]),
            z=np.stack([d.z for d in ds]),
            xi=xi,
            balanced=balanced,
            memo=memo,
            reference_only=p > 1,
            member_ids=any(d.member is not None for d in ds),
        )

    @property
    def n_reps(self) -> int:
        """Number of replications R."""
        return len(self.datasets)

    @property
    def n_groups(self) -> int:
        """Groups per replication G."""
        return self.y.shape[1]

    @property
    def terms(self) -> tuple[str, ...]:
        """Regression terms (as in every dataset)."""
        return self.datasets[0].terms

    @cached_property
    def xbar(self) -> np.ndarray:
        """Group means, shape (R, G) (sums over exactly the members: padding-free)."""
        if self.balanced:
            return self.x.sum(axis=2) / self.sizes
        return member_sums(self.x, self.sizes) / self.sizes

    @cached_property
    def complete(self) -> np.ndarray:
        """Which replications are balanced with every member present, shape (R,) bool:
        the plain wide layout describes them (:attr:`Dataset.complete`)."""
        return np.array([d.complete for d in self.datasets], dtype=bool)

    @cached_property
    def positional(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every replication's x by member position (:meth:`Dataset.wide_positions`).

        Returns
        -------
        x : ndarray (R, G, K)
            Member values at their positions, 0 where absent (K = the largest
            :attr:`~micromacro_sim.generate.dataset.Dataset.n_positions`).
        mask : ndarray of bool (R, G, K)
            True where a member is observed.
        widths : ndarray of int (R,)
            Each replication's own number of positions; its columns beyond are empty.
            Kernels take each replication at its own width, so that the result does not
            depend on the batch's other replications.
        """
        layouts = [d.wide_positions(0) for d in self.datasets]
        widths = np.array([v.shape[1] for v, _ in layouts], dtype=np.int64)
        K = int(widths.max())
        x = np.zeros((self.n_reps, self.n_groups, K))
        mask = np.zeros(x.shape, dtype=bool)
        for r, (v, m) in enumerate(layouts):
            x[r, :, :v.shape[1]] = np.where(m, v, 0.0)
            mask[r, :, :v.shape[1]] = m
        return x, mask, widths

    def design(self, scores: np.ndarray) -> np.ndarray:
        """Second-step design [1, Z, scores], shape (R, G, 1 + q + 1)."""
        ones = np.ones(self.y.shape + (1,))
        return np.concatenate([ones, self.z, np.asarray(scores, dtype=float)[..., None]], axis=2)
