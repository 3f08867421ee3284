"""Reading a config file safely: UTF-8, bounded size, bounded alias expansion, no key
given twice. Errors are one-line :class:`~micromacro_sim.core.errors.ConfigError` s."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import yaml

from micromacro_sim.core.errors import ConfigError
from micromacro_sim.design import limits

__all__ = ["read_yaml"]


class _Loader(yaml.SafeLoader):
    """Safe YAML that refuses a key given twice in one mapping."""

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
    try:
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            if _expanded_size(node, limits.MAX_YAML_NODES) > limits.MAX_YAML_NODES:
                raise ConfigError(f"config: {str(path)!r} expands to more than "
                                  f"{limits.MAX_YAML_NODES} YAML nodes (aliases)")
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"config: YAML syntax error in {str(path)!r}{where}: {problem}") from None
    except RecursionError:
        raise ConfigError(f"config: {str(path)!r} is nested too deeply") from None
