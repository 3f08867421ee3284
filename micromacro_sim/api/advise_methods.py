"""The methods ``advise`` compares: the defaults, those that fit the user's data properly,
and those applicable to the simulated design.

By default every method of the package for real data but the MCMC ones (``mcmc``: seconds
per replication; name them to compare them). A method is left out, with its reason, when its
fit to the user's data is not proper (flagged or not applicable: its estimate could not be
reported) or when it is not applicable to the design (on the fitted cell's first dataset).
The oracle ``true`` never competes; ``advise`` runs it beside the others as a reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from micromacro_sim.api.fitting import fit, method_specs
from micromacro_sim.core.errors import DataError
from micromacro_sim.core.status import Status
from micromacro_sim.design.config import MethodSpec

__all__ = ["default_methods", "mcmc_methods", "method_candidates", "probe_design",
           "screen_methods"]


def default_methods() -> list[str]:
    """Methods compared by default: the package's methods for real data without Markov
    chains (``mcmc``: seconds per replication); ``true`` is run beside them as a reference."""
    from micromacro_sim.estimators import is_plugin, registry

    return [name for name, cls in registry().items()
            if not (cls.needs_truth or cls.mcmc or is_plugin(cls))]


def mcmc_methods() -> list[str]:
    """The package's MCMC methods (left out by default)."""
    from micromacro_sim.estimators import is_plugin, registry

    return [n for n, c in registry().items() if c.mcmc and not is_plugin(c)]


def method_candidates(methods: str | Sequence[str] | None) -> list[MethodSpec]:
    """The methods to compare (``true`` dropped: it runs as the reference).

    Parameters
    ----------
    methods : str, list or None
        Comma-separated names, a list of names or config entries, or None for
        :func:`default_methods`.

    Raises
    ------
    DataError
        ``methods: ...`` for an unknown method or option, or only ``true``.
    """
    if methods is None:
        names: Any = default_methods()
    elif isinstance(methods, str):
        names = [m.strip() for m in methods.split(",") if m.strip()]
    else:
        names = list(methods)
    try:
        specs = [s for s in method_specs(names) if s.method != "true"]
    except DataError as exc:  # fit's field is ``method``; advise's option is ``methods``
        text = str(exc)
        raise DataError("methods" + text[len("method"):] if text.startswith("method:")
                        else text) from None
    if not specs:
        raise DataError("methods: name at least one method besides the oracle 'true'")
    return specs


def screen_methods(frame: pd.DataFrame, specs: list[MethodSpec], cols: dict[str, Any]
                   ) -> tuple[list[MethodSpec], dict[str, str]]:
    """The methods whose fit to the user's data is proper, and the others with the reason.

    ``cols`` are :func:`~micromacro_sim.api.fitting.fit`'s column arguments (group, x, y, z,
    member).
    """
    res = fit(frame, method=[s.to_config() for s in specs], cov_type="HC3", **cols)
    kept, excluded = [], {}
    for s in specs:
        r = res[s.label]
        if r.status is Status.OK:
            kept.append(s)
        else:
            excluded[s.label] = (f"its fit to these data is {r.status.value} "
                                 f"[{r.reason_code}]: {r.reason}")
    return kept, excluded


def probe_design(raw: dict[str, Any], specs: list[MethodSpec]) -> dict[str, str]:
    """Methods not applicable to the design (on the fitted cell's first dataset)."""
    from micromacro_sim.estimators import build
    from micromacro_sim.generate.dgp import generate
    from micromacro_sim.generate.seeding import replication_rng
    from micromacro_sim.run.configure import parse_config

    cfg = parse_config(raw)
    sc = cfg.scenarios[0]
    data = generate(sc, replication_rng(cfg.seed, sc, 0))
    out = {}
    for s in specs:
        r = build(s).fit(data)
        if r.status is Status.NOT_APPLICABLE:
            out[s.label] = f"not applicable to the design [{r.reason_code}]: {r.reason}"
    return out
