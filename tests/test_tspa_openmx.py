"""Stage 2 of ``tspa`` against OpenMx with the error variance as a definition variable.

Fixtures: ``tools/make_tspa_fixtures.py`` (stage-2 inputs of 12 generated datasets, G 20
to 100, Poisson and uniform group sizes, absent members, one and two z) and
``tools/r/tspa_openmx.R`` (OpenMx 2.21, SLSQP). No R at test time.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from micromacro_sim.models.tspa import fit_tspa

FIXTURES = Path(__file__).parent / "fixtures" / "tspa"
NAMES = sorted(json.loads((FIXTURES / "designs.json").read_text()))

#: Acceptance: estimates 1e-4, SEs 1e-3 (absolute, or relative where |SE| > 1), and our
#: -2 log L never worse than OpenMx's by more than 1e-6.
EST_TOL, SE_TOL, M2LL_TOL = 1e-4, 1e-3, 1e-6


def load(name: str) -> tuple[dict[str, np.ndarray], dict]:
    """Stage-2 inputs (columns) and OpenMx's output of one fixture."""
    text = (FIXTURES / f"{name}.csv").read_text().split()
    header = text[0].split(",")
    rows = np.array([[float(v) for v in line.split(",")] for line in text[1:]])
    cols = {h: rows[:, i] for i, h in enumerate(header)}
    ref = json.loads((FIXTURES / f"openmx_{name}.json").read_text())
    return cols, ref


def fit_fixture(cols: dict[str, np.ndarray]):
    """Our stage-2 fit of one fixture (R = 1) and the names of its z columns."""
    zn = sorted(c for c in cols if c.startswith("z"))
    z = np.column_stack([cols[c] for c in zn])
    return fit_tspa(cols["s"][None], cols["ev"][None], z[None], cols["y"][None]), zn


def test_there_are_enough_fixtures():
    assert len(NAMES) >= 10
    assert any(len([c for c in load(n)[0] if c.startswith("z")]) == 2 for n in NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_matches_openmx(name):
    cols, ref = load(name)
    assert ref["status"] == 0
    fit, zn = fit_fixture(cols)
    assert fit.converged[0] and fit.proper[0]
    labels = ["b0", *(f"b_{z}" for z in zn), "b_xi"]
    est = np.array([ref["estimates"][k] for k in labels])
    se = np.array([ref["se"][k] for k in labels])
    np.testing.assert_allclose(fit.params[0], est, rtol=0, atol=EST_TOL)
    np.testing.assert_allclose(fit.psi[0], ref["estimates"]["psi"], rtol=0, atol=EST_TOL)
    np.testing.assert_allclose(fit.s2e[0], ref["estimates"]["s2e"], rtol=0, atol=EST_TOL)
    tol = SE_TOL * np.maximum(1.0, np.abs(se))
    assert np.all(np.abs(fit.se[0] - se) <= tol), (fit.se[0], se)
    assert fit.m2ll[0] <= ref["minus2ll"] + M2LL_TOL
