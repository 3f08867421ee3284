"""The Python API: :func:`fit` (one dataset, the methods side by side) and
:func:`simulate` (a whole study).

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
    "reliability",
    "results_table",
    "simulate",
]

_SIMULATION = {"Simulation", "simulate"}


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = "simulation" if name in _SIMULATION else "fitting"
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
