"""The design parts of a study protocol: general information, aims, data-generating
mechanisms, estimands, methods and seeds (:mod:`micromacro_sim.reporting.protocol` adds the
performance measures, replications, failures and software).

Every section answers a question of the ADEMP-PreReg template (Siepe et al. 2024) from
the config alone. A question the config cannot answer is recorded in
:attr:`Answers.open` and listed at the end of the protocol; nothing is filled in.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from micromacro_sim.design.config import META_KEYS, RunConfig
from micromacro_sim.design.estimands import estimands, true_value
from micromacro_sim.design.fields import FIELDS, GENERATOR_FIELDS
from micromacro_sim.design.scenario import Scenario
from micromacro_sim.estimators import build, method_class, method_estimands
from micromacro_sim.reporting.report_tables import Section
from micromacro_sim.run.adaptive import default_se_types

__all__ = ["GENERAL", "NOT_ANSWERED", "OTHER", "UNANSWERED", "Answers", "design_sections",
           "estimand_table", "method_table", "num", "section", "seeds_section", "value_text"]

GENERAL, AIMS, DGM = "General information", "Aims", "Data-generating mechanisms"
ESTIMANDS, METHODS, OTHER = "Estimands and targets", "Methods", "Other"
NOT_ANSWERED = "Not answered by the config"
#: What an open question's section says.
UNANSWERED = f"Not answered by the config (listed under {NOT_ANSWERED}, at the end)."


@dataclass
class Answers:
    """What a protocol is built from, and the questions it leaves open.

    Attributes
    ----------
    config : RunConfig
    source : str
        The config as named on the command line (or its name).
    plan : DataFrame or None
        A ``micromacro plan --output`` table.
    open : list of (part, question, how to answer it)
        Filled while the sections are built, in their order.
    """

    config: RunConfig
    source: str
    plan: pd.DataFrame | None = None
    open: list[tuple[str, str, str]] = field(default_factory=list)

    def meta(self, key: str, part: str, question: str, how: str = "") -> str | None:
        """The config's ``meta.<key>`` text; None (the question recorded as open) when
        absent."""
        text = self.config.meta.get(key)
        if text is None:
            self.open.append((part, question, how or f"meta.{key}: {META_KEYS[key]}"))
        return text

    def meta_section(self, key: str, part: str, title: str, lead: Sequence[str] = (),
                     how: str = "") -> Section:
        """A section answered by ``meta.<key>`` alone (after the ``lead`` lines)."""
        text = self.meta(key, part, title, how)
        return section(part, title, [*lead, text or UNANSWERED])


def section(part: str, title: str, lines: Iterable[str] = (), frame: pd.DataFrame | None = None,
            note: str = "") -> Section:
    """A protocol section: its paragraphs, then its table, under the ADEMP ``part``."""
    return Section(title=title, question=part, lines=tuple(lines), frame=frame, note=note,
                   inline=True)


def num(v: Any) -> str:
    """A number in six significant digits (text as it is, booleans as in YAML)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if not isinstance(v, (int, float)):
        return str(v)
    return f"{v:.6g}"


def value_text(v: Any) -> str:
    """A config value in YAML flow style (``[5, 30]``, ``{uniform: [5, 15]}``)."""
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {value_text(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(value_text(x) for x in v) + "]"
    if v is None:
        return "absent"
    return num(v)


# ---------------------------------------------------------------------------- general, aims
def _general(ans: Answers) -> list[Section]:
    """Title, contributors, description, earlier studies and the aims."""
    cfg = ans.config
    desc = cfg.meta.get("description") or cfg.description
    out = [ans.meta_section("title", GENERAL, "What is the title of the project?"),
           ans.meta_section("authors", GENERAL,
                            "Who are the current and future project contributors?")]
    if desc:
        out.append(section(GENERAL, "Provide a description of the project.", [desc]))
    else:
        out.append(ans.meta_section("description", GENERAL,
                                    "Provide a description of the project."))
    out.append(ans.meta_section(
        "previous_studies", GENERAL, "Did any of the contributors already conduct related "
        "simulation studies on this specific question?"))
    out.append(ans.meta_section("aims", AIMS, "What is the aim of the simulation study?"))
    return out


# ---------------------------------------------------------------------------- DGM
_BASE_MODEL = (
    "For groups g = 1..G (n_groups) with n_g members (group_size): (Z_g, xi_g) ~ N(0, Sigma) "
    "with Var(Z) = 1, corr(Z_j, xi) = r_zxi, corr(Z_j, Z_k) = r_zz and Var(xi) = var_xi; "
    "y_g = beta0 + Z_g' beta_z + xi_g' beta_xi + e_g with e_g ~ N(0, sigma2_eps); member i "
    "answers x_ig = loading_i xi_g + nu_ig with nu_ig ~ N(0, member_variance_i sigma2_nu). "
    "The data of a replication are y_g, Z_g and the members' x_ig (xi_g is kept for the "
    "oracle method true only).")


def _defaults(sc: Scenario) -> dict[str, bool]:
    """Field name -> whether ``sc`` leaves it at its default."""
    params = sc.to_params()
    return {f.name: (f.name not in params if f.default is None
                     else params.get(f.name) == f.default) for f in FIELDS}


def _generator_lines(ans: Answers) -> list[str]:
    """How the data are generated: the package's model and the factors used beyond it."""
    cfg = ans.config
    if cfg.generator is not None:
        return [f"Parametric, by a generator of the user's own: {cfg.generator} draws each "
                "replication's dataset from the scenario and the replication's random "
                "stream. Its model is not described by the package; the scenario fields "
                "below are the values it receives, and every method is scored against "
                "the fields' (latent) coefficients."]
    lines = ["Parametric: each replication draws a new dataset from the package's generator "
             "(the model of Croon and van Veldhoven 2007 at its defaults; docs/generator.md).",
             _BASE_MODEL]
    used = [f for f in GENERATOR_FIELDS
            if any(not _defaults(sc)[f.name] for sc in cfg.scenarios)]
    for f in used:
        lines.append(f"Beyond the base model, {f.name}: {f.doc} "
                     f"({', '.join(_levels(cfg, f.name))}).")
    if not used:
        lines.append("Every further generator factor (non-normal distributions, ordinal "
                     "members, loadings, member variances, missing members, heteroscedastic "
                     "errors, several constructs) is at its default: the base model above.")
    return lines


def _levels(cfg: RunConfig, name: str) -> list[str]:
    """A parameter's values over the conditions, in grid order, in their config form."""
    return list(dict.fromkeys(value_text(sc.to_params().get(name)) for sc in cfg.scenarios))


def _factor_table(cfg: RunConfig) -> pd.DataFrame:
    """One row per grid factor: its levels and what it is."""
    docs = {f.name: f.doc for f in FIELDS}
    rows = []
    for k in cfg.factors:
        levels = _levels(cfg, k)
        rows.append((k, str(len(levels)), ", ".join(levels), docs.get(k, "")))
    return pd.DataFrame(rows, columns=["factor", "levels", "values", "description"])


def _settings(cfg: RunConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``fixed:`` values, and the parameters left at the package's defaults."""
    fixed = cfg.raw.get("fixed") or {}
    docs = {f.name: f.doc for f in FIELDS}
    given = pd.DataFrame([(k, ", ".join(_levels(cfg, k)), docs.get(k, "")) for k in fixed],
                         columns=["parameter", "value", "description"])
    named = set(fixed) | set(cfg.factors)
    pairs = {f.name: f.derives.target for f in FIELDS if f.derives is not None}
    named |= {b for a, b in pairs.items() if a in named} | {a for a, b in pairs.items()
                                                             if b in named}
    rest = [(f.name, value_text(f.default), f.doc) for f in FIELDS if f.name not in named]
    return given, pd.DataFrame(rest, columns=["parameter", "default", "description"])


def _scenario_table(cfg: RunConfig) -> pd.DataFrame:
    """One row per condition: key, label, factor values, ICC and reliability."""
    rows = cfg.scenario_rows()
    cols = ["scenario", "label", *cfg.factors, "sigma2_nu", "icc", "reliability"]
    cols = list(dict.fromkeys(c for c in cols if c in rows[0]))
    return pd.DataFrame([[num(r[c]) for c in cols] for r in rows], columns=cols)


def _dgm(ans: Answers) -> list[Section]:
    """The generator, factors, fixed and default values, crossing and conditions."""
    cfg = ans.config
    factors = _factor_table(cfg)
    given, rest = _settings(cfg)
    n = len(cfg.scenarios)
    product = " x ".join(f"{len(_levels(cfg, k))} ({k})" for k in cfg.factors)
    out = [section(DGM, "How will the parameters for the data-generating mechanism (DGM) be "
                   "specified?", _generator_lines(ans))]
    out.append(section(
        DGM, "What will be the different factors of the data-generating mechanism?",
        [f"{len(cfg.factors)} factor(s), the lists of the config's grid."] if cfg.factors else
        ["None: the config's grid is empty, so there is one condition."],
        factors if cfg.factors else None))
    rationale = ans.meta("dgm_rationale", DGM, "Why these parameter values and factor levels?")
    out.append(section(
        DGM, "If possible, provide specific factor values for the DGM as well as additional "
        "simulation settings.",
        [f"Why these values: {rationale}" if rationale else "The justification of these "
         "values is not answered by the config (listed at the end).",
         "The config's fixed values, shared by every condition:"], given))
    out.append(section(DGM, "Parameters at the package's defaults",
                       ["Every scenario parameter the config leaves out takes its default "
                        "(micromacro_sim/design/fields.py):"], rest))
    out.append(section(
        DGM, "If there is more than one factor: How will the factor levels be combined and "
        "how many simulation conditions will this create?",
        ["Fully factorial: every combination of the grid's levels is one condition, with "
         "the fixed values added to each. The config format has no other crossing (no "
         "partial designs, exclusions or factors varied together); two cells that are the "
         "same scenario are refused.",
         f"{product} = {n} condition(s)." if cfg.factors else f"{n} condition."]))
    out.append(section(DGM, "Conditions", ["Each condition's stable key (see the seeds "
                                           "below), label and derived values:"],
                       _scenario_table(cfg)))
    return out


# ---------------------------------------------------------------------------- estimands
def estimand_table(config: RunConfig, sc: Scenario) -> pd.DataFrame:
    """The value every method of ``config`` is scored against in scenario ``sc``: one row
    per method label, with its scale and origin, one column per term (floats)."""
    scored = method_estimands(config.methods)
    own = config.generator is not None
    rows = []
    for m in config.methods:
        scale, origin = scored[m.label]
        rows.append({"method": m.label, "scale": scale, "origin": origin,
                     **{t: true_value(sc, t, (scale, origin), own_generator=own)
                        for t in sc.terms}})
    return pd.DataFrame(rows)


def _estimands(ans: Answers) -> list[Section]:
    """What the methods estimate, and one table of values per condition."""
    cfg = ans.config
    terms = list(dict.fromkeys(t for sc in cfg.scenarios for t in sc.terms))
    lines = [f"The coefficients of the group-level regression of y on (1, Z, xi): terms "
             f"{', '.join(terms)}. Each method is scored against its own estimand "
             "(docs/estimands.md): its slopes on the scale it declares (latent: per unit of "
             "xi; x: per unit of the group's true mean of x; marker: per unit of the first "
             "member position's true score) and its intercept at the origin it declares "
             "(x_zero, latent_mean or score_mean). The values come from "
             "micromacro_sim.design.estimands (closed forms for continuous members, "
             "quadrature for ordinal ones)."]
    if cfg.generator is not None:
        lines.append("With a generator of the user's own every method is scored against the "
                     "scenario fields' coefficients.")
    priority = ans.meta("estimand_priority", ESTIMANDS,
                        "Which estimands or targets are primary, and which secondary?")
    lines.append(f"Primary and secondary targets: {priority}" if priority else
                 "Which targets are primary is not answered by the config (listed at the end).")
    out = [section(ESTIMANDS, "What will be the estimands and/or targets of the simulation "
                   "study?", lines)]
    for row in cfg.scenario_rows():
        sc = next(s for s in cfg.scenarios if s.key == row["scenario"])
        table = estimand_table(cfg, sc)
        out.append(section(ESTIMANDS, f"Estimands in {row['label']}",
                           [f"Condition {sc.key}; one row per method, one column per term "
                            f"(scales x and marker: {estimands(sc).source})."],
                           pd.DataFrame({c: table[c].map(num) for c in table.columns})))
    return out


# ---------------------------------------------------------------------------- methods
def _options_text(spec: Any) -> str:
    """Every option of a method spec with its value, the defaults marked."""
    params = build(spec).params
    given = dict(spec.options)
    parts = [f"{k} = {value_text(v)}" + ("" if k in given else " (default)")
             for k, v in params.items()]
    return "; ".join(parts) or "none"


def method_table(config: RunConfig) -> pd.DataFrame:
    """One row per method of ``config``: label, id, description, options (defaults marked),
    one or two steps, default SE type, scale and origin of its estimand."""
    se = default_se_types(config.methods)
    scored = method_estimands(config.methods)
    rows = []
    for spec in config.methods:
        cls = method_class(spec.method)
        rows.append([spec.label, spec.method, cls.description, _options_text(spec),
                     "two-step" if cls.two_step else "one-step", se[spec.label],
                     *scored[spec.label]])
    return pd.DataFrame(rows, columns=["label", "method", "description", "options", "steps",
                                       "default SE", "scale", "origin"])


def _methods(ans: Answers) -> list[Section]:
    """The methods table and the quantities extracted from every fit."""
    from micromacro_sim.core.results import SE_COLUMNS, SE_TYPES

    cfg = ans.config
    rationale = ans.meta("method_rationale", METHODS, "Why these methods and options?")
    lines = [f"{len(cfg.methods)} method(s), with every option (those the config does not "
             "give at the package's default), the SE type of their bare SE-based measures, "
             "and the scale and origin of their estimand:",
             f"Why these methods: {rationale}" if rationale else
             "The reasons for these methods and options are not answered by the config "
             "(listed at the end)."]
    extracted = [
        "From every fit, per replication and term: the estimate, a standard error per SE type "
        f"({', '.join(SE_TYPES)}: micromacro_sim.core.results.SE_TYPES; columns "
        f"{', '.join(SE_COLUMNS[t] for t in SE_TYPES)}), the residual degrees of freedom, "
        "converged and admissible flags, a status (ok, flagged, not_applicable, error) with "
        "its reason codes (docs/status.md), and a method's own interval limits where it "
        "reports them.",
        "classical holds a one-step method's model-based SE and a two-step method's OLS SE; "
        "any other type is recorded where the method computes it and is missing elsewhere. "
        "Tests and intervals are two-sided at alpha = .05 (summaries: --alpha), with t "
        "critical values on the residual df where a fit has them, normal ones otherwise."]
    return [section(METHODS, "How many and which methods will be included and which "
                    "quantities will be extracted?", lines, method_table(cfg)),
            section(METHODS, "Quantities extracted from each fit", extracted)]


# ---------------------------------------------------------------------------- seeds
def seeds_section(cfg: RunConfig) -> Section:
    """How every replication's random stream derives from the root seed, with the keys."""
    lines = [f"Root seed {cfg.seed}. Replication r of a condition draws from numpy's PCG64 "
             f"seeded by SeedSequence({cfg.seed}, spawn_key=(*key_words, r, attempt)), "
             "attempt 0 for the first draw and 1, 2, ... for the admissibility policy's "
             "redraws (micromacro_sim.generate.seeding). key_words are the first 16 bytes of "
             "the SHA-256 of the condition's parameters that differ from their defaults "
             "(JSON, sorted keys), as four little-endian 32-bit words; the condition's key is "
             "the first 16 hex digits of that hash. A replication's numbers thus depend on "
             "neither n_jobs, chunking, order, resuming nor the other conditions, and any "
             "replication can be drawn again alone."]
    frame = pd.DataFrame([(r["label"], sc.key, ", ".join(map(str, sc.key_words)))
                          for r, sc in zip(cfg.scenario_rows(), cfg.scenarios, strict=True)],
                         columns=["condition", "key", "key_words"])
    return section(OTHER, "How are the random streams seeded?", lines, frame)


def design_sections(ans: Answers) -> list[Section]:
    """General information, aims, data-generating mechanisms, estimands and methods."""
    return [*_general(ans), *_dgm(ans), *_estimands(ans), *_methods(ans)]
