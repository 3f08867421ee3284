"""Delete-one-group jackknife SEs (option ``se: jackknife`` of every two-step method).

The registry-wide agreement with a brute-force loop of refits (both steps, without each
group, to 1e-10) is the contract check ``jackknife`` (tests/test_contract.py); here: the
kernels against independent algebra, the option, the flags, the run and summary plumbing.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

import micromacro_sim as mm
from micromacro_sim.cli.main import main
from micromacro_sim.core.results import SE_COLUMNS, SE_TYPES
from micromacro_sim.core.status import Reason
from micromacro_sim.estimators import get_estimator, registry
from micromacro_sim.estimators.contract import make_batch, make_data
from micromacro_sim.generate.batch import Batch
from micromacro_sim.models.jackknife import jackknife_cov, jackknife_se, ols_deletions

EXAMPLE = "docs/example_teams.csv"


def _design(rng: np.random.Generator, R: int, G: int, shift: float = 0.0) -> np.ndarray:
    return np.concatenate([np.ones((R, G, 1)), rng.normal(size=(R, G, 2)) + shift], axis=2)


@pytest.mark.parametrize("shift", [0.0, 1e4])
def test_ols_deletions_equal_refits_without_each_group(shift):
    rng = np.random.default_rng(3)
    X = _design(rng, 4, 15, shift)
    y = X @ np.array([0.3, 0.5, -0.2]) + rng.normal(size=(4, 15))
    got = ols_deletions(y, X)
    for r in range(4):
        for g in range(15):
            keep = np.arange(15) != g
            want = np.linalg.lstsq(X[r, keep], y[r, keep], rcond=None)[0]
            np.testing.assert_allclose(got[r, g], want, rtol=1e-9, atol=1e-10)


def test_jackknife_of_ols_is_the_hc3_type_identity():
    """MacKinnon & White (1985): for OLS the jackknife covariance is
    (G-1)/G [(X'X)^-1 X' diag(et^2) X (X'X)^-1 - b b' / G], et = e / (1 - h),
    b = (X'X)^-1 X' et: algebra independent of the downdate."""
    rng = np.random.default_rng(8)
    G = 25
    X = _design(rng, 1, G)[0]
    y = X @ np.array([1.0, -0.4, 0.2]) + rng.normal(size=G) * np.linspace(0.5, 2.0, G)
    A = np.linalg.inv(X.T @ X)
    e = y - X @ (A @ X.T @ y)
    h = np.einsum("gk,kl,gl->g", X, A, X)
    et = e / (1 - h)
    b = A @ X.T @ et
    want = (G - 1) / G * (A @ (X.T * et**2) @ X @ A - np.outer(b, b) / G)
    got = jackknife_cov(ols_deletions(y[None], X[None]))[0]
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(jackknife_se(ols_deletions(y[None], X[None]))[0],
                               np.sqrt(np.diag(want)), rtol=1e-10)


def test_jackknife_formula_and_missing_refits():
    d = np.array([[1.0, 2.0], [2.0, 2.5], [4.0, 1.0]])
    dev = d - d.mean(axis=0)
    np.testing.assert_allclose(jackknife_se(d), np.sqrt(2 / 3 * (dev**2).sum(axis=0)))
    d[1, 0] = np.nan
    assert np.all(np.isnan(jackknife_se(d)))
    assert np.all(np.isnan(jackknife_cov(d)))


def test_every_two_step_method_has_the_option_and_only_they_do():
    for name, cls in registry().items():
        if cls.two_step:
            assert cls.options["se"].default == "ols", name
            assert cls.options["se"].choices == ("ols", "jackknife"), name
        else:
            assert "se" not in cls.options, name
    with pytest.raises(ValueError, match="option se: expected one of"):
        get_estimator("croon", se="bootstrap")


def test_without_the_option_there_is_no_jackknife():
    data = make_data(seed=2)
    res = get_estimator("croon").fit(data)
    assert res.ok and "JK" not in res.bse and np.all(np.isnan(res.se("JK")))
    batch = make_batch({"n_groups": 30, "group_size": 5, "icc": 0.2, "r_zxi": 0.3}, reps=3)
    out = get_estimator("croon").fit_batch(batch, "fast")
    assert np.all(np.isnan(out.bse["JK"])) and np.all(out.admissible)


def test_jackknife_carries_the_first_step():
    """croon's JK differs from the downdate that holds its scores fixed (the first step's
    variability is in it), while unadjusted's equals that downdate exactly."""
    data = make_data(seed=2, n_groups=30, group_size=5, icc=0.15)
    for name, local in (("unadjusted", True), ("croon", False)):
        res = get_estimator(name, se="jackknife").fit(data)
        fixed = jackknife_se(ols_deletions(data.y[None],
                                           data.design(res.extras["scores"])[None]))[0]
        if local:
            np.testing.assert_allclose(res.se("JK"), fixed, rtol=1e-12)
        else:
            assert np.max(np.abs(res.se("JK") / fixed - 1)) > 1e-3


def _failing_deletion_dataset():
    """A croon dataset whose full fit is clean but some group's deletion is inadmissible."""
    croon = get_estimator("croon")
    for seed in range(400):
        data = make_data(seed=seed, n_groups=12, group_size=3, icc=0.08)
        if not croon.fit(data).ok:
            continue
        if any(not np.all(np.isfinite(croon.fit(data.without_group(g)).params))
               for g in range(data.n_groups)):
            return data
    raise AssertionError("no dataset with a failing deletion among 400 seeds")


def test_an_incomplete_jackknife_is_flagged_not_silent():
    data = _failing_deletion_dataset()
    est = get_estimator("croon", se="jackknife")
    res = est.fit(data)
    assert np.all(np.isfinite(res.params)) and np.all(np.isnan(res.se("JK")))
    assert not res.admissible and res.status.value == "flagged"
    assert Reason.JACKKNIFE_INCOMPLETE in {f.code for f in res.flags}
    fast = est.fit_batch(Batch.from_datasets([data]), "fast")
    assert list(fast.reason_code) == [res.reason_code]
    assert fast.reason[0] == res.reason


def test_user_data_jackknife_and_its_covariance():
    df = pd.read_csv(EXAMPLE)
    out = mm.fit(df, group="team", member="member", x="climate", z="tenure",
                 y="performance", method=[{"croon_jk": {"method": "croon",
                                                        "se": "jackknife"}}],
                 cov_type="JK")
    res = out["croon_jk"]
    se = res.fit.se("JK")
    assert np.all(np.isfinite(se)) and res.fit.ok
    np.testing.assert_allclose(np.sqrt(np.diag(res.cov_params().to_numpy())), se,
                               rtol=1e-12)
    np.testing.assert_allclose(res.bse.to_numpy(), se)
    # the rows of a group do not matter: the same SE with the file's rows reversed
    again = mm.fit(df.iloc[::-1], group="team", member="member", x="climate", z="tenure",
                   y="performance", method=[{"croon_jk": {"method": "croon",
                                                          "se": "jackknife"}}])
    np.testing.assert_array_equal(again["croon_jk"].fit.se("JK"), se)


def test_se_jk_is_a_column_and_a_summary_type(tmp_path):
    cfg = {
        "name": "jk", "seed": 11, "replications": 12, "n_jobs": 1,
        "output": str(tmp_path / "run"),
        "admissibility": {"policy": "flag", "gate": "none"},
        "methods": ["croon", {"croon_jk": {"method": "croon", "se": "jackknife"}},
                    {"unadjusted_jk": {"method": "unadjusted", "se": "jackknife"}}],
        "fixed": {"n_groups": 25, "group_size": {"poisson": 6, "min": 2}, "icc": 0.2,
                  "r_zxi": 0.3, "beta_xi": 0.3},
    }
    path = tmp_path / "jk.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path), "--quiet", "--chunk-size", "5"]) == 0
    est = pd.read_parquet(tmp_path / "run" / "estimates")
    assert "se_JK" in est.columns and SE_COLUMNS["JK"] == "se_JK" and "JK" in SE_TYPES
    jk = est[est["method"] == "croon_jk"]
    assert jk["se_JK"].notna().mean() > 0.5
    assert est.loc[est["method"] == "croon", "se_JK"].isna().all()
    # the same estimates as croon, whatever the option
    a = est[est["method"] == "croon"].sort_values(["replication", "term"])
    b = jk.sort_values(["replication", "term"])
    np.testing.assert_array_equal(a["estimate"].to_numpy(), b["estimate"].to_numpy())
    # one dataset at a time gives the same bits as the chunks of 5
    d2 = tmp_path / "run2"
    assert main(["run", str(path), "--quiet", "--chunk-size", "1", "--output", str(d2)]) == 0
    est2 = pd.read_parquet(d2 / "estimates")
    key = ["method", "scenario", "replication", "term"]
    m = est.sort_values(key).reset_index(drop=True)
    m2 = est2.sort_values(key).reset_index(drop=True)
    np.testing.assert_array_equal(m["se_JK"].to_numpy(), m2["se_JK"].to_numpy())
    assert main(["summarize", str(tmp_path / "run"), "--se-type", "JK"]) == 0
    perf = pd.read_csv(tmp_path / "run" / "summary.csv")
    row = perf[(perf["method"] == "croon_jk") & (perf["term"] == "xi")].iloc[0]
    assert 0 <= row["cover_JK"] <= 1 and np.isfinite(row["modse_JK"])
    assert perf.loc[perf["method"] == "croon", "cover_JK"].isna().all()
