"""Adaptive replications: each cell runs blocks of replications until its targets hold.

A config may ask for a precision instead of a number of replications:

.. code-block:: yaml

    replications: {target_mcse: {bias: 0.005, cover: 0.005}, min: 200, max: 20000, block: 100}

Every cell starts with its first ``min`` replications. After each round, the Monte Carlo
SE of every target measure is computed for every method x term of the cell from its
proper fits (as the summaries compute them; :mod:`micromacro_sim.design.measures`). A
cell is done when every MCSE is at or below its target, or when it reached ``max``
(reported as not met). Otherwise its next count is the next point of the grid ``min +
j * block`` at or beyond both one more block and the replications the current data
predict (``n = V / MCSE^2``), at most ``max``.

The decision is a function of the cell's first ``n`` replications only, and those are
bitwise the same whatever the execution (n_jobs, backend, chunk size, resume). Every
run replays the rule from ``min`` on the data the folder already holds, so a run with
tighter targets extends the same streams and equals a fresh run with those targets, and
a looser target on a folder with more replications uses only the first ones it needs.

A bare ``modelse``, ``cover`` or ``reject`` uses each method's default SE type
(:attr:`~micromacro_sim.estimators.base.Estimator.default_se`), ``cover_HC3`` and the like
one type for every method. The manifest records, per target, the type each method used
(``adaptive.se_types``), and a resumed folder keeps it: a folder written before the record
existed meant ``classical`` by a bare name, and keeps that.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from micromacro_sim.core.errors import ConfigError, did_you_mean
from micromacro_sim.design.kinds import integer_hint
from micromacro_sim.design.measures import Measure, check_target, parse_measure

__all__ = ["ADAPTIVE_KEYS", "Adaptive", "parse_adaptive"]

#: Keys of the mapping form of ``replications``.
ADAPTIVE_KEYS = ("target_mcse", "min", "max", "block")
#: Nominal level of coverage and rejection in the stopping rule (the summaries' default).
ALPHA = 0.05
#: A target counts as met only below ``target * (1 - SLACK)``, so that the MCSE the
#: summaries compute (the same formula, rounded differently) never exceeds it.
SLACK = 1e-9


@dataclass(frozen=True)
class Adaptive:
    """Adaptive replications: target MCSEs and the limits of every cell.

    Attributes
    ----------
    targets : tuple of (Measure, float)
    min, max, block : int
        First count, largest count, and the step of the grid of counts.
    """

    targets: tuple[tuple[Measure, float], ...]
    min: int
    max: int
    block: int

    def to_config(self) -> dict[str, Any]:
        """The config-file form."""
        return {"target_mcse": {m.label: t for m, t in self.targets}, "min": self.min,
                "max": self.max, "block": self.block}


def _int(value: Any, field: str, low: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(f"{field}: expected an integer >= {low}, got {value!r}"
                          f"{integer_hint(value)}")
    return value


def _targets(value: Any) -> tuple[tuple[Measure, float], ...]:
    field = "replications.target_mcse"
    if not isinstance(value, Mapping) or not value:
        raise ConfigError(f"{field}: expected a mapping of measure: MCSE, got {value!r}")
    out: dict[Measure, float] = {}
    for name, target in value.items():
        m = parse_measure(str(name), field)
        if isinstance(target, str):  # a config gives numbers; text is the command line's form
            raise ConfigError(f"{field}.{name}: expected a positive number, got {target!r}")
        value = check_target(m, target, f"{field}.{name}")
        if m in out:
            raise ConfigError(f"{field}.{name}: measure {m.label!r} given twice")
        out[m] = value
    return tuple(out.items())


def parse_adaptive(value: Any) -> Adaptive:
    """Validate the mapping form of ``replications``.

    Raises
    ------
    ConfigError
        A one-line message naming the field and the value.
    """
    if not isinstance(value, Mapping):
        raise ConfigError(f"replications: expected an integer or a mapping, got {value!r}")
    unknown = sorted(str(k) for k in value if k not in ADAPTIVE_KEYS)
    if unknown:
        raise ConfigError(f"replications.{unknown[0]}: unknown key (known: "
                          f"{', '.join(ADAPTIVE_KEYS)})" + did_you_mean(unknown[0], ADAPTIVE_KEYS))
    if "target_mcse" not in value:
        raise ConfigError("replications.target_mcse: missing (e.g. {bias: 0.005})")
    targets = _targets(value["target_mcse"])
    low = _int(value.get("min", 200), "replications.min", 10)
    high = _int(value.get("max", 20000), "replications.max", 10)
    block = _int(value.get("block", 100), "replications.block", 1)
    if high < low:
        raise ConfigError(f"replications.max: expected at least min ({low}), got {high!r}")
    return Adaptive(targets, low, high, block)


