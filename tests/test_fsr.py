"""Local SAM (Croon-corrected factor-score regression) and Z-conditional factor scores
against lavaan 0.6.14 output stored in tests/fixtures/fsr (tools/make_fsr_fixtures.py).

Tolerances: lavaan's iterative optimizer (nlminb) stops at a relative gradient of about
1e-6, so its estimates carry errors of order 1e-6-1e-5: estimates are compared to 1e-4,
standard errors (computed from the information at those estimates, ours by central
differences) to 1e-3.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from micromacro_sim.estimators import get_estimator
from micromacro_sim.generate.dataset import Dataset

FIX = Path(__file__).parent / "fixtures" / "fsr"
CASES = ["row16", "high_icc", "g50_low_icc", "two_z", "g50_force_pd", "zcond_negative"]
EST_TOL, SE_TOL = 1e-4, 1e-3


def load(name: str) -> tuple[Dataset, pd.DataFrame, np.ndarray]:
    d = pd.read_csv(FIX / f"{name}.csv")
    xs = [c for c in d if c.startswith("x")]
    zs = [c for c in d if c.startswith("z")]
    G, n = len(d), len(xs)
    data = Dataset(group=np.repeat(np.arange(G), n), x=d[xs].to_numpy().ravel(),
                   y=d["y"].to_numpy(), z=d[zs].to_numpy(), z_names=tuple(zs))
    ref = pd.read_csv(FIX / f"{name}_lavaan.csv")
    scores = pd.read_csv(FIX / f"{name}_zscores.csv")["fs"].to_numpy()
    return data, ref, scores


def pick(ref: pd.DataFrame, method: str, lhs: str, op: str, rhs: str) -> pd.Series:
    row = ref[(ref.method == method) & (ref.lhs == lhs) & (ref.op == op) & (ref.rhs == rhs)]
    assert len(row) == 1, (method, lhs, op, rhs)
    return row.iloc[0]


@pytest.mark.parametrize("name", CASES)
def test_sam_matches_lavaan(name):
    data, ref, _ = load(name)
    res = get_estimator("sam").fit(data)
    assert np.all(np.isfinite(res.params))
    for k, term in enumerate(data.terms[1:], start=1):
        rhs = "lv" if term == "xi" else term
        row = pick(ref, "sam", "y", "~", rhs)
        assert res.params[k] == pytest.approx(row.est, abs=EST_TOL), term
        assert res.se()[k] == pytest.approx(row.se, abs=SE_TOL), term
    veta = res.extras["veta"]
    assert veta[0, 0] == pytest.approx(pick(ref, "sam", "lv", "~~", "lv").est, abs=EST_TOL)
    assert res.extras["psi_y"] == pytest.approx(pick(ref, "sam", "y", "~~", "y").est,
                                                abs=EST_TOL)
    assert veta[0, 2] == pytest.approx(pick(ref, "sam", "lv", "~~", "z1").est, abs=EST_TOL)
    if name == "g50_force_pd":
        assert res.extras["adjusted"]
    assert not res.two_step and res.df_resid is None


@pytest.mark.parametrize("name", ["row16", "high_icc", "g50_low_icc", "two_z"])
def test_sam_and_zcond_equal_full_sem(name):
    """Balanced, admissible data: both point estimates equal the ML SEM's (lv ~~ Z).

    SAM without lavaan's measurement bounds (they bind in g50_low_icc: v <= Var(x1))."""
    data, ref, _ = load(name)
    sam = get_estimator("sam", bounds="none").fit(data)
    zc = get_estimator("zcond_score").fit(data)
    assert sam.ok and zc.ok
    for k, term in enumerate(data.terms[1:], start=1):
        row = pick(ref, "sem", "y", "~", "lv" if term == "xi" else term)
        assert sam.params[k] == pytest.approx(row.est, abs=EST_TOL), term
        assert zc.params[k] == pytest.approx(row.est, abs=EST_TOL), term
    # the equal-loading SAM has the full SEM's standard errors as well
    for k, term in enumerate(data.terms[1:], start=1):
        row = pick(ref, "sem", "y", "~", "lv" if term == "xi" else term)
        assert sam.se()[k] == pytest.approx(row.se, abs=SE_TOL), term


@pytest.mark.parametrize("name", ["row16", "high_icc", "g50_low_icc", "two_z"])
def test_zcond_matches_lavpredict(name):
    data, ref, fs = load(name)
    res = get_estimator("zcond_score").fit(data)
    assert res.ok
    ours = res.extras["scores"]
    shift = ours - fs  # lavaan fixes the latent intercept at 0: scores differ by a constant
    assert np.ptp(shift) < 1e-5
    for k, term in enumerate(data.terms[1:], start=1):
        row = pick(ref, "zcond_lm", "y", "~", "fs" if term == "xi" else term)
        assert res.params[k] == pytest.approx(row.est, abs=EST_TOL), term
        assert res.se()[k] == pytest.approx(row.se, abs=SE_TOL), term
    assert res.extras["psi_r"] == pytest.approx(pick(ref, "zcond_mm", "lv", "~~", "lv").est,
                                                abs=EST_TOL)
    for j, z in enumerate(data.z_names):
        g = pick(ref, "zcond_mm", "lv", "~", z).est
        assert res.extras["gamma"][j] == pytest.approx(g, abs=EST_TOL)


def test_zcond_negative_variance_flagged():
    """lavaan finds a negative residual factor variance here; we return no scores."""
    data, ref, _ = load("zcond_negative")
    res = get_estimator("zcond_score").fit(data)
    lav = pick(ref, "zcond_mm", "lv", "~~", "lv").est
    assert lav < 0 and res.extras["psi_r"] == pytest.approx(lav, abs=EST_TOL)
    assert not res.admissible and res.reason == "negative variance"
    assert np.all(np.isnan(res.params))


def test_sam_flags_non_pd():
    """lambda <= 1: the Croon-corrected Var(eta) is not positive definite; lavaan's
    repaired estimates (checked above) are reported but flagged."""
    data, _, _ = load("g50_force_pd")
    res = get_estimator("sam").fit(data)
    assert res.extras["adjusted"] and res.extras["psi_mm_unbounded"] > 0
    lam = res.extras["lambda"]
    assert res.admissible == (lam > 1)
    assert res.reason == ("" if lam > 1 else "not positive definite")
    assert np.all(np.isfinite(res.params))


def test_unequal_groups_fit_by_fiml_and_several_x_do_not_apply():
    data, _, _ = load("row16")
    sizes = np.full(100, 10)
    sizes[:2] = [9, 11]
    unbalanced = Dataset(group=np.repeat(np.arange(100), sizes), x=data.x, y=data.y, z=data.z)
    for name in ("sam", "zcond_score"):
        # one group one member short, another one longer: position 11 is observed in a
        # single group, which lavaan refuses for sam (its saturated moments); zcond_score's
        # parallel model is identified
        r = get_estimator(name).fit(unbalanced)
        want = "not_applicable" if name == "sam" else "ok"
        assert r.status.value == want, name
        if name == "sam":
            assert r.reason_code == "sparse_position"
    two_x = Dataset(group=data.group, x=np.column_stack([data.x, data.x[::-1]]), y=data.y,
                    z=data.z, x_names=("x1", "x2"))
    for name in ("sam", "zcond_score"):
        r = get_estimator(name).fit(two_x)
        assert r.status.value == "not_applicable" and r.reason_code == "too_many_x"
