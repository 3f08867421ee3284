"""A study protocol from a config: ADEMP (Morris, White & Crowther 2019) in the questions of
the ADEMP-PreReg template (Siepe et al. 2024).

:func:`protocol` answers the template's questions from what a config declares (design
parts: :mod:`.protocol_sections`; here the performance measures as
:mod:`micromacro_sim.summaries.performance` computes them, the replications, justified by a
``micromacro plan --output`` table when one is given, the failures and the software) and from
its ``meta:`` block (:data:`~micromacro_sim.design.config.META_KEYS`). A question neither
answers is listed in the last section, "Not answered by the config"; nothing is invented.
"""

from __future__ import annotations

import math
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from micromacro_sim.core.errors import ConfigError
from micromacro_sim.core.version import __version__
from micromacro_sim.design.config import RunConfig
from micromacro_sim.design.estimands import estimands
from micromacro_sim.reporting.protocol_sections import (
    NOT_ANSWERED,
    OTHER,
    Answers,
    design_sections,
    num,
    section,
    seeds_section,
)
from micromacro_sim.reporting.render import render_html, render_markdown
from micromacro_sim.reporting.report_tables import Section

__all__ = ["FORMATS", "PLAN_NEEDS", "protocol", "read_plan"]

FORMATS = ("md", "html")
PERFORMANCE = "Performance measures"
#: Columns a plan table must have (of ``micromacro_sim.planning.plan.PLAN_COLUMNS``).
PLAN_NEEDS = ("scenario", "label", "method", "term", "measure", "target_mcse", "pilot_reps",
              "reps_needed", "reps_hi")
_NUMERIC = ("target_mcse", "pilot_reps", "reps_needed", "reps_hi")
#: The measures :func:`micromacro_sim.summaries.performance.performance` computes:
#: (measure, summary columns, estimate, Monte Carlo SE).
MEASURES = (
    ("Bias", "bias", "mean(est) - theta", "S / sqrt(k)"),
    ("Relative bias (%)", "pct_bias", "100 (mean(est) / theta - 1), theta not 0",
     "100 MCSE(bias) / |theta|"),
    ("Median and 10% trimmed mean", "median_bias, trimmed_bias",
     "median(est) - theta; mean after cutting 10% from each tail - theta", "none"),
    ("Empirical SE", "empse", "S = sqrt(sum (est_i - mean(est))^2 / (k - 1))",
     "S / sqrt(2 (k - 1))"),
    ("MSE", "mse", "mean((est_i - theta)^2)",
     "sqrt(sum ((est_i - theta)^2 - MSE)^2 / (k (k - 1)))"),
    ("RMSE", "rmse", "sqrt(MSE)", "MCSE(MSE) / (2 RMSE)"),
    ("Model SE", "modse_T", "ModSE = sqrt(mean(se_j^2))", "sqrt(V / (4 m ModSE^2))"),
    ("Mean model SE", "meanse_T", "mean(se_j)", "sd(se) / sqrt(m)"),
    ("Relative error of the model SE (%)", "relerr_T", "100 (ModSE / S - 1)",
     "100 (ModSE / S) sqrt(V / (4 m ModSE^4) + 1 / (2 (k - 1)))"),
    ("Coverage", "cover_T", "share of est_j - c_j se_j <= theta <= est_j + c_j se_j",
     "sqrt(cover (1 - cover) / m)"),
    ("Bias-eliminated coverage", "becover_T", "coverage of mean(est) instead of theta", "none"),
    ("Rejection rate: power (theta not 0), Type I error (theta = 0)", "reject_T",
     "share of |est_j / se_j| >= c_j", "sqrt(reject (1 - reject) / m)"),
)
_GATES = {
    "none": "no gate: every first draw is kept",
    "cfa": "the free-loading one-factor CFA of the members (as indicators) must reach a "
           "proper global optimum: converged, positive variances, positive-definite "
           "covariances",
    "lavaan_cfa": "lavaan's verdict on Clark's call cfa(..., meanstructure = FALSE, "
                  "estimator = 'MLR'): converged and lavaan's post-estimation check passing",
}


# ---------------------------------------------------------------------------- performance
def _null_terms(cfg: RunConfig) -> str:
    """Where a rejection rate is a Type I error: slopes whose latent value is 0."""
    labels = {r["scenario"]: r["label"] for r in cfg.scenario_rows()}
    nulls: dict[str, list[str]] = {}
    for sc in cfg.scenarios:
        for t in sc.terms[1:]:
            if estimands(sc).value(t, "latent") == 0:
                nulls.setdefault(t, []).append(labels[sc.key])
    if not nulls:
        return "none (every slope has a non-zero true value)"
    n = len(cfg.scenarios)
    return "; ".join(f"{t} in every condition" if len(where) == n else
                     f"{t} in {', '.join(where)}" for t, where in nulls.items())


def _measures(ans: Answers) -> list[Section]:
    """The performance measures with their formulas, and how MCSEs are reported."""
    cfg = ans.config
    lines = [
        "Per condition, method and term, over the k replications whose fit is proper (status "
        "ok: converged, admissible, finite; micromacro summarize --include-flagged adds the "
        "flagged fits that have estimates). theta is the method's estimand (Estimands "
        "above), est_i the estimates; S their empirical SD. SE-based measures come per SE "
        "type T over the m fits with a finite SE of that type, and under their bare name "
        "(cover, reject, modse, ...) for the method's default SE type (Methods); V is the "
        "sample variance of se_j^2 and c_j the two-sided critical value at alpha (default "
        ".05): t on the fit's residual df, normal where it has none. A method that reports "
        "its own intervals gets cover_ci and reject_ci (the interval excludes 0) from them.",
        "Formulas as in Morris, White and Crowther (2019, Table 6), as "
        "micromacro_sim.summaries.performance computes them.",
        f"Slopes whose rejection rate is a Type I error: {_null_terms(cfg)}; every other "
        "rejection rate is a power."]
    frame = pd.DataFrame(MEASURES, columns=["measure", "column", "estimate", "Monte Carlo SE"])
    mcse = ["By the Monte Carlo SE formulas of the table, from the replications each measure "
            "uses. micromacro summarize writes every measure with its MCSE (column "
            "<measure>_mcse) to summary.csv and prints the MCSEs of bias and coverage in "
            "parentheses (--mcse: of every measure)."]
    return [section(PERFORMANCE, "Which performance measures will be used?", lines, frame),
            section(PERFORMANCE, "How will Monte Carlo uncertainty of the estimated "
                    "performance measures be calculated and reported?", mcse)]


def _plan_summary(plan: pd.DataFrame, cfg: RunConfig) -> tuple[pd.DataFrame, list[str]]:
    """Per target of the plan: replications needed (the binding cell) against the config's."""
    keys = [sc.key for sc in cfg.scenarios]
    rows = plan[plan["scenario"].isin(keys) & (plan["reps_needed"] > 0)]
    if rows.empty:
        raise ConfigError("plan: none of its rows is a condition of this config (a plan of "
                          "another config?)")
    reps, out = cfg.replications, []
    for (measure, target), g in rows.groupby(["measure", "target_mcse"], sort=False):
        b = g.loc[g["reps_needed"].idxmax()]
        need, hi = int(g["reps_needed"].max()), int(g["reps_hi"].max())
        out.append([measure, num(target), str(int(g["pilot_reps"].min())), str(need),
                    f"{b['label']} / {b['method']} / {b['term']}", str(hi),
                    "yes" if reps >= need else "no", "yes" if reps >= hi else "no"])
    frame = pd.DataFrame(out, columns=["measure", "target MCSE", "pilot fits", "needed",
                                       "binding (condition / method / term)",
                                       "needed at the upper end", f"{reps} meet it",
                                       f"{reps} meet the upper end"])
    need = int(rows["reps_needed"].max())
    lines = [f"The plan (micromacro plan: a pilot run, then n = V / MCSE^2 per condition, "
             f"method, term and target, with an interval from the pilot's own uncertainty; "
             f"micromacro_sim.design.measures) needs {need} replications per condition for "
             f"every target at the pilot's estimates and {int(rows['reps_hi'].max())} at the "
             f"upper end of every interval. The config's {reps} replications "
             + ("meet every target." if reps >= need else "do not meet every target.")]
    missing = [k for k in keys if k not in set(plan["scenario"])]
    if missing:
        lines.append(f"The plan has no row for {len(missing)} of the config's conditions "
                     f"({', '.join(missing)}).")
    return frame, lines


def _replications(ans: Answers) -> Section:
    """Replications per condition, the MCSEs they give, and their justification."""
    cfg = ans.config
    reps, ad = cfg.replications, cfg.adaptive
    title = "How many simulation repetitions will be used for each condition?"
    if ad is not None:
        targets = ", ".join(f"{m.label} {t:g}" for m, t in ad.targets)
        lines = [f"Adaptive: every condition starts with {ad.min} replications and adds blocks "
                 f"of {ad.block} until the MCSE of every target ({targets}) is at or below it "
                 f"for every method and term, at most {ad.max} (then reported as not met). "
                 "These targets justify the replications each condition runs."]
    else:
        lines = [f"{reps} replications per condition ({reps * len(cfg.scenarios)} in all, "
                 "each dataset fitted by every method)."]
    lines.append(f"At {reps} replications{' (the most)' if ad else ''} the MCSE of a coverage "
                 f"of .95 is sqrt(.95 x .05 / {reps}) = {math.sqrt(0.95 * 0.05 / reps):.4f}, "
                 "and that of any rate at most "
                 f"sqrt(.25 / {reps}) = {math.sqrt(0.25 / reps):.4f}; the MCSE of a bias is "
                 f"S / sqrt({reps}) for a method's empirical SE S.")
    frame = None
    if ans.plan is not None:
        frame, more = _plan_summary(ans.plan, cfg)
        lines += more
    rationale = cfg.meta.get("replications_rationale")
    if rationale:
        lines.append(f"Justification: {rationale}")
    elif ans.plan is None and ad is None:
        ans.open.append((PERFORMANCE, "Why this number of replications (a sample-size "
                         "calculation for target Monte Carlo SEs)?",
                         "--plan PLAN.csv (micromacro plan CONFIG --pilot N --target-mcse ... "
                         "--output PLAN.csv), or meta.replications_rationale"))
        lines.append("Their justification is not answered by the config (listed at the end).")
    return section(PERFORMANCE, title, lines, frame)


def _failures(ans: Answers) -> Section:
    """The admissibility policy and how the methods' failures are handled."""
    p = ans.config.policy
    gate = _GATES.get(p.gate, "see micromacro_sim.estimators.admissibility")
    if p.mode == "redraw":
        policy = (f"Admissibility policy redraw, gate {p.gate} ({gate}): a replication's "
                  "dataset is drawn again (the next attempt of its random stream) while the "
                  f"gate fails, at most {p.max_redraws} times; then the last dataset is kept "
                  "and its gate failure recorded. The study is thereby conditioned on datasets "
                  "the gate accepts; the redraws per replication are in the datasets table.")
    else:
        policy = (f"Admissibility policy flag, gate {p.gate} ({gate}): datasets are never "
                  "redrawn; the gate's verdict is recorded per replication.")
    methods = ("A method's failure never triggers a redraw: every fit ends ok, flagged (not "
               "converged or inadmissible; estimates may exist), not_applicable (the method "
               "cannot use the design) or error (its code raised), recorded per method and "
               "replication with its reason codes. The performance measures use the ok fits; "
               "the summaries and the report count the others per condition and method, by "
               "reason.")
    rule = ans.meta("failure_rule", PERFORMANCE, "At which share of failed fits is a condition "
                    "or method left out of the analysis?")
    return section(PERFORMANCE, "How will missing values due to non-convergence or other "
                   "reasons be handled?",
                   [policy, methods, f"Leaving out conditions: {rule}" if rule else
                    "When a condition is left out for failures is not answered by the config "
                    "(listed at the end)."])


# ---------------------------------------------------------------------------- other
def _versions() -> pd.DataFrame:
    """Versions of Python and the packages the computations use, where this runs."""
    rows = [("python", platform.python_version()), ("micromacro-sim", __version__)]
    for pkg in ("numpy", "scipy", "statsmodels", "pandas"):
        try:
            rows.append((pkg, metadata.version(pkg)))
        except metadata.PackageNotFoundError:
            rows.append((pkg, "not installed"))
    return pd.DataFrame(rows, columns=["package", "version"])


def _other(ans: Answers) -> list[Section]:
    """Software, environment, seeds, reproducibility, registration, anything else."""
    cfg = ans.config
    text = ans.meta("software", OTHER, "Which software will analyse and present the results?")
    software = [f"Data generation, fitting and summaries: micromacro-sim, engine {cfg.engine} "
                "(auto: the fast batch paths where a method has one for the design).",
                f"Analysis and presentation of the results: {text}" if text else
                "The software to analyse and present the results is not answered by the "
                "config (listed at the end).",
                "Versions where this protocol was written (each run's manifest records its "
                "own):"]
    budget = "default" if cfg.memory_budget is None else f"{cfg.memory_budget} bytes"
    env = [f"Execution options of the config, which never change results: n_jobs "
           f"{cfg.n_jobs}, backend {cfg.backend}, chunk_size {cfg.chunk_size or 'automatic'}, "
           f"memory_budget {budget}. Each run's manifest records its platform and CPU count."]
    ident = ", ".join(cfg.result_identity())
    repro = [f"Result hash {cfg.result_hash}, of the result identity ({ident}): a run folder "
             "holding another identity is never mixed into. The run's manifest.json records "
             "the config, this hash, the package versions and a ledger of every shard "
             "(SHA-256)."]
    return [
        section(OTHER, "Which statistical software/packages do you plan to use?", software,
                _versions()),
        ans.meta_section("environment", OTHER, "Which computational environment do you plan "
                         "to use?", env),
        seeds_section(cfg),
        ans.meta_section("reproducibility", OTHER, "Which other steps will you undertake to "
                         "make simulation results reproducible? (optional)", repro),
        ans.meta_section("registration", OTHER, "Where and when is this protocol registered?"),
        ans.meta_section("notes", OTHER, "Is there anything else you want to preregister? "
                         "(optional)"),
    ]


def _not_answered(ans: Answers) -> Section:
    """The questions recorded as open while the other sections were built."""
    frame = pd.DataFrame(ans.open, columns=["part", "question", "answer with"])
    lines = [f"{len(ans.open)} question(s) the config does not answer. Answer them in the "
             "config's meta: block (docs/protocol.md; meta changes no result and no hash) or "
             "beside this protocol." if ans.open else "None: the config answers every one."]
    return section(NOT_ANSWERED, "Questions the config leaves open", lines,
                   frame if ans.open else None)


# ---------------------------------------------------------------------------- assembly
def read_plan(path: str | Path) -> pd.DataFrame:
    """A ``micromacro plan --output`` CSV, checked (one-line ConfigError naming ``plan``)."""
    try:
        frame = pd.read_csv(path, dtype={"scenario": str, "label": str, "method": str,
                                         "term": str, "measure": str})
    except OSError as exc:
        raise ConfigError(f"plan: cannot read {str(path)!r} ({exc.strerror or exc})") from None
    except (ValueError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"plan: {str(path)!r} is not a CSV table ({first})") from None
    return check_plan(frame, str(path))


def check_plan(frame: pd.DataFrame, where: str = "plan") -> pd.DataFrame:
    """A plan table with the columns :data:`PLAN_NEEDS`, numbers where they are numbers."""
    missing = [c for c in PLAN_NEEDS if c not in frame.columns]
    if missing:
        raise ConfigError(f"plan: {where!r} has no column {missing[0]!r} (expected the CSV "
                          "that micromacro plan --output writes)")
    if frame.empty:
        raise ConfigError(f"plan: {where!r} has no rows")
    frame = frame.copy()
    for c in _NUMERIC:
        values = pd.to_numeric(frame[c], errors="coerce")
        if values.isna().any():
            bad = frame[c][values.isna()].iloc[0]
            raise ConfigError(f"plan.{c}: {where!r} holds {bad!r}, not a number")
        frame[c] = values
    frame["scenario"] = frame["scenario"].astype(str)
    return frame


def _inputs(config: Any, plan: Any) -> tuple[RunConfig, str, pd.DataFrame | None]:
    """The config (parsed from a path if needed), how to name it, and the plan table."""
    if isinstance(config, RunConfig):
        cfg, source = config, config.name
    else:
        from micromacro_sim.run.configure import load_config

        cfg, source = load_config(config), str(config)
    if plan is None:
        return cfg, source, None
    if isinstance(plan, (str, Path)):
        return cfg, source, read_plan(plan)
    table = getattr(plan, "table", plan)  # a PlanResult or its table
    if not isinstance(table, pd.DataFrame):
        raise ConfigError(f"plan: expected a plan CSV path or table, got {type(plan).__name__}")
    return cfg, source, check_plan(table)


def protocol(config: RunConfig | str | Path, plan: Any = None, fmt: str = "md") -> str:
    """The protocol of a study, answering the ADEMP-PreReg questions from its config.

    Parameters
    ----------
    config : RunConfig or path
        The study: a parsed config or its YAML file.
    plan : path, DataFrame or PlanResult, optional
        A ``micromacro plan --output`` table justifying the replications.
    fmt : {"md", "html"}
        Markdown (default) or one self-contained HTML page.

    Returns
    -------
    str

    Raises
    ------
    ConfigError
        A bad config, an unreadable plan or an unknown format (one line naming the field).
    """
    if fmt not in FORMATS:
        raise ConfigError(f"format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    cfg, source, table = _inputs(config, plan)
    ans = Answers(cfg, source, table)
    sections = [*design_sections(ans), *_measures(ans), _replications(ans), _failures(ans),
                ans.meta_section("interpretation", PERFORMANCE, "How do you plan on "
                                 "interpreting the performance measures? (optional)"),
                *_other(ans)]
    sections.append(_not_answered(ans))
    reps = (str(cfg.replications) if cfg.adaptive is None else
            f"{cfg.adaptive.min} to {cfg.adaptive.max} (adaptive)")
    facts = [("config", source), ("name", cfg.name), ("conditions", str(len(cfg.scenarios))),
             ("replications per condition", reps),
             ("methods", ", ".join(m.label for m in cfg.methods)), ("root seed", str(cfg.seed)),
             ("result hash", cfg.result_hash), ("package", f"micromacro-sim {__version__}")]
    title = f"Simulation-study protocol: {cfg.meta.get('title') or cfg.name}"
    intro = ("A protocol in the structure of ADEMP (aims, data-generating mechanisms, "
             "estimands, methods, performance measures; Morris, White and Crowther 2019) "
             "answering the questions of the ADEMP-PreReg template (Siepe et al. 2024) from "
             f"the config {source}. Questions the config cannot answer are listed under "
             f"{NOT_ANSWERED}, at the end; none is filled in.")
    if fmt == "html":
        return render_html(title, facts, "", sections, {}, intro)
    return render_markdown(title, facts, "", sections, {}, intro, Path("."))

