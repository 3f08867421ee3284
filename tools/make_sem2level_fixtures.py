"""Write the one-x datasets behind tests/test_kernels_twolevel.py and lavaan's numbers.

Usage: ``python tools/make_sem2level_fixtures.py`` (needs Rscript with lavaan and jsonlite;
run from the repository root). Datasets: balanced, unbalanced, several z and low ICC, each
drawn with numpy from a seeded generator and stored as ``<name>_x.csv`` (group, x) and
``<name>_g.csv`` (group, y, z1..zq) in ``tests/fixtures/sem2level``;
``tools/r/sem2level_multi_fixtures.R`` then fits lavaan's two-level model with
``fixed.x = TRUE`` (its default) and ``fixed.x = FALSE`` and writes ``<name>.json``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "sem2level"

#: name -> (G, group sizes (an int, or (lo, hi) uniform), q, ICC, seed)
DATASETS: dict[str, tuple[int, int | tuple[int, int], int, float, int]] = {
    "balanced_z1": (60, 8, 1, 0.2, 31),
    "unbalanced_z1": (80, (2, 14), 1, 0.15, 32),
    "unbalanced_z3": (70, (3, 10), 3, 0.2, 33),
    "low_icc_z2": (100, (4, 12), 2, 0.06, 34),
}


def draw(G: int, sizes: int | tuple[int, int], q: int, icc: float, seed: int):
    """Group sizes, long x (N,), y (G,), z (G, q): Var(xi) = 1, Cor(z_j, xi) = .3,
    Cor(z_j, z_l) = .2, within variance (1 - icc) / icc, mean of x 0.5,
    y = .3 + .3 sum(z) + .3 xi + e with Var(e) = .35."""
    rng = np.random.default_rng(seed)
    n = (np.full(G, sizes) if isinstance(sizes, int)
         else rng.integers(sizes[0], sizes[1] + 1, size=G))
    C = np.full((q + 1, q + 1), 0.2)
    C[:q, q] = C[q, :q] = 0.3
    np.fill_diagonal(C, 1.0)
    zx = rng.multivariate_normal(np.zeros(q + 1), C, size=G)
    z, xi = zx[:, :q], zx[:, q]
    y = 0.3 + 0.3 * z.sum(axis=1) + 0.3 * xi + rng.normal(0, np.sqrt(0.35), G)
    x = np.repeat(xi + 0.5, n) + rng.normal(0, np.sqrt((1 - icc) / icc), n.sum())
    return n, x, y, z


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, (G, sizes, q, icc, seed) in DATASETS.items():
        n, x, y, z = draw(G, sizes, q, icc, seed)
        group = np.repeat(np.arange(G), n)
        with open(OUT / f"{name}_x.csv", "w") as fh:
            fh.write("group,x\n")
            for g, v in zip(group, x, strict=True):
                fh.write(f"{int(g)},{float(v)!r}\n")
        with open(OUT / f"{name}_g.csv", "w") as fh:
            fh.write(",".join(["group", "y", *(f"z{j + 1}" for j in range(q))]) + "\n")
            for g in range(G):
                fh.write(",".join([str(g), repr(float(y[g])),
                                   *(repr(float(v)) for v in z[g])]) + "\n")
    script = ROOT / "tools" / "r" / "sem2level_multi_fixtures.R"
    return subprocess.call(["Rscript", str(script), str(OUT), *DATASETS])


if __name__ == "__main__":
    sys.exit(main())
