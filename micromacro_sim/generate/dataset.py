"""The data one analysis sees: members' x and the groups' y and Z.

A :class:`Dataset` is the common input of every estimator, whether it comes from the
simulation generator or from a user's file. Persons are stored sorted by group.

Member identity: without ``member`` the members of a group are identified by their
position (row order within the group), as the generator draws them. With ``member``
(simulated data with missing members) each row carries its member id, its position in
the complete group, and positions follow the ids as a user's ``member`` column does
(:mod:`micromacro_sim.api.userdata`): methods that need every member in every group are not
applicable (reason ``members_misaligned``) when the groups lack different members.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from micromacro_sim.core.errors import NotApplicable
from micromacro_sim.core.status import Reason

__all__ = ["Dataset"]


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class Dataset:
    """Long-format micro-macro data.

    Parameters
    ----------
    group : ndarray of int, shape (N,)
        Group code 0..G-1 of every person, sorted ascending, every code present.
    x : ndarray, shape (N, p)
        Member-level variables aggregated to the group level.
    y : ndarray, shape (G,)
        Group-level outcome.
    z : ndarray, shape (G, q)
        Group-level covariates (q may be 0).
    xi : ndarray, shape (G, p), optional
        True latent group means (simulation only; enables the ``true`` method).
    x_names, z_names : tuple of str
        Term names used in results.
    y_name : str
        Name of the outcome.
    member : ndarray of int, shape (N,), optional
        Member id of every person (ascending within each group); absent: the position.
    """

    group: np.ndarray
    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    xi: np.ndarray | None = None
    x_names: tuple[str, ...] = ("xi",)
    z_names: tuple[str, ...] = ("z",)
    y_name: str = "y"
    group_labels: np.ndarray | None = field(default=None)
    member: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        x = np.asarray(self.x, dtype=float)
        if x.ndim == 1:
            x = x[:, None]
        z = np.asarray(self.z, dtype=float)
        if z.ndim == 1:
            z = z[:, None]
        object.__setattr__(self, "x", _readonly(x))
        object.__setattr__(self, "z", _readonly(z))
        object.__setattr__(self, "y", _readonly(np.asarray(self.y, dtype=float)))
        object.__setattr__(self, "group", _readonly(np.asarray(self.group, dtype=np.int64)))
        if self.xi is not None:
            xi = np.asarray(self.xi, dtype=float)
            object.__setattr__(self, "xi", _readonly(xi[:, None] if xi.ndim == 1 else xi))
        g = self.group
        if g.ndim != 1 or len(g) != len(x):
            raise ValueError("group and x must have the same number of rows")
        if len(g) and (np.any(np.diff(g) < 0) or g[0] != 0 or np.any(np.diff(g) > 1)):
            raise ValueError("group codes must be sorted and run 0..G-1 without gaps")
        if self.member is not None:
            member = _readonly(np.asarray(self.member, dtype=np.int64))
            if member.shape != g.shape:
                raise ValueError("member must have one id per person")
            object.__setattr__(self, "member", member)
        G = int(g[-1]) + 1 if len(g) else 0
        if self.y.shape != (G,) or self.z.shape[0] != G:
            raise ValueError("y and z must have one row per group")
        if len(self.x_names) != x.shape[1] or len(self.z_names) != z.shape[1]:
            raise ValueError("x_names / z_names must name every column")

    # ------------------------------------------------------------------ shapes
    @property
    def n_groups(self) -> int:
        """Number of groups G."""
        return len(self.y)

    @property
    def n_persons(self) -> int:
        """Number of persons N."""
        return len(self.group)

    @property
    def n_x(self) -> int:
        """Number of member-level variables p."""
        return self.x.shape[1]

    @property
    def n_z(self) -> int:
        """Number of group-level covariates q."""
        return self.z.shape[1]

    @cached_property
    def sizes(self) -> np.ndarray:
        """Members per group, shape (G,)."""
        return _readonly(np.bincount(self.group, minlength=self.n_groups))

    @cached_property
    def starts(self) -> np.ndarray:
        """Index of each group's first person, shape (G,)."""
        return _readonly(np.concatenate([[0], np.cumsum(self.sizes)[:-1]]))

    @cached_property
    def position(self) -> np.ndarray:
        """Member position within its group, shape (N,).

        0..n_g-1 without ``member``; with it, the index of the member id among the ids
        present in the data (0..K-1 with K ids; a group may lack any of them, and no group
        needs to have them all: the layout's width is K, :attr:`n_positions`).
        """
        if self.member is None:
            return _readonly(np.arange(self.n_persons) - np.repeat(self.starts, self.sizes))
        return _readonly(np.searchsorted(np.unique(self.member), self.member))

    @property
    def n_positions(self) -> int:
        """Member positions of the layout: the largest group size without ``member``, the
        number of distinct member ids with it."""
        if self.n_persons == 0:
            return 0
        return int(self.position.max()) + 1

    @property
    def members_aligned(self) -> bool:
        """Every group has the same members (always true without ``member``)."""
        if self.member is None:
            return True
        return bool(np.all(self.sizes == len(np.unique(self.member))))

    @property
    def balanced(self) -> bool:
        """True when all groups have the same size."""
        return bool(np.all(self.sizes == self.sizes[0]))

    @cached_property
    def xbar(self) -> np.ndarray:
        """Group means of x, shape (G, p)."""
        sums = np.add.reduceat(self.x, self.starts, axis=0)
        return _readonly(sums / self.sizes[:, None])

    def wide(self, j: int = 0) -> np.ndarray:
        """The G x n matrix of x variable ``j`` (balanced data only)."""
        if not self.balanced:
            raise ValueError("wide format needs balanced groups")
        if not self.members_aligned:
            raise _misaligned("groups lack different members")
        return self.x[:, j].reshape(self.n_groups, int(self.sizes[0]))

    def wide_positions(self, j: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """The G x K layout of x variable ``j`` by member position, absent members as NaN.

        Works for any data with member positions: unbalanced groups (positions
        0..n_g-1) and absent members (positions from the ids). Every column is observed
        in at least one group (K is :attr:`n_positions`); no group needs to be complete.

        Returns
        -------
        values : ndarray (G, K)
            x at each group's observed positions, NaN elsewhere.
        mask : ndarray of bool (G, K)
            True where the member is observed.
        """
        G, K = self.n_groups, self.n_positions
        values = np.full((G, K), np.nan)
        mask = np.zeros((G, K), dtype=bool)
        values[self.group, self.position] = self.x[:, j]
        mask[self.group, self.position] = True
        return values, mask

    @property
    def complete(self) -> bool:
        """Balanced with every member present: the plain wide layout applies."""
        return self.balanced and self.members_aligned

    @property
    def terms(self) -> tuple[str, ...]:
        """Regression terms: intercept, each Z, each x."""
        return ("intercept", *self.z_names, *self.x_names)

    def design(self, scores: np.ndarray) -> np.ndarray:
        """Second-step design matrix [1, Z, scores], shape (G, 1 + q + p)."""
        scores = np.asarray(scores, dtype=float)
        if scores.ndim == 1:
            scores = scores[:, None]
        return np.column_stack([np.ones(self.n_groups), self.z, scores])

    def without_group(self, g: int) -> Dataset:
        """The dataset with group ``g`` deleted (the groups after it renumbered): one
        replicate of a delete-one-group jackknife.

        Parameters
        ----------
        g : int
            Group code, 0..G-1.
        """
        if not 0 <= g < self.n_groups:
            raise ValueError(f"group {g} is not one of 0..{self.n_groups - 1}")
        keep = self.group != g
        kept = np.arange(self.n_groups) != g
        group = self.group[keep]
        return Dataset(
            group=group - (group > g), x=self.x[keep], y=self.y[kept], z=self.z[kept],
            xi=None if self.xi is None else self.xi[kept], x_names=self.x_names,
            z_names=self.z_names, y_name=self.y_name,
            group_labels=None if self.group_labels is None else self.group_labels[kept],
            member=None if self.member is None else self.member[keep],
        )

    def to_frame(self):
        """Long pandas DataFrame: group, member, x columns, y, Z columns (and xi)."""
        import pandas as pd

        cols = {"group": self.group,
                "member": self.position if self.member is None else self.member}
        for j, name in enumerate(self.x_names):
            cols[name if name != "xi" else "x"] = self.x[:, j]
        cols[self.y_name] = np.repeat(self.y, self.sizes)
        for j, name in enumerate(self.z_names):
            cols[name] = np.repeat(self.z[:, j], self.sizes)
        if self.xi is not None:
            for j in range(self.n_x):
                cols["xi" if self.n_x == 1 else f"xi{j + 1}"] = np.repeat(
                    self.xi[:, j], self.sizes
                )
        return pd.DataFrame(cols)


def _misaligned(text: str) -> Exception:
    """``NotApplicable(members_misaligned)``."""
    return NotApplicable(Reason.MEMBERS_MISALIGNED, f"member ids differ across groups ({text})")
