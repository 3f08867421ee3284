"""User plug-ins: estimators and generators that live outside the package.

A plug-in is named in a config in one of two ways:

- ``module:Name`` (a dotted module path, a colon, an attribute path): the module is
  imported (it must be importable: on ``PYTHONPATH`` or installed) and ``Name`` looked up;
- the name of an entry point of an installed distribution, in the group
  :data:`ESTIMATOR_GROUP` (``micromacro_sim.estimators``) or :data:`GENERATOR_GROUP`
  (``micromacro_sim.generators``).

An estimator plug-in is a subclass of :class:`~micromacro_sim.estimators.base.Estimator`
(or ``TwoStepEstimator``); a generator plug-in is a callable
``generator(scenario, rng) -> Dataset``, called like :func:`micromacro_sim.generate.dgp.generate`.

Every plug-in has an :func:`identity` (its reference, its ``version`` attribute if any,
its distribution's version and the SHA-256 of the file that defines it), which enters a
run's result identity: a changed plug-in does not mix into the run folder of the old one.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
from collections.abc import Callable
from functools import cache
from importlib import metadata
from typing import Any

from micromacro_sim.core.errors import ConfigError, describe_exception

__all__ = [
    "ESTIMATOR_GROUP",
    "GENERATOR_GROUP",
    "entry_points",
    "identity",
    "import_reference",
    "is_reference",
    "load_estimator",
    "load_generator",
    "qualified_name",
]

ESTIMATOR_GROUP = "micromacro_sim.estimators"
GENERATOR_GROUP = "micromacro_sim.generators"


def is_reference(text: Any) -> bool:
    """Whether ``text`` has the form ``module:Name``."""
    if not isinstance(text, str) or text.count(":") != 1:
        return False
    mod, attr = text.split(":")
    return bool(mod) and bool(attr) and all(
        part.isidentifier() for part in (*mod.split("."), *attr.split(".")))


def import_reference(ref: str, field: str) -> Any:
    """The object named by ``module:Name``.

    Raises
    ------
    ConfigError
        One line naming ``field`` and ``ref`` when the module does not import (for any
        reason: the user's module may raise anything) or has no such attribute.
    """
    if not is_reference(ref):
        raise ConfigError(f"{field}: expected module:Name, got {ref!r}")
    mod_name, attr = ref.split(":")
    try:
        obj: Any = importlib.import_module(mod_name)
    except (Exception, SystemExit) as exc:  # a user's module may raise anything, or exit
        raise ConfigError(f"{field}: cannot import {mod_name!r} for {ref!r} "
                          f"({describe_exception(exc)})") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"{field}: module {mod_name!r} has no {attr!r} "
                              f"(from {ref!r})") from None
    return obj


@cache
def entry_points(group: str) -> dict[str, metadata.EntryPoint]:
    """Entry-point name -> entry point, of ``group``, over the installed distributions."""
    return {ep.name: ep for ep in metadata.entry_points(group=group)}


def _load_entry_point(group: str, name: str, field: str) -> Any:
    ep = entry_points(group)[name]
    try:
        return ep.load()
    except (Exception, SystemExit) as exc:  # a plug-in may raise anything on import, or exit
        raise ConfigError(f"{field}: cannot load entry point {name!r} ({ep.value}) of group "
                          f"{group} ({describe_exception(exc)})") from None


def _check_estimator(obj: Any, field: str, ref: str) -> type:
    from micromacro_sim.estimators.base import Estimator

    if not (isinstance(obj, type) and issubclass(obj, Estimator)):
        raise ConfigError(f"{field}: {ref!r} is not a subclass of "
                          "micromacro_sim.estimators.base.Estimator")
    missing = obj.missing_methods()
    if missing:
        raise ConfigError(f"{field}: {ref!r} is not a complete Estimator: it must define "
                          f"{' and '.join(m + '()' for m in missing)}")
    return obj


def load_estimator(ref: str, field: str = "methods") -> type:
    """The estimator class named by ``module:Name`` or by an entry point.

    Raises
    ------
    ConfigError
        Naming ``field`` and ``ref``: it fails to import or is not an Estimator.
    """
    if is_reference(ref):
        return _check_estimator(import_reference(ref, field), field, ref)
    if ref in entry_points(ESTIMATOR_GROUP):
        return _check_estimator(_load_entry_point(ESTIMATOR_GROUP, ref, field), field, ref)
    raise ConfigError(f"{field}: unknown method {ref!r}")


def load_generator(ref: str, field: str = "generator") -> Callable[..., Any]:
    """The generator named by ``module:Name`` or by an entry point of
    :data:`GENERATOR_GROUP`.

    Raises
    ------
    ConfigError
        Naming ``field`` and ``ref``.
    """
    if is_reference(ref):
        obj = import_reference(ref, field)
    elif isinstance(ref, str) and ref in entry_points(GENERATOR_GROUP):
        obj = _load_entry_point(GENERATOR_GROUP, ref, field)
    else:
        known = ", ".join(sorted(entry_points(GENERATOR_GROUP))) or "none installed"
        raise ConfigError(f"{field}: expected module:Name or an installed generator "
                          f"(known: {known}), got {ref!r}")
    if not callable(obj):
        raise ConfigError(f"{field}: {ref!r} is not callable as generator(scenario, rng)")
    return obj


def _source_hash(obj: Any) -> str:
    try:
        path = inspect.getsourcefile(obj) or inspect.getfile(obj)
        with open(path, "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()
    except (TypeError, OSError):
        return "unknown"


@cache
def _distributions() -> dict[str, list[str]]:
    return metadata.packages_distributions()


def _distribution_version(obj: Any) -> str | None:
    top = (getattr(obj, "__module__", "") or "").split(".")[0]
    for dist in _distributions().get(top, []):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def qualified_name(obj: Any) -> str:
    """``module:qualified.name`` of a plug-in object (its repr when it has none)."""
    module, name = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    return f"{module}:{name}" if module and name else repr(obj)


def identity(ref: str, obj: Any) -> dict[str, Any]:
    """What identifies a plug-in's numbers: its reference, where it lives, its declared
    ``version``, its distribution's version and the SHA-256 of its source file.

    Editing the file (or bumping ``version``) changes the identity, so a run folder of
    the old plug-in refuses to take results of the new one. Code the plug-in imports
    from other files is covered by its ``version`` attribute only.
    """
    return {
        "ref": ref,
        "object": f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', '?')}",
        "version": str(getattr(obj, "version", "")) or None,
        "distribution": _distribution_version(obj),
        "source_sha256": _source_hash(obj),
    }
