"""SPEC section 6: the equal-loading CFA and the random-intercept mixed model on the BFI items.

Reference: lavaan 0.6.14 ``cfa(..., meanstructure = TRUE)`` and lme4 1.1.31
``lmer(value ~ -1 + item + (1 | id), REML = FALSE)``, stored in tests/fixtures/bfi/reference.json
by tools/r/bfi_fixture.R.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from micromacro_sim.api.demo import ITEMS, bfi_demo, cfa_closed_form, load_bfi

REF = json.loads((Path(__file__).parent / "fixtures" / "bfi" / "reference.json").read_text())
LAV, LME = REF["lavaan"], REF["lme4"]


@pytest.fixture(scope="module")
def demo():
    return bfi_demo()


def row(demo, quantity: str, column: str = "cfa") -> float:
    t = demo.table
    return float(t.loc[t["quantity"] == quantity, column].iloc[0])


def test_load_bfi():
    df = load_bfi()
    assert len(df) == REF["n"] == 2709
    assert list(df.columns) == ["id", *ITEMS]
    assert not df.isna().any().any()
    assert df["A1"].between(-6, -1).all() and df["A2"].between(1, 6).all()


def test_spec_numbers_at_printed_precision(demo):
    # SPEC section 6, rounded as printed there
    for item, value in zip(ITEMS, [-2.412, 4.797, 4.599, 4.682, 4.551], strict=True):
        for col in ("cfa", "mixed"):
            assert round(row(demo, f"intercept {item}", col), 3) == value
            assert round(row(demo, f"SE intercept {item}", col), 3) == 0.026
    assert round(row(demo, "residual variance"), 3) == 1.201
    assert round(row(demo, "SE residual variance"), 3) == 0.016
    assert round(row(demo, "factor variance"), 3) == 0.571
    assert round(row(demo, "SE factor variance"), 3) == 0.022
    assert round(row(demo, "chi-square"), 3) == 744.709
    assert row(demo, "df") == 13
    first = [round(v, 3) for v in demo.cfa_scores[:4]]
    assert first == [-0.453, -0.312, -0.594, -0.031]
    assert list(demo.ids[:4]) == [1, 2, 3, 4]


def test_closed_form_matches_lavaan():
    # lavaan stops its optimiser near 1e-8 of the optimum; the closed form is exact
    fit = cfa_closed_form(load_bfi()[list(ITEMS)].to_numpy())
    np.testing.assert_allclose(fit.intercepts, LAV["intercepts"], atol=1e-9)
    np.testing.assert_allclose(fit.intercept_se, LAV["intercept_se"], rtol=1e-7)
    assert fit.residual_variance == pytest.approx(LAV["residual_variance"], abs=1e-7)
    assert fit.residual_variance_se == pytest.approx(LAV["residual_variance_se"], rel=1e-6)
    assert fit.factor_variance == pytest.approx(LAV["factor_variance"], abs=1e-7)
    assert fit.factor_variance_se == pytest.approx(LAV["factor_variance_se"], rel=1e-6)
    assert fit.chisq == pytest.approx(LAV["chisq"], abs=1e-6)
    assert fit.df == LAV["df"]
    assert fit.loglik == pytest.approx(LAV["logl"], abs=1e-6)
    np.testing.assert_allclose(fit.scores[:10], LAV["scores_head"], atol=1e-7)
    assert np.sum(fit.scores**2) == pytest.approx(LAV["scores_sumsq"], rel=1e-7)
    assert fit.admissible and fit.reason == ""


def test_mixed_matches_cfa_and_lme4(demo):
    cfa, mixed = demo.cfa, demo.mixed
    assert mixed.admissible, mixed.reason
    # CFA and mixed model are the same model: estimates agree to 1e-4 (observed: ~1e-9)
    np.testing.assert_allclose(mixed.intercepts, cfa.intercepts, atol=1e-4)
    np.testing.assert_allclose(mixed.intercept_se, cfa.intercept_se, atol=1e-4)
    assert mixed.residual_variance == pytest.approx(cfa.residual_variance, abs=1e-4)
    assert mixed.factor_variance == pytest.approx(cfa.factor_variance, abs=1e-4)
    assert mixed.chisq == pytest.approx(cfa.chisq, abs=1e-4)
    assert mixed.loglik == pytest.approx(LME["logl"], abs=1e-4)
    # against lme4 directly
    np.testing.assert_allclose(mixed.intercepts, LME["fixef"], atol=1e-6)
    np.testing.assert_allclose(mixed.intercept_se, LME["fixef_se"], rtol=1e-6)
    assert mixed.factor_variance == pytest.approx(LME["id_variance"], abs=1e-6)
    assert mixed.residual_variance == pytest.approx(LME["residual_variance"], abs=1e-6)
    np.testing.assert_allclose(demo.mixed_random_effects[:10], LME["ranef_head"], atol=1e-6)
    # statsmodels' Group Var SE is sqrt(scale) * SE(ratio); delta method from the closed-form
    # expected information gives that ratio SE exactly (0.0205091 -> 0.0224739)
    s2, phi, n, G = cfa.residual_variance, cfa.factor_variance, len(ITEMS), len(demo.ids)
    l1 = s2 + n * phi
    info = 0.5 * G * np.array([[1 / l1**2 + (n - 1) / s2**2, n / l1**2], [n / l1**2, n**2 / l1**2]])
    grad = np.array([-phi / s2**2, 1 / s2])
    se_ratio = np.sqrt(grad @ np.linalg.inv(info) @ grad)
    assert mixed.factor_variance_se == pytest.approx(np.sqrt(s2) * se_ratio, rel=1e-4)


def test_scores_equal_random_effects(demo):
    assert demo.cfa_scores.shape == demo.mixed_random_effects.shape == (2709,)
    assert demo.max_score_difference < 1e-4
    # lme4's conditional modes equal lavaan's regression scores (R side, stored)
    assert LME["max_abs_ranef_minus_scores"] < 1e-6


def test_semopy_path(demo):
    sem = demo.semopy
    assert sem is not None and sem.admissible, sem and sem.reason
    assert sem.residual_variance == pytest.approx(LAV["residual_variance"], abs=1e-4)
    assert sem.factor_variance == pytest.approx(LAV["factor_variance"], abs=1e-4)
    assert sem.residual_variance_se == pytest.approx(LAV["residual_variance_se"], abs=1e-5)
    assert sem.factor_variance_se == pytest.approx(LAV["factor_variance_se"], abs=1e-5)
    assert sem.chisq == pytest.approx(LAV["chisq"], abs=1e-3)
    assert sem.df == 13
    np.testing.assert_allclose(demo.semopy_scores, demo.cfa_scores, atol=1e-4)


def test_table_and_format(demo):
    assert list(demo.table.columns) == ["quantity", "cfa", "mixed", "semopy"]
    assert not any("disagrees" in n for n in demo.notes)
    text = demo.format()
    assert "744.708769" in text and "score id 1" in text
    assert "-0.452856" in text


def test_boundary_is_flagged():
    # within-person spread only: persons' means identical, so the factor variance ML is 0
    y = np.tile(np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]]), (10, 1))
    fit = cfa_closed_form(y)
    assert not fit.admissible and fit.reason == "negative variance"
    assert fit.factor_variance == 0.0 and np.all(fit.scores == 0)
