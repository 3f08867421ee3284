"""Group sizes of a simulation scenario: balanced, a recycled list, or drawn per replication.

Drawn sizes (``uniform``, ``poisson``, ``choice``) use the replication's main stream at
the point where the generator draws sizes, so a fixed-size design draws nothing here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from micromacro_sim.core.errors import ConfigError, did_you_mean

__all__ = ["GroupSizes"]


@dataclass(frozen=True)
class GroupSizes:
    """How many members each group has.

    Parameters
    ----------
    kind : {"balanced", "list", "uniform", "poisson", "choice"}
        ``balanced``: every group has ``value`` members. ``list``: the sizes in
        ``value`` are recycled over the groups (so ``[5, 30]`` gives alternating small
        and large groups). ``uniform``: each group's size is drawn per replication,
        uniformly between ``value[0]`` and ``value[1]`` inclusive. ``poisson``
        (``{poisson: mean, min: m}``): ``n = m + Poisson(mean - m)``, a shifted Poisson
        whose mean is ``mean`` and whose smallest value is ``m`` (default 1).
        ``choice`` (``{choice: [sizes], p: [probabilities]}``): each group's size is one
        of ``value`` with probabilities ``p`` (default equal).
    value : int or tuple of int
    mean : float
        Mean size (``poisson`` only; ``value`` is then the minimum).
    p : tuple of float
        Probabilities of the sizes (``choice`` only).
    """

    kind: str
    value: int | tuple[int, ...]
    mean: float = 0.0
    p: tuple[float, ...] = ()

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
        if isinstance(spec, dict) and "poisson" in spec:
            return cls._parse_poisson(spec, name)
        if isinstance(spec, dict) and "choice" in spec:
            return cls._parse_choice(spec, name)
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
            f"{name}: expected an integer, a list of integers, {{uniform: [low, high]}}, "
            f"{{poisson: mean, min: m}} or {{choice: [sizes], p: [probabilities]}}, got {spec!r}"
        )

    @classmethod
    def _parse_poisson(cls, spec: dict, name: str) -> GroupSizes:
        unknown = sorted(set(spec) - {"poisson", "min"})
        if unknown:
            raise ConfigError(f"{name}.{unknown[0]}: unknown key (known: poisson, min)"
                              + did_you_mean(unknown[0], ("poisson", "min")))
        lo, mean = spec.get("min", 1), spec["poisson"]
        if not _is_int(lo) or lo < 1:
            raise ConfigError(f"{name}.min: expected an integer >= 1, got {lo!r}")
        if (not isinstance(mean, (int, float, np.integer, np.floating)) or isinstance(mean, bool)
                or not math.isfinite(float(mean)) or not lo < float(mean) <= lo + 1e6):
            raise ConfigError(f"{name}.poisson: expected a finite mean above min = {lo} "
                              f"(and at most min + 1e6), got {mean!r}")
        return cls("poisson", int(lo), mean=float(mean))

    @classmethod
    def _parse_choice(cls, spec: dict, name: str) -> GroupSizes:
        unknown = sorted(set(spec) - {"choice", "p"})
        if unknown:
            raise ConfigError(f"{name}.{unknown[0]}: unknown key (known: choice, p)"
                              + did_you_mean(unknown[0], ("choice", "p")))
        sizes = spec["choice"]
        if (not isinstance(sizes, (list, tuple)) or not sizes
                or not all(_is_int(v) and v >= 1 for v in sizes) or len(set(sizes)) != len(sizes)):
            raise ConfigError(f"{name}.choice: expected distinct integers >= 1, got {sizes!r}")
        p = spec.get("p", [1.0 / len(sizes)] * len(sizes))
        if (not isinstance(p, (list, tuple)) or len(p) != len(sizes)
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                           and math.isfinite(v) and v >= 0 for v in p)
                or abs(sum(p) - 1.0) > 1e-9):
            raise ConfigError(f"{name}.p: expected {len(sizes)} non-negative probabilities "
                              f"summing to 1, got {p!r}")
        if len(sizes) == 1:
            return cls("balanced", int(sizes[0]))
        return cls("choice", tuple(int(v) for v in sizes), p=tuple(float(v) for v in p))

    @property
    def balanced(self) -> bool:
        """True when every group has the same size in every replication."""
        return self.kind == "balanced"

    @property
    def min_size(self) -> int:
        """The smallest size a group can have."""
        if self.kind in ("balanced", "poisson"):
            return self.value  # type: ignore[return-value]
        return min(self.value)  # type: ignore[arg-type]

    @property
    def max_size(self) -> int:
        """The largest size a group can have (``poisson``: its 1 - 1e-9 quantile)."""
        if self.kind == "balanced":
            return self.value  # type: ignore[return-value]
        if self.kind == "poisson":
            from scipy.stats import poisson

            return self.value + int(poisson.isf(1e-9, self.mean - self.value))  # type: ignore
        return max(self.value)  # type: ignore[arg-type]

    def distribution(self, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
        """The sizes a group can have and their probabilities (over ``n_groups`` groups).

        ``list``: the frequencies of the recycled list over the groups. ``poisson``: the
        support up to where the remaining tail probability is below 1e-15.
        """
        if self.kind == "balanced":
            return np.array([self.value]), np.ones(1)
        if self.kind == "list":
            sizes, counts = np.unique(np.resize(np.asarray(self.value), n_groups),
                                      return_counts=True)
            return sizes, counts / n_groups
        if self.kind == "uniform":
            lo, hi = self.value  # type: ignore[misc]
            return np.arange(lo, hi + 1), np.full(hi - lo + 1, 1.0 / (hi - lo + 1))
        if self.kind == "choice":
            return np.asarray(self.value), np.asarray(self.p)
        from scipy.stats import poisson

        lam = self.mean - self.value  # type: ignore[operator]
        k = np.arange(int(poisson.isf(1e-15, lam)) + 2)
        pmf = poisson.pmf(k, lam)
        return self.value + k, pmf / pmf.sum()

    def draw(self, n_groups: int, rng: np.random.Generator) -> np.ndarray:
        """Sizes of ``n_groups`` groups (uses ``rng`` only for random sizes).

        Part of the generator plug-in API (docs/extending.md): a user's generator calls
        ``scenario.group_size.draw(G, rng)``, so the spec keeps its own sampler.
        """
        if self.kind == "balanced":
            return np.full(n_groups, self.value, dtype=np.int64)
        if self.kind == "list":
            return np.resize(np.asarray(self.value, dtype=np.int64), n_groups)
        if self.kind == "poisson":
            lam = self.mean - self.value  # type: ignore[operator]
            return self.value + rng.poisson(lam, size=n_groups).astype(np.int64)
        if self.kind == "choice":
            return rng.choice(np.asarray(self.value, dtype=np.int64), size=n_groups,
                              p=np.asarray(self.p))
        lo, hi = self.value  # type: ignore[misc]
        return rng.integers(lo, hi + 1, size=n_groups, dtype=np.int64)

    def mean_inverse(self) -> float:
        """E[1/n_g] over groups, the quantity that drives measurement error of a group mean."""
        if self.kind == "balanced":
            return 1.0 / self.value  # type: ignore[operator]
        if self.kind == "list":
            return float(np.mean(1.0 / np.asarray(self.value, dtype=float)))
        if self.kind in ("poisson", "choice"):
            sizes, prob = self.distribution(1)
            return float(prob @ (1.0 / sizes))
        lo, hi = self.value  # type: ignore[misc]
        return float(np.mean(1.0 / np.arange(lo, hi + 1, dtype=float)))

    def to_config(self) -> Any:
        """The config-file form of this value."""
        if self.kind == "balanced":
            return self.value
        if self.kind == "list":
            return list(self.value)  # type: ignore[arg-type]
        if self.kind == "poisson":
            return {"poisson": self.mean, "min": self.value}
        if self.kind == "choice":
            return {"choice": list(self.value), "p": list(self.p)}  # type: ignore[arg-type]
        return {"uniform": list(self.value)}  # type: ignore[arg-type]

    def label(self) -> str:
        """Short human label."""
        if self.kind == "balanced":
            return str(self.value)
        if self.kind == "list":
            return "[" + ",".join(map(str, self.value)) + "]"  # type: ignore[arg-type]
        if self.kind == "poisson":
            return f"{self.value}+Pois({self.mean - self.value:g})"  # type: ignore[operator]
        if self.kind == "choice":
            if not self.p or len(set(self.p)) == 1:
                return "{" + ",".join(map(str, self.value)) + "}"  # type: ignore[arg-type]
            return "{" + ",".join(f"{v}:{q:g}" for v, q in zip(self.value, self.p,  # type: ignore
                                                                  strict=True)) + "}"
        lo, hi = self.value  # type: ignore[misc]
        return f"U({lo},{hi})"


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)
