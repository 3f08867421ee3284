"""The simulation scenario: one cell of a design grid.

A :class:`Scenario` is immutable and validated on construction. Its stable
:attr:`Scenario.key` is a hash of its parameters, so adding cells to a grid never
changes the key (and therefore the random streams and results) of existing cells.
Parameters left at their defaults do not enter the hash, so adding a new factor with
a default value keeps every existing key.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from .errors import ConfigError

__all__ = ["GroupSizes", "Scenario"]


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


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


# Defaults of every scenario parameter. A parameter at its default does not enter the
# scenario key: never change a default once results exist (add a new parameter instead).
_DEFAULTS: dict[str, Any] = {
    "n_z": 1,
    "r_zz": 0.0,
    "beta0": 0.3,
    "beta_z": 0.3,
    "beta_xi": 0.3,
    "sigma2_eps": 0.35,
    "var_xi": 1.0,
}


@dataclass(frozen=True)
class Scenario:
    """One cell of a simulation design (SPEC section 2).

    Parameters
    ----------
    n_groups : int
        Number of groups G (>= 3).
    group_size : GroupSizes
        Members per group (balanced, a recycled list, or drawn uniformly).
    sigma2_nu : float
        Within-group (member) variance of x. Give either this or ``icc``.
    r_zxi : tuple of float
        Correlation of each Z with xi (one value per Z).
    n_z : int
        Number of group-level covariates Z.
    r_zz : float
        Correlation between any two Z.
    beta0, beta_z, beta_xi : float
        Intercept, coefficient of each Z (one value per Z) and of xi.
    sigma2_eps : float
        Residual variance of y.
    var_xi : float
        Variance of the latent group mean xi.
    icc_given : bool
        Whether the user specified the ICC (kept for the key and the labels).
    """

    n_groups: int
    group_size: GroupSizes
    sigma2_nu: float
    r_zxi: tuple[float, ...]
    n_z: int = 1
    r_zz: float = 0.0
    beta0: float = 0.3
    beta_z: tuple[float, ...] = (0.3,)
    beta_xi: float = 0.3
    sigma2_eps: float = 0.35
    var_xi: float = 1.0
    icc_given: float | None = field(default=None, compare=False)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_params(cls, params: dict[str, Any]) -> Scenario:
        """Validate a flat parameter mapping (as in a config cell) and build a scenario.

        Raises
        ------
        ConfigError
            Naming the offending field and value.
        """
        known = {
            "n_groups", "group_size", "icc", "sigma2_nu", "r_zxi", "n_z", "r_zz",
            "beta0", "beta_z", "beta_xi", "sigma2_eps", "var_xi",
        }
        unknown = sorted(set(params) - known)
        if unknown:
            raise ConfigError(
                f"{unknown[0]}: unknown scenario parameter (known: {', '.join(sorted(known))})"
            )
        for req in ("n_groups", "group_size", "r_zxi"):
            if req not in params:
                raise ConfigError(f"{req}: required scenario parameter is missing")
        n_groups = params["n_groups"]
        if not _is_int(n_groups):
            raise ConfigError(f"n_groups: expected an integer, got {n_groups!r}")
        if n_groups < 3:
            raise ConfigError(f"n_groups: need at least 3 groups, got {n_groups!r}")
        sizes = GroupSizes.parse(params["group_size"])

        n_z = params.get("n_z", _DEFAULTS["n_z"])
        if not _is_int(n_z) or n_z < 0:
            raise ConfigError(f"n_z: expected a non-negative integer, got {n_z!r}")
        var_xi = _positive(params, "var_xi")
        sigma2_eps = _positive(params, "sigma2_eps", allow_zero=True)

        has_icc, has_nu = "icc" in params, "sigma2_nu" in params
        if has_icc == has_nu:
            raise ConfigError(
                "icc: give exactly one of icc and sigma2_nu"
                + (f" (got icc={params['icc']!r}, sigma2_nu={params['sigma2_nu']!r})"
                   if has_icc else " (got neither)")
            )
        icc_given = None
        if has_icc:
            icc = params["icc"]
            if not _is_num(icc) or not (0 < icc < 1):
                raise ConfigError(f"icc: must be a number strictly between 0 and 1, got {icc!r}")
            icc_given = float(icc)
            sigma2_nu = var_xi * (1.0 - icc) / icc
        else:
            sigma2_nu = _positive(params, "sigma2_nu")

        r_zxi = _per_z(params["r_zxi"], n_z, "r_zxi")
        for r in r_zxi:
            if abs(r) >= 1:
                raise ConfigError(f"r_zxi: |r| must be < 1, got {params['r_zxi']!r}")
        r_zz = params.get("r_zz", _DEFAULTS["r_zz"])
        if not _is_num(r_zz) or abs(r_zz) >= 1:
            raise ConfigError(f"r_zz: must be a number with |r| < 1, got {r_zz!r}")
        beta_z = _per_z(params.get("beta_z", _DEFAULTS["beta_z"]), n_z, "beta_z")
        beta0 = _number(params, "beta0")
        beta_xi = _number(params, "beta_xi")

        sc = cls(
            n_groups=int(n_groups),
            group_size=sizes,
            sigma2_nu=float(sigma2_nu),
            r_zxi=r_zxi,
            n_z=int(n_z),
            r_zz=float(r_zz),
            beta0=beta0,
            beta_z=beta_z,
            beta_xi=beta_xi,
            sigma2_eps=sigma2_eps,
            var_xi=var_xi,
            icc_given=icc_given,
        )
        try:
            np.linalg.cholesky(sc.correlation)
        except np.linalg.LinAlgError:
            raise ConfigError(
                f"r_zxi: the correlation matrix of (Z, xi) is not positive definite "
                f"(r_zxi={list(r_zxi)!r}, r_zz={r_zz!r})"
            ) from None
        return sc

    # ------------------------------------------------------------------ derived values
    @property
    def icc(self) -> float:
        """Intraclass correlation of x: var_xi / (var_xi + sigma2_nu)."""
        return self.var_xi / (self.var_xi + self.sigma2_nu)

    @property
    def reliability(self) -> float:
        """Reliability of a group mean, lambda = var_xi / (var_xi + sigma2_nu E[1/n])."""
        return self.var_xi / (self.var_xi + self.sigma2_nu * self.group_size.mean_inverse())

    @property
    def correlation(self) -> np.ndarray:
        """Correlation matrix of (Z_1..Z_q, xi)."""
        q = self.n_z
        c = np.full((q + 1, q + 1), self.r_zz)
        c[:q, q] = c[q, :q] = self.r_zxi
        np.fill_diagonal(c, 1.0)
        return c

    @property
    def covariance(self) -> np.ndarray:
        """Covariance matrix of (Z_1..Z_q, xi); Var(Z) = 1."""
        sd = np.ones(self.n_z + 1)
        sd[-1] = math.sqrt(self.var_xi)
        return self.correlation * np.outer(sd, sd)

    @cached_property
    def covariance_cholesky(self) -> np.ndarray:
        """Lower Cholesky factor of :attr:`covariance` (read-only)."""
        chol = np.linalg.cholesky(self.covariance)
        chol.setflags(write=False)
        return chol

    @property
    def z_names(self) -> tuple[str, ...]:
        """Names of the Z terms: ``z`` for one, ``z1..zq`` for several."""
        return ("z",) if self.n_z == 1 else tuple(f"z{j + 1}" for j in range(self.n_z))

    @property
    def terms(self) -> tuple[str, ...]:
        """Names of the group-level regression terms, in order."""
        return ("intercept", *self.z_names, "xi")

    @property
    def true_params(self) -> dict[str, float]:
        """True value of every term."""
        return dict(zip(self.terms, (self.beta0, *self.beta_z, self.beta_xi), strict=True))

    def unadjusted_limit(self) -> dict[str, float]:
        """Large-G limit of the OLS of y on [1, Z, xbar] (SPEC section 5, any Var/sizes).

        Population regression with Var(xbar) = var_xi + sigma2_nu E[1/n_g].
        """
        cov = self.covariance.copy()
        q = self.n_z
        cov_obs = cov.copy()
        cov_obs[q, q] = self.var_xi + self.sigma2_nu * self.group_size.mean_inverse()
        beta = np.array([*self.beta_z, self.beta_xi])
        cov_y = cov @ beta  # Cov([Z, xbar], y) = Cov([Z, xi], y)
        b = np.linalg.solve(cov_obs, cov_y)
        return dict(zip(self.terms, (self.beta0, *b), strict=True))

    # ------------------------------------------------------------------ identity
    def to_params(self) -> dict[str, Any]:
        """Canonical parameters (config form) including defaults."""
        out: dict[str, Any] = {
            "n_groups": self.n_groups,
            "group_size": self.group_size.to_config(),
        }
        if self.icc_given is not None:
            out["icc"] = self.icc_given
        else:
            out["sigma2_nu"] = self.sigma2_nu
        out["r_zxi"] = self.r_zxi[0] if len(set(self.r_zxi)) == 1 and self.r_zxi else list(
            self.r_zxi
        )
        out.update(
            n_z=self.n_z,
            r_zz=self.r_zz,
            beta0=self.beta0,
            beta_z=self.beta_z[0] if len(set(self.beta_z)) == 1 and self.beta_z
            else list(self.beta_z),
            beta_xi=self.beta_xi,
            sigma2_eps=self.sigma2_eps,
            var_xi=self.var_xi,
        )
        return out

    def _key_material(self) -> str:
        params = self.to_params()
        for name, default in _DEFAULTS.items():
            if params.get(name) == default:
                params.pop(name)
        return json.dumps(params, sort_keys=True, separators=(",", ":"), default=float)

    @cached_property
    def key(self) -> str:
        """Stable 16-hex-digit key from the non-default parameters."""
        return hashlib.sha256(self._key_material().encode()).hexdigest()[:16]

    @cached_property
    def key_words(self) -> tuple[int, ...]:
        """The key as four 32-bit words, for :class:`numpy.random.SeedSequence`."""
        digest = hashlib.sha256(self._key_material().encode()).digest()
        return tuple(int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4))

    def label(self) -> str:
        """Human-readable one-line label."""
        return (
            f"G={self.n_groups} n={self.group_size.label()} ICC={self.icc:.3g} "
            f"r={','.join(f'{r:g}' for r in self.r_zxi)}"
            + (f" bxi={self.beta_xi:g}" if self.beta_xi != _DEFAULTS["beta_xi"] else "")
        )

    def describe(self) -> dict[str, Any]:
        """Flat row of parameters and derived values (for the scenarios table)."""
        row = {
            "scenario": self.key,
            "label": self.label(),
            "n_groups": self.n_groups,
            "group_size": self.group_size.label(),
            "balanced": self.group_size.balanced,
            "sigma2_nu": self.sigma2_nu,
            "icc": self.icc,
            "reliability": self.reliability,
            "n_z": self.n_z,
            "r_zz": self.r_zz,
            "beta0": self.beta0,
            "beta_xi": self.beta_xi,
            "sigma2_eps": self.sigma2_eps,
            "var_xi": self.var_xi,
        }
        for name, r, b in zip(self.z_names, self.r_zxi, self.beta_z, strict=True):
            row[f"r_{name}xi" if self.n_z > 1 else "r_zxi"] = r
            row[f"beta_{name}"] = b
        return row


def _per_z(value: Any, n_z: int, name: str) -> tuple[float, ...]:
    if _is_num(value):
        return (float(value),) * n_z
    if isinstance(value, (list, tuple)) and all(_is_num(v) for v in value):
        if len(value) != n_z:
            raise ConfigError(f"{name}: expected {n_z} values (one per Z), got {list(value)!r}")
        return tuple(float(v) for v in value)
    raise ConfigError(f"{name}: expected a number or a list of numbers, got {value!r}")


def _number(params: dict[str, Any], name: str) -> float:
    v = params.get(name, _DEFAULTS[name])
    if not _is_num(v) or not math.isfinite(v):
        raise ConfigError(f"{name}: expected a finite number, got {v!r}")
    return float(v)


def _positive(params: dict[str, Any], name: str, allow_zero: bool = False) -> float:
    v = params.get(name, _DEFAULTS.get(name))
    if not _is_num(v) or not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        rel = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{name}: must be a finite number {rel}, got {v!r}")
    return float(v)

