"""Agreement of every method with its R peer (tools/crosscheck_r.py).

The committed summary (tests/fixtures/crosscheck/summary.csv) comes from new datasets of
four designs fitted here and in R; these tests hold it to the README's tolerances. The
test marked ``r`` re-runs a small subset against R when Rscript is available.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SUMMARY = ROOT / "tests" / "fixtures" / "crosscheck" / "summary.csv"
EST_TOL, SE_TOL = 1e-4, 1e-3
#: methods that need balanced groups: not applicable in the unbalanced design
BALANCED_ONLY = {"factor_score", "zcond_score", "sem", "sam"}


def _tool():
    path = ROOT / "tools" / "crosscheck_r.py"
    spec = importlib.util.spec_from_file_location("crosscheck_r", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def summary() -> pd.DataFrame:
    return pd.read_csv(SUMMARY)


def test_summary_covers_every_method_and_design(summary):
    tool = _tool()
    assert set(summary["design"]) == set(tool.DESIGNS)
    assert set(summary["method"]) == set(tool.ALL_METHODS)
    assert (summary["n"] >= 20).all()
    counts = summary[["not_applicable", "both_accept", "ours_only", "r_only", "neither"]]
    np.testing.assert_array_equal(counts.sum(axis=1), summary["n"])


def test_not_applicable_only_where_the_design_excludes_the_method(summary):
    na = summary["not_applicable"] > 0
    expected = (summary["design"] == "unbalanced") & summary["method"].isin(BALANCED_ONLY)
    assert (na == expected).all(), summary.loc[na != expected, ["method", "design"]]


#: (method, design) -> why the committed numbers exceed the tolerance. Strict xfail: once a
#: rerun of the tool after the fix meets the tolerance, the entry must go.
KNOWN = {
    ("factor_score", "low_icc"): "low_icc_005: both accept different optima. Ours is the "
    "global minimum (fmin .2718, admissible, marker standardized loading .015: small but "
    "identified, so no marker_not_identified); lavaan stops at a local minimum .037 higher "
    "(fmin .3091, positive-definite Hessian). See tests/fixtures/crosscheck/README.md",
    ("sem_2level_fx", "low_icc"): "low_icc_022: flat likelihood (SE of b_x 2.9), lavaan "
    "stops 1.4e-8 above the conditional minimum, 4.7e-4 away in b_x (test_kernels_twolevel "
    "holds it to 1e-3 and checks the objective)",
}


def _rows():
    rows = pd.read_csv(SUMMARY)
    for _, r in rows[rows["both_accept"] > 0].iterrows():
        key = (r["method"], r["design"])
        marks = [pytest.mark.xfail(strict=True, reason=KNOWN[key])] if key in KNOWN else []
        yield pytest.param(r.to_dict(), id=f"{key[0]}-{key[1]}", marks=marks)


@pytest.mark.parametrize("row", list(_rows()))
def test_estimates_and_ses_agree_where_both_accept(row):
    assert row["compared"] == row["both_accept"]  # no missing numbers
    assert row["max_est_diff"] <= EST_TOL
    assert row["max_se_diff"] <= SE_TOL


#: (method, design) -> fewer datasets compared than the default 10, and why
FEW_COMPARED = {
    ("factor_score", "low_icc"): (5, "at ICC .05 and G = 50 the CFA's global optimum is a "
                                     "Heywood case in most datasets (15 of 25 flagged here)"),
}


def test_comparison_is_not_vacuous(summary):
    # every applicable method x design has at least 10 datasets compared (FEW_COMPARED: fewer)
    app = summary[summary["not_applicable"] == 0]
    keys = zip(app["method"], app["design"], strict=True)
    floor = [FEW_COMPARED.get(k, (10, ""))[0] for k in keys]
    few = app["both_accept"].to_numpy() < np.array(floor)
    assert not few.any(), app[few]


@pytest.mark.r
@pytest.mark.skipif(shutil.which("Rscript") is None, reason="needs Rscript")
def test_rerun_subset_against_r(tmp_path):
    tool = _tool()
    detail = tool.run({"several_z": 1, "unbalanced": 1}, tmp_path)
    both = detail[detail["ours_ok"] & detail["r_accepted"]]
    assert len(both) >= 15  # 12 methods on several_z, 8 on unbalanced, a few may be flagged
    assert (both["est_diff"] <= EST_TOL).all(), both[["dataset", "method", "est_diff"]]
    assert (both["se_diff"] <= SE_TOL).all(), both[["dataset", "method", "se_diff"]]
