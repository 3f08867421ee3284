"""The estimator registry: every module in this folder that defines an
:class:`~micromacro_sim.estimators.base.Estimator` subclass with a ``name`` registers it,
and so does every entry point of the group ``micromacro_sim.estimators`` of an installed
distribution (under the entry point's name; a package method of the same name wins).

Adding a method is one new file here, or, outside the package, a class named in a config
as ``module:Name`` or an entry point (see :mod:`micromacro_sim.estimators.plugins`).
"""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
from typing import Any

from micromacro_sim.core.errors import ConfigError, NotApplicable, did_you_mean
from micromacro_sim.core.results import (
    OLS_SE_TYPES,
    SE_TYPES,
    BatchResult,
    BatchScores,
    FitResult,
    Scores,
)
from micromacro_sim.design.config import MethodSpec
from micromacro_sim.estimators.base import Estimator
from micromacro_sim.estimators.plugins import (
    ESTIMATOR_GROUP,
    entry_points,
    is_reference,
    load_estimator,
)
from micromacro_sim.estimators.two_step import TwoStepEstimator

__all__ = [
    "OLS_SE_TYPES",
    "SE_TYPES",
    "BatchResult",
    "BatchScores",
    "Estimator",
    "FitResult",
    "NotApplicable",
    "Scores",
    "TwoStepEstimator",
    "available",
    "build",
    "get_estimator",
    "is_plugin",
    "method_class",
    "method_estimands",
    "registry",
]

_REGISTRY: dict[str, type[Estimator]] | None = None

#: Modules of this folder that hold no method: the contract, the gates, plug-in loading.
_NOT_METHODS = frozenset({"admissibility", "base", "contract", "plugins", "recording"})


def registry() -> dict[str, type[Estimator]]:
    """Method id -> estimator class, discovered from the modules of this package."""
    global _REGISTRY
    if _REGISTRY is None:
        found: dict[str, type[Estimator]] = {}
        for mod in pkgutil.iter_modules(__path__):
            if mod.name.startswith("_") or mod.name in _NOT_METHODS:
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
        _REGISTRY = dict(sorted({**_entry_point_methods(set(found)), **found}.items()))
    return _REGISTRY


def _entry_point_methods(taken: set[str]) -> dict[str, type[Estimator]]:
    """The entry points of ``micromacro_sim.estimators`` that load as estimators (the
    others are reported when a config names them, by :func:`method_class`)."""
    out = {}
    for name in entry_points(ESTIMATOR_GROUP):
        if name in taken:
            continue
        with contextlib.suppress(ConfigError):
            out[name] = load_estimator(name)
    return out


def method_class(method: str, field: str = "methods") -> type[Estimator]:
    """The estimator class of a method id: a registered name or ``module:Name``.

    Raises
    ------
    ConfigError
        One line naming ``field`` and ``method`` (unknown, fails to import, or not an
        Estimator).
    """
    reg = registry()
    if method in reg:
        return reg[method]
    if is_reference(method) or method in entry_points(ESTIMATOR_GROUP):
        return load_estimator(method, field)
    raise ConfigError(f"{field}: unknown method {method!r} (known: {', '.join(reg)}; "
                      "or module:Name of your own Estimator)" + did_you_mean(method, reg))


def is_plugin(cls: type[Estimator]) -> bool:
    """Whether ``cls`` comes from outside this package."""
    return not cls.__module__.startswith(__name__.rsplit(".", 1)[0] + ".")


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


def build(spec: MethodSpec) -> Estimator:
    """Instantiate the estimator a config's method entry names."""
    return method_class(spec.method)(label=spec.label, **dict(spec.options))


#: Scale and origin of a method whose class cannot be loaded (docs/estimands.md).
FALLBACK_ESTIMAND = ("x", "x_zero")


def method_estimands(specs: Any) -> dict[str, tuple[str, str]]:
    """Method label -> (scale, origin) of its estimand, for config method specs; a method
    whose class cannot be loaded (an absent plug-in) gets :data:`FALLBACK_ESTIMAND`."""
    out = {}
    for spec in specs:
        try:
            cls = method_class(spec.method)
        except ConfigError:
            out[spec.label] = FALLBACK_ESTIMAND
            continue
        out[spec.label] = (getattr(cls, "scale", FALLBACK_ESTIMAND[0]),
                           getattr(cls, "origin", FALLBACK_ESTIMAND[1]))
    return out
