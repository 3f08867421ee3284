"""Reproductions of published studies, side by side with their published numbers.

The folder is the registry: every module here whose name does not start with ``_``
and that defines ``NAME``, ``DESCRIPTION``, ``CONFIG`` and ``reproduce`` is a study.
Adding a study is one new file. Published values are read from
``micromacro_sim/data/published/<study>.csv``, never written in code.
"""

from __future__ import annotations

import importlib
import pkgutil
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pandas as pd

from ..atomic import write_atomic, write_text

__all__ = ["Reproduction", "get_study", "studies"]

_SKIP = {"cli"}


@dataclass
class Reproduction:
    """The tables and notes of one reproduction.

    Attributes
    ----------
    study : str
    description : str
    run_dir : Path
        The simulation run folder the tables were computed from.
    replications : int
        Replications per scenario of the run.
    tables : dict of str -> DataFrame
        Named tables, in display order.
    notes : list of str
        What the reader needs to interpret the tables (definitions, caveats).
    captions : dict of str -> str
        One short line printed under a table's title (e.g. its margin); also the first
        lines of ``notes.txt``.
    partial : bool
        The run is not finished.
    """

    study: str
    description: str
    run_dir: Path
    replications: int
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    partial: bool = False
    captions: dict[str, str] = field(default_factory=dict)

    def format(self, *, width: int = 200) -> str:
        """Every table and note as text."""
        lines = [f"{self.study}: {self.description}",
                 f"run folder {self.run_dir}, {self.replications} replications per scenario"]
        if self.partial:
            lines.append("PARTIAL RUN: some replications are not finished; "
                         "figures cover those done.")
        with pd.option_context("display.width", width, "display.max_columns", None,
                               "display.max_colwidth", 80):
            for name, frame in self.tables.items():
                lines += ["", f"== {name} =="]
                if name in self.captions:
                    lines += textwrap.wrap(self.captions[name], 100)
                lines.append(frame.to_string(index=False, float_format=_fmt, na_rep=""))
        if self.notes:
            lines += ["", "Notes:"]
            lines += [f"- {n}" for n in self.notes]
        return "\n".join(lines)

    def write(self, folder: str | Path) -> list[Path]:
        """Write every table as ``<name>.csv`` and the notes as ``notes.txt`` into ``folder``."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, frame in self.tables.items():
            path = out / f"{name}.csv"
            write_atomic(path, lambda tmp, f=frame: f.to_csv(tmp, index=False))
            paths.append(path)
        notes = out / "notes.txt"
        caps = [f"{name}: {text}" for name, text in self.captions.items()]
        write_text(notes, "\n".join([*caps, *self.notes]) + "\n")
        paths.append(notes)
        return paths


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def study_names() -> list[str]:
    """Names of the studies without importing them (module name = study name)."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__)
                  if not m.name.startswith("_") and m.name not in _SKIP)


def studies() -> dict[str, ModuleType]:
    """Study name -> module, discovered from this package's modules."""
    found: dict[str, ModuleType] = {}
    for mod in pkgutil.iter_modules(__path__):
        if mod.name.startswith("_") or mod.name in _SKIP:
            continue
        module = importlib.import_module(f"{__name__}.{mod.name}")
        if all(hasattr(module, a) for a in ("NAME", "DESCRIPTION", "CONFIG", "reproduce")):
            found[module.NAME] = module
    return dict(sorted(found.items()))


def get_study(name: str) -> ModuleType:
    """The module of one study.

    Raises
    ------
    ConfigError
        When no study has that name.
    """
    from ..errors import ConfigError

    found = studies()
    if name not in found:
        raise ConfigError(f"study: unknown study {name!r} (known: {', '.join(found)})")
    return found[name]
