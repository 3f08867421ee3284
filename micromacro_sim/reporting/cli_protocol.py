"""``micromacro protocol CONFIG [--plan PLAN.csv] [--format md|html] [--output FILE]``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_parser", "cmd_protocol"]


def cmd_protocol(args: argparse.Namespace) -> int:
    """Print the protocol, or write it to ``--output``; returns the exit status."""
    from micromacro_sim.reporting.protocol import protocol
    from micromacro_sim.run.atomic import write_text
    from micromacro_sim.run.paths import check_not_input, check_output_file

    inputs = [args.config] + ([args.plan] if args.plan else [])
    if args.output is not None:  # bad paths before any work
        check_output_file(args.output)
        check_not_input([args.output], inputs)
    text = protocol(args.config, plan=args.plan, fmt=args.format)
    if args.output is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return 0
    path = write_text(args.output, text)
    print(f"wrote {path}")
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``protocol`` command to an ``argparse`` subparsers object."""
    p = subparsers.add_parser(
        "protocol", help="ADEMP-PreReg study protocol answered from a config")
    p.add_argument("config", help="YAML config file")
    p.add_argument("--plan", help="plan CSV of micromacro plan --output: justifies the "
                   "replications")
    p.add_argument("--format", choices=["md", "html"], default="md",
                   help="md: Markdown (default); html: one self-contained page")
    p.add_argument("--output", help="file to write (default: standard output)")
    p.set_defaults(func=cmd_protocol)
    return p
