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
from .models.cfa import CFAMemo, cfa_verdicts, fit_cfa_batch
from .scenario import Scenario
from .seeding import replication_rng

#: A dataset generator: ``generator(scenario, rng) -> Dataset``.
Generator = Callable[[Scenario, np.random.Generator], Dataset]

__all__ = ["GATES", "Draw", "Gate", "Policy", "draw", "draw_many"]


def _gate_none(data: Dataset) -> str:
    return ""


def _gate_cfa(data: Dataset, memo: CFAMemo | None = None) -> str:
    """The seed's check on one dataset: the free-loading one-factor CFA is proper."""
    return str(_gate_cfa_batch(data.wide(0)[None], memo)[0])


def _gate_cfa_batch(x: np.ndarray, memo: CFAMemo | None = None) -> np.ndarray:
    """The cfa gate on many balanced datasets at once, x of shape (R, G, n)."""
    return cfa_verdicts(fit_cfa_batch(x, memo), "cfa")


def _gate_lavaan(data: Dataset, memo: CFAMemo | None = None) -> str:
    """lavaan's verdict on Clark's call (converged and post.check), one dataset."""
    return str(_gate_lavaan_batch(data.wide(0)[None], memo)[0])


def _gate_lavaan_batch(x: np.ndarray, memo: CFAMemo | None = None) -> np.ndarray:
    """The lavaan_cfa gate on many balanced datasets at once."""
    return cfa_verdicts(fit_cfa_batch(x, memo), "lavaan_cfa")


@dataclass(frozen=True)
class Gate:
    """A redraw gate: ``check(data)`` returns a failure reason or "".

    ``check_batch(x)``, when present, gives the same verdicts for a stack of balanced
    datasets (R, G, n) at once. A gate with ``uses_memo`` takes the chunk's memo as a
    second argument and leaves its CFA fits there for the methods. ``min_group_size``:
    smaller groups are a config error (a one-factor CFA needs 3 indicators).
    """

    check: Callable[..., str]
    needs_balanced: bool
    check_batch: Callable[..., np.ndarray] | None = None
    uses_memo: bool = False
    min_group_size: int = 1

    def verdict(self, data: Dataset, memo: CFAMemo | None = None) -> str:
        """``check(data)`` (with the memo when the gate uses one)."""
        return self.check(data, memo) if self.uses_memo else self.check(data)

    def verdicts(self, x: np.ndarray, memo: CFAMemo | None = None) -> np.ndarray:
        """``check_batch(x)`` (with the memo when the gate uses one)."""
        assert self.check_batch is not None
        return self.check_batch(x, memo) if self.uses_memo else self.check_batch(x)


GATES: dict[str, Gate] = {
    "none": Gate(_gate_none, False),
    "cfa": Gate(_gate_cfa, True, _gate_cfa_batch, uses_memo=True, min_group_size=3),
    "lavaan_cfa": Gate(_gate_lavaan, True, _gate_lavaan_batch, uses_memo=True,
                       min_group_size=3),
}
MODES = ("redraw", "flag")


@dataclass(frozen=True)
class Policy:
    """Inadmissible-solution policy.

    Parameters
    ----------
    mode : {"redraw", "flag"}
    gate : str
        A key of :data:`GATES`: ``cfa`` (default) redraws while the free-loading CFA's
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
        """Refuse a gate that cannot run on some cell (for example cfa with unbalanced groups,
        missing members or fewer than 3 members per group)."""
        gate = GATES[self.gate]
        for sc in scenarios:
            if gate.needs_balanced and not sc.balanced:
                what = (f"group_size {sc.group_size.label()}" if not sc.group_size.balanced
                        else "missing members")
                raise ConfigError(
                    f"admissibility.gate: {self.gate!r} needs balanced groups, but a cell has "
                    f"{what} (use gate: none)"
                )
            if gate.needs_balanced and sc.group_size.value < gate.min_group_size:
                raise ConfigError(
                    f"admissibility.gate: {self.gate!r} needs group_size >= "
                    f"{gate.min_group_size} (members are the CFA's indicators), but a cell has "
                    f"group_size {sc.group_size.label()} (use gate: none)"
                )

    def gate_reason(self, data: Dataset, memo: CFAMemo | None = None) -> str:
        """Why ``data`` fails the gate, or "" when it passes."""
        return GATES[self.gate].verdict(data, memo)


@dataclass(frozen=True)
class Draw:
    """One replication's dataset with its redraw history."""

    data: Dataset
    redraws: int
    gate_reason: str


def draw(scenario: Scenario, root: int, replication: int, policy: Policy,
         memo: CFAMemo | None = None, generator: Generator | None = None) -> Draw:
    """Generate replication ``replication`` of ``scenario`` under ``policy``.

    Attempt ``a`` uses the stream ``(root, scenario key, replication, a)``, so a
    replication's final dataset is reproducible on its own. ``memo`` (the chunk's)
    keeps the gate's fits. ``generator`` replaces :func:`~micromacro_sim.dgp.generate`
    (a user's plug-in, called the same way).
    """
    generate_ = generator or generate
    attempt = 0
    while True:
        data = generate_(scenario, replication_rng(root, scenario, replication, attempt))
        reason = policy.gate_reason(data, memo)
        if not reason or policy.mode == "flag" or attempt >= policy.max_redraws:
            return Draw(data=data, redraws=attempt, gate_reason=reason)
        attempt += 1


def draw_many(scenario: Scenario, root: int, replications: range, policy: Policy,
              *, batch_gate: bool = True, memo: CFAMemo | None = None,
              generator: Generator | None = None) -> list[Draw]:
    """:func:`draw` for a range of replications, running the gate on all of them at once.

    The datasets and verdicts are those of :func:`draw` replication by replication;
    only the gate's evaluation is batched (when the gate has a batch form, the design is
    balanced and ``batch_gate`` is true). ``memo`` is the chunk's memo of CFA fits.
    """
    gate = GATES[policy.gate]
    if (gate.check_batch is None or not batch_gate or not scenario.balanced
            or generator is not None):
        return [draw(scenario, root, r, policy, memo, generator) for r in replications]
    n = scenario.group_size.value
    reps = list(replications)
    data = {r: generate(scenario, replication_rng(root, scenario, r, 0)) for r in reps}
    attempt = dict.fromkeys(reps, 0)
    reason: dict[int, str] = {}
    pending = reps
    while pending:
        x = np.stack([data[r].x[:, 0].reshape(scenario.n_groups, n) for r in pending])
        verdicts = gate.verdicts(x, memo)
        again = []
        for r, v in zip(pending, verdicts, strict=True):
            reason[r] = str(v)
            if v and policy.mode == "redraw" and attempt[r] < policy.max_redraws:
                attempt[r] += 1
                data[r] = generate(scenario, replication_rng(root, scenario, r, attempt[r]))
                again.append(r)
        pending = again
    return [Draw(data=data[r], redraws=attempt[r], gate_reason=reason[r]) for r in reps]
