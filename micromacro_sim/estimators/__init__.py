"""The estimator registry: every module in this folder that defines an
:class:`~micromacro_sim.estimators.base.Estimator` subclass with a ``name`` registers it.

Adding a method is one new file here.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from ..results import SE_TYPES, BatchResult, BatchScores, FitResult, Scores
from .base import Estimator, NotApplicable, TwoStepEstimator

__all__ = [
    "SE_TYPES",
    "BatchResult",
    "BatchScores",
    "Estimator",
    "FitResult",
    "NotApplicable",
    "Scores",
    "TwoStepEstimator",
    "available",
    "get_estimator",
    "registry",
]

_REGISTRY: dict[str, type[Estimator]] | None = None


def registry() -> dict[str, type[Estimator]]:
    """Method id -> estimator class, discovered from the modules of this package."""
    global _REGISTRY
    if _REGISTRY is None:
        found: dict[str, type[Estimator]] = {}
        for mod in pkgutil.iter_modules(__path__):
            if mod.name.startswith("_") or mod.name == "base":
                continue
            module = importlib.import_module(f"{__name__}.{mod.name}")
            for obj in vars(module).values():
                if (
                    isinstance(obj, type)
                    and issubclass(obj, Estimator)
                    and obj.name
                    and obj.__module__ == module.__name__
                ):
                    if obj.name in found:
                        raise RuntimeError(f"duplicate estimator name {obj.name!r}")
                    found[obj.name] = obj
        _REGISTRY = dict(sorted(found.items()))
    return _REGISTRY


def available() -> list[str]:
    """Registered method ids, sorted."""
    return list(registry())


def get_estimator(name: str, **options: Any) -> Estimator:
    """Instantiate a registered method.

    Raises
    ------
    KeyError
        With the list of known methods, when ``name`` is not registered.
    """
    reg = registry()
    if name not in reg:
        raise KeyError(f"unknown method {name!r} (known: {', '.join(reg)})")
    return reg[name](**options)
