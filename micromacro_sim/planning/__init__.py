"""Planning a study: replications for a target precision (:mod:`.plan`) and the design
value reaching a target power, coverage or bias (:mod:`.power`)."""

from __future__ import annotations

__all__ = ["plan", "solve_power"]


def __getattr__(name: str):
    # lazy: ``micromacro_sim.planning`` imports pandas and scipy only when used
    if name == "plan":
        from micromacro_sim.planning.plan import plan

        return plan
    if name == "solve_power":
        from micromacro_sim.planning.power import solve_power

        return solve_power
    raise AttributeError(name)
