"""Write the OpenMx fixtures of method ``tspa`` (tests/fixtures/tspa/).

Draws datasets with the package's generator, computes the stage-1 scores and error
variances (:func:`micromacro_sim.models.tspa.stage1`), writes the stage-2 inputs of each
dataset as ``<name>.csv`` (columns s, ev, z1[, z2], y), records the designs in
``designs.json`` and runs ``tools/r/tspa_openmx.R`` (OpenMx with ev a definition variable),
which writes ``openmx_<name>.json``. The tests read these files only.

Usage (from the repository root; needs R with OpenMx and jsonlite)::

    python tools/make_tspa_fixtures.py
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np

from micromacro_sim.design.scenario import Scenario
from micromacro_sim.generate.dgp import generate
from micromacro_sim.models.tspa import stage1

OUT = Path("tests/fixtures/tspa")

_Z2 = {"n_z": 2, "r_zxi": [0.3, 0.1], "r_zz": 0.2}

#: name -> (scenario parameters, seed).
DESIGNS: dict[str, tuple[dict, int]] = {
    "pois_g20": ({"n_groups": 20, "group_size": {"poisson": 10, "min": 2}, "icc": 0.3,
                  "r_zxi": 0.3}, 101),
    "pois_g40_mcar": ({"n_groups": 40, "group_size": {"poisson": 10, "min": 2}, "icc": 0.2,
                       "r_zxi": 0.3, "missing_mcar": 0.2}, 102),
    "unif_g50": ({"n_groups": 50, "group_size": {"uniform": [3, 30]}, "icc": 0.15,
                  "r_zxi": 0.3}, 103),
    "unif_g100_mcar": ({"n_groups": 100, "group_size": {"uniform": [3, 30]}, "icc": 0.1,
                        "r_zxi": 0.3, "missing_mcar": 0.2}, 104),
    "pois_g100_lowicc": ({"n_groups": 100, "group_size": {"poisson": 10, "min": 2},
                          "icc": 0.05, "r_zxi": 0.3}, 105),
    "pois_g30_z2": ({"n_groups": 30, "group_size": {"poisson": 10, "min": 2}, "icc": 0.2,
                     **_Z2}, 106),
    "unif_g60_z2_mcar": ({"n_groups": 60, "group_size": {"uniform": [3, 30]}, "icc": 0.2,
                          "missing_mcar": 0.2, **_Z2}, 107),
    "pois_g80_z2": ({"n_groups": 80, "group_size": {"poisson": 10, "min": 2}, "icc": 0.1,
                     **_Z2}, 108),
    "unif_g25_z2": ({"n_groups": 25, "group_size": {"uniform": [3, 30]}, "icc": 0.3,
                     **_Z2}, 109),
    "balanced_g50": ({"n_groups": 50, "group_size": 10, "icc": 0.2, "r_zxi": 0.3}, 110),
    "pois_g60_mcar_highicc": ({"n_groups": 60, "group_size": {"poisson": 10, "min": 2},
                               "icc": 0.5, "r_zxi": 0.5, "missing_mcar": 0.2}, 111),
    "unif_g100_z2": ({"n_groups": 100, "group_size": {"uniform": [3, 30]}, "icc": 0.05,
                      **_Z2}, 112),
}


def stage2_inputs(params: dict, seed: int) -> dict[str, np.ndarray]:
    """The stage-2 columns (s, ev, z1.., y) of the dataset drawn with ``seed``."""
    data = generate(Scenario.from_params(params), np.random.default_rng(seed))
    st = stage1(data.group, data.x[:, 0], data.n_groups)
    cols = {"s": st.score, "ev": st.ev}
    for j in range(data.n_z):
        cols[f"z{j + 1}"] = data.z[:, j]
    cols["y"] = data.y
    return cols


def write_csv(path: Path, cols: dict[str, np.ndarray]) -> None:
    """Columns with 17 significant digits (the doubles round-trip)."""
    names = list(cols)
    rows = np.column_stack([cols[n] for n in names])
    lines = [",".join(names)] + [",".join(f"{v:.17g}" for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    """Write the inputs and designs, then run OpenMx on them."""
    OUT.mkdir(parents=True, exist_ok=True)
    for name, (params, seed) in DESIGNS.items():
        write_csv(OUT / f"{name}.csv", stage2_inputs(params, seed))
    designs = {name: {"params": p, "seed": s} for name, (p, s) in DESIGNS.items()}
    (OUT / "designs.json").write_text(json.dumps(designs, indent=1) + "\n")
    subprocess.run(["Rscript", "tools/r/tspa_openmx.R", str(OUT), *DESIGNS], check=True)


if __name__ == "__main__":
    main()
