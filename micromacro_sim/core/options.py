"""Typed method options: every method declares its options with a type and a range.

A value of the wrong type is refused, never coerced: ``reml: "false"`` is an error,
not REML. The message names the option and the value; the config layer prefixes the
method's label (``methods.blup_ml: option reml: expected true or false, got 'false'``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Option", "validate_options"]

_KINDS = ("bool", "str", "int", "float")


@dataclass(frozen=True)
class Option:
    """One option of a method.

    Parameters
    ----------
    default : Any
        Value used when the option is not given.
    kind : {"bool", "str", "int", "float"}
    doc : str
        One line for ``micromacro methods`` and the docs.
    choices : tuple, optional
        Allowed values (strings).
    low, high : float, optional
        Inclusive bounds of a number.
    """

    default: Any
    kind: str
    doc: str = ""
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"Option.kind must be one of {_KINDS}, got {self.kind!r}")
        self.check("default", self.default)

    def check(self, name: str, value: Any) -> Any:
        """Return ``value`` when valid; raise ``ValueError`` naming ``name`` otherwise."""
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"option {name}: expected true or false, got {value!r}")
            return value
        if self.kind == "str":
            if not isinstance(value, str):
                raise ValueError(f"option {name}: expected a string, got {value!r}")
        elif self.kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"option {name}: expected an integer, got {value!r}")
        else:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"option {name}: expected a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"option {name}: expected a finite number, got {value!r}")
        if self.choices is not None and value not in self.choices:
            known = ", ".join(repr(c) for c in self.choices)
            raise ValueError(f"option {name}: expected one of {known}, got {value!r}")
        if self.low is not None and value < self.low:
            raise ValueError(f"option {name}: must be >= {self.low}, got {value!r}")
        if self.high is not None and value > self.high:
            raise ValueError(f"option {name}: must be <= {self.high}, got {value!r}")
        return value

    def describe(self) -> str:
        """Short form for listings: ``reml (bool, default True)``."""
        extra = f", one of {list(self.choices)}" if self.choices else ""
        return f"{self.kind}, default {self.default!r}{extra}"


def validate_options(method: str, declared: Mapping[str, Option],
                     given: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults overlaid with the validated ``given`` options.

    Raises
    ------
    ValueError
        An unknown option, or a value of the wrong type or out of range.
    """
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise ValueError(f"option {unknown[0]}: unknown option of method {method!r} "
                         f"(known: {', '.join(declared) or 'none'})")
    out = {k: opt.default for k, opt in declared.items()}
    for k, v in given.items():
        out[k] = declared[k].check(k, v)
    return out
