"""Write the small datasets of tests/fixtures/fsr and their lavaan reference output.

Datasets come from the package's generator (``Scenario.from_params`` + a fixed seed);
the reference numbers from ``tools/r/fsr_fixtures.R`` (lavaan ``sam``, ``sem``,
``lavPredict``). Run from the repository root: ``python tools/make_fsr_fixtures.py``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pandas as pd

from micromacro_sim.design.scenario import Scenario
from micromacro_sim.estimators.sam import sam_fit
from micromacro_sim.generate.dgp import generate

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "fsr"

#: name -> (scenario parameters, seed)
CASES: dict[str, tuple[dict, int]] = {
    "row16": (dict(n_groups=100, group_size=10, icc=0.1, r_zxi=0.3), 1),
    "high_icc": (dict(n_groups=100, group_size=10, icc=0.5, r_zxi=0.3), 2),
    "g50_low_icc": (dict(n_groups=50, group_size=10, icc=0.1, r_zxi=0.3), 3),
    "two_z": (dict(n_groups=60, group_size=5, icc=0.2, r_zxi=[0.3, 0.2], n_z=2), 4),
}


def wide_frame(data) -> pd.DataFrame:
    """x1..xn, y, z1..zq of a balanced one-x dataset."""
    X = data.wide(0)
    df = pd.DataFrame(X, columns=[f"x{i + 1}" for i in range(X.shape[1])])
    df["y"] = data.y
    for j in range(data.n_z):
        df[f"z{j + 1}"] = data.z[:, j]
    return df


def adjusted_case() -> tuple[dict, int]:
    """First seed of a G=50, low-ICC scenario where lavaan shrinks Var(eta) (force.pd)
    while the measurement model's factor variance is still positive."""
    params = dict(n_groups=50, group_size=10, icc=0.05, r_zxi=0.3)
    sc = Scenario.from_params(params)
    for seed in range(1000):
        r = sam_fit(generate(sc, np.random.default_rng(seed)))
        if r["adjusted"] and r["psi_mm_unbounded"] > 0:
            return params, seed
    raise RuntimeError("no adjusted case found")


def negative_case() -> tuple[dict, int]:
    """First seed of a G=50, low-ICC scenario where the Z-conditional measurement model
    has a negative residual factor variance."""
    from micromacro_sim.estimators.zcond import ZConditionalScore

    params = dict(n_groups=50, group_size=10, icc=0.05, r_zxi=0.3)
    sc = Scenario.from_params(params)
    for seed in range(1000):
        sc_ = ZConditionalScore().scores(generate(sc, np.random.default_rng(seed)))
        if sc_.extras["psi_r"] < 0:
            return params, seed
    raise RuntimeError("no negative case found")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    cases = {**CASES, "g50_force_pd": adjusted_case(), "zcond_negative": negative_case()}
    rows = []
    for name, (params, seed) in cases.items():
        data = generate(Scenario.from_params(params), np.random.default_rng(seed))
        wide_frame(data).to_csv(OUT / f"{name}.csv", index=False, float_format="%.17g")
        rows.append({"name": name, "seed": seed, "params": repr(params)})
    pd.DataFrame(rows).to_csv(OUT / "cases.csv", index=False)
    subprocess.run(
        ["Rscript", str(ROOT / "tools" / "r" / "fsr_fixtures.R"), str(OUT), *cases], check=True
    )


if __name__ == "__main__":
    main()
