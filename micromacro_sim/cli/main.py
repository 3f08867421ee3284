"""Command line: ``micromacro run | summarize | export | fit | reproduce | report | ...``.

User errors (bad config, bad data) print one line ``error: <field>: <problem>`` on
stderr and exit with status 2, having written nothing; usage errors (an unknown option, a
missing argument) one line ``micromacro <command>: <problem> (see ... --help)``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from micromacro_sim.cli.fitting import cmd_demo, cmd_fit
from micromacro_sim.cli.messages import one_line_warnings, os_error_text
from micromacro_sim.core.errors import ConfigError, MicroMacroError
from micromacro_sim.core.results import SE_TYPES

if TYPE_CHECKING:
    from micromacro_sim.design.config import RunConfig

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line on stderr naming the command and the option (argparse
    prints the usage first, and reports a command's unknown arguments without it)."""

    def error(self, message: str) -> NoReturn:
        """``PROG: MESSAGE (see PROG --help)`` on stderr, exit status 2."""
        self.exit(2, f"{self.prog}: {' '.join(message.split())} (see {self.prog} --help)\n")

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        """Parse, refusing an argument this parser (a command's) does not take."""
        ns, extra = super().parse_known_args(args, namespace)
        if extra:
            self.error(f"unrecognized arguments: {' '.join(extra)}")
        return ns, extra


def _cmd_run(args: argparse.Namespace) -> int:
    from micromacro_sim.api.simulation import default_run_dir, simulate
    from micromacro_sim.run.configure import load_config
    from micromacro_sim.run.manifest import STALE_TAIL
    from micromacro_sim.run.paths import check_not_input

    args.alpha = _check_alpha(args.alpha)
    cfg = load_config(args.config, force=args.force, n_jobs=args.n_jobs,
                      chunk_size=args.chunk_size, replications=args.replications,
                      output=args.output, backend=args.backend, address=args.address,
                      engine=args.engine, memory_budget=args.memory_budget)
    if args.output is not None and not args.output.strip():
        raise ConfigError(f"output: expected a folder path, got {args.output!r}")
    if args.summarize:
        _check_summary_options(cfg, args)
    out = Path(default_run_dir(cfg))
    written = [out / n for n in ("manifest.json", "scenarios.parquet", "summary.json",
                                 "summary.csv", "summary.parquet")]
    check_not_input(written, [args.config], "output")
    res = simulate(cfg, output=default_run_dir(cfg), overwrite=args.overwrite,
                   progress=False if args.quiet else None, force=args.force,
                   part=args.part).result
    for note in res.notes:
        if not (args.summarize and note.endswith(STALE_TAIL)):  # refreshed below
            print(f"note: {note}", file=sys.stderr)
    ad = cfg.adaptive
    reps = (f"{cfg.replications}" if ad is None else
            f"{ad.min} to {ad.max} (adaptive, blocks of {ad.block})")
    from micromacro_sim.reporting.wrap import wrap_text

    done = (f"ran {res.tasks_run} task(s) ({res.replications_run} replications) in "
            f"{res.seconds:.1f} s" if res.tasks_run else "already complete, nothing to run")
    print(wrap_text(f"{cfg.name}: {len(cfg.scenarios)} scenario(s) x {reps} replications, "
                    f"{len(cfg.methods)} method(s); {done} -> {res.run_dir}"
                    + (f" (part {args.part})" if args.part else "")))
    if args.summarize:  # what this config describes, not every replication of the folder
        return _summarize(res.run_dir, args, limit=(cfg.replications,
                                                    [sc.key for sc in cfg.scenarios]))
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from micromacro_sim.run.folder import format_progress

    print(format_progress(args.run_dir))
    return 0


def _check_alpha(text: str | float) -> float:
    """``--alpha`` as a number strictly between 0 and 1 (one-line error otherwise)."""
    try:
        alpha = float(text)
    except ValueError:
        alpha = float("nan")
    if not 0 < alpha < 1:  # also refuses nan
        raise ConfigError(f"alpha: expected a level strictly between 0 and 1, got {text!r}")
    return alpha


def _check_summary_options(cfg: RunConfig, args: argparse.Namespace) -> None:
    """``run --summarize``: the summary options against the config's methods and terms,
    before the run, with the messages of ``summarize`` (which checks again after it)."""
    import pandas as pd

    from micromacro_sim.reporting.summary_text import KNOWN_MEASURES, select_rows

    terms = list(dict.fromkeys(t for sc in cfg.scenarios for t in sc.terms))
    select_rows(pd.DataFrame([(m.label, t) for m in cfg.methods for t in terms],
                             columns=["method", "term"]), _names(args.methods), _names(args.terms))
    bad = [m for m in _names(args.measures) or [] if m not in KNOWN_MEASURES]
    if args.style == "mplus" and args.focal and args.focal not in terms:
        raise ConfigError(f"focal: unknown term {args.focal!r} (available: {', '.join(terms)})")
    if args.style != "mplus" and bad:
        raise ConfigError(f"measures: unknown measure {bad[0]!r} "
                          f"(known: {', '.join(KNOWN_MEASURES)})")


def _summarize(run_dir: Path, args: argparse.Namespace,
               limit: tuple[int, list[str]] | None = None) -> int:
    from micromacro_sim.reporting.summary_text import format_summary
    from micromacro_sim.run.paths import check_output_dir
    from micromacro_sim.run.storage import overlapping_shards
    from micromacro_sim.summaries.summarize import summarize_run
    from micromacro_sim.summaries.tidy import write_summary_tables

    args.alpha = _check_alpha(args.alpha)
    summary_dir = getattr(args, "summary_dir", None)
    out = check_output_dir(summary_dir) if summary_dir is not None else Path(run_dir)
    reps, keys = limit if limit is not None else (None, None)
    s = summarize_run(run_dir, alpha=args.alpha, include_flagged=args.include_flagged,
                      replications=reps, scenarios=keys)
    overlaps = overlapping_shards(run_dir)
    if overlaps:
        key, a, b = overlaps[0]
        print(f"note: {len(overlaps)} pair(s) of estimates shards overlap (first: scenario "
              f"{key}, replications {list(a)} and {list(b)}); their rows were de-duplicated "
              "by (scenario, replication, method, term), each replication counted once",
              file=sys.stderr)
    pick = {k: _names(getattr(args, k, None)) for k in ("methods", "terms")}
    if getattr(args, "style", "table") == "mplus":
        from micromacro_sim.reporting.mplus import format_mplus

        text = format_mplus(s, se_type=args.mplus_se, focal=args.focal, **pick)
    else:
        text = format_summary(s, se_type=args.se_type, measures=_names(args.measures),
                              mcse=args.mcse, **pick)
    write_summary_tables(s, out)
    print(text)

    return 0


def _names(text: str | None) -> list[str] | None:
    """A comma-separated option as a list (None when not given)."""
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def _cmd_summarize(args: argparse.Namespace) -> int:
    return _summarize(Path(args.run_dir), args)


def _cmd_export(args: argparse.Namespace) -> int:
    from micromacro_sim.summaries.tidy import export_estimates

    path = export_estimates(args.run_dir, args.format, args.output)
    print(f"wrote {path}")
    return 0


def _cmd_grid(args: argparse.Namespace) -> int:
    import pandas as pd

    from micromacro_sim.run.configure import load_config

    cfg = load_config(args.config)
    frame = pd.DataFrame(cfg.scenario_rows())
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 0


def _cmd_methods(args: argparse.Namespace) -> int:
    from micromacro_sim.estimators import registry

    for name, cls in registry().items():
        opts = ", ".join(f"{k} ({o.describe()})" for k, o in cls.options.items())
        flags = [f for f, on in (("two-step", cls.two_step), ("balanced only", cls.needs_balanced),
                                 ("simulation only", cls.needs_truth)) if on]
        print(f"{name:14s} {cls.description}" + (f" [{'; '.join(flags)}]" if flags else "")
              + (f"  options: {opts}" if opts else ""))
    return 0


def _cmd_check_method(args: argparse.Namespace) -> int:
    from micromacro_sim.estimators import method_class
    from micromacro_sim.estimators.contract import run_contract

    cls = method_class(args.method, field="method")
    results = run_contract(cls)
    width = max(len(r.check) for r in results)
    print(f"contract of {args.method} ({cls.__module__}.{cls.__qualname__}):")
    for r in results:
        print(f"  {r.check:<{width}}  {'pass' if r.passed else 'FAIL'}"
              + (f"  {r.detail}" if r.detail else ""))
    failed = sum(not r.passed for r in results)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


def _add_summary_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--alpha", default="0.05", help="nominal level (default .05)")
    p.add_argument("--include-flagged", action="store_true",
                   help="also use flagged fits that have estimates")
    p.add_argument("--se-type", default=None,
                   choices=["default", *SE_TYPES],
                   help="SE type shown beside each method's default one in the printed table "
                   "(default: only each method's default: its model SE for one-step "
                   "methods, HC3 for two-step ones, HC2 for croon)")
    p.add_argument("--measures", help="measures to print, comma-separated (default k, theta, "
                   "mean, pct_bias, empse, modse, cover, reject, rmse)")
    p.add_argument("--methods", help="methods to print, comma-separated (default all)")
    p.add_argument("--terms", help="terms to print, comma-separated (default all)")
    p.add_argument("--mcse", action="store_true", default=None,
                   help="Monte Carlo SEs in parentheses for every measure (default: bias and "
                   "coverage)")
    p.add_argument("--no-mcse", dest="mcse", action="store_false",
                   help="no Monte Carlo SEs")
    p.add_argument("--style", choices=["table", "mplus"], default="table",
                   help="mplus: Mplus MONTECARLO table with Muthen & Muthen (2002) checks")
    p.add_argument("--mplus-se", default=None,
                   choices=["default", *SE_TYPES],
                   help="SE type of the mplus table (default: each method's default)")
    p.add_argument("--focal", help="focal term of the mplus checks (default the last term)")


#: Commands whose modules import pandas, scipy or matplotlib: their parsers are built only
#: when the command line asks for them (or for the full help), so that ``micromacro run``
#: starts without those imports.
_HEAVY = {
    "advise": "micromacro_sim.cli.advise",
    "bench": "micromacro_sim.cli.bench",
    "plan": "micromacro_sim.planning.cli_plan",
    "power": "micromacro_sim.planning.cli_power",
    "protocol": "micromacro_sim.reporting.cli_protocol",
    "report": "micromacro_sim.reporting.report",
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
    from micromacro_sim.core.version import __version__

    parser = _Parser(
        prog="micromacro", description="Monte Carlo studies of micro-macro multilevel models."
    )
    parser.add_argument("--version", action="version", version=f"micromacro-sim {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run (or resume) the simulation of a config")
    p.add_argument("config", help="YAML config file")
    p.add_argument("--output", help="run folder (default: the config's output)")
    p.add_argument("--n-jobs", type=int, help="parallel workers (overrides the config)")
    p.add_argument("--chunk-size", type=int, help="replications per task")
    p.add_argument("--memory-budget", help="working set of a task's batches, in MiB or e.g. "
                   "'2 GiB' (default 512 MiB; does not change results)")
    p.add_argument("--replications", type=int, help="replications per scenario")
    p.add_argument("--engine", help="auto (default), fast or reference")
    p.add_argument("--backend", help="auto (default: processes on Linux, else loky), "
                   "processes, loky, threading, sequential, dask or ray")
    p.add_argument("--address", help="Dask scheduler or Ray address (default: start a local one)")
    p.add_argument("--overwrite", action="store_true",
                   help="discard an existing run of a different config in the output folder")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument("--force", action="store_true",
                   help="run even a design estimated not to fit this machine's memory, "
                        "disk or task limits")
    p.add_argument("--summarize", action="store_true", help="summarize when done")
    p.add_argument("--part", help="run only part I of N of the tasks (I/N, a cluster array "
                   "task: N parts fill one folder on a shared file system)")
    _add_summary_options(p)
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("status", help="what a run folder has finished and what is missing")
    p.add_argument("run_dir")
    p.set_defaults(func=_cmd_status)

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
    p.add_argument("--member", help="member identifier column (needed by the methods that treat "
                   "members as indicators; results then do not depend on the row order)")
    p.add_argument("--row-order-is-member", action="store_true",
                   help="without --member: accept the row order inside each group as the "
                   "member order")
    p.add_argument("--method", action="append",
                   help="method(s) as in a config's methods list: names comma-separated, "
                   "LABEL={method: NAME, option: value}, or a YAML list; repeatable "
                   "(default: all for real data)")
    p.add_argument("--output", help="write the table to this CSV instead of printing it")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("demo", help="real-data demonstrations (bfi: factor model = mixed model)")
    p.add_argument("name", choices=["bfi"])
    p.add_argument("--no-semopy", action="store_true", help="skip the semopy fit")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("grid", help="list the scenarios of a config with derived values")
    p.add_argument("config")
    p.set_defaults(func=_cmd_grid)

    p = sub.add_parser("methods", help="list the registered methods")
    p.set_defaults(func=_cmd_methods)

    p = sub.add_parser("check-method", help="run the estimator contract on a method "
                       "(module:Name of your own, an installed plug-in, or a package method)")
    p.add_argument("method", help="module:Name, or a registered method id")
    p.set_defaults(func=_cmd_check_method)

    import importlib

    for name, module in _HEAVY.items():
        if command is None or command == name:
            importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    first = next((a for a in argv if not a.startswith("-")), None)
    light = {"run", "summarize", "export", "fit", "demo", "grid", "methods", "check-method",
             "status"}
    parser = build_parser(first if first in light | set(_HEAVY) else None)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help printed, or a usage error reported in one line
        return exc.code if isinstance(exc.code, int) else 2
    try:
        with one_line_warnings():
            status = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return status
    except MicroMacroError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader (``| head``) stopped reading: exit quietly, as a killed pipe writer
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except OSError as exc:  # a file that cannot be read or written, met while working
        print(f"error: {os_error_text(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished shards are kept; run again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
