"""The design of ``advise``: group sizes and absent members from the data, the config built
around the population values with its sensitivity band, and the methods to compare.

Group sizes. ``group_size`` is the list of the groups' sizes (ascending; a list is recycled
over the groups and ``n_groups`` is the number of groups, so the design has exactly the
data's size distribution).

Absent members (the roster rule). Only with a member column, and only when its ids are
integers: the roster of a group runs from the smallest id in the whole data to the
group's largest id, so a group with ids 0, 1, 2, 4 had 5 members and one is absent. Group
sizes are then the roster sizes and ``missing_mcar`` the share of roster places without a
member (1 - N / sum of rosters). A group's missing top ids cannot be seen: a team of 4
cannot be told from a team of 6 whose members 4 and 5 are absent, which is why without a
member column (or with ids that are not integers) no member counts as absent.

The grid (:func:`grid_levels`): ICC at its fitted value and the ends of its 95% interval
(within [0.01, 0.99]), crossed with b_xi at 0 (Type I error), its fitted value and the ends
of its interval; an end on the other side of 0 from the fit is truncated to 0. At most
3 x 4 = 12 cells: a config's grid is a full product, so the four corners (an ICC end with a
b_xi end) run too; they are reported but left out of the ranking rule (:mod:`.advise_rank`),
which judges the other (up to) 8 cells. Values are rounded to 4 significant digits.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from micromacro_sim.api.advise_population import Population
from micromacro_sim.api.userdata import UserDataset
from micromacro_sim.design.config import MethodSpec, RunConfig

__all__ = ["ICC_RANGE", "Cell", "Roster", "build_config", "cells", "config_text",
           "grid_levels", "roster", "round4"]

#: Bounds of the ICC levels (the generator needs 0 < ICC < 1; beyond these the design is
#: degenerate for every method).
ICC_RANGE = (0.01, 0.99)
_INTEGER = re.compile(r"-?[1-9][0-9]*|0")


def round4(v: float) -> float:
    """``v`` to 4 significant digits (a config value)."""
    return float(f"{v:.4g}")


@dataclass(frozen=True)
class Roster:
    """Designed group sizes and the rate of absent members, with the rule that gave them."""

    sizes: tuple[int, ...]
    missing_rate: float
    rule: str


def _integer_ids(labels: np.ndarray) -> np.ndarray | None:
    """The member labels as integers, or None when any is not a plain integer."""
    out = []
    for v in labels.tolist():
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
            out.append(int(v))
        elif isinstance(v, str) and _INTEGER.fullmatch(v):
            out.append(int(v))
        else:
            return None
    return np.asarray(out, dtype=np.int64)


def roster(data: UserDataset) -> Roster:
    """Group sizes and absent members of the design (the module docstring's rule)."""
    observed = tuple(sorted(int(n) for n in data.sizes))
    if data.member_mode != "column" or data.member_labels is None:
        return Roster(observed, 0.0, "no member column: the observed members are the whole "
                      "group (no absent members; a group of 4 cannot be told from a group of 6 "
                      "with two absent)")
    ids = _integer_ids(np.asarray(data.member_labels))
    name = data.member_name
    if ids is None:
        return Roster(observed, 0.0, f"{name} ids are not integers, so no roster can be read "
                      "from them: no absent members")
    per_row = ids[np.asarray(data.member_codes)]
    base = int(per_row.min())
    top = np.maximum.reduceat(per_row, data.starts)
    sizes = top - base + 1
    rate = 1.0 - float(data.n_persons) / float(sizes.sum())
    rule = (f"roster of a group = its {name} ids from the smallest id in the data ({base}) to "
            f"the group's largest id; a roster place without a member is an absent member")
    if rate <= 0:
        return Roster(observed, 0.0, rule + ": none absent (every group's ids are contiguous)")
    return Roster(tuple(sorted(int(n) for n in sizes)), round4(rate),
                  rule + f": {int(sizes.sum()) - data.n_persons} of {int(sizes.sum())} places "
                  f"({100 * rate:.1f}%) absent, simulated as missing completely at random")


def _band(fit: float, lo: float, hi: float) -> list[float]:
    """b_xi levels: 0, the fit, and the interval ends on the fit's side of 0."""
    ends = [e for e in (lo, hi) if np.isfinite(e) and e * fit > 0]
    return sorted({round4(v) for v in (0.0, fit, *ends)})


def grid_levels(pop: Population) -> dict[str, list[float]]:
    """The grid: ICC {lower, fit, upper} x b_xi {0, lower, fit, upper} (module docstring)."""
    icc = pop["icc"]
    lo, hi = ICC_RANGE
    iccs = sorted({round4(min(max(v, lo), hi)) for v in (icc.lower, icc.value, icc.upper)
                   if np.isfinite(v)})
    b = pop["beta_xi"]
    return {"icc": iccs, "beta_xi": _band(b.value, b.lower, b.upper)}


def _fixed(pop: Population, ros: Roster) -> dict[str, Any]:
    zs = pop.z_names
    sizes: Any = ros.sizes[0] if len(set(ros.sizes)) == 1 else list(ros.sizes)

    def per_z(field: str) -> Any:
        vals = [round4(pop[f"{field}:{z}"].value) for z in zs]
        return vals[0] if len(vals) == 1 else vals

    out: dict[str, Any] = {"n_groups": len(ros.sizes), "group_size": sizes}
    if len(zs) > 1:
        out.update(n_z=len(zs), r_zz=round4(pop["r_zz"].value))
    out.update(r_zxi=per_z("r_zxi"), beta0=round4(pop["beta0"].value), beta_z=per_z("beta_z"),
               sigma2_eps=round4(pop["sigma2_eps"].value), var_xi=1.0)
    if ros.missing_rate > 0:
        out["missing_mcar"] = ros.missing_rate
    return out


def build_config(pop: Population, ros: Roster, methods: Sequence[MethodSpec], *, seed: int,
                 replications: int, fitted_only: bool = False) -> dict[str, Any]:
    """The config mapping of the design (``fitted_only``: the fitted cell alone).

    Parameters
    ----------
    pop : Population
    ros : Roster
    methods : sequence of MethodSpec
        In config order (the reference ``true`` first).
    seed, replications : int
    fitted_only : bool
        No grid: ICC and b_xi at their fitted values (the pilot that times the run).
    """
    fixed = _fixed(pop, ros)
    grid = grid_levels(pop)
    if fitted_only:
        fixed.update(icc=round4(pop["icc"].value), beta_xi=round4(pop["beta_xi"].value))
        grid = {}
    raw: dict[str, Any] = {
        "name": "advise",
        "description": ("The design micromacro advise derived from a dataset: its group "
                        "sizes, the population values of its sem_2level fit (x and Z "
                        "standardised), and a band over ICC and b_xi (see advice.md)."),
        "seed": int(seed),
        "replications": int(replications),
        "methods": [m.to_config() for m in methods],
        "admissibility": {"policy": "flag", "gate": "none"},
        "fixed": fixed,
    }
    if grid:
        raw["grid"] = grid
    return raw


def config_text(raw: dict[str, Any]) -> str:
    """The config as YAML (block style, flow-style lists), with a header comment."""
    import yaml

    body = yaml.safe_dump(raw, sort_keys=False, default_flow_style=None, width=96,
                          allow_unicode=True)
    return ("# Derived by micromacro advise (see advice.md beside this file): run it with\n"
            "#   micromacro run design.yaml --summarize\n" + body)


@dataclass(frozen=True)
class Cell:
    """One scenario of the design: its key, ICC, b_xi, reliability and role.

    ``corner``: an end of the ICC interval with an end of the b_xi interval, both at once
    (jointly far less plausible than either; simulated because a grid is a full product,
    reported, and left out of the ranking rule).
    """

    key: str
    label: str
    icc: float
    beta_xi: float
    reliability: float
    fitted: bool
    null: bool
    corner: bool = False

    @property
    def role(self) -> str:
        """``fitted``, ``b_xi = 0``, ``band`` or ``corner``."""
        return ("fitted" if self.fitted else "b_xi = 0" if self.null else
                "corner" if self.corner else "band")

    @property
    def name(self) -> str:
        """``ICC .17, b_xi .30`` (the cell in words)."""
        return f"ICC {self.icc:.4g}, b_xi {self.beta_xi:.4g}"


def cells(cfg: RunConfig, pop: Population) -> list[Cell]:
    """The config's scenarios as :class:`Cell` s (grid order)."""
    icc_fit, b_fit = round4(pop["icc"].value), round4(pop["beta_xi"].value)
    rows = cfg.scenario_rows()
    out = []
    for sc, row in zip(cfg.scenarios, rows, strict=True):
        icc, b = round4(sc.icc), round4(float(sc.beta_xi[0]))
        out.append(Cell(sc.key, str(row["label"]), icc, b, float(sc.reliability),
                        fitted=(icc == icc_fit and b == b_fit), null=(b == 0.0),
                        corner=(icc != icc_fit and b not in (0.0, b_fit))))
    return out
