"""lavaan's verdicts on Clark's CFA call for the seed study's own first-draw datasets.

Usage: ``python tools/make_cfa_lavaan_fixture.py [--replications N]`` (needs Rscript with
lavaan; run from the repository root). The datasets are the package's own: the row-16
scenario of ``configs/clark2020.yaml`` (sigma2_nu = 9), replications 0..N-1, draw attempt
0 (the first draw, before any redraw), generated exactly as a run generates them.
``tools/r/cfa_lavaan_gate.R`` fits Clark's call
``cfa('lv =~ x1 + ... + x10', data, meanstructure = FALSE, estimator = "MLR")`` on each
and records lavaan's ``converged`` and ``post.check`` with a few estimates; the result is
``tests/fixtures/cfa_lavaan/clark2020_row16_first_draws.csv``, read by
``tests/test_kernels_cfa.py``. The datasets themselves are not stored (the test redraws
them from their streams); a checksum per dataset (``sum_x``) guards that they are the same.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from micromacro_sim.design.scenario import Scenario  # noqa: E402
from micromacro_sim.generate.dgp import generate  # noqa: E402
from micromacro_sim.generate.seeding import replication_rng  # noqa: E402
from micromacro_sim.run.configure import load_config  # noqa: E402

CONFIG = ROOT / "configs" / "clark2020.yaml"
OUT = ROOT / "tests" / "fixtures" / "cfa_lavaan" / "clark2020_row16_first_draws.csv"
SIGMA2_NU = 9.0


def row16() -> tuple[Scenario, int]:
    """The row-16 scenario of the shipped config and the config's root seed."""
    config = load_config(CONFIG)
    (sc,) = [s for s in config.scenarios if s.describe()["sigma2_nu"] == SIGMA2_NU]
    return sc, config.seed


def first_draws(n_reps: int) -> np.ndarray:
    """Wide member values (R, G, n) of replications 0..R-1, attempt 0."""
    sc, seed = row16()
    G, n = sc.n_groups, sc.group_size.value
    return np.stack([generate(sc, replication_rng(seed, sc, r, 0)).x[:, 0].reshape(G, n)
                     for r in range(n_reps)])


def write_csv(wide: np.ndarray, path: Path) -> None:
    """One row per (replication, group) with columns x1..xn, full precision."""
    R, G, n = wide.shape
    with open(path, "w") as fh:
        fh.write("replication,group," + ",".join(f"x{j + 1}" for j in range(n)) + "\n")
        for r in range(R):
            for g in range(G):
                fh.write(f"{r},{g}," + ",".join(repr(float(v)) for v in wide[r, g]) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replications", type=int, default=1000)
    args = ap.parse_args(argv)
    wide = first_draws(args.replications)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "wide.csv"
        write_csv(wide, data)
        script = ROOT / "tools" / "r" / "cfa_lavaan_gate.R"
        return subprocess.call(["Rscript", str(script), str(data), str(OUT)])


if __name__ == "__main__":
    sys.exit(main())
