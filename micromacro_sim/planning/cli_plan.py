"""``micromacro plan CONFIG --pilot N --target-mcse bias=0.005,cover=0.005``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from micromacro_sim.core.results import SE_TYPES

__all__ = ["add_parser", "cmd_plan"]


def cmd_plan(args: argparse.Namespace) -> int:
    """Run the pilot, print the plan, write ``--output``; returns the exit status."""
    from micromacro_sim.planning.plan import parse_targets, plan
    from micromacro_sim.run.configure import load_config
    from micromacro_sim.run.paths import check_not_input, check_output_file

    parse_targets(args.target_mcse, se_type=args.se_type)  # bad input before any work
    if args.output is not None:
        check_output_file(args.output)
        check_not_input([args.output], [args.config])
    cfg = load_config(args.config, n_jobs=args.n_jobs, engine=args.engine)
    terms = [t.strip() for t in args.term.split(",") if t.strip()] if args.term else None
    res = plan(cfg, pilot=args.pilot, target_mcse=args.target_mcse, alpha=args.alpha,
               level=args.level, worst_case=args.worst_case, se_type=args.se_type,
               terms=terms)
    print(res.format())
    if args.output is not None:
        out = Path(args.output)
        tmp = out.with_name(f".{out.name}.tmp")
        res.table.to_csv(tmp, index=False)
        tmp.replace(out)
        print(f"wrote {len(res.table)} rows to {out}")
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``plan`` command to an ``argparse`` subparsers object."""
    p = subparsers.add_parser(
        "plan", help="replications per cell for target Monte Carlo SEs, from a pilot run")
    p.add_argument("config", help="YAML config file")
    p.add_argument("--pilot", type=int, default=200,
                   help="pilot replications per cell (default 200)")
    p.add_argument("--target-mcse", default="bias=0.005,cover=0.005",
                   help="measure=MCSE pairs, comma-separated: bias, empse, mse, modelse, "
                        "cover, reject|power (bare: each method's default SE type; "
                        "cover_HC3 etc. for one type); "
                        "default bias=0.005,cover=0.005")
    p.add_argument("--worst-case", action="store_true",
                   help="plan rates at p = .5 (0.25 / MCSE^2) whatever the pilot shows")
    p.add_argument("--alpha", type=float, default=0.05, help="nominal level (default .05)")
    p.add_argument("--level", type=float, default=0.95,
                   help="confidence level of the intervals (default .95)")
    p.add_argument("--se-type", default=None,
                   choices=["default", *SE_TYPES],
                   help="SE type of a bare modelse, cover and reject (default: each "
                        "method's own: the model SE of one-step methods, HC3 for two-step "
                        "methods, HC2 for croon)")
    p.add_argument("--term", help="plan for these terms only, comma-separated (default all)")
    p.add_argument("--n-jobs", type=int, help="parallel workers (overrides the config)")
    p.add_argument("--engine", help="auto (default), fast or reference")
    p.add_argument("--output", help="write the plan table to this CSV")
    p.set_defaults(func=cmd_plan)
    return p
