"""User data: conversion, checks and the `fit` command."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from micromacro_sim.api.userdata import prepare
from micromacro_sim.cli.main import main
from micromacro_sim.core.errors import DataError
from micromacro_sim.estimators import get_estimator
from tests.conftest import make_data


@pytest.fixture
def frame():
    return make_data(seed=8, group_size={"uniform": [3, 9]}).to_frame()


def test_shuffled_rows_and_string_labels_give_same_dataset(frame):
    d = make_data(seed=8, group_size={"uniform": [3, 9]})
    f = frame.assign(group=frame["group"].map(lambda g: f"team-{g:03d}"))
    p = prepare(f.sample(frac=1, random_state=3), group="group", x="x", y="y", z="z")
    assert np.allclose(p.data.xbar, d.xbar) and np.allclose(p.data.y, d.y)
    assert np.allclose(p.data.z, d.z)
    a = get_estimator("unadjusted").fit(p.data).params
    assert np.allclose(a, get_estimator("unadjusted").fit(d).params)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: f.assign(y=np.where(f.index == 1, 9.0, f["y"])),
         "y: not constant within group 0"),
        (lambda f: f.drop(columns="z"), "z: no such column"),
        (lambda f: f.assign(x=f["x"].astype(object).where(f.index != 2, "abc")), "x: non-numeric"),
        (lambda f: f.assign(x=np.where(f.index == 4, np.inf, f["x"])), "x: infinite value"),
        (lambda f: f[f["group"] < 2], "group: need at least 3 groups"),
        (lambda f: f.drop_duplicates("group"), "group: every group has a single member"),
    ],
)
def test_bad_data_is_named(frame, mutate, message):
    with pytest.raises(DataError, match="^" + message.replace("(", r"\(")):
        prepare(mutate(frame), group="group", x="x", y="y", z="z")


def test_missing_values_are_dropped_with_notes(frame):
    f = frame.copy()
    f.loc[0, "x"] = np.nan
    f.loc[f["group"] == 5, "y"] = np.nan
    p = prepare(f, group="group", x="x", y="y", z="z")
    assert p.data.n_groups == frame["group"].nunique() - 1
    assert any("missing x" in n for n in p.notes) and any("missing y" in n for n in p.notes)


def test_fit_command_writes_csv(tmp_path, frame, capsys):
    src = tmp_path / "d.csv"
    frame.to_csv(src, index=False)
    out = tmp_path / "out.csv"
    rc = main(["fit", str(src), "--group", "group", "--x", "x", "--y", "y", "--z", "z",
               "--method", "unadjusted,croon", "--output", str(out)])
    assert rc == 0
    table = pd.read_csv(out)
    assert list(table["term"].unique()) == ["intercept", "z", "x"]
    assert set(table["method"]) == {"unadjusted", "croon"}
    for col in ("estimate", "se", "se_HC0", "se_HC1", "se_HC2", "se_HC3", "admissible", "reason"):
        assert col in table.columns
    assert "low reliability" in capsys.readouterr().err  # ICC .1, n 3-9: ICC(2) near .45
    rc = main(["fit", str(src), "--group", "group", "--x", "x", "--y", "nope", "--output",
               str(tmp_path / "none.csv")])
    assert rc == 2 and not (tmp_path / "none.csv").exists()
    assert capsys.readouterr().err.strip().startswith("error: nope: no such column")


def test_python_api_result_and_comparison(frame):
    import micromacro_sim as mm

    res = mm.fit(frame, group="group", x="x", y="y", z="z", method="croon", cov_type="HC2")
    one = res["croon"]
    ref = get_estimator("croon").fit(prepare(frame, group="group", x="x", y="y", z="z").data)
    assert np.allclose(one.params.to_numpy(), ref.params)
    assert np.allclose(one.bse.to_numpy(), ref.se("HC2"))
    assert np.allclose(res.params["croon"].to_numpy(), ref.params)
    ci = one.conf_int()
    assert (ci["lower"] < one.params).all() and (one.params < ci["upper"]).all()
    assert res.nobs == {"groups": frame["group"].nunique(), "persons": len(frame)}
    assert one.scores is not None and len(one.scores) == one.n_groups
    assert 0 < res.reliability.table.loc["x", "icc2"] < 1
    assert "croon" in res.summary().text and "HC2" in res.summary().text
    both = mm.fit(frame, group="group", x="x", y="y", z="z",
                  method=["unadjusted", "sem_2level", "sem"])
    table = both.table()
    assert list(table.columns) == ["unadjusted", "unadjusted se", "sem_2level", "sem_2level se",
                                   "sem", "sem se"]
    assert both["sem_2level"].cov_type == "classical"  # one-step model: model-based SE
    # unbalanced groups without a member column: which member is which is unknown
    assert both["sem"].reason_code == "member_order_undefined"
    assert "not applicable: sem [member_order_undefined]" in both.summary().text
    with pytest.raises(DataError, match="^method: no requested method applies.*sem: "):
        mm.fit(frame, group="group", x="x", y="y", z="z", method="sem")
    # with one, the absent positions are missing cells (full-information ML), and the
    # order of the rows does not matter
    named = mm.fit(frame, group="group", x="x", y="y", z="z", member="member", method="sem")
    assert named["sem"].status.value == "ok"
    again = mm.fit(frame.sample(frac=1.0, random_state=5), group="group", x="x", y="y",
                   z="z", member="member", method="sem")
    np.testing.assert_array_equal(again["sem"].params, named["sem"].params)


def test_low_reliability_warning():
    import micromacro_sim as mm

    low = make_data(seed=1, icc=0.05, group_size=5).to_frame()
    high = make_data(seed=1, icc=0.6, group_size=20).to_frame()
    args = dict(group="group", x="x", y="y", z="z")
    assert "low reliability" in mm.fit(low, **args).summary().text
    assert "low reliability" not in mm.fit(high, **args).summary().text
