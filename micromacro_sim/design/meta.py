"""The ``meta:`` block of a config: a study protocol's free text (``micromacro protocol``).

``meta`` is stored on the config and in the manifest only: it enters neither a scenario key
nor the result identity, so editing it changes no number and no hash.
"""

from __future__ import annotations

from typing import Any

from micromacro_sim.core.errors import ConfigError, did_you_mean

__all__ = ["META_KEYS", "parse_meta"]

#: Keys of the optional ``meta:`` block (each a text or a list of texts): the answers of a
#: study protocol that a design cannot give (``micromacro protocol``, docs/protocol.md).
#: ``meta`` is stored on the config and in the manifest only: it enters neither a scenario
#: key nor :meth:`RunConfig.result_identity`, so editing it changes no number and no hash.
META_KEYS: dict[str, str] = {
    "title": "title of the project",
    "authors": "current and future contributors",
    "description": "description of the project (default: the config's description)",
    "previous_studies": "related simulation studies the contributors already ran",
    "aims": "aim of the simulation study",
    "dgm_rationale": "why these data-generating parameters and factor levels",
    "estimand_priority": "primary and secondary estimands or targets",
    "method_rationale": "why these methods and options",
    "replications_rationale": "why this number of replications (without a plan)",
    "failure_rule": "when a condition is left out for failed fits",
    "interpretation": "how the performance measures will be interpreted and analysed",
    "software": "software to analyse and present the results",
    "environment": "computational environment (operating system, machines)",
    "reproducibility": "other steps towards reproducibility (shared code and results)",
    "registration": "where and when the protocol is registered",
    "notes": "anything else",
}


def parse_meta(value: Any) -> dict[str, str]:
    """The ``meta:`` block: each key one of :data:`META_KEYS`, each value a non-empty
    text or a list of them (joined by "; ")."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"meta: expected a mapping of texts (keys: {', '.join(META_KEYS)}), "
                          f"got {value!r}")
    out: dict[str, str] = {}
    for key, text in value.items():
        if key not in META_KEYS:
            raise ConfigError(f"meta.{key}: unknown key (known: {', '.join(META_KEYS)})"
                              + did_you_mean(str(key), META_KEYS))
        items = text if isinstance(text, list) else [text]
        if not items or not all(isinstance(t, str) and t.strip() for t in items):
            raise ConfigError(f"meta.{key}: expected a text or a list of texts, got {text!r}")
        out[key] = "; ".join(t.strip() for t in items)
    return out
