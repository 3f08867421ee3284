"""Group ids and member labels are labels: read as written, never merged, ordered by one rule."""

from __future__ import annotations

import numpy as np
import pandas as pd

import micromacro_sim as mm
from micromacro_sim.api.userdata import prepare, read_table_file
from micromacro_sim.cli.main import main
from tests.conftest import make_data

ARGS = dict(group="group", member="member", x="x", y="y", z="z")
GROUPS_ONLY = dict(group="group", x="x", y="y", z="z")  # a merged reading is then silent
#: Ids that pandas' type inference reads as one number or as missing.
LOOKALIKES = ["1.1", "1.10", "007", "7"]
NA_NAMED = ["NA", "None", "null", "nan", "N/A"]


def _teams(ids: list[str], seed: int = 3, group_size: int = 4) -> pd.DataFrame:
    """A simulated long table whose groups carry ``ids``; groups 0/1 and 2/3 share y and z."""
    f = make_data(seed=seed, n_groups=len(ids), group_size=group_size).to_frame()
    f = f[["group", "member", "x", "y", "z"]].copy()
    for twin, of in ((1, 0), (3, 2)):  # a merged reading is then silent: no y/z conflict
        f.loc[f["group"] == twin, ["y", "z"]] = f.loc[f["group"] == of, ["y", "z"]].to_numpy()
    return f.assign(group=f["group"].map(dict(enumerate(ids))))


def _ids(n: int) -> list[str]:
    return [*LOOKALIKES, *(f"{i}.5" for i in range(4, n))]


def test_numeric_looking_ids_read_from_csv_are_distinct_groups(tmp_path):
    ids = _ids(30)
    f = _teams(ids)
    src = tmp_path / "teams.csv"
    f.to_csv(src, index=False)
    frame = read_table_file(src, labels=["group", "member"])
    assert frame["group"].tolist() == f["group"].tolist()  # exactly as written
    res = mm.fit(frame, **GROUPS_ONLY, method="unadjusted")
    assert res.n_groups == 30
    assert list(res["unadjusted"].scores.index) == sorted(ids)  # not all integers: as text
    truth = mm.fit(f.assign(group="team " + f["group"]), **GROUPS_ONLY, method="unadjusted")
    assert np.allclose(res.params.to_numpy(), truth.params.to_numpy(), rtol=1e-12)
    merged = mm.fit(f.assign(group=f["group"].astype(float)), **GROUPS_ONLY,
                    method="unadjusted")
    assert merged.n_groups == 28  # what type inference made of it, without a word
    assert not np.allclose(res.params.to_numpy(), merged.params.to_numpy())


def test_na_named_groups_are_groups_and_an_empty_field_is_missing(tmp_path):
    ids = [*NA_NAMED, *_ids(25)[len(NA_NAMED):]]
    f = _teams(ids)
    src = tmp_path / "teams.csv"
    text = f.to_csv(index=False)
    src.write_text(text + ",0,1.5,0.2,0.3\n")  # a row whose group field is empty
    frame = read_table_file(src, labels=["group"])
    assert frame["group"].isna().sum() == 1 and set(NA_NAMED) <= set(frame["group"])
    res = mm.fit(frame, **ARGS, method="unadjusted")
    assert res.n_groups == 25 and res.n_persons == len(f)
    assert "dropped 1 row(s) with a missing group" in res.notes
    assert set(NA_NAMED) <= set(res["unadjusted"].scores.index)


def test_fit_command_reads_ids_as_written(tmp_path, capsys):
    ids = [*_ids(24), *NA_NAMED]
    f = _teams(ids)
    src, out = tmp_path / "teams.csv", tmp_path / "fit.csv"
    src.write_text(f.to_csv(index=False) + ",0,1.5,0.2,0.3\n")
    rc = main(["fit", str(src), "--group", "group", "--member", "member", "--x", "x",
               "--y", "y", "--z", "z", "--method", "unadjusted,factor_score",
               "--output", str(out)])
    assert rc == 0
    assert "note: dropped 1 row(s) with a missing group" in capsys.readouterr().err
    table = pd.read_csv(out).set_index(["method", "term"])["estimate"]
    truth = mm.fit(f.assign(group="team " + f["group"]), **ARGS,
                   method=["unadjusted", "factor_score"])
    for m in ("unadjusted", "factor_score"):
        assert np.allclose(table[m].to_numpy(), truth.params[m].to_numpy(), rtol=1e-9)
    numbers = pd.to_numeric(f["group"], errors="coerce")  # what type inference reads
    merged = mm.fit(f.assign(group=numbers), **GROUPS_ONLY, method="unadjusted")
    assert not np.allclose(table["unadjusted"].to_numpy(), merged.params["unadjusted"])


def test_member_labels_sort_as_integers_only_when_written_as_integers(tmp_path):
    cases = {("10", "2", "1"): ["1", "2", "10"], ("c", "a", "b"): ["a", "b", "c"],
             ("02", "01", "10"): ["01", "02", "10"], ("-1", "0", "7"): ["-1", "0", "7"],
             ("1", "01", "2"): ["01", "1", "2"]}
    base = make_data(seed=5, n_groups=6, group_size=3).to_frame()
    for members, expected in cases.items():
        f = base.assign(member=base["member"].map(dict(enumerate(members))))
        src = tmp_path / "m.csv"
        f.to_csv(src, index=False)
        for frame in (f, read_table_file(src, labels=["group", "member"])):
            labels = prepare(frame, **ARGS).data.member_labels
            assert list(labels) == expected, (members, list(labels))


def test_first_member_in_label_order_is_the_marker():
    f = make_data(seed=11, n_groups=60, group_size=10, icc=0.3).to_frame()
    as_text = f.assign(member=(f["member"] + 2).astype(str))  # '2' .. '11'
    padded = f.assign(member=(f["member"] + 2).map("m{:02d}".format))  # same order as text
    a = mm.fit(as_text, **ARGS, method="factor_score")
    b = mm.fit(padded, **ARGS, method="factor_score")
    assert np.allclose(a.params.to_numpy(), b.params.to_numpy(), rtol=1e-10)
    shuffled = mm.fit(as_text.sample(frac=1, random_state=2), **ARGS, method="factor_score")
    assert np.allclose(a.params.to_numpy(), shuffled.params.to_numpy(), rtol=1e-8)


def test_dataframe_ids_are_taken_as_given_and_never_merged():
    f = make_data(seed=4, n_groups=8, group_size=4).to_frame()
    f.loc[f["group"] == 1, "y"] = f.loc[f["group"] == 0, "y"].to_numpy()
    as_ints = prepare(f, **ARGS).data
    assert as_ints.group_labels.dtype.kind == "i" and list(as_ints.group_labels) == list(range(8))
    kinds = {0: 1, 1: True, 2: 1.1, 3: "1.1", 4: "7", 5: 7.5, 6: "b", 7: "a"}
    mixed = f.assign(group=f["group"].map(kinds).astype(object))
    d = prepare(mixed, **ARGS).data
    assert d.n_groups == 8  # 1 and True, 1.1 and '1.1' stay apart
    assert [(type(v).__name__, v) for v in d.group_labels] == [
        ("int", 1), ("float", 1.1), ("str", "1.1"), ("str", "7"), ("float", 7.5),
        ("bool", True), ("str", "a"), ("str", "b")]


def test_group_order_follows_the_label_rule():
    f = make_data(seed=6, n_groups=4, group_size=5).to_frame()
    for ids in (["10", "2", "1", "3"], [10, 2, 1, 3], ["10", "02", "1", "3"]):
        g = f.assign(group=f["group"].map(dict(enumerate(ids))))
        res = mm.fit(g, **ARGS, method="unadjusted")
        expected = ["1", "2", "3", "10"] if "02" not in ids else ["02", "1", "10", "3"]
        assert [str(v) for v in res["unadjusted"].scores.index] == expected
