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


def test_estimates_and_ses_agree_where_both_accept(summary):
    ran = summary[summary["both_accept"] > 0]
    np.testing.assert_array_equal(ran["compared"], ran["both_accept"])  # no missing numbers
    assert (ran["max_est_diff"] <= EST_TOL).all(), ran.loc[ran["max_est_diff"] > EST_TOL]
    assert (ran["max_se_diff"] <= SE_TOL).all(), ran.loc[ran["max_se_diff"] > SE_TOL]


def test_comparison_is_not_vacuous(summary):
    # every applicable method x design has most of its datasets compared
    app = summary[summary["not_applicable"] == 0]
    assert (app["both_accept"] >= 0.5 * app["n"]).all(), app[app["both_accept"] < 0.5 * app["n"]]


@pytest.mark.r
@pytest.mark.skipif(shutil.which("Rscript") is None, reason="needs Rscript")
def test_rerun_subset_against_r(tmp_path):
    tool = _tool()
    detail = tool.run({"several_z": 1, "unbalanced": 1}, tmp_path)
    both = detail[detail["ours_ok"] & detail["r_accepted"]]
    assert len(both) >= 15  # 12 methods on several_z, 8 on unbalanced, a few may be flagged
    assert (both["est_diff"] <= EST_TOL).all(), both[["dataset", "method", "est_diff"]]
    assert (both["se_diff"] <= SE_TOL).all(), both[["dataset", "method", "se_diff"]]
