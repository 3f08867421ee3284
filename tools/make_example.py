"""Write docs/example_teams.csv: a simulated team study for the worked example.

80 teams of 4 to 12 members rate their team climate (x); the team outcome is
`performance` (y) and `tenure` (Z) is the team's mean tenure, correlated .3 with the
latent climate. True coefficients: intercept .3, tenure .3, climate .3; ICC of the
ratings .15. Run from the repository root: python tools/make_example.py
"""

from __future__ import annotations

from pathlib import Path

from micromacro_sim.design.scenario import Scenario
from micromacro_sim.generate.dgp import generate
from micromacro_sim.generate.seeding import replication_rng

sc = Scenario.from_params(dict(n_groups=80, group_size={"uniform": [4, 12]}, icc=0.15, r_zxi=0.3))
d = generate(sc, replication_rng(2026, sc, 0))
f = d.to_frame().drop(columns=["xi"]).rename(
    columns={"group": "team", "x": "climate", "y": "performance", "z": "tenure"})
f["team"] = f["team"].map(lambda g: f"T{g + 1:03d}")
f = f.round(3)
out = Path(__file__).resolve().parents[1] / "docs" / "example_teams.csv"
f[["team", "member", "climate", "tenure", "performance"]].to_csv(out, index=False)
print(f"wrote {out} ({len(f)} rows, {f['team'].nunique()} teams)")
