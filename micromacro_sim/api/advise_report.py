"""The report of ``advise``: ``advice.md`` (Markdown) and its compact form for the terminal.

Everything here is a pure function of the advice's parts, and none of it depends on the
machine, the clock or the paths: the same data, options and seed give the same bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from micromacro_sim.api.advise_design import Cell, Roster, grid_levels
from micromacro_sim.api.advise_population import MAPPING, Population
from micromacro_sim.api.advise_rank import RULE, Ranking
from micromacro_sim.api.fitresult import MethodResult

__all__ = ["ReportParts", "compact_text", "markdown"]

WHY_POPULATION = (
    "The population model is the joint two-level ML model (`sem_2level`): the between part "
    "xi_g of x is a latent variable, regressed jointly with y on Z (y_g = b0 + b_xi xi_g + "
    "b_Z'Z_g + e_g, x_ig = xi_g + nu_ig). It is the maximum-likelihood estimator of exactly "
    "the model the generator draws from, so its fit is the population the simulation "
    "reproduces."
)
SCALES = (
    "Slopes are per SD of xi and of each Z (the design's standardised units). Each method "
    "is scored against its own estimand (docs/estimands.md): `true` on the latent scale, "
    "`factor_score` on the marker scale (its first loading is 1), the others on the x "
    "scale; with continuous parallel members, as in this design, the three coincide."
)


@dataclass(frozen=True)
class ReportParts:
    """What the report shows.

    Attributes
    ----------
    columns : dict
        Role (data, group, member, x, z, y) -> name; ``data`` is the file's name or "".
    n_groups, n_persons : int
    population : Population
    roster : Roster
    cells : list of Cell
    seed, replications : int
    compared : list of str
    excluded : dict of str -> str
        Method -> why it was not compared.
    ranking : Ranking
    fit : MethodResult
    command : str
        The ``micromacro fit`` command of the fit.
    notes : tuple of str
        What reading the data dropped or noticed.
    """

    columns: dict[str, str]
    n_groups: int
    n_persons: int
    population: Population
    roster: Roster
    cells: list[Cell]
    seed: int
    replications: int
    compared: list[str]
    excluded: dict[str, str]
    ranking: Ranking
    fit: MethodResult
    command: str
    notes: tuple[str, ...] = ()


def _md(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _num(v: float, digits: int = 4) -> str:
    return "--" if not np.isfinite(v) else f"{v:.{digits}g}"


def _fix(v: float) -> str:
    return "--" if not np.isfinite(v) else f"{v:.3f}"


def _pm(v: float, se: float, digits: int = 3) -> str:
    if not np.isfinite(v):
        return "--"
    return f"{v:.{digits}f}" + (f" ({se:.{digits}f})" if np.isfinite(se) else "")


def _population(p: ReportParts) -> list[str]:
    pop, cols = p.population, p.columns
    out = ["## 1. Population model", "", WHY_POPULATION, ""]
    out += [f"- note: {n}" for n in pop.notes] + ([""] if pop.notes else [])
    raw = [("b0 (intercept)", "raw_b0"), (f"b_xi ({cols['x']})", "raw_b_xi"),
           *[(f"b_z ({z})", f"raw_b_z:{z}") for z in pop.z_names],
           (f"E[xi], mean of {cols['x']}", "mean_x"),
           ("Var(xi), between variance of x", "var_xi_x"),
           ("sigma2_w, within variance of x", "sigma2_w"),
           *[(f"mean of {z}", f"mean_z:{z}") for z in pop.z_names],
           *[(f"SD of {z}", f"sd_z:{z}") for z in pop.z_names]]
    out += [f"The fit ({pop.source}) in the data's units:", "",
            _md(["quantity", "estimate", "SE"],
                [[n, _num(pop[k].value), _num(pop[k].se, 3)] for n, k in raw]), ""]
    out += ["Mapped onto the generator's parametrisation (x and Z rescaled so that its "
            "conventions hold: E[Z] = 0, Var(Z) = 1, E[xi] = 0, Var(xi) = var_xi = 1; y in "
            "its units; SEs by the delta method):", ""]
    rows = []
    formulas = dict(MAPPING)
    for v in pop.values:
        if v.key.startswith(("raw_", "mean_", "sd_", "var_xi_x", "sigma2_w")):
            continue
        field = v.key.split(":")[0]
        rows.append([f"`{v.key.replace(':', ' ')}`", _num(v.value), _num(v.se, 3),
                     f"[{_num(v.lower)}, {_num(v.upper)}]", formulas.get(field, "")])
    rows.append(["`var_xi`", "1", "--", "--", formulas["var_xi"]])
    out += [_md(["generator field", "value", "SE", "95% interval", "mapping"], rows), ""]
    return out


def _design(p: ReportParts) -> list[str]:
    sizes = np.asarray(p.roster.sizes)
    levels = grid_levels(p.population)
    out = ["## 2. Design", "",
           f"- `n_groups`: {p.n_groups} (the data's groups); `group_size`: the list of the "
           f"{len(sizes)} groups' sizes ({sizes.min()} to {sizes.max()}, mean "
           f"{sizes.mean():.2f}), recycled over the groups, so the design has the data's "
           "size distribution exactly",
           f"- absent members: {p.roster.rule}",
           f"- grid: ICC {levels['icc']} (fit and the ends of its 95% interval, within "
           f"[0.01, 0.99]) x b_xi {levels['beta_xi']} (0 for Type I error, the fit and the "
           "ends of its interval; an end beyond 0 is truncated to 0): "
           f"{len(p.cells)} cells ({sum(c.corner for c in p.cells)} corners: an ICC end with "
           "a b_xi end, simulated because a grid is a full product; `micromacro summarize run` "
           "shows them; not judged); values rounded to 4 significant digits",
           f"- {p.replications} replications per cell, root seed {p.seed}; config "
           "`design.yaml` (what `micromacro run` reads), run folder `run/`",
           f"- methods compared: {', '.join(p.compared)}; `true` (the oracle, which sees xi) "
           "runs beside them as a reference and is never recommended"]
    out += [f"- not compared: `{m}`: {why}" for m, why in p.excluded.items()]
    rows = [[c.name, _num(c.icc), _num(c.beta_xi), f"{c.reliability:.3f}", c.role]
            for c in p.cells]
    out += ["", _md(["cell", "ICC", "b_xi", "reliability of a group mean", "role"], rows), ""]
    return out


def _ranking_rows(p: ReportParts) -> list[list[str]]:
    rk, zs = p.ranking, p.population.z_names
    rows = []
    for r in rk.table.to_dict("records"):
        m = str(r["method"])
        verdict = ("reference" if m not in rk.verdicts else
                   "eligible" if rk.verdicts[m].eligible else "not eligible")
        pct = "--" if not np.isfinite(r["pct_bias"]) else f"{r['pct_bias']:+.1f}%"
        rows.append([f"`{m}`", str(r["scale"]), _pm(r["bias"], r["bias_mcse"]), pct,
                     _pm(r["rmse"], r["rmse_mcse"]), _pm(r["cover"], r["cover_mcse"]),
                     _fix(r["cover_min"]), _pm(r["power"], r["power_mcse"]),
                     _pm(r["type1"], r["type1_mcse"]), _fix(r["type1_max"]),
                     *[f"{_pm(r[f'bias_{z}'], r[f'bias_{z}_mcse'])}; {_fix(r[f'cover_min_{z}'])}"
                       for z in zs],
                     f"{100 * r['proper_min']:.0f}%", verdict])
    return rows


def _ranking(p: ReportParts) -> list[str]:
    zs = p.population.z_names
    head = ["method", "scale", "bias", "%bias", "RMSE", "cover", "min cover", "power",
            "Type I", "max Type I", *[f"{z}: bias; min cover" for z in zs], "min proper",
            "verdict"]
    out = ["## 3. Ranking", "", RULE, "", SCALES, "",
           "xi slope at the fitted cell (Monte Carlo SEs in parentheses; Type I error at the "
           "fitted ICC with b_xi = 0); `min cover` and `max Type I` over the judged cells; "
           "the Z slopes' bias at the fitted cell and lowest coverage (judged cells):", "",
           _md(head, _ranking_rows(p)), ""]
    for m, v in p.ranking.verdicts.items():
        text = "; ".join(v.reasons + v.caveats) or "no problem found"
        out.append(f"- `{m}`: {'eligible' if v.eligible else 'not eligible'}: {text}")
    return out + [""]


def _recommendation(p: ReportParts) -> list[str]:
    rk = p.ranking
    if rk.recommended is not None:
        head = f"**Use `{rk.recommended}`** for these data."
    else:
        head = f"**No method is recommended as valid**; `{rk.least_bad}` is the least bad."
    return ["## 4. Recommendation", "", head, "", *[f"- {r}" for r in rk.reasons], ""]


def _fit_table(fit: MethodResult) -> pd.DataFrame:
    t = fit.table()[["estimate", "se", "lower", "upper", "p"]]
    return t


def _fit(p: ReportParts) -> list[str]:
    f = p.fit
    se = "model" if f.cov_type == "classical" else f.cov_type
    t = _fit_table(f)
    rows = [[str(term), *[_num(float(v), 4) for v in row]] for term, row in t.iterrows()]
    status = "ok" if f.status.value == "ok" else f"{f.status.value} [{f.reason_code}]"
    return ["## 5. The fit of your data", "",
            f"`{f.method}` (SE: {se}, its default; status {status}), in the data's units:", "",
            _md(["term", "estimate", "SE", "lower 95%", "upper 95%", "p"], rows), "",
            "The same fit from the command line:", "", "```", p.command, "```", ""]


def markdown(p: ReportParts) -> str:
    """``advice.md``: population model and mapping, design, ranking, recommendation, fit."""
    cols = p.columns
    source = f" in `{cols['data']}`" if cols.get("data") else ""
    head = [f"# Method advice: {cols['x']} -> {cols['y']}", "",
            f"{p.n_groups} groups ({cols['group']}), {p.n_persons} members{source}; x = "
            f"`{cols['x']}` (members), Z = {', '.join(f'`{z}`' for z in p.population.z_names)}, "
            f"y = `{cols['y']}`" + (f", members identified by `{cols['member']}`"
                                    if cols.get("member") else "") + ".", "",
            *[f"- note: {n}" for n in p.notes], *([""] if p.notes else [])]
    parts = head + _population(p) + _design(p) + _ranking(p) + _recommendation(p) + _fit(p)
    return "\n".join(parts).rstrip("\n") + "\n"


def compact_text(p: ReportParts) -> str:
    """The terminal form: population values, grid, ranking, recommendation and fit."""
    pop = p.population
    vals = ", ".join(f"{v.key.replace(':', ' ')} {v.value:.3g}" for v in pop.values
                     if not v.key.startswith(("raw_", "mean_", "sd_", "var_xi_x", "sigma2_w")))
    levels = grid_levels(pop)
    lines = [f"population ({pop.source}, x and Z standardised): {vals}",
             f"design: {p.n_groups} groups, sizes {min(p.roster.sizes)}-{max(p.roster.sizes)}; "
             f"ICC {levels['icc']} x b_xi {levels['beta_xi']} = {len(p.cells)} cells x "
             f"{p.replications} replications", ""]
    t = p.ranking.table
    show = pd.DataFrame({
        "method": t["method"], "bias": t["bias"].map(lambda v: f"{v:+.3f}"),
        "rmse": t["rmse"].map(lambda v: f"{v:.3f}"), "cover": t["cover"].map(lambda v: f"{v:.3f}"),
        "min_cover": t["cover_min"].map(lambda v: f"{v:.3f}"),
        "power": t["power"].map(lambda v: f"{v:.3f}"),
        "max_typeI": t["type1_max"].map(lambda v: f"{v:.3f}"),
        "verdict": [("reference" if m not in p.ranking.verdicts else "eligible"
                     if p.ranking.verdicts[m].eligible else "not eligible") for m in t["method"]],
    })
    lines += ["xi slope (per SD of xi) at the fitted cell; min_cover / max_typeI over the "
              "judged cells (all but the corners):",
              show.to_string(index=False), ""]
    for m, v in p.ranking.verdicts.items():
        if not v.eligible:
            lines.append(f"  {m}: not eligible: {'; '.join(v.reasons + v.caveats)}")
    lines += ["", *_recommendation(p)[2:3], *[f"  - {r}" for r in p.ranking.reasons], ""]
    f = p.fit
    se = "model" if f.cov_type == "classical" else f.cov_type
    lines += [f"{f.method} on your data (SE {se}):",
              _fit_table(f).to_string(float_format=lambda v: f"{v:.4f}"), "", p.command]
    return "\n".join(lines).replace("**", "") + "\n"
