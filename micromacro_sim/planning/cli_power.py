"""``micromacro power CONFIG --solve n_groups --target power=0.80 --method M[,M2] --term xi``.

Prints each method's power curve (pooled evaluations and the fitted local curve), the
confirmation run and the replications spent, then the answers; the last line reads
``n_groups = N [LO, HI]`` (one ``; ``-separated entry per method when several are given).
``--output FILE.csv`` writes every evaluation, and the figure goes to ``FILE.png`` (or
``--figure PATH``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from micromacro_sim.core.results import SE_TYPES

__all__ = ["add_parser", "cmd_power", "plot_power"]


def _pooled(sol: Any):
    """The last pooled row per design value (the power curve table)."""
    ev = sol.evaluations
    cols = ["value", "pooled_reps", "pooled_estimate", "pooled_mcse", "fitted"]
    return ev.groupby("value", sort=True).tail(1).sort_values("value")[cols]


def plot_power(solutions: list, path: str | Path) -> Path:
    """The measure against the design value per method: pooled evaluations (+/- 2 MCSE),
    the fitted local curve, the target and each answer with its interval."""
    import numpy as np

    from micromacro_sim.reporting.plots import require_matplotlib

    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, sol in enumerate(solutions):
        c = colors[i % len(colors)]
        t = _pooled(sol)
        ax.errorbar(t["value"], t["pooled_estimate"], yerr=2 * t["pooled_mcse"], fmt="o",
                    color=c, ms=4, capsize=2, label=f"{sol.method}: {sol.line()}")
        if sol.curve is not None and sol.answer is not None:
            lo, hi = sol.range
            xs = np.linspace(max(lo, sol.answer / 1.6), min(hi, sol.answer * 1.6), 200)
            ax.plot(xs, sol.curve.predict(xs), "-", color=c, lw=1)
            ax.axvline(sol.answer, color=c, ls=":", lw=1)
            ax.axvspan(sol.lo or lo, sol.hi or hi, color=c, alpha=0.12)
    target = solutions[0].target
    y0 = target.value if target.kind == "rate" else 0.0
    ax.axhline(y0, color="grey", ls="--", lw=1)
    if target.kind == "bias":
        for s in (-1, 1):
            ax.axhline(s * target.value, color="grey", ls="--", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel(solutions[0].solve)
    ax.set_ylabel({"power": "power", "cover": "coverage", "bias": "bias"}[target.measure])
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _figure_path(args: argparse.Namespace) -> str | None:
    """Where the figure goes: ``--figure``, else ``--output`` with suffix ``.png``."""
    if args.figure is not None:
        return args.figure
    return str(Path(args.output).with_suffix(".png")) if args.output else None


def _check_outputs(args: argparse.Namespace) -> None:
    """``--output`` and the figure's path can be written (before any work)."""
    from micromacro_sim.run.paths import check_not_input, check_output_file

    if args.output is not None:
        check_output_file(args.output, "output")
        check_not_input([args.output], [args.config], "output")
    figure = _figure_path(args)
    if figure is not None:
        field = "figure" if args.figure is not None else "output"
        check_output_file(figure, field)
        check_not_input([figure], [args.config], field)


def cmd_power(args: argparse.Namespace) -> int:
    """Solve, print, write; returns the exit status."""
    import pandas as pd

    from micromacro_sim.planning.power import (
        check_design,
        method_specs,
        parse_range,
        parse_target,
        short_name,
        solve_power,
    )
    from micromacro_sim.run.configure import load_config

    target = parse_target(args.target, args.se_type)
    rng = parse_range(args.range, args.solve)
    _check_outputs(args)
    cfg = load_config(args.config, engine=args.engine)
    methods = [m.strip() for m in args.method.split(",") if m.strip()] if args.method else None
    method_specs(cfg, methods)
    check_design(cfg, args.solve, args.term)
    t0 = time.perf_counter()
    sols = solve_power(cfg, solve=args.solve, target=target, methods=methods, term=args.term,
                       alpha=args.alpha, search_range=rng, level=args.level, steps=args.steps,
                       block=args.block, confirm=args.confirm, se_type=args.se_type)
    seconds = time.perf_counter() - t0
    for sol in sols:
        se = f", {sol.se_type} SE" if sol.se_type else ""
        print(f"{sol.method} ({args.term}, target {target.measure} "
              f"{'>=' if target.kind == 'rate' else '|.| <='} {target.value:g}{se}):")
        print(_pooled(sol).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        if sol.confirmation:
            est, mcse, reps = sol.confirmation
            print(f"confirmation at {args.solve} = {sol.answer}: {target.measure} {est:.4g} "
                  f"(MCSE {mcse:.2g}, {reps} replications)")
        if sol.note:
            print(f"note: {sol.note}")
        print(f"replications spent: {sol.replications}\n")
    total = sum(s.replications for s in sols)
    print(f"{total} replications in {seconds:.1f} s")
    written = []
    if args.output is not None:
        out = Path(args.output)
        tmp = out.with_name(f".{out.name}.tmp")
        pd.concat([s.evaluations for s in sols], ignore_index=True).to_csv(tmp, index=False)
        tmp.replace(out)
        written.append(out)
    fig = _figure_path(args)
    if fig is not None:
        written.append(plot_power(sols, fig))
    if written:
        print("wrote " + ", ".join(str(p) for p in written))
    g = short_name(args.solve)
    if len(sols) > 1:
        print("; ".join(f"{s.method} needs {g} = {s.line().split(' = ', 1)[-1]}"
                        if s.answer is not None else f"{s.method}: {s.line()}" for s in sols))
        print("; ".join(f"{s.line()} ({s.method})" for s in sols))
    else:
        print(sols[0].line())
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``power`` command to an ``argparse`` subparsers object."""
    p = subparsers.add_parser(
        "power", help="the smallest n_groups or group_size reaching a target power, "
                      "coverage or bias (stochastic root finding over the simulation)")
    p.add_argument("config", help="YAML config file with one design")
    p.add_argument("--solve", required=True, help="n_groups or group_size")
    p.add_argument("--target", default="power=0.80",
                   help="power=P or cover=P (at least), bias=B (absolute, at most); "
                        "default power=0.80")
    p.add_argument("--method", help="method(s), comma-separated (default: the config's)")
    p.add_argument("--term", default="xi", help="the term (default xi)")
    p.add_argument("--alpha", type=float, default=0.05, help="test level (default .05)")
    p.add_argument("--range", help="LO:HI search range (default 10:500 groups, 2:100 members)")
    p.add_argument("--level", type=float, default=0.95,
                   help="confidence level of the answer's interval (default .95)")
    p.add_argument("--se-type", default=None,
                   choices=["default", *SE_TYPES],
                   help="SE type of the tests and intervals (default: each method's own: "
                        "the model SE of one-step methods, HC3 for two-step methods, HC2 "
                        "for croon)")
    p.add_argument("--steps", type=int, default=10, help="bisection steps (default 10)")
    p.add_argument("--block", type=int, default=100,
                   help="replications of the first bisection block (default 100)")
    p.add_argument("--confirm", type=int, default=1000,
                   help="replications of the confirmation run (default 1000)")
    p.add_argument("--engine", help="auto (default), fast or reference")
    p.add_argument("--output", help="write the evaluations to this CSV (figure: same name .png)")
    p.add_argument("--figure", help="write the power curve figure to this PNG")
    p.set_defaults(func=cmd_power)
    return p
