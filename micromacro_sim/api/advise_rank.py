"""The ranking of ``advise``: which methods hold their nominal level on the design, and which
of those is the most efficient (pure functions of the summary's performance table).

The rule (:data:`RULE`, stated in every report):

The cells judged are the design's but its corners (:class:`~.advise_design.Cell`): ICC at
its fit and interval ends with b_xi at 0 and at its fit, and b_xi's interval ends at the
fitted ICC.

1. Proper fits: converged and admissible in at least 90% of the replications of every cell.
2. Coverage: in every cell, the coverage of the 95% interval (each method's default SE
   type) of the xi slope and of every Z slope is at least .95 - 2.5 MCSE0, with
   MCSE0 = sqrt(.95 x .05 / K) the Monte Carlo SE of a nominal coverage over the cell's K
   replications with an estimate (.95 - .054 at K = 100, .95 - .024 at K = 500).
3. Type I error: in every cell with b_xi = 0, the rejection rate of the xi slope at
   alpha = .05 is at most .05 + 2.5 sqrt(.05 x .95 / K).

Among the methods that pass all three, the smallest RMSE of the xi slope at the fitted cell
wins. Methods whose RMSE is within 2 combined MCSEs (sqrt(m1^2 + m2^2)) of the smallest are
tied: the report names them, with their power at the fitted cell, and says the choice is not
clear-cut (the MCSEs ignore that the methods share their datasets, so real differences are
called ties rather than the reverse). When no method passes, none is recommended as valid:
the report names the one whose lowest xi coverage is highest, as the least bad, and says so.
Bias is reported (at the fitted cell, flagged beyond 10% and 2.5 MCSE) but is not a criterion
of its own: a bias that matters shows in the coverage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from micromacro_sim.api.advise_design import Cell

__all__ = ["MIN_PROPER", "RULE", "Ranking", "Verdict", "rank_methods"]

#: Least share of proper fits in every cell.
MIN_PROPER = 0.90
#: Multiple of the nominal MCSE that coverage and Type I error may miss their level by.
TOLERANCE = 2.5
#: Nominal coverage and alpha.
LEVEL, ALPHA = 0.95, 0.05

RULE = (
    "The cells judged are every cell but the corners (an ICC interval end with a b_xi "
    "interval end: jointly far less plausible than either, so reported, not judged). "
    "A method is eligible when (1) it gives a proper fit (converged, admissible) in at least "
    "90% of the replications of every cell; (2) in every cell the coverage of its 95% "
    "interval (its default SE type) for the xi slope and for every Z slope is at least "
    ".95 - 2.5 MCSE0, MCSE0 = sqrt(.95 x .05 / K) with K the cell's replications with an "
    "estimate; (3) in every cell with b_xi = 0 its rejection rate for xi is at most "
    ".05 + 2.5 sqrt(.05 x .95 / K). Among eligible methods the smallest RMSE of the xi "
    "slope at the fitted cell wins; methods within 2 combined MCSEs of it are tied (named, "
    "with their power: the choice is then not clear-cut). With no eligible method, the "
    "one whose lowest xi coverage is highest is named as the least bad, not as valid."
)


@dataclass(frozen=True)
class Verdict:
    """One method's standing: eligible or not, and why."""

    method: str
    eligible: bool
    reasons: tuple[str, ...]
    caveats: tuple[str, ...] = ()


@dataclass(frozen=True)
class Ranking:
    """The methods ranked on the design, and the recommendation.

    Attributes
    ----------
    table : DataFrame
        One row per method in rank order (eligible first, the reference ``true`` last):
        the xi slope's bias, percent bias, RMSE, coverage, power and Type I error at the
        fitted cell with MCSEs, the lowest coverage and highest Type I error over the
        cells, each Z slope's bias and lowest coverage, and ``eligible``.
    verdicts : dict of str -> Verdict
    recommended : str or None
        The eligible method with the smallest RMSE (None when no method is eligible).
    least_bad : str or None
        With no eligible method: the one whose lowest xi coverage is highest.
    tied : tuple of str
        Eligible methods within Monte Carlo error of the recommended one on RMSE (RMSE
        order).
    reasons : tuple of str
        Why the recommended (or least bad) method is named.
    """

    table: pd.DataFrame
    verdicts: dict[str, Verdict]
    recommended: str | None
    least_bad: str | None
    tied: tuple[str, ...]
    reasons: tuple[str, ...]

    @property
    def choice(self) -> str | None:
        """The method whose fit ends the advice (the recommended or the least bad)."""
        return self.recommended or self.least_bad

    @property
    def clear(self) -> bool:
        """A valid recommendation without ties."""
        return self.recommended is not None and not self.tied


def _bound_cover(k: float) -> float:
    return LEVEL - TOLERANCE * np.sqrt(LEVEL * (1 - LEVEL) / max(k, 1.0))


def _bound_reject(k: float) -> float:
    return ALPHA + TOLERANCE * np.sqrt(ALPHA * (1 - ALPHA) / max(k, 1.0))


def _pm(v: float, se: float, digits: int = 3) -> str:
    return f"{v:.{digits}f} ({se:.{digits}f})"


def _term_rows(perf: pd.DataFrame, method: str, term: str) -> pd.DataFrame:
    rows = perf[(perf["method"] == method) & (perf["term"] == term)]
    return rows.set_index("scenario")


def _get(rows: pd.DataFrame, key: str, col: str) -> float:
    if key not in rows.index or col not in rows.columns:
        return float("nan")
    return float(rows.at[key, col])


def _failures(rows: pd.DataFrame, cells: Sequence[Cell], what: str) -> list[str]:
    """Cells where ``rows`` miss the coverage bound (worst first)."""
    bad = []
    for c in cells:
        cover, k = _get(rows, c.key, "cover"), _get(rows, c.key, "k")
        if not (np.isfinite(cover) and cover >= _bound_cover(k)):
            bad.append((cover if np.isfinite(cover) else -1.0, c, k))
    bad.sort(key=lambda t: t[0])
    if not bad:
        return []
    cover, c, _ = bad[0]
    low = "no standard errors" if cover < 0 else (
        f"lowest {_pm(cover, _get(rows, c.key, 'cover_mcse'))} at {c.name}")
    return [f"{what} coverage below .95 in {len(bad)} of {len(cells)} cells ({low})"]


def _verdict(perf: pd.DataFrame, method: str, cells: Sequence[Cell], zs: dict[str, str],
             fitted: Cell) -> Verdict:
    """Eligibility of one method under :data:`RULE`."""
    xi = _term_rows(perf, method, "xi")
    reasons: list[str] = []
    proper = [(_get(xi, c.key, "k") / max(_get(xi, c.key, "n_reps"), 1.0), c) for c in cells]
    proper = [(p if np.isfinite(p) else 0.0, c) for p, c in proper]
    worst = min(proper, key=lambda t: t[0])
    if worst[0] < MIN_PROPER:
        reasons.append(f"proper fits in only {100 * worst[0]:.0f}% of the replications at "
                       f"{worst[1].name}")
    reasons += _failures(xi, cells, "xi slope")
    for term, name in zs.items():
        reasons += _failures(_term_rows(perf, method, term), cells, f"{name} slope")
    nulls = [c for c in cells if c.null]
    high = [(_get(xi, c.key, "reject"), c) for c in nulls
            if not _get(xi, c.key, "reject") <= _bound_reject(_get(xi, c.key, "k"))]
    if high:
        r, c = max(high, key=lambda t: t[0] if np.isfinite(t[0]) else 2.0)
        reasons.append(f"Type I error above .05 in {len(high)} of {len(nulls)} cells with "
                       f"b_xi = 0 (highest {_pm(r, _get(xi, c.key, 'reject_mcse'))} at {c.name})")
    caveats = []
    bias, mcse, pct = (_get(xi, fitted.key, k) for k in ("bias", "bias_mcse", "pct_bias"))
    if np.isfinite(pct) and abs(pct) > 10 and abs(bias) > TOLERANCE * mcse:
        caveats.append(f"xi slope biased at the fitted cell: {pct:+.0f}% "
                       f"(bias {_pm(bias, mcse)})")
    return Verdict(method, not reasons, tuple(reasons), tuple(caveats))


def _row(perf: pd.DataFrame, method: str, cells: Sequence[Cell], zs: dict[str, str],
         fitted: Cell, null_fit: Cell | None) -> dict[str, object]:
    xi = _term_rows(perf, method, "xi")
    F = fitted.key
    covers = [_get(xi, c.key, "cover") for c in cells]
    type1 = [_get(xi, c.key, "reject") for c in cells if c.null]
    row: dict[str, object] = {
        "method": method,
        "scale": str(xi["scale"].iloc[0]) if len(xi) and "scale" in xi else "",
        "proper_min": min(_get(xi, c.key, "k") / max(_get(xi, c.key, "n_reps"), 1.0)
                          for c in cells),
    }
    for col in ("bias", "bias_mcse", "pct_bias", "rmse", "rmse_mcse", "cover", "cover_mcse"):
        row[col] = _get(xi, F, col)
    row["power"] = float("nan") if fitted.null else _get(xi, F, "reject")
    row["power_mcse"] = float("nan") if fitted.null else _get(xi, F, "reject_mcse")
    row["type1"] = _get(xi, null_fit.key, "reject") if null_fit else float("nan")
    row["type1_mcse"] = _get(xi, null_fit.key, "reject_mcse") if null_fit else float("nan")
    row["cover_min"] = float(np.nanmin(covers)) if np.any(np.isfinite(covers)) else np.nan
    row["type1_max"] = float(np.nanmax(type1)) if np.any(np.isfinite(type1)) else np.nan
    for term, name in zs.items():
        z = _term_rows(perf, method, term)
        zc = [_get(z, c.key, "cover") for c in cells]
        row[f"bias_{name}"] = _get(z, F, "bias")
        row[f"bias_{name}_mcse"] = _get(z, F, "bias_mcse")
        row[f"cover_min_{name}"] = float(np.nanmin(zc)) if np.any(np.isfinite(zc)) else np.nan
    return row


def _choose(table: pd.DataFrame, eligible: list[str]) -> tuple[str, tuple[str, ...]]:
    """The eligible method with the smallest RMSE and those tied with it (within 2
    combined MCSEs), in RMSE order."""
    t = table.set_index("method").loc[eligible]
    best = t["rmse"].idxmin()
    margin = 2 * np.sqrt(t["rmse_mcse"] ** 2 + t.at[best, "rmse_mcse"] ** 2)
    tied = t[(t["rmse"] - t.at[best, "rmse"]) <= margin.fillna(0.0)]
    order = sorted(tied.index, key=lambda m: (tied.at[m, "rmse"], m))
    return best, tuple(m for m in order if m != best)


def _why(table: pd.DataFrame, first: str, tied: tuple[str, ...], n_ok: int,
         cells: Sequence[Cell]) -> tuple[str, ...]:
    t = table.set_index("method")
    r = t.loc[first]

    def power(m: str) -> str:
        p = t.at[m, "power"]
        return "" if np.isnan(p) else f"; power {_pm(p, t.at[m, 'power_mcse'])}"

    out = [f"holds its nominal level in all {len(cells)} judged cells within Monte Carlo error "
           f"(lowest xi coverage {r['cover_min']:.3f}; highest Type I error "
           f"{r['type1_max']:.3f} in the cells with b_xi = 0)",
           f"smallest RMSE of the xi slope at the fitted cell among the {n_ok} eligible "
           f"method(s): {_pm(r['rmse'], r['rmse_mcse'], 4)}{power(first)}"]
    if tied:
        others = "; ".join(f"{m} (RMSE {_pm(t.at[m, 'rmse'], t.at[m, 'rmse_mcse'], 4)}"
                           f"{power(m)})" for m in tied)
        out.append(f"not clear-cut: within Monte Carlo error of it on RMSE (2 combined MCSEs), "
                   f"and as defensible: {others}")
    return tuple(out)


def rank_methods(perf: pd.DataFrame, cells: Sequence[Cell], methods: Sequence[str],
                 zs: dict[str, str], reference: str | None = "true") -> Ranking:
    """Rank ``methods`` on the design under :data:`RULE`.

    Parameters
    ----------
    perf : DataFrame
        The summary's performance table of the design's cells (one row per scenario x
        method x term, bare measures of each method's default SE type).
    cells : sequence of Cell
        The design's cells; exactly one is the fitted cell. Corner cells are left out.
    methods : sequence of str
        Method labels to rank (the reference left out).
    zs : dict
        Simulation term of each Z -> the user's column name.
    reference : str, optional
        A method shown last, not ranked (the oracle).

    Returns
    -------
    Ranking
    """
    cells = [c for c in cells if not c.corner]  # joint extremes: reported, not judged
    fitted = next(c for c in cells if c.fitted)
    null_fit = next((c for c in cells if c.null and c.icc == fitted.icc), None)
    verdicts = {m: _verdict(perf, m, cells, zs, fitted) for m in methods}
    rows = [_row(perf, m, cells, zs, fitted, null_fit) for m in methods]
    table = pd.DataFrame(rows)
    table["eligible"] = [verdicts[m].eligible for m in methods]
    table = table.sort_values(["eligible", "rmse", "method"], ascending=[False, True, True],
                              kind="stable", na_position="last")
    if reference is not None and (perf["method"] == reference).any():
        ref = _row(perf, reference, cells, zs, fitted, null_fit)
        table = pd.concat([table, pd.DataFrame([{**ref, "eligible": False}])], ignore_index=True)
    table = table.reset_index(drop=True)
    eligible = [m for m in table["method"] if m in verdicts and verdicts[m].eligible]
    if eligible:
        first, tied = _choose(table, eligible)
        return Ranking(table, verdicts, first, None, tied,
                       _why(table, first, tied, len(eligible), cells))
    ranked = table[table["method"].isin(list(methods))]
    low = ranked.sort_values(["cover_min", "rmse", "method"], ascending=[False, True, True],
                             kind="stable", na_position="last")
    worst = str(low["method"].iloc[0])
    why = (f"no method meets every criterion (proper fits, coverage, Type I error) in every "
           f"judged cell of this design; {worst} has the highest lowest xi coverage "
           f"({low['cover_min'].iloc[0]:.3f}): the least bad, not a valid choice; consider "
           "more groups or more members per group")
    return Ranking(table, verdicts, None, worst, (), (why,))
