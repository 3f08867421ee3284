"""Command line: ``micromacro run | summarize | export | fit | reproduce | report | ...``.

User errors (bad config, bad data) print one line ``error: <field>: <problem>`` on
stderr and exit with status 2, having written nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import MicroMacroError

__all__ = ["main"]


def _cmd_run(args: argparse.Namespace) -> int:
    from .config import load_config
    from .runner import run

    cfg = load_config(args.config, n_jobs=args.n_jobs, chunk_size=args.chunk_size,
                      replications=args.replications, output=args.output,
                      backend=args.backend, address=args.address, engine=args.engine)
    res = run(cfg, overwrite=args.overwrite, progress=False if args.quiet else None)
    print(f"{cfg.name}: {len(cfg.scenarios)} scenario(s) x {cfg.replications} replications, "
          f"{len(cfg.methods)} method(s); ran {res.tasks_run} task(s) "
          f"({res.replications_run} replications) in {res.seconds:.1f} s -> {res.run_dir}")
    if args.summarize:
        return _summarize(res.run_dir, args)
    return 0


def _summarize(run_dir: Path, args: argparse.Namespace) -> int:
    from .reporting.summary_text import format_summary
    from .reporting.tidy import write_summary_tables
    from .summarize import summarize_run

    s = summarize_run(run_dir, alpha=args.alpha, include_flagged=args.include_flagged)
    out = Path(args.summary_dir) if getattr(args, "summary_dir", None) else Path(run_dir)
    pick = {k: _names(getattr(args, k, None)) for k in ("methods", "terms")}
    if getattr(args, "style", "table") == "mplus":
        from .reporting.mplus import format_mplus

        text = format_mplus(s, se_type=args.mplus_se, focal=args.focal, **pick)
    else:
        text = format_summary(s, se_type=args.se_type, measures=_names(args.measures),
                              mcse=args.mcse, **pick)
    write_summary_tables(s, out)
    print(text)
    from .reporting.terminal import wrap_text

    print(wrap_text(f"\nwrote summary, summary_long, flags and reliability tables (CSV and "
                    f"Parquet) to {out}"))
    return 0


def _names(text: str | None) -> list[str] | None:
    """A comma-separated option as a list (None when not given)."""
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def _cmd_summarize(args: argparse.Namespace) -> int:
    return _summarize(Path(args.run_dir), args)


def _cmd_export(args: argparse.Namespace) -> int:
    from .reporting.tidy import export_estimates

    path = export_estimates(args.run_dir, args.format, args.output)
    print(f"wrote {path}")
    return 0


def _cmd_grid(args: argparse.Namespace) -> int:
    import pandas as pd

    from .config import load_config

    cfg = load_config(args.config)
    frame = pd.DataFrame([sc.describe() for sc in cfg.scenarios])
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 0


def _cmd_methods(args: argparse.Namespace) -> int:
    from .estimators import registry

    for name, cls in registry().items():
        opts = ", ".join(f"{k}={v!r}" for k, v in cls.options.items())
        flags = [f for f, on in (("two-step", cls.two_step), ("balanced only", cls.needs_balanced),
                                 ("simulation only", cls.needs_truth)) if on]
        print(f"{name:14s} {cls.description}" + (f" [{'; '.join(flags)}]" if flags else "")
              + (f"  options: {opts}" if opts else ""))
    return 0


def _cmd_fit(args: argparse.Namespace) -> int:
    from .api import fit_frame
    from .userdata import read_table_file

    frame = read_table_file(args.data)
    methods = [m.strip() for m in args.method.split(",")] if args.method else None
    table, notes, rel = fit_frame(frame, group=args.group, x=args.x, y=args.y, z=args.z,
                                  methods=methods)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    warning = rel.warning()
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    if args.output:
        out = Path(args.output)
        tmp = out.with_name(f".{out.name}.tmp")
        table.to_csv(tmp, index=False)
        tmp.replace(out)
        print(f"wrote {len(table)} rows to {out}")
    else:
        import pandas as pd

        with pd.option_context("display.width", 200, "display.max_colwidth", 60):
            print(table.to_string(index=False, float_format=lambda v: f"{v:.5g}", na_rep=""))
    print("\nreliability of the group means (ICC(2) is the reliability of a group mean):")
    print(rel.table.to_string(float_format=lambda v: f"{v:.3f}"))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import bfi_demo

    print(bfi_demo(with_semopy=not args.no_semopy).format())
    return 0


def _add_summary_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--alpha", type=float, default=0.05, help="nominal level (default .05)")
    p.add_argument("--include-flagged", action="store_true",
                   help="also use flagged fits that have estimates")
    p.add_argument("--se-type", default="HC3", choices=["HC0", "HC1", "HC2", "HC3"],
                   help="robust SE type shown beside the classical one in the printed table")
    p.add_argument("--measures", help="measures to print, comma-separated (default k, theta, "
                   "mean, pct_bias, empse, modse, cover, reject, rmse)")
    p.add_argument("--methods", help="methods to print, comma-separated (default all)")
    p.add_argument("--terms", help="terms to print, comma-separated (default all)")
    p.add_argument("--mcse", action="store_true", help="print Monte Carlo SEs in parentheses")
    p.add_argument("--style", choices=["table", "mplus"], default="table",
                   help="mplus: Mplus MONTECARLO table with Muthen & Muthen (2002) checks")
    p.add_argument("--mplus-se", default="classical",
                   choices=["classical", "HC0", "HC1", "HC2", "HC3"],
                   help="SE type of the mplus table (default classical)")
    p.add_argument("--focal", help="focal term of the mplus checks (default the last term)")


#: Commands whose modules import pandas, scipy or matplotlib: their parsers are built only
#: when the command line asks for them (or for the full help), so that ``micromacro run``
#: starts without those imports.
_HEAVY = {
    "bench": "micromacro_sim.bench",
    "report": "micromacro_sim.report",
    "reproduce": "micromacro_sim.reproduce.cli",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser of ``micromacro``.

    Parameters
    ----------
    command : str, optional
        The subcommand about to be parsed; the other heavy commands are then left out.
        None builds every command (full help).
    """
    parser = argparse.ArgumentParser(
        prog="micromacro", description="Monte Carlo studies of micro-macro multilevel models."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run (or resume) the simulation of a config")
    p.add_argument("config", help="YAML config file")
    p.add_argument("--output", help="run folder (default: the config's output)")
    p.add_argument("--n-jobs", type=int, help="parallel workers (overrides the config)")
    p.add_argument("--chunk-size", type=int, help="replications per task")
    p.add_argument("--replications", type=int, help="replications per scenario")
    p.add_argument("--engine", help="auto (default), fast or reference")
    p.add_argument("--backend", help="loky (default), threading, sequential, dask or ray")
    p.add_argument("--address", help="Dask scheduler or Ray address (default: start a local one)")
    p.add_argument("--overwrite", action="store_true",
                   help="discard an existing run of a different config in the output folder")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument("--summarize", action="store_true", help="summarize when done")
    _add_summary_options(p)
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("summarize", help="performance measures of a run folder")
    p.add_argument("run_dir")
    p.add_argument("--output", dest="summary_dir", help="folder for the tables (default RUN_DIR)")
    _add_summary_options(p)
    p.set_defaults(func=_cmd_summarize)

    p = sub.add_parser("export", help="per-replication estimates joined with the scenarios "
                       "as one CSV or Parquet file")
    p.add_argument("run_dir")
    p.add_argument("--format", choices=["csv", "parquet"], default="csv",
                   help="file format (default csv)")
    p.add_argument("--output", help="file to write (default RUN_DIR/estimates_export.FORMAT)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("fit", help="fit the methods to one long-format dataset")
    p.add_argument("data", help="CSV (or Parquet) file, one row per member")
    p.add_argument("--group", required=True, help="group identifier column")
    p.add_argument("--x", required=True, help="member-level column(s), comma-separated")
    p.add_argument("--y", required=True, help="group-level outcome column")
    p.add_argument("--z", help="group-level covariate column(s), comma-separated")
    p.add_argument("--method", help="method(s), comma-separated (default: all for real data)")
    p.add_argument("--output", help="write the table to this CSV instead of printing it")
    p.set_defaults(func=_cmd_fit)

    p = sub.add_parser("demo", help="real-data demonstrations (bfi: factor model = mixed model)")
    p.add_argument("name", choices=["bfi"])
    p.add_argument("--no-semopy", action="store_true", help="skip the semopy fit")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("grid", help="list the scenarios of a config with derived values")
    p.add_argument("config")
    p.set_defaults(func=_cmd_grid)

    p = sub.add_parser("methods", help="list the registered methods")
    p.set_defaults(func=_cmd_methods)

    import importlib

    for name, module in _HEAVY.items():
        if command is None or command == name:
            importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    light = {"run", "summarize", "export", "fit", "demo", "grid", "methods"}
    parser = build_parser(first if first in light | set(_HEAVY) else None)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MicroMacroError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished shards are kept; run again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
