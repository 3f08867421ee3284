"""A self-contained report of a run folder: facts, failures, figures, then the tables.

:func:`write_report` reads any run folder (a reproduction or a user's own grid) and
writes either one HTML file with the figures embedded as base64 PNGs, or a Markdown file
with the PNGs in a ``figures`` folder beside it. The report opens with the run's facts
and the failure report (how often each method failed and how failures were handled,
always shown; see :mod:`micromacro_sim.reporting.failures`), then the figures by study
question, and ends with the tables, long ones folded behind a summary line. When the run
folder is the ``run`` folder of a reproduction (its parent holds the reproduction's
``notes.txt`` and its comparison tables), the published values are drawn beside this
run's.
:func:`add_parser` adds ``micromacro report RUN_DIR``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from micromacro_sim.core.errors import ConfigError
from micromacro_sim.core.results import SE_TYPES
from micromacro_sim.reporting import failures as fl
from micromacro_sim.reporting import report_tables as rt
from micromacro_sim.reporting.bias_stat import BIAS_STATS, check_stat
from micromacro_sim.reporting.figures.common import require_matplotlib
from micromacro_sim.reporting.render import render_html, render_markdown
from micromacro_sim.reporting.report_figures import draw_figures, published_tables
from micromacro_sim.reporting.se_types import check_se_type, se_list
from micromacro_sim.run.atomic import write_text
from micromacro_sim.run.paths import check_output_dir
from micromacro_sim.run.reading import open_run_folder, output_inside_run
from micromacro_sim.run.storage import read_table
from micromacro_sim.summaries.summarize import RunSummary, summarize_run

__all__ = ["FORMATS", "add_parser", "write_report"]

FORMATS = ("html", "md")
Q_DESIGN = "What was simulated?"
Q_FITS = "Did the fits work?"
Q_BIAS = "Are the estimates biased?"
Q_COVER = "Do the intervals cover the true value?"
Q_TESTS = "Type I error and power: do the tests hold their level?"
Q_PRECISION = "How precise are the methods across the grid?"
Q_PUBLISHED = "Does this run agree with the published values?"


def _partial_text(summary: RunSummary, manifest: dict[str, Any]) -> str:
    done = int(summary.datasets["n_reps"].sum())
    reps = manifest.get("replications")
    n_scen = len(manifest.get("scenarios", [])) or len(summary.datasets)
    want = f" of {int(reps) * n_scen}" if isinstance(reps, int) else ""
    empty = n_scen - len(summary.datasets)
    none = f" {empty} of {n_scen} scenarios have none yet." if empty > 0 else ""
    return (f"PARTIAL RUN: {done}{want} replications are finished.{none} Every table and "
            "figure covers only the finished ones; run the config again to resume.")


def _failure_sections(summary: RunSummary, manifest: dict[str, Any], figs: list[str], *,
                      include_flagged: bool) -> list[rt.Section]:
    """The failure report: always present; one line when nothing failed."""
    counts = fl.failure_counts(summary)
    handling = fl.handling_text(manifest, include_flagged)
    title = "Failures and their handling"
    if not fl.has_failures(counts):
        return [rt.Section(title, lines=(fl.headline(counts), handling), question=Q_FITS)]
    table = fl.failure_table(counts)
    secs = [rt.Section(
        title, table,
        "Per scenario and method with any failure: the share of replications (count in "
        "parentheses) whose fit was not ok, split into flagged (not converged, or converged "
        "to an inadmissible solution), not applicable and error, and by reason code. "
        "Redrawn: share of the scenario's replications whose dataset was redrawn; redraws: "
        "the extra datasets drawn (the same for every method of a scenario).",
        ("failures",) if "failures" in figs else (), question=Q_FITS,
        summary=f"{len(table)} scenario x method cells with a failure",
        lines=(fl.headline(counts), fl.method_lines(counts), handling), inline=True)]
    reasons = fl.reason_table(counts)
    if not reasons.empty:
        secs.append(rt.Section(
            "Reason codes", reasons,
            "Every reason code of the run: what it means, the status it gives a fit, and how "
            "many fits it concerns (share of the fits of the methods it occurs in).",
            question=Q_FITS, summary=f"{len(reasons)} reason codes", inline=True))
    return secs


def _stars(frame: pd.DataFrame) -> int:
    return int(frame.apply(lambda c: c.astype(str).str.endswith(" *")).to_numpy().sum())


def _sections(summary: RunSummary, scen_all: pd.DataFrame, figs: list[str], *,
              alpha: float, se_type: str | None, published: dict[str, pd.DataFrame],
              manifest: dict[str, Any], estimates: pd.DataFrame, bias: str,
              include_flagged: bool) -> list[rt.Section]:
    perf = summary.performance
    order = list(scen_all["scenario"])
    methods = list(dict.fromkeys(perf["method"]))
    S = rt.Section

    def keys(prefix: str) -> tuple[str, ...]:
        return tuple(k for k in figs if k.startswith(prefix))

    flags = rt.flags_table(summary, order, methods)
    bad = int((flags["not ok"] != "0").sum())
    ds = rt.datasets_table(summary, order)
    estimands = rt.estimands_table(summary, order)
    cover = rt.rate_table(perf, "cover", alpha, se_type)
    reject = rt.rate_table(perf, "reject", alpha, se_type)
    default = (f" default SE: each method's own ({se_list(perf)}; model: a one-step "
               "method's model-based SE)." if se_type is None else "")
    secs = _failure_sections(summary, manifest, figs, include_flagged=include_flagged)
    secs += [
        S("Scenarios", rt.scenario_table(scen_all, summary.datasets.set_index("scenario")
                                         ["n_reps"]),
          "One row per cell of the grid with its derived values; finished: replications "
          "done; key: the folder name of its shards.", question=Q_DESIGN,
          summary=f"{len(scen_all)} cells of the grid"),
        *([S("Estimands", estimands, "What each method is scored against "
             "(docs/estimands.md): slopes on the latent scale (per unit of xi: the oracle), "
             "the scale of x (per unit of the group's true mean of x) or the marker's (the "
             "first member position's); intercepts where x is 0, at a latent mean of 0 or "
             "at the scores' mean. With continuous parallel members all coincide.",
             question=Q_DESIGN, collapsed=True,
             summary=f"{len(estimands)} estimands of {len(scen_all)} cells")]
          if estimands is not None else []),
        S("Fit status counts", flags,
          "Every scenario and method, zero counts included. Statuses are exclusive: not ok = "
          "flagged (not converged, or converged and inadmissible) + not applicable + error.",
          question=Q_FITS, collapsed=bad == 0,
          summary=f"{len(flags)} scenario x method cells, {bad} with a fit not ok"),
        S("Reliability and redraws", ds,
          "Per scenario, over generated datasets: redraws under the admissibility policy, "
          "coefficient alpha of the wide data (balanced designs) and ICC(1), ICC(2) from the "
          "ANOVA estimates, beside the true ICC and reliability of a group mean.",
          question=Q_FITS, summary=f"{len(ds)} scenarios, "
          f"{int((ds['redraws'] != '0').sum())} with redraws"),
        S("Percent median bias" if bias == "median" else "Percent bias",
          rt.bias_table(perf, bias, estimates, include_flagged=include_flagged),
          _bias_note(bias), keys("bias:") + keys("est:"), question=Q_BIAS,
          summary=f"{bias} bias of every term, {perf['scenario'].nunique()} scenarios x "
          f"{len(methods)} methods"),
        S("Coverage per SE type", cover,
          f"Share of {100 * (1 - alpha):g}% intervals that contain the true value, mcse in "
          "parentheses. band: nominal +/- 2 sqrt(p(1-p)/K); * marks a rate outside it."
          + default,
          keys("cover:") + keys("zip:"), question=Q_COVER,
          summary=f"coverage per SE type, {_stars(cover)} rates outside the band (*)"),
        S("Rejection rate per SE type", reject,
          f"Share of replications rejecting H0: term = 0 at alpha = {alpha:g}. A Type I error "
          "where the true value is 0 (band and * as for coverage); power elsewhere." + default,
          keys("reject:"), question=Q_TESTS,
          summary=f"rejection per SE type, {_stars(reject)} Type I error rates outside the "
          "band (*)"),
        S("Accuracy and precision", rt.accuracy_table(perf, se_type),
          "empSE: SD of the estimates; modSE: root mean squared model SE; relative error of "
          "the model SE: 100 (modSE / empSE - 1)."
          + (" SE: the SE type of modSE, each method's default (model: a one-step method's "
             "model-based SE)." if se_type is None else ""),
          keys("nested:"), question=Q_PRECISION,
          summary="empirical and model SEs, RMSE per scenario, method and term"),
    ]
    for name, frame in published.items():
        secs.append(S(f"Published: {name}", frame.copy(),
                      "The reproduction's comparison table (from its CSV beside the run).",
                      keys(f"published:{name}"), question=Q_PUBLISHED,
                      summary=f"published values beside this run's: {name}"))
    return secs


def _bias_note(stat: str) -> str:
    if stat == "median":
        return ("100 (median estimate / true value - 1), mcse in parentheses (from the order "
                "statistics of the estimates); where the true value is 0 the median bias is "
                "shown instead. K: smallest number of estimates over terms." + _TRUE_NOTE)
    return ("100 (mean estimate / true value - 1), mcse in parentheses; where the true value is "
            "0 the bias is shown instead. K: smallest number of estimates over terms."
            + _TRUE_NOTE)


#: Which true value the bias uses.
_TRUE_NOTE = (" True value: each method's own estimand (the Estimands table: on the scale of x "
              "for methods working from x, per unit of xi for the oracle).")


def _write_atomic(path: Path, text: str) -> None:
    write_text(path, text)


def write_report(run_dir: str | Path, out_dir: str | Path | None = None, *, fmt: str = "html",
                 alpha: float = 0.05, include_flagged: bool = False,
                 se_type: str | None = None,
                 plots: bool = True, terms: list[str] | None = None,
                 bias: str = "mean") -> Path:
    """Write a report of a run folder.

    Parameters
    ----------
    run_dir : path
        A run folder (``manifest.json``, ``scenarios.parquet`` and the shards).
    out_dir : path, optional
        Folder for the report (default ``RUN_DIR/report``).
    fmt : {"html", "md"}
        ``html``: one self-contained ``report.html`` with the figures embedded as base64
        PNGs. ``md``: ``report.md`` with the PNGs in ``figures/`` beside it.
    alpha : float
        Nominal level of intervals and tests.
    include_flagged : bool
        Also summarize flagged fits that have estimates (as ``micromacro summarize``).
    se_type : str, optional
        None (default, or ``"default"``): every method with its default SE type
        (``Estimator.default_se``: the model SE of a one-step method, HC3 for two-step
        methods, HC2 for croon) in the tables, the zip and nested-loop plots and a first
        column of the coverage and rejection panels. An SE type: every method with that
        type, shown beside the classical one in the accuracy table.
    plots : bool
        Draw the figures (needs matplotlib, the ``plots`` extra).
    terms : list of str, optional
        Terms that get figures (default every slope, i.e. every term but the intercept).
    bias : {"mean", "median"}
        Bias of the mean estimate (default) or of the median estimate, in the percent-bias
        table and figures and the nested-loop plots.

    Returns
    -------
    Path
        The report file.

    Raises
    ------
    ConfigError
        ``fmt`` or ``bias`` is unknown, or the folder holds no run or no finished
        replication.
    MicroMacroError
        ``plots`` is true and matplotlib is not installed.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    se_type = check_se_type(se_type)
    check_stat(bias)
    folder = open_run_folder(run_dir)
    run_dir, manifest, scen_all = folder.path, folder.manifest, folder.scenarios
    out = check_output_dir(out_dir if out_dir is not None else run_dir / "report")
    output_inside_run(out, run_dir)
    if plots:
        require_matplotlib()
    summary = summarize_run(run_dir, alpha=alpha, include_flagged=include_flagged)
    if folder.keys:
        scen_all = scen_all.set_index("scenario").loc[folder.keys].reset_index()
    estimates = read_table(run_dir, "estimates", list(summary.datasets["scenario"]))
    with _report_folder(out) as out:
        return _write(summary, manifest, scen_all, estimates, run_dir, out, fmt=fmt,
                      alpha=alpha, include_flagged=include_flagged, se_type=se_type,
                      plots=plots, terms=terms, bias=bias)


@contextlib.contextmanager
def _report_folder(out: Path) -> Iterator[Path]:
    """Create ``out`` if needed; remove it again when writing fails and it was created
    here; remove the hidden figure folders of killed report writers."""
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".figures-*"):
        pid = stale.name.removeprefix(".figures-")
        if stale.is_dir() and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    try:
        yield out
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _write(summary: Any, manifest: dict[str, Any], scen_all: pd.DataFrame,
           estimates: pd.DataFrame, run_dir: Path, out: Path, *, fmt: str, alpha: float,
           include_flagged: bool, se_type: str | None, plots: bool,
           terms: list[str] | None, bias: str = "mean") -> Path:
    """Render the report of an opened, summarized run into ``out``."""
    title = f"micromacro run report: {manifest.get('name', run_dir.name)}"
    banner = _partial_text(summary, manifest) if summary.partial else ""
    intro = (
        "Performance measures after Morris, White & Crowther (2019) with Monte Carlo SEs "
        "(mcse) in parentheses. K is the number of replications with a proper fit "
        f"({'flagged fits included' if include_flagged else 'flagged fits excluded'}). "
        f"Nominal level alpha = {alpha:g}."
    )
    published = published_tables(run_dir)
    facts = rt.facts(manifest, summary, estimates)

    def render(figs: dict[str, rt.Figure]) -> Path:
        sections = _sections(summary, scen_all, list(figs), alpha=alpha, se_type=se_type,
                             published=published, manifest=manifest, estimates=estimates,
                             bias=bias, include_flagged=include_flagged)
        if fmt == "html":
            path = out / "report.html"
            _write_atomic(path, render_html(title, facts, banner, sections, figs, intro))
        else:
            path = out / "report.md"
            _write_atomic(path, render_markdown(title, facts, banner, sections, figs, intro,
                                                out))
        return path

    if not plots:
        return render({})
    kw = {"alpha": alpha, "include_flagged": include_flagged, "se_type": se_type,
          "published": published, "terms": terms, "bias": bias}
    if fmt == "html":  # figures drawn in a hidden folder named by this process, then embedded
        tmp = out / f".figures-{os.getpid()}"
        try:
            return render(draw_figures(summary, estimates, scen_all, tmp, **kw))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return render(draw_figures(summary, estimates, scen_all, out / "figures", **kw))


def _cmd_report(args: argparse.Namespace) -> int:
    path = write_report(args.run_dir, args.output, fmt=args.format, alpha=args.alpha,
                        include_flagged=args.include_flagged, se_type=args.se_type,
                        plots=not args.no_plots,
                        terms=[t.strip() for t in args.terms.split(",")] if args.terms else None,
                        bias=args.bias)
    print(f"wrote {path}")
    return 0


def add_parser(subparsers: Any, *,
               func: Callable[[argparse.Namespace], int] | None = None) -> argparse.ArgumentParser:
    """Add ``report RUN_DIR [--output DIR] [--format html|md]`` to a sub-parser set.

    Parameters
    ----------
    subparsers
        The object returned by ``ArgumentParser.add_subparsers``.
    func : callable, optional
        Command function stored as ``func`` (default: write the report, print its path).

    Returns
    -------
    ArgumentParser
        The new sub-parser.
    """
    p = subparsers.add_parser("report", help="HTML or Markdown report of a run folder")
    p.add_argument("run_dir")
    p.add_argument("--output", help="folder for the report (default RUN_DIR/report)")
    p.add_argument("--format", choices=list(FORMATS), default="html",
                   help="html: one self-contained file (default); md: Markdown with PNGs")
    p.add_argument("--alpha", type=float, default=0.05, help="nominal level (default .05)")
    p.add_argument("--include-flagged", action="store_true",
                   help="also use flagged fits that have estimates")
    p.add_argument("--se-type", default=None, choices=["default", *SE_TYPES],
                   help="SE type of coverage, rejection and model SE for every method "
                        "(default: each method's own: the model SE of one-step methods, HC3 "
                        "for two-step methods, HC2 for croon)")
    p.add_argument("--no-plots", action="store_true", help="tables only (no matplotlib needed)")
    p.add_argument("--terms", help="terms that get figures, comma-separated (default: slopes)")
    p.add_argument("--bias", choices=list(BIAS_STATS), default="mean",
                   help="bias of the mean estimate (default) or of the median estimate, in the "
                        "percent-bias table and figures")
    p.set_defaults(func=func or _cmd_report)
    return p
