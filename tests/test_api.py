"""The Python API: member identity, method options, one result type, summaries, covariances."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import micromacro_sim as mm
from micromacro_sim.api.fitresult import MicroMacroResult, Summary, UnknownMethod
from micromacro_sim.api.fitting import default_methods
from micromacro_sim.api.userdata import prepare
from micromacro_sim.cli.main import main
from micromacro_sim.core.errors import DataError
from micromacro_sim.core.status import Reason, Status
from micromacro_sim.estimators import get_estimator, registry
from tests.conftest import make_data

ARGS = dict(group="group", x="x", y="y", z="z")


@pytest.fixture(scope="module")
def balanced():
    """A balanced simulated dataset and its long frame with string labels."""
    d = make_data(seed=21, group_size=6, icc=0.2)
    f = d.to_frame().drop(columns="xi")
    f = f.assign(group=f["group"].map(lambda g: f"team-{g:03d}"),
                 member=f["member"].map(lambda m: f"m{m}"))
    return d, f


def _shuffles(frame, n=4):
    return [frame.sample(frac=1, random_state=s) for s in range(n)]


def test_member_column_makes_every_method_row_order_free(balanced):
    d, f = balanced
    fits = [mm.fit(g, **ARGS, member="member", method=default_methods()) for g in _shuffles(f)]
    for m in default_methods():
        first = fits[0][m]
        assert first.status is Status.OK, (m, first.reason)
        for other in fits[1:]:
            assert np.array_equal(other[m].params.to_numpy(), first.params.to_numpy()), m
            assert np.array_equal(other[m].bse.to_numpy(), first.bse.to_numpy(), equal_nan=True)
        # member labels m0..m5 sort as the generator's positions 0..5: the same dataset
        ref = get_estimator(m).fit(d)
        assert np.allclose(first.params.to_numpy(), ref.params, rtol=0, atol=1e-10), m


def test_without_member_position_methods_refuse_and_others_ignore_row_order(balanced):
    _, f = balanced
    names = default_methods()
    fits = [mm.fit(g, **ARGS, method=names) for g in _shuffles(f)]
    refused = {m for m in names if fits[0][m].status is Status.NOT_APPLICABLE}
    # every method either refuses for want of member identity or is free of the row order
    # (this covers methods added later without anyone listing them)
    assert {"factor_score", "sem", "sam", "zcond_score", "blup_hetvar"} <= refused
    assert {"unadjusted", "croon", "blup", "sem_2level"}.isdisjoint(refused)
    for m in refused:
        assert fits[0][m].reason_code == Reason.MEMBER_ORDER_UNDEFINED.value
        assert "member" in fits[0][m].reason
    for m in set(names) - refused:
        for other in fits[1:]:
            assert np.allclose(other[m].params, fits[0][m].params, rtol=0, atol=1e-10), m
    assert np.isnan(fits[0].reliability.table.loc["x", "alpha_raw"])  # alpha: items = members


def test_row_order_flag_fits_the_rows_as_given(balanced):
    d, f = balanced
    ordered = f.sort_values(["group", "member"])
    res = mm.fit(ordered, **ARGS, row_order_is_member=True, method=["factor_score", "sem"])
    for m in ("factor_score", "sem"):
        assert np.allclose(res[m].params, get_estimator(m).fit(d).params, atol=1e-10)
    shuffled = mm.fit(f.sample(frac=1, random_state=1), **ARGS, row_order_is_member=True,
                      method="factor_score")
    assert not np.allclose(shuffled["factor_score"].params, res["factor_score"].params)
    assert any("row order accepted" in n for n in res.notes)


def test_true_method_needs_truth_not_members(balanced):
    _, f = balanced
    res = mm.fit(f, **ARGS, method=["unadjusted", "true"])
    assert res["true"].reason_code == Reason.NEEDS_TRUTH.value


@pytest.mark.parametrize(
    ("mutate", "kwargs", "message"),
    [
        (lambda f: f.assign(member=np.where(f.index == 1, "m0", f["member"])), {},
         "member: member 'm0' appears more than once in group 'team-000'"),
        (lambda f: f.assign(member=f["member"].where(f.index != 8)), {},
         "member: missing member id in group 'team-001'"),
        (lambda f: f, {"row_order_is_member": True}, "member: give a member column"),
        (lambda f: f.drop(columns="member"), {}, "member: no such column"),
        (lambda f: f.assign(member=f["x"]), {"x": "member"}, "member: column used twice"),
    ],
)
def test_bad_member_column_is_named(balanced, mutate, kwargs, message):
    _, f = balanced
    args = {**ARGS, "member": "member", **kwargs}
    with pytest.raises(DataError, match="^" + message):
        prepare(mutate(f), **args)


def test_missing_members(balanced):
    _, f = balanced
    # one member of one team missing: the wide-format methods see a missing cell (FIML);
    # blup_hetvar keeps every member's own variance (labels, not positions)
    gone = f[~((f["group"] == "team-004") & (f["member"] == "m2"))]
    res = mm.fit(gone, **ARGS, member="member",
                 method=["sem", "factor_score", "blup_hetvar", "unadjusted"])
    assert res["sem"].status is Status.OK
    shuffled = mm.fit(gone.sample(frac=1.0, random_state=2), **ARGS, member="member",
                      method="sem")
    np.testing.assert_array_equal(shuffled["sem"].params, res["sem"].params)
    hv = res["blup_hetvar"]
    assert hv.status is Status.OK
    d = prepare(gone, **ARGS, member="member").data
    start = d.starts[4]
    assert list(d.position[start:start + 5]) == [0, 1, 3, 4, 5]
    row = mm.fit(gone.sort_values(["group", "member"]), **ARGS, row_order_is_member=True,
                 method="blup_hetvar")
    assert not np.allclose(row["blup_hetvar"].params, hv.params)  # positions shift there
    # same counts but a different label set: balanced, yet members do not line up
    swapped = f.assign(member=np.where((f["group"] == "team-007") & (f["member"] == "m5"),
                                       "m9", f["member"]))
    res = mm.fit(swapped, **ARGS, member="member", method=["sem", "unadjusted"])
    assert res["sem"].status is Status.OK  # m5 and m9 are each a position with a hole
    # no group has every label: the labels are still the positions (a team's absent member
    # is a hole in the layout, not a shift of the others), so blup_hetvar and the
    # wide-format methods fit
    code = f["group"].str[-3:].astype(int) % 6
    holes = f[f["member"] != "m" + code.astype(str)]
    res = mm.fit(holes, **ARGS, member="member", method=["blup_hetvar", "sem", "unadjusted"])
    assert res["sem"].status is Status.OK
    assert res["blup_hetvar"].status is Status.OK
    d = prepare(holes, **ARGS, member="member").data
    assert d.n_positions == 6 and int(d.sizes.max()) == 5
    shuffled = mm.fit(holes.sample(frac=1.0, random_state=3), **ARGS, member="member",
                      method="blup_hetvar")
    np.testing.assert_array_equal(shuffled["blup_hetvar"].params, res["blup_hetvar"].params)


def test_method_options_as_in_a_config(balanced):
    _, f = balanced
    res = mm.fit(f, **ARGS, method={"b_ml": {"method": "blup", "reml": False},
                                    "b": {"method": "blup"}})
    assert res.methods == ("b_ml", "b")
    data = prepare(f, **ARGS).data
    ml = registry()["blup"](reml=False).fit(data)
    assert np.allclose(res["b_ml"].params, ml.params, rtol=0, atol=1e-12)
    assert not np.allclose(res["b_ml"].params, res["b"].params)
    mixed = mm.fit(f, **ARGS, method=["unadjusted", {"s": {"method": "sem_2level"}}])
    assert mixed.methods == ("unadjusted", "s")
    with pytest.raises(DataError, match="^method.b: option reml: expected true or false"):
        mm.fit(f, **ARGS, method={"b": {"method": "blup", "reml": "no"}})
    with pytest.raises(DataError, match="^method: unknown method 'nope'"):
        mm.fit(f, **ARGS, method="nope")
    with pytest.raises(DataError, match="^method: label 'croon' appears more than once"):
        mm.fit(f, **ARGS, method=["croon", "croon"])


def test_one_result_type_and_unknown_method(balanced):
    _, f = balanced
    one = mm.fit(f, **ARGS, method="croon")
    many = mm.fit(f, **ARGS, method=["croon", "unadjusted"])
    labelled = mm.fit(f, **ARGS, method={"c": {"method": "croon"}})
    for r in (one, many, labelled):
        assert type(r) is MicroMacroResult
        assert list(r.params.index) == ["intercept", "z", "x"]
    assert np.array_equal(one["croon"].params, many["croon"].params)
    assert list(many.params.columns) == ["croon", "unadjusted"]
    with pytest.raises(KeyError) as err:
        many["sem"]
    assert isinstance(err.value, UnknownMethod)
    assert str(err.value) == "unknown method 'sem'; available: croon, unadjusted"
    with pytest.raises(DataError, match="^method: no requested method applies"):
        mm.fit(f, **ARGS, method="sem")  # no member column


def test_summary_objects(balanced):
    _, f = balanced
    res = mm.fit(f, **ARGS, member="member", method=["croon", "sem", "unadjusted"],
                 cov_type="HC2")
    for s in (res.summary(), res["croon"].summary()):
        assert isinstance(s, Summary)
        assert str(s) == repr(s) == s.text and "croon" in s.text
        assert s._repr_html_().count("<table") == 2 and "croon" in s._repr_html_()
    assert "HC2" in res["croon"].summary().text
    single = mm.fit(f, **ARGS, method="croon")
    assert single.summary().text == single["croon"].summary().text


def test_tvalues_and_full_covariance(balanced):
    d, f = balanced
    res = mm.fit(f, **ARGS, member="member", method=["croon", "unadjusted", "sem"])
    for m in ("croon", "unadjusted"):
        r = res[m]
        assert np.allclose(r.tvalues, r.params / r.bse, rtol=1e-12)
        X, y = r.design, r.y
        bread = np.linalg.inv(X.T @ X)
        e = y - X @ r.params.to_numpy()
        h = np.einsum("gi,ij,gj->g", X, bread, X)
        G, k = X.shape
        hc = {"HC0": e**2, "HC1": e**2 * G / (G - k), "HC2": e**2 / (1 - h),
              "HC3": e**2 / (1 - h) ** 2}
        for ct, w in hc.items():  # independent sandwich, all of its entries
            cov = r.cov_params(ct).to_numpy()
            assert np.allclose(cov, bread @ (X.T * w) @ X @ bread, rtol=1e-10, atol=0)
            assert np.allclose(np.sqrt(np.diag(cov)), r.fit.se(ct), rtol=1e-10)
        classical = r.cov_params("classical").to_numpy()
        assert np.allclose(classical, bread * (e @ e) / (G - k), rtol=1e-10)
        assert abs(classical[0, 2]) > 0
    sem = res["sem"].cov_params()
    assert np.allclose(np.diag(sem), res["sem"].bse ** 2)
    assert np.isnan(sem.to_numpy()[~np.eye(3, dtype=bool)]).all()  # SEs only: unknown
    stacked = res.cov_params()
    assert list(stacked.index.get_level_values(0).unique()) == ["croon", "unadjusted", "sem"]


def test_fit_command_member_and_method_options(tmp_path, balanced, capsys):
    _, f = balanced
    src = tmp_path / "d.csv"
    f.sample(frac=1, random_state=5).to_csv(src, index=False)
    out = tmp_path / "out.csv"
    base = ["fit", str(src), "--group", "group", "--x", "x", "--y", "y", "--z", "z"]
    rc = main([*base, "--member", "member", "--method", "unadjusted,sem",
               "--method", "b_ml={method: blup, reml: false}",
               "--method", "[{s: {method: sem_2level}}, croon]", "--output", str(out)])
    assert rc == 0
    table = pd.read_csv(out)
    assert list(table["method"].unique()) == ["unadjusted", "sem", "b_ml", "s", "croon"]
    assert (table["status"] == "ok").all()
    ref = mm.fit(f, **ARGS, member="member", method="sem")
    got = table[table["method"] == "sem"]["estimate"].to_numpy()
    assert np.allclose(got, ref["sem"].params, rtol=0, atol=1e-12)
    capsys.readouterr()
    rc = main([*base, "--method", "sem,unadjusted", "--output", str(out)])
    assert rc == 0
    assert "sem not applicable [member_order_undefined]" in capsys.readouterr().err
    table = pd.read_csv(out)
    assert set(table.loc[table["method"] == "sem", "reason_code"]) == {"member_order_undefined"}
    for bad, msg in ((["--method", "b={method: blup, reml: maybe}"], "error: method.b: option"),
                     (["--method", "[croon"], "error: method: cannot read"),
                     (["--member", "member", "--row-order-is-member"], "error: member:")):
        rc = main([*base, *bad, "--output", str(tmp_path / "no.csv")])
        assert rc == 2 and not (tmp_path / "no.csv").exists()
        assert capsys.readouterr().err.strip().startswith(msg)

