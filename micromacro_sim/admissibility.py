"""The inadmissible-solution policy: when a dataset is redrawn, and when it is kept.

SPEC section 3.3: the seed study regenerates a dataset while its free-loading CFA fails
(not converged, a negative variance, a non-positive-definite matrix), which conditions
the study on admissible samples. Here that is explicit:

- ``policy: redraw`` regenerates the dataset while the ``gate`` fails, up to
  ``max_redraws`` times (the redraw count lands in the ``datasets`` table);
- ``policy: flag`` never redraws; the gate's verdict is still recorded.

Either way every method's own failures are recorded per method and replication
(admissible flag and reason); a method failure never triggers a redraw.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .dataset import Dataset
from .dgp import generate
from .errors import ConfigError
from .scenario import Scenario
from .seeding import replication_rng

#: A dataset generator: ``generator(scenario, rng) -> Dataset``.
Generator = Callable[[Scenario, np.random.Generator], Dataset]

__all__ = ["GATES", "Draw", "Gate", "Policy", "draw", "draw_many"]


def _gate_none(data: Dataset) -> str:
    return ""


def _cfa_verdict(wide: np.ndarray) -> str:
    """The seed's check on one G x n matrix: the free-loading one-factor CFA is proper."""
    from .estimators.factor_score import fit_cfa

    fit = fit_cfa(wide)
    if not fit.converged:
        return f"cfa: {fit.reason or 'not converged'}"
    if not fit.admissible:
        return f"cfa: {fit.reason or 'inadmissible'}"
    return ""


def _gate_cfa(data: Dataset) -> str:
    return _cfa_verdict(data.wide(0))


def _gate_cfa_batch(x: np.ndarray) -> np.ndarray:
    """The cfa gate on many balanced datasets at once, x of shape (R, G, n)."""
    try:
        from .estimators.factor_score import cfa_gate_batch
    except ImportError:  # no batch CFA: the same verdicts one dataset at a time
        return np.array([_cfa_verdict(w) for w in x], dtype=object)
    return cfa_gate_batch(x)


@dataclass(frozen=True)
class Gate:
    """A redraw gate: ``check(data)`` returns a failure reason or "".

    ``check_batch(x)``, when present, gives the same verdicts for a stack of balanced
    datasets (R, G, n) at once.
    """

    check: Callable[[Dataset], str]
    needs_balanced: bool
    check_batch: Callable[[np.ndarray], np.ndarray] | None = None


GATES: dict[str, Gate] = {
    "none": Gate(_gate_none, False),
    "cfa": Gate(_gate_cfa, True, _gate_cfa_batch),
}
MODES = ("redraw", "flag")


@dataclass(frozen=True)
class Policy:
    """Inadmissible-solution policy.

    Parameters
    ----------
    mode : {"redraw", "flag"}
    gate : str
        A key of :data:`GATES`; ``cfa`` (default) is the seed study's check.
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
            )
        mode = value.get("policy", cls.mode)
        if mode not in MODES:
            raise ConfigError(f"admissibility.policy: expected redraw or flag, got {mode!r}")
        gate = value.get("gate", cls.gate)
        if gate is None:
            gate = "none"
        if gate not in GATES:
            raise ConfigError(
                f"admissibility.gate: unknown gate {gate!r} (known: {', '.join(GATES)})"
            )
        mr = value.get("max_redraws", cls.max_redraws)
        if not isinstance(mr, int) or isinstance(mr, bool) or mr < 0:
            raise ConfigError(f"admissibility.max_redraws: expected an integer >= 0, got {mr!r}")
        return cls(mode=mode, gate=gate, max_redraws=mr)

    def to_config(self) -> dict[str, Any]:
        """Config-file form."""
        return {"policy": self.mode, "gate": self.gate, "max_redraws": self.max_redraws}

    def check_scenarios(self, scenarios: tuple[Scenario, ...]) -> None:
        """Refuse a gate that cannot run on some cell (for example cfa with unbalanced groups)."""
        if GATES[self.gate].needs_balanced:
            for sc in scenarios:
                if not sc.group_size.balanced:
                    raise ConfigError(
                        f"admissibility.gate: {self.gate!r} needs balanced groups, but a cell has "
                        f"group_size {sc.group_size.label()} (use gate: none)"
                    )

    def gate_reason(self, data: Dataset) -> str:
        """Why ``data`` fails the gate, or "" when it passes."""
        return GATES[self.gate].check(data)


@dataclass(frozen=True)
class Draw:
    """One replication's dataset with its redraw history."""

    data: Dataset
    redraws: int
    gate_reason: str


def draw(scenario: Scenario, root: int, replication: int, policy: Policy,
         generator: Generator | None = None) -> Draw:
    """Generate replication ``replication`` of ``scenario`` under ``policy``.

    Attempt ``a`` uses the stream ``(root, scenario key, replication, a)``, so a
    replication's final dataset is reproducible on its own. ``generator`` replaces
    :func:`~micromacro_sim.dgp.generate` (a user's plug-in, called the same way).
    """
    generate_ = generator or generate
    attempt = 0
    while True:
        data = generate_(scenario, replication_rng(root, scenario, replication, attempt))
        reason = policy.gate_reason(data)
        if not reason or policy.mode == "flag" or attempt >= policy.max_redraws:
            return Draw(data=data, redraws=attempt, gate_reason=reason)
        attempt += 1


def draw_many(scenario: Scenario, root: int, replications: range, policy: Policy,
              *, batch_gate: bool = True, generator: Generator | None = None) -> list[Draw]:
    """:func:`draw` for a range of replications, running the gate on all of them at once.

    The datasets and verdicts are those of :func:`draw` replication by replication;
    only the gate's evaluation is batched (when the gate has a batch form, the design is
    balanced and ``batch_gate`` is true).
    """
    gate = GATES[policy.gate]
    if (gate.check_batch is None or not batch_gate or not scenario.group_size.balanced
            or generator is not None):
        return [draw(scenario, root, r, policy, generator) for r in replications]
    n = scenario.group_size.value
    reps = list(replications)
    data = {r: generate(scenario, replication_rng(root, scenario, r, 0)) for r in reps}
    attempt = dict.fromkeys(reps, 0)
    reason: dict[int, str] = {}
    pending = reps
    while pending:
        x = np.stack([data[r].x[:, 0].reshape(scenario.n_groups, n) for r in pending])
        verdicts = gate.check_batch(x)
        again = []
        for r, v in zip(pending, verdicts, strict=True):
            reason[r] = str(v)
            if v and policy.mode == "redraw" and attempt[r] < policy.max_redraws:
                attempt[r] += 1
                data[r] = generate(scenario, replication_rng(root, scenario, r, attempt[r]))
                again.append(r)
        pending = again
    return [Draw(data=data[r], redraws=attempt[r], gate_reason=reason[r]) for r in reps]
