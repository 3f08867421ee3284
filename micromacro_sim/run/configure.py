"""A config made ready to run: parsed in the design layer, then checked against what is here.

:func:`micromacro_sim.design.config.parse_config` checks a config's syntax and values
(the grid, seeds, replications, the admissibility policy) without knowing any method.
:func:`resolve` adds what needs the method registry and the execution backends: every
method exists and accepts its options, a user's generator loads, the backend's package
is installed, ``engine: fast`` has a batch path for every cell, and the identities of
plug-ins enter the result hash. :func:`load_config` and :func:`parse_config` do both;
they are what the command line, the Python API and the planners call.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from micromacro_sim.core.errors import ConfigError
from micromacro_sim.design import config as design_config
from micromacro_sim.design.config import MethodSpec, RunConfig
from micromacro_sim.design.yamlio import read_yaml
from micromacro_sim.estimators import is_plugin, method_class
from micromacro_sim.estimators.plugins import identity, load_generator
from micromacro_sim.run.backends import require_backend

__all__ = ["check_methods", "load_config", "parse_config", "parse_methods", "resolve"]


def check_methods(methods: tuple[MethodSpec, ...]) -> None:
    """Every method is registered (or loads as a plug-in) and accepts its options.

    Raises
    ------
    ConfigError
        ``methods.<label>: ...`` naming the method or the option.
    """
    for spec in methods:
        cls = method_class(spec.method)
        try:
            cls(label=spec.label, **dict(spec.options))
        except Exception as exc:  # noqa: BLE001 - a plug-in's constructor may raise anything
            raise ConfigError(f"methods.{spec.label}: {exc}") from None


def parse_methods(value: Any) -> tuple[MethodSpec, ...]:
    """A config's ``methods:`` list parsed and checked against the registry.

    Raises
    ------
    ConfigError
        ``methods...`` naming the label, the method or the option.
    """
    specs = design_config.parse_methods(value)
    check_methods(specs)
    return specs


def _check_fast(config: RunConfig) -> None:
    for spec in config.methods:
        cls = method_class(spec.method)
        for sc in config.scenarios:
            if not cls.has_batch(sc.group_size.balanced):
                raise ConfigError(
                    f"engine: method {spec.method!r} has no fast implementation for "
                    f"group_size {sc.group_size.label()} (use engine: auto)"
                )


def plugin_identities(config: RunConfig) -> dict[str, Any]:
    """Plug-in reference -> :func:`~micromacro_sim.estimators.plugins.identity`, for the
    config's methods and generator from outside the package."""
    out: dict[str, Any] = {}
    for m in config.methods:
        cls = method_class(m.method)
        if is_plugin(cls):
            out[m.method] = identity(m.method, cls)
    if config.generator is not None:
        out[f"generator={config.generator}"] = identity(config.generator,
                                                        load_generator(config.generator))
    return out


def resolve(config: RunConfig) -> RunConfig:
    """``config`` checked against the registry and the backends, with its plug-in
    identities filled in (see the module docstring).

    Raises
    ------
    ConfigError
        A one-line message naming the field and the value.
    """
    require_backend(config.backend)
    check_methods(config.methods)
    if config.generator is not None:
        load_generator(config.generator)
    if config.engine == "fast":
        _check_fast(config)
    return dataclasses.replace(config, plugins=plugin_identities(config))


def parse_config(raw: Any, *, source: str = "config", force: bool = False) -> RunConfig:
    """Validate a config mapping (``force`` lifts the limit on the number of grid cells).

    Raises
    ------
    ConfigError
        A one-line message naming the field and the value.
    """
    return resolve(design_config.parse_config(raw, source=source, force=force))


def load_config(path: str | Path, *, force: bool = False, **overrides: Any) -> RunConfig:
    """Read and validate a YAML config; ``overrides`` replace top-level keys.

    ``force`` lifts the size limits of :mod:`~micromacro_sim.design.limits` on the grid.
    """
    raw = read_yaml(path)
    if isinstance(raw, dict):
        raw = {**raw, **{k: v for k, v in overrides.items() if v is not None}}
    return parse_config(raw, source=str(path), force=force)
