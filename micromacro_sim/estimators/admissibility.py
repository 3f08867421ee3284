"""The inadmissible-solution policy: when a dataset is redrawn, and when it is kept.

SPEC section 3.3: the seed study regenerates a dataset while its free-loading CFA fails
(not converged, a negative variance, a non-positive-definite matrix), which conditions
the study on admissible samples. Here that is explicit:

- ``policy: redraw`` regenerates the dataset while the ``gate`` fails, up to
  ``max_redraws`` times (the redraw count lands in the ``datasets`` table);
- ``policy: flag`` never redraws; the gate's verdict is still recorded.

Either way every method's own failures are recorded per method and replication
(admissible flag and reason); a method failure never triggers a redraw. A user's generator
that raises (or calls ``sys.exit``), or returns something other than a ``Dataset``, stops
the run with a :class:`~micromacro_sim.core.errors.PluginError` naming it: without its data
no method can run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from micromacro_sim.core.errors import PluginError, describe_exception
from micromacro_sim.design.policy import GATE_REQUIREMENTS, Policy
from micromacro_sim.design.scenario import Scenario
from micromacro_sim.estimators.plugins import qualified_name
from micromacro_sim.generate.dataset import Dataset
from micromacro_sim.generate.dgp import generate
from micromacro_sim.generate.seeding import replication_rng
from micromacro_sim.models.cfa import CFAMemo, cfa_verdicts, fit_cfa_batch
from micromacro_sim.models.cfa_fiml import fit_cfa_fiml_batch
from micromacro_sim.models.wide_layout import layout_problem

#: A dataset generator: ``generator(scenario, rng) -> Dataset``.
Generator = Callable[[Scenario, np.random.Generator], Dataset]

__all__ = ["GATES", "Draw", "Gate", "Policy", "draw", "draw_many", "gate_reason"]


def _gate_none(data: Dataset) -> str:
    return ""


def _fiml_verdict(data: Dataset, gate: str, memo: CFAMemo | None = None) -> str:
    """A CFA gate's verdict on data with absent members or unequal groups: the CFA by
    full-information ML on the member-position layout; a layout it does not apply to
    (a position observed in fewer than 2 groups, fewer than 3 positions) fails."""
    values, mask = data.wide_positions(0)
    problem = layout_problem(values, mask)
    if problem is not None:
        return f"{gate}: {problem[1]}"
    x = np.where(mask, values, 0.0)[None]
    fits = (fit_cfa_fiml_batch(x, mask[None]) if memo is None
            else memo.fit_fiml(x, mask[None], fit_cfa_fiml_batch))
    return str(cfa_verdicts(fits, gate)[0])


def _gate_cfa(data: Dataset, memo: CFAMemo | None = None) -> str:
    """The seed's check on one dataset: the free-loading one-factor CFA is proper."""
    if not data.complete:
        return _fiml_verdict(data, "cfa", memo)
    return str(_gate_cfa_batch(data.wide(0)[None], memo)[0])


def _gate_cfa_batch(x: np.ndarray, memo: CFAMemo | None = None) -> np.ndarray:
    """The cfa gate on many balanced datasets at once, x of shape (R, G, n)."""
    return cfa_verdicts(fit_cfa_batch(x, memo), "cfa")


def _gate_lavaan(data: Dataset, memo: CFAMemo | None = None) -> str:
    """lavaan's verdict on Clark's call (converged and post.check), one dataset."""
    if not data.complete:
        return _fiml_verdict(data, "lavaan_cfa", memo)
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
    "none": Gate(_gate_none, GATE_REQUIREMENTS["none"].needs_balanced),
    "cfa": Gate(_gate_cfa, GATE_REQUIREMENTS["cfa"].needs_balanced, _gate_cfa_batch,
                uses_memo=True, min_group_size=GATE_REQUIREMENTS["cfa"].min_group_size),
    "lavaan_cfa": Gate(_gate_lavaan, GATE_REQUIREMENTS["lavaan_cfa"].needs_balanced,
                       _gate_lavaan_batch, uses_memo=True,
                       min_group_size=GATE_REQUIREMENTS["lavaan_cfa"].min_group_size),
}


def gate_reason(policy: Policy, data: Dataset, memo: CFAMemo | None = None) -> str:
    """Why ``data`` fails ``policy``'s gate, or "" when it passes."""
    return GATES[policy.gate].verdict(data, memo)

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
    keeps the gate's fits. ``generator`` replaces :func:`~micromacro_sim.generate.dgp.generate`
    (a user's plug-in, called the same way).
    """
    attempt = 0
    while True:
        rng = replication_rng(root, scenario, replication, attempt)
        if generator is None:
            data = generate(scenario, rng)
        else:
            data = _user_draw(generator, scenario, rng, replication)
        reason = gate_reason(policy, data, memo)
        if not reason or policy.mode == "flag" or attempt >= policy.max_redraws:
            return Draw(data=data, redraws=attempt, gate_reason=reason)
        attempt += 1


def _user_draw(generator: Generator, scenario: Scenario, rng: np.random.Generator,
               replication: int) -> Dataset:
    """``generator(scenario, rng)``, a user's plug-in; its failure is a one-line error.

    Raises
    ------
    PluginError
        The generator raised anything (``SystemExit`` too: a plug-in's ``sys.exit`` must
        not end the run as if it had finished) or returned no ``Dataset``; the message
        names the generator, the exception and the scenario and replication.
    """
    where = f"(scenario {scenario.key}, replication {replication})"
    try:
        data = generator(scenario, rng)
    except (Exception, SystemExit) as exc:
        raise PluginError(f"generator: {qualified_name(generator)!r} "
                          f"{'' if isinstance(exc, SystemExit) else 'raised '}"
                          f"{describe_exception(exc)} {where}") from None
    if not isinstance(data, Dataset):
        raise PluginError(f"generator: {qualified_name(generator)!r} returned "
                          f"{type(data).__name__}, not a Dataset {where}")
    return data


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
