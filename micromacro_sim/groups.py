"""Group sizes of a simulation scenario: balanced, a recycled list, or drawn uniformly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ConfigError

__all__ = ["GroupSizes"]


@dataclass(frozen=True)
class GroupSizes:
    """How many members each group has.

    Parameters
    ----------
    kind : {"balanced", "list", "uniform"}
        ``balanced``: every group has ``value`` members. ``list``: the sizes in
        ``value`` are recycled over the groups (so ``[5, 30]`` gives alternating small
        and large groups). ``uniform``: each group's size is drawn per replication,
        uniformly between ``value[0]`` and ``value[1]`` inclusive.
    value : int or tuple of int
    """

    kind: str
    value: int | tuple[int, ...]

    @classmethod
    def parse(cls, spec: Any, name: str = "group_size") -> GroupSizes:
        """Build from a config value: an int, a list of ints, or ``{uniform: [lo, hi]}``."""
        if isinstance(spec, GroupSizes):
            return spec
        if _is_int(spec):
            if spec < 1:
                raise ConfigError(f"{name}: must be >= 1, got {spec!r}")
            return cls("balanced", int(spec))
        if isinstance(spec, (list, tuple)):
            if not spec or not all(_is_int(v) for v in spec):
                raise ConfigError(f"{name}: a list of sizes must hold integers, got {spec!r}")
            if min(spec) < 1:
                raise ConfigError(f"{name}: every group size must be >= 1, got {spec!r}")
            if len(set(spec)) == 1:
                return cls("balanced", int(spec[0]))
            return cls("list", tuple(int(v) for v in spec))
        if isinstance(spec, dict) and set(spec) == {"uniform"}:
            bounds = spec["uniform"]
            if (
                not isinstance(bounds, (list, tuple))
                or len(bounds) != 2
                or not all(_is_int(v) for v in bounds)
            ):
                raise ConfigError(f"{name}.uniform: expected [low, high] integers, got {bounds!r}")
            lo, hi = int(bounds[0]), int(bounds[1])
            if lo < 1 or hi < lo:
                raise ConfigError(f"{name}.uniform: need 1 <= low <= high, got {bounds!r}")
            if lo == hi:
                return cls("balanced", lo)
            return cls("uniform", (lo, hi))
        raise ConfigError(
            f"{name}: expected an integer, a list of integers or {{uniform: [low, high]}}, "
            f"got {spec!r}"
        )

    @property
    def balanced(self) -> bool:
        """True when every group has the same size in every replication."""
        return self.kind == "balanced"

    @property
    def min_size(self) -> int:
        """The smallest size a group can have."""
        return self.value if self.kind == "balanced" else min(self.value)  # type: ignore[arg-type]

    def draw(self, n_groups: int, rng: np.random.Generator) -> np.ndarray:
        """Sizes of ``n_groups`` groups (uses ``rng`` only for random sizes)."""
        if self.kind == "balanced":
            return np.full(n_groups, self.value, dtype=np.int64)
        if self.kind == "list":
            return np.resize(np.asarray(self.value, dtype=np.int64), n_groups)
        lo, hi = self.value  # type: ignore[misc]
        return rng.integers(lo, hi + 1, size=n_groups, dtype=np.int64)

    def mean_inverse(self) -> float:
        """E[1/n_g] over groups, the quantity that drives measurement error of a group mean."""
        if self.kind == "balanced":
            return 1.0 / self.value  # type: ignore[operator]
        if self.kind == "list":
            return float(np.mean(1.0 / np.asarray(self.value, dtype=float)))
        lo, hi = self.value  # type: ignore[misc]
        return float(np.mean(1.0 / np.arange(lo, hi + 1, dtype=float)))

    def to_config(self) -> Any:
        """The config-file form of this value."""
        if self.kind == "balanced":
            return self.value
        if self.kind == "list":
            return list(self.value)  # type: ignore[arg-type]
        return {"uniform": list(self.value)}  # type: ignore[arg-type]

    def label(self) -> str:
        """Short human label."""
        if self.kind == "balanced":
            return str(self.value)
        if self.kind == "list":
            return "[" + ",".join(map(str, self.value)) + "]"  # type: ignore[arg-type]
        lo, hi = self.value  # type: ignore[misc]
        return f"U({lo},{hi})"


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)
