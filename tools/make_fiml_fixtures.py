"""Write the datasets of tests/fixtures/fiml and their lavaan FIML reference output.

Usage: ``python tools/make_fiml_fixtures.py`` from the repository root (needs Rscript
with lavaan). Each dataset is drawn with the package's generator
(:func:`micromacro_sim.generate.dgp.generate` on ``Scenario.from_params(params)`` and
``np.random.default_rng(seed)``) in a design with missing cells in the wide layout:
unequal group sizes (Poisson or uniform), or balanced groups with members missing
completely at random or at random given Z or xi. Written per dataset:

``<name>_wide.csv``
    One row per group: x1..xK (the member positions of
    :meth:`~micromacro_sim.generate.dataset.Dataset.wide_positions`, ``NA`` where the
    position has no member), y, z1..zq.
``manifest.csv``
    name, design, seed, params (JSON, for ``Scenario.from_params``), G, K, q and the
    share of missing cells.

``tools/r/fiml_fixtures.R`` then adds ``<name>_lavaan.csv`` (estimates),
``<name>_verdicts.csv`` (convergence, post.check, information, log-likelihood, warnings,
errors) and ``<name>_scores.csv`` (lavPredict scores). The whole run takes about ten
minutes, most of it lavaan's EM of the saturated moments in the ``sam_em`` fits (20000
iterations on the sparse positions of the Poisson-sized datasets).

Seeds: lavaan refuses a variable observed only once ("some variables have only 1
observation"), which happens at the largest position of most Poisson-sized draws. A
dataset whose ``coverage`` is ``"two"`` takes the first seed from its base seed at which
every position is observed in at least two groups; the ``"single"`` ones take the first
seed at which some position is observed in only one group (they document lavaan's
refusal); ``"any"`` takes the base seed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from micromacro_sim.design.scenario import Scenario
from micromacro_sim.generate.dataset import Dataset
from micromacro_sim.generate.dgp import generate

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "fiml"

MAR_Z = {"on": "z", "rate": 0.2, "strength": 1.0}
MAR_XI = {"on": "xi", "rate": 0.2, "strength": 1.0}


def _pois(n: int) -> dict:
    return {"poisson": n, "min": 2}


def _unif(lo: int, hi: int) -> dict:
    return {"uniform": [lo, hi]}


#: name -> (design, scenario parameters, base seed, coverage rule)
DATASETS: dict[str, tuple[str, dict, int, str]] = {
    # Poisson group sizes (at least 2 members)
    "pois5_g30_icc05": ("poisson", dict(n_groups=30, group_size=_pois(5), icc=0.05,
                                        r_zxi=0.3), 9001, "two"),
    "pois6_g60_icc20": ("poisson", dict(n_groups=60, group_size=_pois(6), icc=0.2,
                                        r_zxi=0.3), 9011, "two"),
    "pois8_g60_icc10_r0": ("poisson", dict(n_groups=60, group_size=_pois(8), icc=0.1,
                                           r_zxi=0.0), 9021, "two"),
    "pois10_g100_icc30": ("poisson", dict(n_groups=100, group_size=_pois(10), icc=0.3,
                                          r_zxi=0.3), 9031, "two"),
    "pois12_g200_icc50_r0": ("poisson", dict(n_groups=200, group_size=_pois(12), icc=0.5,
                                             r_zxi=0.0), 9041, "two"),
    "pois7_g60_icc20_z2": ("poisson", dict(n_groups=60, group_size=_pois(7), icc=0.2,
                                           n_z=2, r_zxi=[0.3, 0.2]), 9051, "two"),
    "pois9_g150_icc05": ("poisson", dict(n_groups=150, group_size=_pois(9), icc=0.05,
                                         r_zxi=0.3), 9061, "two"),
    # uniform group sizes
    "unif3_15_g60_icc20": ("uniform", dict(n_groups=60, group_size=_unif(3, 15), icc=0.2,
                                           r_zxi=0.3), 9101, "any"),
    "unif2_6_g30_icc10_r0": ("uniform", dict(n_groups=30, group_size=_unif(2, 6), icc=0.1,
                                             r_zxi=0.0), 9111, "any"),
    "unif5_10_g100_icc30_r0": ("uniform", dict(n_groups=100, group_size=_unif(5, 10),
                                               icc=0.3, r_zxi=0.0), 9121, "any"),
    "unif4_12_g200_icc05": ("uniform", dict(n_groups=200, group_size=_unif(4, 12), icc=0.05,
                                            r_zxi=0.3), 9131, "any"),
    "unif2_8_g60_icc30_z2": ("uniform", dict(n_groups=60, group_size=_unif(2, 8), icc=0.3,
                                             n_z=2, r_zxi=[0.3, 0.0]), 9141, "any"),
    # balanced groups, members missing completely at random
    "mcar10_n6_g60_icc20": ("mcar", dict(n_groups=60, group_size=6, icc=0.2, r_zxi=0.3,
                                         missing_mcar=0.1), 9201, "any"),
    "mcar20_n8_g100_icc10_r0": ("mcar", dict(n_groups=100, group_size=8, icc=0.1, r_zxi=0.0,
                                             missing_mcar=0.2), 9211, "any"),
    "mcar30_n5_g30_icc30": ("mcar", dict(n_groups=30, group_size=5, icc=0.3, r_zxi=0.3,
                                         missing_mcar=0.3), 9221, "any"),
    "mcar20_n10_g200_icc05": ("mcar", dict(n_groups=200, group_size=10, icc=0.05, r_zxi=0.3,
                                           missing_mcar=0.2), 9231, "any"),
    "mcar30_n4_g60_icc50_z2": ("mcar", dict(n_groups=60, group_size=4, icc=0.5, n_z=2,
                                            r_zxi=[0.3, 0.2], missing_mcar=0.3), 9241, "any"),
    # balanced groups, members missing at random given Z
    "marz_n6_g60_icc20": ("mar_z", dict(n_groups=60, group_size=6, icc=0.2, r_zxi=0.3,
                                        missing_mar=MAR_Z), 9301, "any"),
    "marz_n8_g100_icc50_r0": ("mar_z", dict(n_groups=100, group_size=8, icc=0.5, r_zxi=0.0,
                                            missing_mar=MAR_Z), 9311, "any"),
    "marz_n5_g30_icc10": ("mar_z", dict(n_groups=30, group_size=5, icc=0.1, r_zxi=0.3,
                                        missing_mar=MAR_Z), 9321, "any"),
    "marz_n10_g200_icc30_z2": ("mar_z", dict(n_groups=200, group_size=10, icc=0.3, n_z=2,
                                             r_zxi=[0.3, 0.2], missing_mar=MAR_Z), 9331,
                               "any"),
    # balanced groups, members missing at random given xi
    "marxi_n6_g60_icc20": ("mar_xi", dict(n_groups=60, group_size=6, icc=0.2, r_zxi=0.3,
                                          missing_mar=MAR_XI), 9401, "any"),
    "marxi_n8_g100_icc10_r0": ("mar_xi", dict(n_groups=100, group_size=8, icc=0.1,
                                              r_zxi=0.0, missing_mar=MAR_XI), 9411, "any"),
    "marxi_n5_g30_icc30": ("mar_xi", dict(n_groups=30, group_size=5, icc=0.3, r_zxi=0.3,
                                          missing_mar=MAR_XI), 9421, "any"),
    "marxi_n12_g200_icc05": ("mar_xi", dict(n_groups=200, group_size=12, icc=0.05,
                                            r_zxi=0.3, missing_mar=MAR_XI), 9431, "any"),
    # unequal sizes and missing members together
    "pois6_mcar20_g60_icc20": ("poisson+mcar", dict(n_groups=60, group_size=_pois(6),
                                                    icc=0.2, r_zxi=0.3, missing_mcar=0.2),
                               9501, "two"),
    "unif3_9_marxi_g60_icc30": ("uniform+mar_xi", dict(n_groups=60, group_size=_unif(3, 9),
                                                       icc=0.3, r_zxi=0.3,
                                                       missing_mar=MAR_XI), 9511, "any"),
    # a position observed in one group only: lavaan refuses the data
    "pois8_g60_icc20_single": ("poisson", dict(n_groups=60, group_size=_pois(8), icc=0.2,
                                               r_zxi=0.3), 9601, "single"),
}


def draw(params: dict, seed: int) -> Dataset:
    """The dataset of ``params`` at ``seed``."""
    return generate(Scenario.from_params(params), np.random.default_rng(seed))


def pick_seed(params: dict, base: int, coverage: str) -> int:
    """The seed that meets ``coverage`` (see the module docstring), from ``base`` on."""
    if coverage == "any":
        return base
    for seed in range(base, base + 1000):
        _, mask = draw(params, seed).wide_positions(0)
        least = int(mask.sum(axis=0).min())
        if (coverage == "two" and least >= 2) or (coverage == "single" and least == 1):
            return seed
    raise RuntimeError(f"no seed from {base} meets coverage {coverage!r}")


def wide_frame(data: Dataset) -> pd.DataFrame:
    """x1..xK by member position (NaN where absent), y, z1..zq."""
    values, _ = data.wide_positions(0)
    df = pd.DataFrame(values, columns=[f"x{k + 1}" for k in range(values.shape[1])])
    df["y"] = data.y
    for j in range(data.n_z):
        df[f"z{j + 1}"] = data.z[:, j]
    return df


def write_datasets() -> list[str]:
    """Draw every dataset, write its wide CSV and the manifest; return the names."""
    OUT.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, (design, params, base, coverage) in DATASETS.items():
        seed = pick_seed(params, base, coverage)
        data = draw(params, seed)
        values, mask = data.wide_positions(0)
        wide_frame(data).to_csv(OUT / f"{name}_wide.csv", index=False, float_format="%.17g",
                                na_rep="NA")
        rows.append({
            "name": name, "design": design, "seed": seed,
            "params": json.dumps(params, sort_keys=True),
            "G": data.n_groups, "K": values.shape[1], "q": data.n_z,
            "missing_share": round(float(1.0 - mask.mean()), 4),
        })
    pd.DataFrame(rows).to_csv(OUT / "manifest.csv", index=False)
    return list(DATASETS)


def main() -> int:
    """Write the datasets, then run the R script on them."""
    names = write_datasets()
    script = ROOT / "tools" / "r" / "fiml_fixtures.R"
    return subprocess.call(["Rscript", str(script), str(OUT), *names])


if __name__ == "__main__":
    sys.exit(main())
