"""micromacro-sim: Monte Carlo studies and estimators for micro-macro multilevel models."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "fit", "simulate"]


def __getattr__(name: str):
    # ``micromacro_sim.fit`` and ``simulate`` without importing the estimators at package
    # import time
    if name == "fit":
        from .api import fit

        return fit
    if name == "simulate":
        from .simulation import simulate

        return simulate
    raise AttributeError(name)
