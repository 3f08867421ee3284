"""The package layout: documented import paths work, shims stay shims, no private imports.

The layering itself is checked by ``lint-imports`` (contracts in pyproject.toml, run by
``make test``); these tests cover what its contracts do not say.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "micromacro_sim"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: Modules at the top of the package that are not shims.
TOP = {"__init__", "__main__"}
#: The import-only shims docs/architecture.md lists.
SHIMS = {"config", "dataset", "dgp", "options", "scenario", "seeding", "status", "storage"}


def _documented_paths() -> set[str]:
    """Every ``micromacro_sim.x.y`` that README.md and docs/ name, cut to its module."""
    found: set[str] = set()
    for doc in DOCS:
        text = doc.read_text()
        for m in re.finditer(r"\bmicromacro_sim(?:\.[A-Za-z_]\w*)+", text):
            found.add(m.group(0))
        for m in re.finditer(r"from (micromacro_sim(?:\.\w+)*) import", text):
            found.add(m.group(1))
    return found


def _importable_prefix(dotted: str) -> tuple[str, list[str]]:
    """The longest importable module of ``dotted`` and the attributes after it."""
    parts = dotted.split(".")
    for k in range(len(parts), 0, -1):
        name = ".".join(parts[:k])
        try:
            importlib.import_module(name)
        except ModuleNotFoundError:
            continue
        return name, parts[k:]
    raise AssertionError(f"{dotted}: no importable prefix")


@pytest.mark.parametrize("dotted", sorted(_documented_paths()))
def test_every_documented_path_imports(dotted: str) -> None:
    module, attrs = _importable_prefix(dotted)
    obj = importlib.import_module(module)
    for a in attrs:
        if a in ("generators",) and module == "micromacro_sim":
            return  # an entry-point group name, not a module
        assert hasattr(obj, a), f"{dotted}: {module} has no attribute {a!r}"
        obj = getattr(obj, a)


def test_the_documented_paths_include_the_shims() -> None:
    named = {p.split(".")[1] for p in _documented_paths() if p.count(".") >= 1}
    assert {"config", "dataset", "dgp", "options", "estimators", "planning"} <= named


def test_top_level_holds_at_most_eight_modules_besides_the_shims() -> None:
    top = {p.stem for p in PKG.glob("*.py")}
    assert top - SHIMS <= TOP | {"api", "cli"}
    assert len(top - SHIMS) <= 8


@pytest.mark.parametrize("name", sorted(SHIMS))
def test_shims_only_re_export(name: str) -> None:
    tree = ast.parse((PKG / f"{name}.py").read_text())
    sources: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            assert node.module and node.module.startswith("micromacro_sim.")
            sources.update({a.name: node.module for a in node.names})
            continue
        ok = (isinstance(node, ast.Expr)
              or (isinstance(node, ast.Assign)
                  and [t.id for t in node.targets if isinstance(t, ast.Name)] == ["__all__"]))
        assert ok, f"micromacro_sim.{name}: line {node.lineno} is not an import"
    module = importlib.import_module(f"micromacro_sim.{name}")
    assert sorted(module.__all__) == sorted(sources)
    for attr, origin in sources.items():
        assert getattr(module, attr) is getattr(importlib.import_module(origin), attr)


def _private_imports(source: str) -> list[tuple[int, str]]:
    """(line, name) of every private name imported from the package in ``source``."""
    bad = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if not (node.level > 0 or (node.module or "").startswith("micromacro_sim")):
                continue
            bad.extend((node.lineno, a.name) for a in node.names
                       if a.name.startswith("_") and not a.name.startswith("__"))
    return bad


def test_no_module_imports_a_private_name() -> None:
    bad = [f"{p.relative_to(ROOT)}:{line} imports {name}"
           for p in sorted(PKG.rglob("*.py")) for line, name in _private_imports(p.read_text())]
    assert not bad, "\n".join(bad)


def test_private_name_check_can_fail() -> None:
    src = ("from micromacro_sim.run.storage import _x, y\nfrom .a import __all__\n"
           "from numpy.linalg import _umath_linalg\nfrom .b import (\n    _z,\n)\n")
    assert _private_imports(src) == [(1, "_x"), (4, "_z")]


def _imports_of(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_run_is_a_short_sequence() -> None:
    from micromacro_sim.run import runner

    src = (PKG / "run" / "runner.py").read_text()
    tree = ast.parse(src)
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "run")
    body = fn.body[1:] if isinstance(fn.body[0], ast.Expr) else fn.body  # without docstring
    lines = body[-1].end_lineno - body[0].lineno + 1
    assert lines <= 40, f"run() body is {lines} lines"
    for p in (PKG / "run").glob("*.py"):
        if p.stem != "runner":
            assert "micromacro_sim.run.runner" not in _imports_of(p), p.name
    assert callable(runner.run)


def test_no_stage_imports_the_package_root() -> None:
    """Stages import their own modules, never ``micromacro_sim`` itself (its lazy names go
    through api and would join every stage in one circle)."""
    bad = []
    for p in sorted(PKG.rglob("*.py")):
        if p.parent == PKG:  # the root, __main__ and the shims
            continue
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "micromacro_sim":
                bad.append(f"{p.relative_to(ROOT)}:{node.lineno}")
            elif isinstance(node, ast.Import) and any(a.name == "micromacro_sim"
                                                      for a in node.names):
                bad.append(f"{p.relative_to(ROOT)}:{node.lineno}")
    assert not bad, bad
