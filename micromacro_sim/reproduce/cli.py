"""``micromacro reproduce {study|list}``: run a published study and print it beside the
published numbers.

The tables are written as CSV into the output folder (default
``results/reproduce-<study>``), the figures (published values beside this run's) as PNG
into ``<output>/figures``, next to the simulation run folder ``<output>/run``;
``micromacro report <output>/run`` also draws the comparison tables it finds there.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "cmd_reproduce"]


def cmd_reproduce(args: argparse.Namespace) -> int:
    """Run one study (or list them); returns the exit status."""
    from micromacro_sim.reproduce import get_study, studies

    if args.study == "list":
        for name, module in studies().items():
            print(f"{name:10s} {module.DESCRIPTION}  (config {module.CONFIG})")
        return 0
    module = get_study(args.study)
    out = Path(args.output or Path("results") / f"reproduce-{args.study}")
    rep = module.reproduce(out / "run", replications=args.replications, n_jobs=args.n_jobs,
                           engine=args.engine, overwrite=args.overwrite)
    from micromacro_sim.core.errors import MicroMacroError
    from micromacro_sim.reporting.terminal import wrap_text

    print(rep.format())
    paths = rep.write(out)
    lines = [f"wrote {len(paths) - 1} table(s) as CSV and notes.txt to {out} "
             f"(simulation run in {out / 'run'})"]
    try:
        figs = rep.write_figures(out / "figures")
    except MicroMacroError as exc:  # matplotlib is optional
        lines.append(f"figures not drawn: {exc}")
    else:
        lines.append(f"wrote {len(figs)} figure(s) (published values beside this run's) to "
                     f"{out / 'figures'}: {', '.join(f.name for f in figs)}")
    lines.append(f"a report of the run with these comparisons: micromacro report {out / 'run'}")
    print("\n" + "\n".join(wrap_text(line, indent="  ") for line in lines))
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``reproduce`` command to an ``argparse`` subparsers object."""
    from micromacro_sim.reproduce import study_names

    p = subparsers.add_parser("reproduce",
                              help="reproduce a published study beside its published numbers")
    p.add_argument("study", choices=[*study_names(), "list"],
                   help="study to reproduce, or 'list' to print the studies")
    p.add_argument("--replications", type=int, help="replications per scenario (default: config)")
    p.add_argument("--n-jobs", type=int, help="parallel workers (default: config)")
    p.add_argument("--engine", help="auto (default), fast or reference")
    p.add_argument("--output",
                   help="folder for the tables and the run (default results/reproduce-<study>)")
    p.add_argument("--overwrite", action="store_true",
                   help="discard an existing run of a different config in the output folder")
    p.set_defaults(func=cmd_reproduce)
    return p
