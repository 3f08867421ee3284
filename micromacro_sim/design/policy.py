"""The inadmissible-solution policy as a config declares it (SPEC section 3.3).

``policy: redraw`` regenerates a dataset while the ``gate`` fails, up to ``max_redraws``
times; ``policy: flag`` never redraws and records the gate's verdict. The gates
themselves (the CFA fits that decide) are in :mod:`micromacro_sim.estimators.admissibility`;
this module holds what a config needs to be checked: the gate names and what each asks of
a design.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from micromacro_sim.core.errors import ConfigError, did_you_mean
from micromacro_sim.design.kinds import integer_hint
from micromacro_sim.design.scenario import Scenario

__all__ = ["GATE_REQUIREMENTS", "MODES", "GateRequirement", "Policy"]


@dataclass(frozen=True)
class GateRequirement:
    """What a gate asks of every cell: balanced groups (no gate does since full-information
    ML fits the CFA with absent members), and at least ``min_group_size`` members in a
    balanced design (a one-factor CFA needs 3 indicators)."""

    needs_balanced: bool
    min_group_size: int = 1


GATE_REQUIREMENTS: dict[str, GateRequirement] = {
    "none": GateRequirement(False),
    "cfa": GateRequirement(False, 3),
    "lavaan_cfa": GateRequirement(False, 3),
}
MODES = ("redraw", "flag")


@dataclass(frozen=True)
class Policy:
    """Inadmissible-solution policy.

    Parameters
    ----------
    mode : {"redraw", "flag"}
    gate : str
        A key of :data:`GATE_REQUIREMENTS`: ``cfa`` (default) redraws while the free-loading CFA's
        global optimum is improper; ``lavaan_cfa`` reproduces lavaan's accept/reject of
        the seed study's call (converged and post.check).
    max_redraws : int
        Redraw limit per replication; when reached the last dataset is kept and its
        gate failure recorded.
    """

    mode: str = "redraw"
    gate: str = "cfa"
    max_redraws: int = 100

    @classmethod
    def from_config(cls, value: Any) -> Policy:
        """Parse the ``admissibility`` block (None gives the defaults)."""
        if value is None:
            return cls()
        if not isinstance(value, dict):
            raise ConfigError(f"admissibility: expected a mapping, got {value!r}")
        unknown = sorted(set(value) - {"policy", "gate", "max_redraws"})
        if unknown:
            raise ConfigError(
                f"admissibility.{unknown[0]}: unknown key (known: gate, max_redraws, policy)"
                + did_you_mean(unknown[0], ("gate", "max_redraws", "policy")))
        mode = value.get("policy", cls.mode)
        if mode not in MODES:
            raise ConfigError(f"admissibility.policy: expected redraw or flag, got {mode!r}")
        gate = value.get("gate", cls.gate)
        if gate is None:
            gate = "none"
        if gate not in GATE_REQUIREMENTS:
            raise ConfigError(
                f"admissibility.gate: unknown gate {gate!r} (known: {', '.join(GATE_REQUIREMENTS)})"
            )
        mr = value.get("max_redraws", cls.max_redraws)
        if not isinstance(mr, int) or isinstance(mr, bool) or mr < 0:
            raise ConfigError(f"admissibility.max_redraws: expected an integer >= 0, got {mr!r}"
                              f"{integer_hint(mr)}")
        return cls(mode=mode, gate=gate, max_redraws=mr)

    def to_config(self) -> dict[str, Any]:
        """Config-file form."""
        return {"policy": self.mode, "gate": self.gate, "max_redraws": self.max_redraws}

    def check_scenarios(self, scenarios: tuple[Scenario, ...]) -> None:
        """Refuse a gate that cannot run on some cell (for example cfa with fewer than 3
        members per group in a balanced design)."""
        gate = GATE_REQUIREMENTS[self.gate]
        for sc in scenarios:
            if gate.needs_balanced and not sc.balanced:
                what = (f"group_size {sc.group_size.label()}" if not sc.group_size.balanced
                        else "missing members")
                raise ConfigError(
                    f"admissibility.gate: {self.gate!r} needs balanced groups, but a cell has "
                    f"{what} (use gate: none)"
                )
            if sc.group_size.balanced and sc.group_size.value < gate.min_group_size:
                raise ConfigError(
                    f"admissibility.gate: {self.gate!r} needs group_size >= "
                    f"{gate.min_group_size} (members are the CFA's indicators), but a cell has "
                    f"group_size {sc.group_size.label()} (use gate: none)"
                )
