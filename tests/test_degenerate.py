"""Degenerate second steps: a perfect fit is flagged, a location shift costs nothing.

The rules live in micromacro_sim.models.ols: the second step is fitted on the centred design
(``centre``) and reported on the original location; a residual variance at or below 1e-12
of Var(y) is ``perfect_fit`` (``perfect_fit``). The truth they are checked against is
statsmodels on the raw design and the algebra of a location shift.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import micromacro_sim as mm
from micromacro_sim.core.results import OLS_SE_TYPES as SE_TYPES
from micromacro_sim.models.ols import ols, ols_batch
from micromacro_sim.run.configure import parse_config
from micromacro_sim.run.runner import run
from micromacro_sim.run.storage import read_table

EXAMPLE = "docs/example_teams.csv"
TWO_STEP = ["unadjusted", "croon", "blup", "true"]


def _raw_statsmodels(y: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    import statsmodels.api as sm

    res = sm.OLS(y, X).fit()
    return np.asarray(res.params), {"classical": np.asarray(res.bse),
                                    **{t: np.asarray(getattr(res, f"{t}_se"))
                                       for t in ("HC0", "HC1", "HC2", "HC3")}}


@pytest.mark.parametrize("shift", [0.0, 3.0, -250.0])
def test_centred_fit_equals_the_raw_fit(shift):
    rng = np.random.default_rng(5)
    G = 40
    X = np.column_stack([np.ones(G), rng.normal(size=G), rng.normal(size=G) + shift])
    y = X @ np.array([0.3, 0.5, -0.2]) + rng.normal(size=G) * np.linspace(0.5, 2, G)
    want_p, want_se = _raw_statsmodels(y, X)
    p, se, df, s2 = ols(y, X)
    pb, seb, dfb, s2b = ols_batch(y[None], X[None])
    np.testing.assert_allclose(p, want_p, rtol=1e-10)
    np.testing.assert_allclose(pb[0], want_p, rtol=1e-10)
    for t in SE_TYPES:
        np.testing.assert_allclose(se[t], want_se[t], rtol=1e-10)
        np.testing.assert_allclose(seb[t][0], want_se[t], rtol=1e-10)
    assert df == dfb[0] == G - 3 and s2 == pytest.approx(s2b[0], rel=1e-12)


@pytest.mark.parametrize("shift", [1e6, 1e7])
def test_a_location_shift_of_x_changes_only_the_intercept(shift):
    df = pd.read_csv(EXAMPLE)
    methods = ["unadjusted", "croon"]
    base = mm.fit(df, group="team", member="member", x="climate", z="tenure",
                  y="performance", method=methods).to_frame()
    moved = df.assign(climate=df["climate"] + shift)
    got = mm.fit(moved, group="team", member="member", x="climate", z="tenure",
                 y="performance", method=methods).to_frame()
    assert (got["status"] == "ok").all(), got[["method", "status", "reason_code"]]
    for m in methods:
        a = base[base.method == m].set_index("term")
        b = got[got.method == m].set_index("term")
        for term in ("tenure", "climate"):
            for col in ("estimate", "se", "se_HC3"):
                assert b.loc[term, col] == pytest.approx(a.loc[term, col], rel=1e-6)
        want = a.loc["intercept", "estimate"] - a.loc["climate", "estimate"] * shift
        assert b.loc["intercept", "estimate"] == pytest.approx(want, rel=1e-6)


def test_a_constant_outcome_is_a_perfect_fit_on_both_engines():
    df = pd.read_csv(EXAMPLE).assign(performance=2.5)
    res = mm.fit(df, group="team", member="member", x="climate", z="tenure",
                 y="performance", method=["unadjusted", "croon", "blup"]).to_frame()
    assert set(res["reason_code"]) == {"perfect_fit"} and set(res["status"]) == {"flagged"}


def test_no_error_variance_flags_the_oracle_in_a_simulation(tmp_path):
    cfg = {"name": "exact", "seed": 3, "replications": 6, "n_jobs": 1,
           "methods": ["true", "unadjusted"],
           "fixed": {"n_groups": 30, "group_size": 5, "r_zxi": 0.3, "sigma2_eps": 0.0},
           "grid": {"icc": [0.2]}}
    for engine in ("fast", "reference"):
        out = tmp_path / engine
        run(parse_config({**cfg, "engine": engine}), run_dir=out, progress=False)
        est = read_table(out, "estimates")
        oracle = est[est["method"] == "true"]
        assert set(oracle["reason_code"]) == {"perfect_fit"}, engine
        # group means still carry measurement error: their fit is not perfect
        assert set(est[est["method"] == "unadjusted"]["status"]) == {"ok"}


def test_an_ordinary_fit_is_not_perfect():
    rng = np.random.default_rng(9)
    X = np.column_stack([np.ones(50), rng.normal(size=50)])
    y = X @ np.array([1.0, 2.0]) + 1e-5 * rng.normal(size=50)  # tiny but real noise
    from micromacro_sim.models.ols import perfect_fit

    s2 = ols_batch(y[None], X[None])[3]
    assert not perfect_fit(y[None], s2)[0]
    assert perfect_fit(y[None], s2 * 1e-8)[0]
