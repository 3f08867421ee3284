"""Write the small datasets behind tests/test_sem.py and the lavaan reference numbers.

Usage: ``python tools/make_sem_fixtures.py`` (needs Rscript with lavaan, sandwich and
jsonlite; run from the repository root with the package importable). Each dataset is
drawn with :func:`micromacro_sim.generate.dgp.generate` and stored as two CSVs (``<name>_x.csv``:
group, x per person; ``<name>_g.csv``: group, y, z); ``tools/r/sem_fixtures.R`` then fits
lavaan's one-factor CFA, the single-step SEM and the two-level SEM and writes
``<name>.json`` beside each CSV.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from micromacro_sim.design.scenario import Scenario
from micromacro_sim.generate.dgp import generate

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "sem"

#: name -> (scenario parameters, seed)
DATASETS: dict[str, tuple[dict, int]] = {
    "row16": (dict(n_groups=100, group_size=10, icc=0.1, r_zxi=0.3), 16),
    "high_icc": (dict(n_groups=100, group_size=10, icc=0.5, r_zxi=0.3), 2),
    "g50_low_icc": (dict(n_groups=50, group_size=10, icc=0.1, r_zxi=0.0), 3),
    "unbalanced": (dict(n_groups=60, group_size={"uniform": [3, 15]}, icc=0.2, r_zxi=0.3), 4),
}


def write_datasets() -> None:
    """Draw every dataset and write its long CSV."""
    OUT.mkdir(parents=True, exist_ok=True)
    for name, (params, seed) in DATASETS.items():
        data = generate(Scenario.from_params(params), np.random.default_rng(seed))
        with open(OUT / f"{name}_x.csv", "w") as fh:
            fh.write("group,x\n")
            for g, x in zip(data.group, data.x[:, 0], strict=True):
                fh.write(f"{int(g)},{float(x)!r}\n")
        with open(OUT / f"{name}_g.csv", "w") as fh:
            fh.write("group,y,z\n")
            for g in range(data.n_groups):
                fh.write(f"{g},{float(data.y[g])!r},{float(data.z[g, 0])!r}\n")


def main() -> int:
    write_datasets()
    script = ROOT / "tools" / "r" / "sem_fixtures.R"
    return subprocess.call(["Rscript", str(script), str(OUT), *DATASETS])


if __name__ == "__main__":
    sys.exit(main())
