"""Verdicts of a reproduction: this run against a published value or an analytic limit.

A verdict uses both Monte Carlo SEs (this run's and the reference's) and a stated
practical margin per measure; see :func:`judge` for the rule. Robust location measures
(median, trimmed mean) get their MCSEs by a seeded bootstrap (:func:`bootstrap_mcse`).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

__all__ = [
    "AGREES",
    "ALPHA_MARGIN",
    "BOOT_REPS",
    "DISAGREES",
    "EMPSE_MARGIN",
    "INCONCLUSIVE",
    "NO_ESTIMATE",
    "PCT_MARGIN",
    "RATE_MARGIN",
    "SMALL",
    "TRIM",
    "Z_CRIT",
    "Margin",
    "bootstrap_mcse",
    "judge",
    "robust_location",
    "rule",
    "rule_note",
]

#: Critical value: an interval is difference +/- Z_CRIT combined MCSE (about 95%).
Z_CRIT = 2.0
#: Proportion cut from each tail for the trimmed mean (as in ``summarize_run``).
TRIM = 0.1
#: Bootstrap resamples for the MCSE of a median or trimmed mean.
BOOT_REPS = 1000
#: Root of the bootstrap streams (each statistic's stream also hashes its key).
BOOT_SEED = 20240512

AGREES = "agrees"
SMALL = "small difference"
INCONCLUSIVE = "inconclusive"
DISAGREES = "disagrees"
NO_ESTIMATE = "no estimate"


@dataclass(frozen=True)
class Margin:
    """Practical margin of one measure: differences within it do not matter.

    Attributes
    ----------
    measure : str
        What is compared (e.g. "percent bias").
    value : float
        The margin, in ``unit`` (a fraction of the reference when ``relative``).
    unit : str
        Unit of ``value`` as printed.
    relative : bool
        The margin is ``value * |reference|``.
    basis : str
        Why this size.
    """

    measure: str
    value: float
    unit: str
    relative: bool = False
    basis: str = ""

    def absolute(self, reference: float) -> float:
        """The margin in the measure's units for a given reference value."""
        return self.value * abs(reference) if self.relative else self.value

    def describe(self) -> str:
        """One line: measure, size and basis."""
        size = f"{100 * self.value:g}% of the reference" if self.relative else \
            f"{self.value:g} {self.unit}"
        return f"{self.measure}: margin {size} ({self.basis})"


PCT_MARGIN = Margin(
    "percent bias (mean, median, trimmed mean)", 5.0, "percentage points",
    basis="the usual threshold of a negligible relative bias, 5% after Hoogland & Boomsma "
    "1998; a smaller difference does not change what a study concludes about a method")
EMPSE_MARGIN = Margin(
    "empirical SD", 0.10, "of the reference", relative=True,
    basis="the usual tolerance of a standard error's relative bias")
ALPHA_MARGIN = Margin(
    "mean coefficient alpha", 0.02, "alpha units",
    basis="twice the rounding of the published two-digit values")
RATE_MARGIN = Margin(
    "rejection rate / coverage", 0.025, "proportion",
    basis="Bradley's liberal criterion: .05 +/- .025 for a Type I error rate, .95 +/- .025 "
    "for the coverage of a 95% interval")


def rule(difference: float, se: float, margin: float, *, z_crit: float = Z_CRIT) -> str:
    """The verdict for a difference with combined MCSE ``se`` and practical ``margin``.

    With d = |difference|, h = ``z_crit`` * ``se`` (half-width of the interval of the
    difference) and m = ``margin``, in this order:

    - ``no estimate``: d, se or m is not finite;
    - ``disagrees``: d - h > m, the difference is significantly larger than the margin;
    - ``agrees``: d <= h and d + h <= m, no significant difference and the whole
      interval lies within the margin;
    - ``small difference``: d > h and d + h <= m, a significant difference that is
      within the margin;
    - ``inconclusive``: otherwise, d - h <= m < d + h, the interval reaches both sides of
      the margin. This is always the case (unless ``disagrees``) when h > m, a combined
      MCSE too large to resolve a difference of the margin's size.
    """
    if not (np.isfinite(difference) and np.isfinite(se) and np.isfinite(margin)):
        return NO_ESTIMATE
    d, h = abs(difference), z_crit * se
    if d - h > margin:
        return DISAGREES
    if d + h <= margin:
        return AGREES if d <= h else SMALL
    return INCONCLUSIVE


def rule_note(z_crit: float = Z_CRIT) -> str:
    """The rule of :func:`rule` as one printed note."""
    z = f"{z_crit:g}"
    return (
        "verdict rule: d = |this run - reference| (a published value's rounding is not counted "
        "as difference), se_diff = sqrt(mcse^2 + mcse_pub^2) combines this run's MCSE and the "
        "reference's (from its saved per-replication estimates; 0 for an analytic limit; when "
        "unknown, this run's alone, so the verdict is optimistic), h = "
        f"{z} se_diff, m = the margin. 'disagrees': d - h > m; 'agrees': d <= h and d + h <= m; "
        "'small difference': d > h and d + h <= m (significant but within the margin); "
        "'inconclusive': otherwise (the interval d +/- h reaches both sides of m, always so "
        "when h > m: this comparison cannot resolve a difference of the margin's size)."
    )


def judge(ours: float, mcse: float, reference: float, mcse_reference: float,
          margin: float, *, rounding: float = 0.0, z_crit: float = Z_CRIT) -> dict[str, Any]:
    """Compare this run's value with a reference using both MCSEs and a margin.

    Parameters
    ----------
    ours, mcse : float
        This run's value and its Monte Carlo SE.
    reference : float
        Published value or analytic limit.
    mcse_reference : float
        The reference's Monte Carlo SE: 0 for an analytic limit, NaN when unknown (the
        combined SE is then this run's alone).
    margin : float
        Practical margin in the measure's units (see :class:`Margin`).
    rounding : float
        Half a unit of the reference's last printed digit: a difference within it is no
        difference (only the excess counts).
    z_crit : float
        Critical value of :func:`rule`.

    Returns
    -------
    dict
        diff (signed, rounding excess only), se_diff and verdict.
    """
    raw = ours - reference
    diff = math.copysign(max(0.0, abs(raw) - rounding), raw) if np.isfinite(raw) else math.nan
    ref = 0.0 if not np.isfinite(mcse_reference) else mcse_reference
    se = math.sqrt(mcse**2 + ref**2) if np.isfinite(mcse) else math.nan
    return {"diff": diff, "se_diff": se, "verdict": rule(diff, se, margin, z_crit=z_crit)}


def _stream(key: str) -> np.random.Generator:
    return np.random.default_rng([BOOT_SEED, zlib.crc32(key.encode())])


def bootstrap_mcse(x: np.ndarray, stat: Callable[[np.ndarray], np.ndarray], *, key: str,
                   reps: int = BOOT_REPS, block: int = 200) -> float:
    """Bootstrap SE of ``stat`` over the replications ``x`` (seeded by ``key``).

    Parameters
    ----------
    x : array
        One value per replication.
    stat : callable
        Maps a (resamples, len(x)) array to one value per row.
    key : str
        Names the statistic and its sample; the stream depends on it alone, so the
        result does not depend on what else is bootstrapped or in which order.
    reps, block : int
        Resamples, and resamples drawn at a time (bounds the memory).

    Returns
    -------
    float
        SD of the statistic over the resamples; NaN with fewer than 2 values.
    """
    x = np.asarray(x, dtype=float)
    if x.size < 2:
        return math.nan
    rng = _stream(key)
    out = []
    for start in range(0, reps, block):
        idx = rng.integers(0, x.size, size=(min(block, reps - start), x.size))
        out.append(stat(x[idx]))
    return float(np.concatenate(out).std(ddof=1))


def _median(a: np.ndarray) -> np.ndarray:
    return np.median(a, axis=-1)


def _trimmed(a: np.ndarray) -> np.ndarray:
    return stats.trim_mean(a, TRIM, axis=-1)


def robust_location(x: np.ndarray, *, key: str, reps: int = BOOT_REPS) -> dict[str, float]:
    """Median and 10% trimmed mean of ``x`` with their bootstrap MCSEs.

    Returns
    -------
    dict
        median, median_mcse, trimmed, trimmed_mcse (NaN for an empty sample).
    """
    x = np.asarray(x, dtype=float)
    if x.size == 0:
        return dict.fromkeys(("median", "median_mcse", "trimmed", "trimmed_mcse"), math.nan)
    return {"median": float(np.median(x)),
            "median_mcse": bootstrap_mcse(x, _median, key=f"{key}/median", reps=reps),
            "trimmed": float(stats.trim_mean(x, TRIM)),
            "trimmed_mcse": bootstrap_mcse(x, _trimmed, key=f"{key}/trimmed", reps=reps)}
