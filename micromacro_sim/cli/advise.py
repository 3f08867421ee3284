"""``micromacro advise DATA --group G --x X --z Z --y Y``: a method for a dataset.

Fits the population model (``sem_2level``), simulates the design it implies with a band
over what the data estimate poorly, ranks the methods and ends with the recommended
method's fit (:func:`micromacro_sim.api.advise.advise`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "cmd_advise"]


def _default_output(data: str) -> str:
    return str(Path("results") / f"advise-{Path(data).stem}")


def cmd_advise(args: argparse.Namespace) -> int:
    """Run the advice; print the compact report; returns the exit status."""
    from micromacro_sim.api.advise import advise

    output = args.output if args.output is not None else _default_output(args.data)
    res = advise(args.data, group=args.group, x=args.x, z=args.z, y=args.y,
                 member=args.member, methods=args.methods, replications=args.replications,
                 seed=args.seed, output=output, n_jobs=args.n_jobs, overwrite=args.overwrite,
                 progress=not args.quiet,
                 log=None if args.quiet else (lambda text: print(text, file=sys.stderr)))
    print(res.text, end="")
    print(f"\nwrote {Path(output) / 'advice.md'}, design.yaml, ranking.csv and the run "
          f"folder run/ in {output}")
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``advise`` command to an ``argparse`` subparsers object."""
    from micromacro_sim.api.advise import DEFAULT_REPLICATIONS, DEFAULT_SEED

    p = subparsers.add_parser(
        "advise", help="recommend a method for a dataset: fit its population model, "
        "simulate that design, rank the methods, fit the recommended one")
    p.add_argument("data", help="CSV (or Parquet) file, one row per member")
    p.add_argument("--group", required=True, help="group identifier column")
    p.add_argument("--x", required=True, help="member-level column (one)")
    p.add_argument("--z", required=True, help="group-level covariate column(s), comma-separated")
    p.add_argument("--y", required=True, help="group-level outcome column")
    p.add_argument("--member", help="member identifier column (needed by the methods that treat "
                   "members as indicators; integer ids also reveal absent members)")
    p.add_argument("--methods", help="methods to compare, comma-separated (default: every "
                   "method for real data but the MCMC ones; true runs as a reference)")
    p.add_argument("--replications", type=int, default=DEFAULT_REPLICATIONS,
                   help=f"replications per cell (default {DEFAULT_REPLICATIONS})")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED,
                   help=f"root seed of the design (default {DEFAULT_SEED})")
    p.add_argument("--output", help="folder for advice.md, design.yaml, ranking.csv and the "
                   "run folder (default results/advise-<data name>)")
    p.add_argument("--n-jobs", type=int, default=1, help="parallel workers (default 1)")
    p.add_argument("--overwrite", action="store_true", help="discard a run of other methods "
                   "in the output's run folder")
    p.add_argument("--quiet", action="store_true", help="no estimate or progress on stderr")
    p.set_defaults(func=cmd_advise)
    return p
