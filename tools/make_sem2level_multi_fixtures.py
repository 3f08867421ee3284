"""Write the datasets behind tests/test_sem2level_multi.py and the lavaan reference numbers.

Usage: ``python tools/make_sem2level_multi_fixtures.py`` (needs Rscript with lavaan and
jsonlite; run from the repository root). Each dataset has p >= 2 member-level x with
correlated latent group means and correlated within parts, drawn with numpy from a seeded
generator, and is stored as two CSVs (``<name>_x.csv``: group, x1..xp per person;
``<name>_g.csv``: group, y, z1..zq); ``tools/r/sem2level_multi_fixtures.R`` then fits
lavaan's two-level model (``fixed.x`` TRUE and FALSE) and writes ``<name>.json`` beside
each CSV.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "sem2level_multi"

#: name -> (G, group sizes (an int, or (lo, hi) for uniform sizes), p, q, seed)
DATASETS: dict[str, tuple[int, int | tuple[int, int], int, int, int]] = {
    "balanced_p2_z1": (60, 8, 2, 1, 21),
    "unbalanced_p2_z2": (70, (3, 12), 2, 2, 22),
    "unbalanced_p3_z0": (60, (2, 9), 3, 0, 23),
}


def draw(G: int, sizes: int | tuple[int, int], p: int, q: int, seed: int):
    """Group sizes, long x (N, p), y (G,), z (G, q) of one dataset.

    (z, xi) is normal with Var(z_j) = 1, Var(xi_j) = 1, Cor(z_j, xi_l) = .3,
    Cor(xi_j, xi_l) = .4; the within parts have variances 3 (ICC .25) and correlation
    .3; y = .3 + .3 sum(z) + .3 xi_1 + .2 sum(xi_2..p) + e with Var(e) = .35.
    """
    rng = np.random.default_rng(seed)
    n = (np.full(G, sizes) if isinstance(sizes, int)
         else rng.integers(sizes[0], sizes[1] + 1, size=G))
    C = np.full((q + p, q + p), 0.3)
    C[:q, :q] = 0.2
    C[q:, q:] = 0.4
    np.fill_diagonal(C, 1.0)
    zx = rng.multivariate_normal(np.zeros(q + p), C, size=G)
    z, xi = zx[:, :q], zx[:, q:]
    bx = np.r_[0.3, np.full(p - 1, 0.2)]
    y = 0.3 + z.sum(axis=1) * 0.3 + xi @ bx + rng.normal(0, np.sqrt(0.35), G)
    Sw = 3.0 * (0.7 * np.eye(p) + 0.3)
    x = np.repeat(xi + 0.5, n, axis=0) + rng.multivariate_normal(np.zeros(p), Sw, size=n.sum())
    return n, x, y, z


def write_datasets() -> None:
    """Draw every dataset and write its two CSVs."""
    OUT.mkdir(parents=True, exist_ok=True)
    for name, (G, sizes, p, q, seed) in DATASETS.items():
        n, x, y, z = draw(G, sizes, p, q, seed)
        group = np.repeat(np.arange(G), n)
        with open(OUT / f"{name}_x.csv", "w") as fh:
            fh.write(",".join(["group", *(f"x{j + 1}" for j in range(p))]) + "\n")
            for g, row in zip(group, x, strict=True):
                fh.write(",".join([str(int(g)), *(repr(float(v)) for v in row)]) + "\n")
        with open(OUT / f"{name}_g.csv", "w") as fh:
            fh.write(",".join(["group", "y", *(f"z{j + 1}" for j in range(q))]) + "\n")
            for g in range(G):
                fh.write(",".join([str(g), repr(float(y[g])),
                                   *(repr(float(v)) for v in z[g])]) + "\n")


def main() -> int:
    write_datasets()
    script = ROOT / "tools" / "r" / "sem2level_multi_fixtures.R"
    return subprocess.call(["Rscript", str(script), str(OUT), *DATASETS])


if __name__ == "__main__":
    sys.exit(main())
