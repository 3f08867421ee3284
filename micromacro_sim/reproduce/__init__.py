"""Reproductions of published studies, side by side with their published numbers.

The folder is the registry: every module here whose name does not start with ``_``
and that defines ``NAME``, ``DESCRIPTION``, ``CONFIG`` and ``reproduce`` is a study.
Adding a study is one new file. Published values are read from
``micromacro_sim/data/published/<study>.csv``, never written in code.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pandas as pd

from micromacro_sim.reporting.terminal import render_table, terminal_width, wrap_text
from micromacro_sim.run.atomic import write_atomic, write_text

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
    formats : dict of str -> dict
        Per table, column -> format spec (overriding the terminal's default by column).
    figures : dict of str -> callable
        Figure name -> a function drawing it as PNG into the path it is given (the
        published values beside this run's); see :meth:`write_figures`.
    """

    study: str
    description: str
    run_dir: Path
    replications: int
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    partial: bool = False
    captions: dict[str, str] = field(default_factory=dict)
    figures: dict[str, Callable[[Path], Path]] = field(default_factory=dict)
    formats: dict[str, dict[str, str]] = field(default_factory=dict)

    def format(self, *, width: int | None = None) -> str:
        """Every table and note as text no wider than ``width`` (default: the window).

        Wide tables are split into blocks that repeat the columns naming a row
        (:func:`~micromacro_sim.reporting.terminal.render_table`); captions and notes wrap.
        """
        width = width or terminal_width()
        lines = [wrap_text(f"{self.study}: {self.description}", width, "  "),
                 wrap_text(f"run folder {self.run_dir}, {self.replications} replications "
                           "per scenario", width, "  ")]
        if self.partial:
            lines.append(wrap_text("PARTIAL RUN: some replications are not finished; "
                                   "figures cover those done.", width))
        for name, frame in self.tables.items():
            lines += ["", f"== {name} =="]
            if name in self.captions:
                lines.append(wrap_text(self.captions[name], width))
            lines.append(render_table(frame, width=width, keep=id_columns(frame),
                                      formats=self.formats.get(name)))
        if self.notes:
            lines += ["", "Notes:"]
            lines += [wrap_text(f"- {n}", width, "  ") for n in self.notes]
        return "\n".join(lines)

    def write_figures(self, folder: str | Path) -> list[Path]:
        """Draw every figure as ``<folder>/<name>.png``; returns the paths.

        Raises
        ------
        MicroMacroError
            matplotlib is not installed.
        """
        out = Path(folder)
        return [draw(out / f"{name}.png") for name, draw in self.figures.items()]

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


#: Columns that name a row of a reproduction's table (design factors and labels): the
#: leading ones are repeated in every block of a table split to fit the window.
ID_COLUMNS = frozenset({
    "cell", "method", "term", "statistic", "stat", "source", "test", "se", "measure",
    "n_groups", "group_size", "icc", "r_zxi", "reliability", "sigma2_nu", "beta_z",
    "beta_xi", "published_label", "claim",
})


#: Formats of a percent-bias comparison: published to the digits printed, the rest to
#: two decimals (hundredths of a percentage point).
PCT_FORMATS = {c: ".2f" for c in ("mcse_pub", "this_run", "mcse", "diff", "se_diff",
                                  "limit_pct", "median_pct", "margin")}


def id_columns(frame: pd.DataFrame) -> list[str]:
    """The leading columns of ``frame`` that name its rows (see :data:`ID_COLUMNS`)."""
    out = []
    for col in frame.columns:
        if col not in ID_COLUMNS:
            break
        out.append(col)
    return out


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
    from micromacro_sim.core.errors import ConfigError

    found = studies()
    if name not in found:
        raise ConfigError(f"study: unknown study {name!r} (known: {', '.join(found)})")
    return found[name]
