"""The Python API: :func:`fit` (one dataset, the methods side by side) and
:func:`simulate` (a whole study); :func:`protocol` is a study's ADEMP-PreReg protocol
(:func:`micromacro_sim.reporting.protocol.protocol`).

``micromacro_sim.fit`` and ``micromacro_sim.simulate`` are these functions; the result
types are :class:`~micromacro_sim.api.fitresult.MicroMacroResult` and
:class:`~micromacro_sim.api.simulation.Simulation`.
The names load on first use, so that importing :mod:`micromacro_sim.api.simulation`
(``micromacro run``) does not import pandas.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "Advice",
    "LOW_RELIABILITY",
    "MethodResult",
    "MethodsArg",
    "MicroMacroResult",
    "Reliability",
    "Simulation",
    "Summary",
    "UnknownMethod",
    "default_methods",
    "fit",
    "fit_dataset",
    "method_specs",
    "protocol",
    "reliability",
    "results_table",
    "simulate",
]

_SIMULATION = {"Simulation", "simulate"}
#: ``micromacro advise``'s result; the function is ``micromacro_sim.advise`` (here the name
#: ``advise`` is its module, :mod:`micromacro_sim.api.advise`).
_ADVISE = {"Advice"}


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name == "protocol":  # the study protocol of a config (micromacro protocol)
        return importlib.import_module("micromacro_sim.reporting.protocol").protocol
    module = ("simulation" if name in _SIMULATION else "advise" if name in _ADVISE
              else "fitting")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
