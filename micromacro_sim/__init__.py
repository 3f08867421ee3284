"""micromacro-sim: Monte Carlo studies and estimators for micro-macro multilevel models."""

from __future__ import annotations

from micromacro_sim.core.version import __version__

__all__ = ["__version__", "advise", "fit", "protocol", "simulate"]


def __getattr__(name: str):
    # ``micromacro_sim.fit``, ``simulate`` and ``protocol`` without importing the estimators
    # at package import time
    if name == "fit":
        from micromacro_sim.api.fitting import fit

        return fit
    if name == "simulate":
        from micromacro_sim.api.simulation import simulate

        return simulate
    if name == "protocol":
        from micromacro_sim.api import protocol

        return protocol
    if name == "advise":
        from micromacro_sim.api.advise import advise

        return advise
    raise AttributeError(name)
