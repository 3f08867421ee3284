"""Write the small datasets behind tests/test_mixed.py and the lme4/glmmTMB reference numbers.

Usage: ``python tools/make_mixed_fixtures.py`` (needs Rscript with lme4, glmmTMB, sandwich
and jsonlite). Each dataset is drawn with :func:`micromacro_sim.generate.dgp.generate` from
``replication_rng(ROOT_SEED, scenario, replication)`` and stored as a long CSV
``tests/fixtures/mixed/<name>.csv`` (group, member, x, y, z; 10 significant digits, the
values both sides read). ``tools/r/mixed_fixtures.R`` then writes ``<name>.json`` beside it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from micromacro_sim.design.scenario import Scenario
from micromacro_sim.estimators.blup import oneway_closed_form
from micromacro_sim.generate.dataset import Dataset
from micromacro_sim.generate.dgp import generate
from micromacro_sim.generate.seeding import replication_rng

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "mixed"
ROOT_SEED = 2020

#: name -> (scenario parameters, which replication: an int, or "interior"/"boundary" for
#: the first replication whose balanced REML and ML fits are interior / REML is on the boundary)
DATASETS: dict[str, tuple[dict, int | str]] = {
    "row16": (dict(n_groups=100, group_size=10, icc=0.1, r_zxi=0.3), 0),
    "high_icc": (dict(n_groups=60, group_size=6, icc=0.5, r_zxi=0.3), 0),
    "unbalanced": (dict(n_groups=80, group_size={"uniform": [3, 15]}, icc=0.2, r_zxi=0.3), 0),
    "g50_low_icc": (dict(n_groups=50, group_size=10, icc=0.05, r_zxi=0.3), "interior"),
    "boundary": (dict(n_groups=20, group_size=4, icc=0.05, r_zxi=0.3), "boundary"),
}


def draw(params: dict, which: int | str) -> tuple[Dataset, int]:
    """The dataset of a fixture and the replication it came from."""
    sc = Scenario.from_params(params)
    if isinstance(which, int):
        return generate(sc, replication_rng(ROOT_SEED, sc, which)), which
    for rep in range(1000):
        data = generate(sc, replication_rng(ROOT_SEED, sc, rep))
        reml = oneway_closed_form(data, reml=True).boundary
        ml = oneway_closed_form(data, reml=False).boundary
        if (which == "interior" and not (reml or ml)) or (which == "boundary" and reml):
            return data, rep
    raise RuntimeError(f"no {which} replication found")


def write_csv(data: Dataset, path: Path) -> None:
    """Long CSV: group, member, x, y, z."""
    frame = data.to_frame()[["group", "member", "x", "y", "z"]]
    frame.to_csv(path, index=False, float_format="%.10g")


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, (params, which) in DATASETS.items():
        data, rep = draw(params, which)
        write_csv(data, OUT / f"{name}.csv")
        print(f"{name}: replication {rep}, N={data.n_persons}, G={data.n_groups}")
    script = ROOT / "tools" / "r" / "mixed_fixtures.R"
    return subprocess.call(["Rscript", str(script), str(OUT), *DATASETS])


if __name__ == "__main__":
    sys.exit(main())
