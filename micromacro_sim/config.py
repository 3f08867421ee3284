"""``micromacro_sim.config``, kept for imports written against it: it re-exports
:mod:`micromacro_sim.design.config` and :mod:`micromacro_sim.run.configure`
(docs/architecture.md lists these paths)."""

from micromacro_sim.design.config import (  # noqa: F401
    ENGINES,
    MethodSpec,
    RunConfig,
)
from micromacro_sim.run.configure import (  # noqa: F401
    check_methods,
    load_config,
    parse_config,
    resolve,
)

__all__ = [
    "ENGINES",
    "MethodSpec",
    "RunConfig",
    "check_methods",
    "load_config",
    "parse_config",
    "resolve",
]
