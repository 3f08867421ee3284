"""Command line: ``micromacro run | summarize | export | fit | reproduce | report | ...``.

User errors (bad config, bad data) print one line ``error: <field>: <problem>`` on
stderr and exit with status 2, having written nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from micromacro_sim.core.errors import ConfigError, MicroMacroError

__all__ = ["main"]


def _cmd_run(args: argparse.Namespace) -> int:
    from micromacro_sim.api.simulation import default_run_dir, simulate
    from micromacro_sim.run.configure import load_config

    args.alpha = _check_alpha(args.alpha)
    cfg = load_config(args.config, force=args.force, n_jobs=args.n_jobs,
                      chunk_size=args.chunk_size, replications=args.replications,
                      output=args.output, backend=args.backend, address=args.address,
                      engine=args.engine, memory_budget=args.memory_budget)
    if args.output is not None and not args.output.strip():
        raise ConfigError(f"output: expected a folder path, got {args.output!r}")
    res = simulate(cfg, output=default_run_dir(cfg), overwrite=args.overwrite,
                   progress=False if args.quiet else None, force=args.force,
                   part=args.part).result
    for note in res.notes:
        print(f"note: {note}", file=sys.stderr)
    ad = cfg.adaptive
    reps = (f"{cfg.replications}" if ad is None else
            f"{ad.min} to {ad.max} (adaptive, blocks of {ad.block})")
    from micromacro_sim.reporting.wrap import wrap_text

    print(wrap_text(f"{cfg.name}: {len(cfg.scenarios)} scenario(s) x {reps} replications, "
                    f"{len(cfg.methods)} method(s); ran {res.tasks_run} task(s) "
                    f"({res.replications_run} replications) in {res.seconds:.1f} s -> "
                    f"{res.run_dir}" + (f" (part {args.part})" if args.part else "")))
    if args.summarize:
        return _summarize(res.run_dir, args)
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


def _summarize(run_dir: Path, args: argparse.Namespace) -> int:
    from micromacro_sim.reporting.summary_text import format_summary
    from micromacro_sim.run.paths import check_output_dir
    from micromacro_sim.run.storage import overlapping_shards
    from micromacro_sim.summaries.summarize import summarize_run
    from micromacro_sim.summaries.tidy import write_summary_tables

    args.alpha = _check_alpha(args.alpha)
    summary_dir = getattr(args, "summary_dir", None)
    out = check_output_dir(summary_dir) if summary_dir is not None else Path(run_dir)
    s = summarize_run(run_dir, alpha=args.alpha, include_flagged=args.include_flagged)
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


def _fit_methods(values: list[str] | None) -> list | None:
    """``--method`` values as a config's ``methods:`` list.

    Each value is a comma-separated list of names (``unadjusted,croon``), one labelled
    method with options (``blup_ml={method: blup, reml: false}``), or a YAML/JSON list
    or mapping (``'[croon, {lav: {method: sem_2level, lavaan_fixed_x: true}}]'``).
    """
    import yaml

    from micromacro_sim.core.errors import DataError

    if not values:
        return None
    items: list = []
    for value in values:
        text = value.strip()
        head, sep, body = text.partition("=")
        if text[:1] in "[{" or sep:
            try:
                parsed = yaml.safe_load(text if text[:1] in "[{" else body)
            except yaml.YAMLError:
                raise DataError(f"method: cannot read {value!r} as YAML") from None
            if sep and text[:1] not in "[{":
                parsed = [{head.strip(): parsed}]
            if isinstance(parsed, dict):
                parsed = [{k: v} for k, v in parsed.items()]
            if not isinstance(parsed, list):
                raise DataError(f"method: expected a list or mapping, got {value!r}")
            items += parsed
        else:
            items += [m.strip() for m in text.split(",") if m.strip()]
    return items


def _cmd_fit(args: argparse.Namespace) -> int:
    from micromacro_sim.api.fitting import fit
    from micromacro_sim.api.userdata import read_table_file
    from micromacro_sim.core.status import Status
    from micromacro_sim.run.atomic import write_atomic
    from micromacro_sim.run.paths import check_output_file

    if args.output is not None:
        check_output_file(args.output)
    methods = _fit_methods(args.method)
    frame = read_table_file(args.data)
    res = fit(frame, group=args.group, x=args.x, y=args.y, z=args.z, member=args.member,
              row_order_is_member=args.row_order_is_member,
              method=methods, cov_type="HC3")
    table = res.to_frame()
    for note in res.notes:
        print(f"note: {note}", file=sys.stderr)
    for r in res.results:
        if r.status is Status.NOT_APPLICABLE:
            print(f"note: {r.method} not applicable [{r.reason_code}]: {r.reason}",
                  file=sys.stderr)
    warning = res.reliability.warning()
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    if args.output is not None:
        out = Path(args.output)
        write_atomic(out, lambda tmp: table.to_csv(tmp, index=False))
        print(f"wrote {len(table)} rows to {out}")
    else:
        import pandas as pd

        shown = table[table["status"] != Status.NOT_APPLICABLE.value]  # noted above
        with pd.option_context("display.width", 200, "display.max_colwidth", 60):
            print(shown.to_string(index=False, float_format=lambda v: f"{v:.5g}", na_rep=""))
    print("\nreliability of the group means (ICC(2) is the reliability of a group mean):")
    print(res.reliability.table.to_string(float_format=lambda v: f"{v:.3f}"))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from micromacro_sim.api.demo import bfi_demo

    print(bfi_demo(with_semopy=not args.no_semopy).format())
    return 0


def _add_summary_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--alpha", default="0.05", help="nominal level (default .05)")
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
    "bench": "micromacro_sim.cli.bench",
    "plan": "micromacro_sim.planning.cli_plan",
    "power": "micromacro_sim.planning.cli_power",
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
    parser = argparse.ArgumentParser(
        prog="micromacro", description="Monte Carlo studies of micro-macro multilevel models."
    )
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
    p.add_argument("--backend", help="loky (default), threading, sequential, dask or ray")
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
    args = parser.parse_args(argv)
    try:
        status = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return status
    except MicroMacroError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished shards are kept; run again to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader (``| head``) stopped reading: exit quietly, as a killed pipe writer
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
