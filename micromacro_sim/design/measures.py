"""Per-replication quantities behind the performance measures, and the replications a
measure needs for a target Monte Carlo SE.

Every measure of Morris, White & Crowther (2019, Table 6) used here is a smooth function
of means over replications, so its MCSE is ``sqrt(V / n)`` for a per-replication
variance ``V`` (Siepe et al. 2024): ``n = V / MCSE^2`` replications reach a target MCSE.

========  =====================================  =========================================
measure   V                                      interval for n from a pilot of k
========  =====================================  =========================================
bias      S^2 (S the empirical SD)               chi-square interval for S^2
empse     S^2 / 2 (n = 1 + S^2 / (2 MCSE^2))     chi-square interval for S^2
mse       Var((est - theta)^2)                   fourth-moment interval for that variance
modelse   Var(se^2) / (4 modSE^2)                fourth-moment interval for Var(se^2)
cover     p (1 - p)                              Wilson interval for p
reject    p (1 - p)  (``power`` is an alias)     Wilson interval for p
========  =====================================  =========================================

modelse, cover and reject use a model SE: a bare name means each method's default SE type
(:attr:`~micromacro_sim.estimators.base.Estimator.default_se`: the model SE of a one-step
method, HC3 for the two-step methods, HC2 for croon); ``cover_HC3`` and the like pick one
type for every method (:func:`method_se_type` resolves a measure per method).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from micromacro_sim.core.errors import ConfigError
from micromacro_sim.core.results import DEFAULT_SE, SE_COLUMNS, SE_TYPES

__all__ = [
    "MEASURES",
    "MIN_TARGET_MCSE",
    "Measure",
    "RATE_MEASURES",
    "check_interval_level",
    "check_target",
    "check_se_type",
    "indicators",
    "interval_limits",
    "method_se_type",
    "parse_measure",
    "replications_needed",
    "se_column",
    "wilson",
]

#: Measures whose MCSE a plan can target.
MEASURES = ("bias", "empse", "mse", "modelse", "cover", "reject")
#: Measures that are rates (a proportion of replications).
RATE_MEASURES = ("cover", "reject")
_ALIASES = {"power": "reject", "coverage": "cover", "rejection": "reject", "modse": "modelse"}
_USES_SE = ("modelse", "cover", "reject")
#: Smallest target MCSE. A measure needs V / MCSE^2 replications: below this even V = 1
#: needs more than 1e24, beyond any run (and near 1e-162 the square underflows to 0).
#: A study of estimates on a tiny scale rescales them instead.
MIN_TARGET_MCSE = 1e-12


@dataclass(frozen=True)
class Measure:
    """A measure and the model SE it uses (``cover_HC3`` is cover with HC3 SEs; a bare
    ``cover`` has ``se_type`` :data:`~micromacro_sim.core.results.DEFAULT_SE`: each
    method's default type)."""

    name: str
    se_type: str = DEFAULT_SE

    @property
    def label(self) -> str:
        """The measure as written on the command line (``cover``, ``cover_HC3``)."""
        if self.name in _USES_SE and self.se_type != DEFAULT_SE:
            return f"{self.name}_{self.se_type}"
        return self.name

    @property
    def is_rate(self) -> bool:
        """Whether the measure is a proportion of replications."""
        return self.name in RATE_MEASURES

    @property
    def uses_se(self) -> bool:
        """Whether the measure uses a model SE (modelse, cover, reject)."""
        return self.name in _USES_SE

    def se_for(self, default: str) -> str:
        """The SE type for a method whose default type is ``default``."""
        return default if self.se_type == DEFAULT_SE else self.se_type


def check_se_type(se_type: str | None, field: str = "se-type") -> str:
    """``None`` or ``"default"`` (each method's default type) or an SE type, as the SE
    type of bare measure names; anything else is a one-line ConfigError."""
    if se_type is None or se_type == DEFAULT_SE:
        return DEFAULT_SE
    if se_type not in SE_TYPES:
        raise ConfigError(f"{field}: expected {DEFAULT_SE} or one of {', '.join(SE_TYPES)}, "
                          f"got {se_type!r}")
    return se_type


def method_se_type(declared: Any, two_step: bool) -> str:
    """A method's default SE type: its declared ``default_se`` when that is an SE type,
    else ``classical`` (its model SE) for a one-step method and ``HC3`` for a two-step
    one."""
    if isinstance(declared, str) and declared in SE_TYPES:
        return declared
    return "HC3" if two_step else "classical"


def parse_measure(text: str, field: str, se_type: str | None = DEFAULT_SE) -> Measure:
    """Parse ``bias``, ``power``, ``cover_HC3``...; unknown names raise ConfigError.

    ``se_type`` is the SE type of a bare modelse, cover or reject (default: each method's
    own, :data:`~micromacro_sim.core.results.DEFAULT_SE`).
    """
    se_type = check_se_type(se_type)
    raw = str(text).strip()
    base, _, suffix = raw.partition("_")
    base = _ALIASES.get(base.lower(), base.lower())
    if base not in MEASURES:
        known = ", ".join([*MEASURES, "power"])
        raise ConfigError(f"{field}: unknown measure {raw!r} (known: {known})")
    if suffix:
        if base not in _USES_SE or suffix not in SE_TYPES:
            raise ConfigError(f"{field}: unknown measure {raw!r} (SE types: "
                              f"{', '.join(SE_TYPES)}, only after modelse, cover, reject)")
        se_type = suffix
    if base not in _USES_SE:
        se_type = DEFAULT_SE
    return Measure(base, se_type)


def check_target(measure: Measure, value: Any, where: str) -> float:
    """A target Monte Carlo SE of ``measure`` as a float, or a one-line ConfigError.

    The target is a finite number of at least :data:`MIN_TARGET_MCSE`; a rate's target
    is below 0.5 (the largest SD of a proportion). ``value`` may be text (a command-line
    ``measure=value``); booleans are refused.

    Parameters
    ----------
    measure : Measure
    value : Any
        The target as given.
    where : str
        Start of the message, naming the field and the value (``target-mcse: bias='0'``).
    """
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        v = math.nan
    if not math.isfinite(v) or v <= 0 or isinstance(value, bool):
        raise ConfigError(f"{where}: expected a positive number")
    if v < MIN_TARGET_MCSE:
        raise ConfigError(f"{where}: expected at least {MIN_TARGET_MCSE:g} (a measure needs "
                          f"V / MCSE^2 replications: a smaller target needs more than any run)")
    if measure.is_rate and v >= 0.5:
        raise ConfigError(f"{where}: a rate's MCSE is below 0.5")
    return v


def _crit(df: np.ndarray, alpha: float) -> np.ndarray:
    """Two-sided critical values: t with the replication's df, normal where df is NaN
    (as :func:`micromacro_sim.summaries.summarize.performance`)."""
    from scipy import stats

    finite = np.isfinite(df)
    return np.where(finite, stats.t.ppf(1 - alpha / 2, np.where(finite, df, 1.0)),
                    stats.norm.ppf(1 - alpha / 2))


def check_interval_level(level: float, alpha: float, method: str) -> None:
    """Refuse an ``alpha`` other than 1 - ``level`` for a method whose coverage and
    rejection come from its own intervals (one-line ConfigError naming both)."""
    if abs(1 - alpha - level) > 1e-9:
        raise ConfigError(f"alpha: {alpha:g} does not match the {level:g} intervals of "
                          f"{method} (its coverage and rejection come from them; use alpha "
                          f"{1 - level:g}, or refit it with level {1 - alpha:g})")


def interval_limits(rows: Any, measure: Measure, alpha: float,
                    method: str) -> tuple[np.ndarray, np.ndarray] | None:
    """The method's own interval limits in the estimate ``rows`` (a DataFrame) when a
    bare rate measure should use them (None otherwise); refuses a mismatched ``alpha``."""
    if measure.se_type != DEFAULT_SE or not measure.is_rate or "ci_level" not in rows:
        return None
    levels = np.asarray(rows["ci_level"], dtype=float)
    levels = levels[np.isfinite(levels)]
    if not levels.size:
        return None
    check_interval_level(float(levels[0]), alpha, method)
    return np.asarray(rows["ci_low"], dtype=float), np.asarray(rows["ci_high"], dtype=float)


def indicators(est: np.ndarray, se: np.ndarray, df: np.ndarray, theta: float,
               alpha: float, ci: tuple[np.ndarray, np.ndarray] | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """Per-replication coverage and rejection indicators (replications with an estimate
    and a finite SE), as the summary computes them; with ``ci`` (the method's own
    interval limits), those with finite limits: covered when theta lies inside, rejected
    when 0 does not.

    Returns
    -------
    cover, reject : ndarray of bool
    """
    if ci is not None:
        e, lo, hi = (np.asarray(a, dtype=float) for a in (est, *ci))
        ok = np.isfinite(e) & np.isfinite(lo) & np.isfinite(hi)
        lo, hi = lo[ok], hi[ok]
        return (lo <= theta) & (theta <= hi), (lo > 0) | (hi < 0)
    est, se, df = (np.asarray(a, dtype=float) for a in (est, se, df))
    ok = np.isfinite(est) & np.isfinite(se)
    e, s = est[ok], se[ok]
    c = _crit(df[ok], alpha)
    half = c * s
    cover = (e - half <= theta) & (theta <= e + half)
    reject = np.abs(e / s) >= c
    return cover, reject


def wilson(successes: float, n: float, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion."""
    from scipy import stats

    if n <= 0:
        return (0.0, 1.0)
    z = float(stats.norm.ppf(0.5 + level / 2))
    p = successes / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, mid - half), min(1.0, mid + half))


def _variance_interval(u: np.ndarray, level: float) -> tuple[float, float, float]:
    """The sample variance of ``u`` and an interval from its fourth moment (any
    distribution; log scale): Var(s^2) ~ (m4 - s^4) / k."""
    from scipy import stats

    k = u.size
    v = float(u.var(ddof=1))
    if k < 4 or v <= 0:
        return v, float("nan"), float("nan")
    m4 = float(np.mean((u - u.mean()) ** 4))
    se_log = math.sqrt(max(m4 - v * v, 0.0) / k) / v
    z = float(stats.norm.ppf(0.5 + level / 2))
    return v, v * math.exp(-z * se_log), v * math.exp(z * se_log)


def _chi2_interval(v: float, k: int, level: float) -> tuple[float, float]:
    """Normal-theory interval for a variance from k replications."""
    from scipy import stats

    a = 1 - level
    return ((k - 1) * v / stats.chi2.ppf(1 - a / 2, k - 1),
            (k - 1) * v / stats.chi2.ppf(a / 2, k - 1))


@dataclass(frozen=True)
class Need:
    """The replications one measure needs: the pilot's estimate of the measure and of
    its per-replication variance, and ``n`` with an interval."""

    estimate: float
    pilot_mcse: float
    k: int
    n: float
    lo: float
    hi: float


def _rate_need(x: np.ndarray, target: float, level: float, worst_case: bool) -> Need:
    k = int(x.size)
    p = float(x.mean())
    mcse = math.sqrt(p * (1 - p) / k)
    if worst_case:
        n = 0.25 / target**2
        return Need(p, mcse, k, n, n, n)
    lo_p, hi_p = wilson(float(x.sum()), k, level)
    ends = [lo_p * (1 - lo_p), hi_p * (1 - hi_p)]
    top = 0.25 if lo_p <= 0.5 <= hi_p else max(ends)
    return Need(p, mcse, k, p * (1 - p) / target**2, min(ends) / target**2, top / target**2)


def replications_needed(measure: Measure, est: np.ndarray, se: np.ndarray, df: np.ndarray,
                        theta: float, target: float, *, alpha: float = 0.05,
                        level: float = 0.95, worst_case: bool = False,
                        ci: tuple[np.ndarray, np.ndarray] | None = None) -> Need | None:
    """Replications for ``measure`` to reach MCSE ``target``, from a pilot's replications
    of one cell x method x term (None when fewer than 4 replications are usable).

    Parameters
    ----------
    measure : Measure
    est, se, df : ndarray (k,)
        Estimates, model SEs of the measure's SE type, residual df (proper fits only).
    theta : float
        True value of the term.
    target : float
        Target Monte Carlo SE of the measure.
    alpha : float
        Nominal level of coverage and rejection.
    level : float
        Confidence level of the interval for ``n``.
    worst_case : bool
        Rates: plan for p = .5 (the largest p (1 - p)) whatever the pilot shows.
    ci : (ndarray, ndarray), optional
        The method's own interval limits (:func:`interval_limits`) for a bare rate.
    """
    est = np.asarray(est, dtype=float)
    se = np.asarray(se, dtype=float)
    df = np.asarray(df, dtype=float)
    keep = np.isfinite(est)
    x = est[keep]
    if measure.name in ("bias", "empse", "mse"):
        if x.size < 4:
            return None
        k = int(x.size)
        if measure.name == "mse":
            sq = (x - theta) ** 2
            v, lo, hi = _variance_interval(sq, level)
            return Need(float(sq.mean()), math.sqrt(v / k), k, v / target**2,
                        lo / target**2, hi / target**2)
        v = float(x.var(ddof=1))
        lo, hi = _chi2_interval(v, k, level)
        if measure.name == "bias":
            return Need(float(x.mean()) - theta, math.sqrt(v / k), k, v / target**2,
                        lo / target**2, hi / target**2)
        s = math.sqrt(v)
        return Need(s, s / math.sqrt(2 * (k - 1)), k, 1 + v / (2 * target**2),
                    1 + lo / (2 * target**2), 1 + hi / (2 * target**2))
    if measure.name == "modelse":
        s = se[keep & np.isfinite(se)]
        if s.size < 4:
            return None
        v2 = s**2
        modse = math.sqrt(float(v2.mean()))
        var, lo, hi = _variance_interval(v2, level)
        scale = 4 * modse**2 * target**2
        return Need(modse, math.sqrt(var / (4 * s.size * modse**2)), int(s.size),
                    var / scale, lo / scale, hi / scale)
    cover, reject = indicators(est, se, df, theta, alpha, ci)
    ind = cover if measure.name == "cover" else reject
    if ind.size < 4:
        return None
    return _rate_need(ind.astype(float), target, level, worst_case)


def se_column(se_type: str) -> str:
    """The estimates column of an SE type."""
    return SE_COLUMNS[se_type]
