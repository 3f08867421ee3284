"""Reading a config file safely: UTF-8, bounded size, bounded alias expansion, no key
given twice, numbers without YAML 1.1 surprises. Errors are one-line
:class:`~micromacro_sim.core.errors.ConfigError` s.

Plain (unquoted) numbers: decimal integers (``12``, ``-3``, ``1_000``) are integers; a
number with a decimal point or an exponent (``0.5``, ``1e6``, ``1e-3``, ``1E6``, ``+1e3``,
``.5e2``) and ``.inf``, ``.nan`` are floats. The forms only YAML 1.1 reads as numbers,
base 60 (``1:5`` is 65, ``1:30:00``), a leading zero (``012`` is octal 10), ``0x1F``,
``0o17`` and ``0b101``, are refused naming the key and the value. Booleans are YAML 1.1's
(``yes``/``no``/``on``/``off``/``true``/``false``); quoted text is never a number.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any

import yaml

from micromacro_sim.core.errors import ConfigError
from micromacro_sim.design import limits

__all__ = ["YAMLSyntaxError", "parse_yaml_text", "read_yaml"]


class YAMLSyntaxError(ConfigError):
    """Text that is not YAML (the message names the source, line and column)."""


_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
#: Tag of the plain scalars that only YAML 1.1 reads as numbers (refused).
_YAML11 = "tag:micromacro-sim,2024:yaml11-number"
_DIGITS = "+-0123456789"
_RESOLVERS: tuple[tuple[str, re.Pattern[str], str], ...] = (
    (_YAML11, re.compile(r"""^[-+]?(?:[1-9][0-9_]*(?::[0-5]?[0-9])+
                          |[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
                          |0[0-9_]+|0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+)$""", re.X),
     _DIGITS),
    (_INT, re.compile(r"^[-+]?(?:0|[1-9][0-9_]*)$"), _DIGITS),
    (_FLOAT, re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?
                         |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
                         |[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""", re.X),
     _DIGITS + "."),
)


class _Loader(yaml.SafeLoader):
    """Safe YAML that refuses a key given twice in one mapping; numbers as the module
    docstring says (the resolvers of :data:`_RESOLVERS` replace YAML 1.1's int and float)."""

    yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in pairs if tag not in (_INT, _FLOAT)]
        for first, pairs in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            with contextlib.suppress(TypeError):
                if key in seen:
                    raise ConfigError(
                        f"{key}: key given twice (line {key_node.start_mark.line + 1})"
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


for _tag, _regexp, _first in _RESOLVERS:
    _Loader.add_implicit_resolver(_tag, _regexp, list(_first))


def _yaml11_problem(text: str) -> str:
    """Why a plain scalar of tag :data:`_YAML11` is refused, and what to write instead."""
    sign = "-" if text.startswith("-") else ""
    body = text.lstrip("+-").replace("_", "")
    if ":" in body:
        value = 0.0
        for part in body.split(":"):
            value = value * 60 + float(part or 0)
        n = f"{sign}{value:.15g}"
        return f"is a base-60 number in YAML 1.1 ({n}); write {n} if that is meant"
    base = {"x": (16, "a hexadecimal"), "o": (8, "an octal"), "b": (2, "a binary")}.get(
        body[1:2].lower())
    if base is not None:
        n = f"{sign}{int(body[2:] or '0', base[0])}"
        return f"is {base[1]} number ({n}); write {n}"
    n = f"{sign}{int(body)}"
    if set(body) <= set("01234567"):
        return f"has a leading zero (YAML 1.1 reads it as octal {sign}{int(body, 8)}); write {n}"
    return f"has a leading zero; write {n}"


def _check_numbers(node: yaml.Node, path: str, seen: set[int]) -> None:
    """Refuse the first scalar only YAML 1.1 reads as a number, naming its key path."""
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.ScalarNode) and node.tag == _YAML11:
        raise ConfigError(f"{path or 'config'}: {node.value} {_yaml11_problem(node.value)}, "
                          f"or quote it as text (line {node.start_mark.line + 1})")
    if isinstance(node, yaml.SequenceNode):
        for i, child in enumerate(node.value):
            _check_numbers(child, f"{path}[{i}]", seen)
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else "?"
            inner = f"{path}.{name}" if path else str(name)
            _check_numbers(key, inner, seen)
            _check_numbers(value, inner, seen)


def _expanded_size(node: yaml.Node, limit: int) -> int:
    """Nodes of the document once every alias is expanded (stops past ``limit``)."""
    memo: dict[int, int] = {}
    active: set[int] = set()

    def size(n: yaml.Node) -> int:
        if id(n) in memo:
            return memo[id(n)]
        if id(n) in active:
            raise ConfigError("config: an alias refers to itself (recursive YAML)")
        active.add(id(n))
        total = 1
        if isinstance(n, yaml.SequenceNode):
            for child in n.value:
                total += size(child)
                if total > limit:
                    break
        elif isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                total += size(k) + size(v)
                if total > limit:
                    break
        active.discard(id(n))
        memo[id(n)] = total
        return total

    return size(node)


def read_yaml(path: str | Path) -> Any:
    """Parse a config file: UTF-8, at most MAX_YAML_BYTES, aliases bounded, no key twice."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            data = fh.read(limits.MAX_YAML_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"config: cannot read {str(path)!r} ({exc.strerror})") from None
    if len(data) > limits.MAX_YAML_BYTES:
        raise ConfigError(f"config: {str(path)!r} is larger than {limits.MAX_YAML_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config: {str(path)!r} is not UTF-8 text (byte "
                          f"0x{data[exc.start]:02x} at offset {exc.start})") from None
    return parse_yaml_text(text, str(path))


def parse_yaml_text(text: str, source: str, field: str = "config") -> Any:
    """Parse YAML text by the config rules (YAML 1.1-only number forms refused, aliases
    bounded, no key twice); ``source`` names it in messages, ``field`` starts them."""
    try:
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            if _expanded_size(node, limits.MAX_YAML_NODES) > limits.MAX_YAML_NODES:
                raise ConfigError(f"{field}: {source!r} expands to more than "
                                  f"{limits.MAX_YAML_NODES} YAML nodes (aliases)")
            _check_numbers(node, "" if field == "config" else field, set())
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise YAMLSyntaxError(f"{field}: YAML syntax error in {source!r}{where}: {problem}"
                              ) from None
    except RecursionError:
        raise ConfigError(f"{field}: {source!r} is nested too deeply") from None
