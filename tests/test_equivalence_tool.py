"""tools/equivalence.py: the comparison rules on synthetic tables, the pinned corpora, and
``run --quick`` on this tree twice giving no exception."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest
import yaml

from micromacro_sim.run.configure import load_config

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


tool = _load("equivalence")
TERMS = ("intercept", "z", "xi")
SE = ("se", "se_HC0", "se_HC1", "se_HC2", "se_HC3")


def _verdict(rep: int, method: str, **kw) -> dict:
    row = dict(corpus="c", cell="k1", cell_label="G=30", replication=rep, method=method,
               status="ok", reason_code="", converged=True, admissible=True, redraws=pd.NA,
               kind="", discrepancy=math.nan)
    row.update(kw)
    return row


def _side() -> tool.Side:
    """Two replications of factor_score (with the CFA's fmin), croon and a gate."""
    verdicts, estimates, datasets = [], [], []
    for rep in (0, 1):
        fmin = 0.25 + rep / 10
        verdicts += [_verdict(rep, "factor_score", kind="cfa_fmin", discrepancy=fmin),
                     _verdict(rep, "croon"),
                     _verdict(rep, "gate:lavaan_cfa", status="passed", converged=pd.NA,
                              admissible=pd.NA, redraws=0, kind="cfa_fmin",
                              discrepancy=fmin)]
        for m, method in enumerate(("factor_score", "croon")):
            for t, term in enumerate(TERMS):
                value = 0.3 + rep + m / 7 + t / 11
                estimates.append(dict(corpus="c", cell="k1", replication=rep, method=method,
                                      term=term, estimate=value,
                                      **{c: 0.05 + i / 100 for i, c in enumerate(SE)}))
        datasets.append(dict(corpus="c", cell="k1", replication=rep, redraws=0,
                             gate_passed=True, gate_reason="", digest=f"d{rep}"))
    v = pd.DataFrame(verdicts)
    v["redraws"] = v["redraws"].astype("Int64")
    return tool.Side(v, pd.DataFrame(estimates), pd.DataFrame(datasets), {})


def _set(frame: pd.DataFrame, where: dict, **values) -> None:
    mask = np.ones(len(frame), dtype=bool)
    for k, v in where.items():
        mask &= (frame[k] == v).to_numpy()
    assert mask.any()
    for k, v in values.items():
        frame.loc[mask, k] = v


def _compare(old: tool.Side, new: tool.Side) -> tuple[pd.DataFrame, pd.DataFrame]:
    exc, checks = tool.compare_sides(old, new)
    return exc, tool.summarize(exc, checks)


def test_identical_tables_give_no_exception():
    exc, summary = _compare(_side(), _side())
    assert exc.empty
    checked = summary.groupby("rule")["checked"].sum()
    # 6 verdicts, 2 datasets, 4 discrepancies (fits and gates), 2 x 2 fits x 3 terms x 6
    assert checked.to_dict() == {"1": 6, "2": 4, "3": 72, "data": 2}
    assert (summary["violations"] == 0).all()


def test_worse_optimum_is_a_violation_and_skips_rule_3():
    new = _side()
    _set(new.verdicts, {"replication": 0, "method": "factor_score"}, discrepancy=0.25 + 1e-6)
    _set(new.verdicts, {"replication": 1, "method": "factor_score"}, discrepancy=0.35 + 5e-10)
    _set(new.estimates, {"replication": 0, "method": "factor_score"}, estimate=9.0)
    exc, summary = _compare(_side(), new)
    assert len(exc) == 1, exc
    row = exc.iloc[0]
    assert (row["rule"], row["class"], row["severity"]) == ("2", "worse_optimum", "violation")
    assert (row["replication"], row["quantity"]) == (0, "cfa_fmin")
    assert float(row["diff"]) == pytest.approx(1e-6)
    assert float(row["old"]) == 0.25  # every digit kept
    assert summary.loc[summary["rule"] == "2", "violations"].sum() == 1


def test_better_optimum_is_a_note_not_a_violation():
    new = _side()
    _set(new.verdicts, {"replication": 1, "method": "factor_score"}, discrepancy=0.3)
    exc, summary = _compare(_side(), new)
    assert exc[["rule", "class", "severity"]].values.tolist() == [
        ["2", "better_optimum", "note"]]
    assert summary["violations"].sum() == 0 and summary["notes"].sum() == 1


def test_status_reason_and_gate_changes_are_listed_and_classified():
    new = _side()
    _set(new.verdicts, {"replication": 1, "method": "croon"}, status="flagged",
         reason_code="R_nonpositive")
    _set(new.verdicts, {"replication": 0, "method": "gate:lavaan_cfa"}, status="failed",
         reason_code="lavaan_cfa: negative variance")
    exc, _ = _compare(_side(), new)
    got = {(r.replication, r.method, r.quantity, r["class"], r.old, r.new)
           for _, r in exc.iterrows()}
    assert got == {
        (1, "croon", "status", "status_changed", "ok", "flagged"),
        (1, "croon", "reason_code", "reason_code_changed", "", "R_nonpositive"),
        (0, "gate:lavaan_cfa", "status", "gate_verdict_changed", "passed", "failed"),
        (0, "gate:lavaan_cfa", "reason_code", "gate_reason_changed", "",
         "lavaan_cfa: negative variance"),
    }
    assert (exc["rule"] == "1").all() and (exc["severity"] == "violation").all()
    assert set(exc.loc[exc["method"] == "gate:lavaan_cfa", "optimum"]) == {"same"}


def test_same_optimum_difference_above_tolerance_is_listed():
    new = _side()
    where = {"replication": 1, "method": "croon", "term": "xi"}
    old_xi = float(new.estimates.loc[(new.estimates[list(where)] == pd.Series(where)).all(
        axis=1), "estimate"].iloc[0])
    _set(new.estimates, where, estimate=old_xi * (1 + 1e-7), se_HC3=0.09 * (1 + 1e-9))
    _set(new.estimates, {"replication": 0, "method": "factor_score", "term": "z"}, se=np.nan)
    exc, _ = _compare(_side(), new)
    got = {(r.method, r.term, r.quantity, r["class"]) for _, r in exc.iterrows()}
    assert got == {("croon", "xi", "estimate", "estimate_differs"),
                   ("factor_score", "z", "se", "nan_mismatch")}
    rel = exc.loc[exc["quantity"] == "estimate", "rel_diff"].astype(float).iloc[0]
    assert rel == pytest.approx(1e-7, rel=1e-3)
    assert (exc["rule"] == "3").all()


def test_changed_data_is_listed_and_left_out_of_rules_2_and_3():
    new = _side()
    _set(new.datasets, {"replication": 0}, digest="other")
    _set(new.verdicts, {"replication": 0, "method": "factor_score"}, discrepancy=1.0)
    _set(new.estimates, {"replication": 0}, estimate=5.0)
    exc, summary = _compare(_side(), new)
    assert exc[["rule", "class", "method"]].values.tolist() == [
        ["data", "data_changed", "(data)"]]
    assert summary.loc[summary["rule"] == "3", "skipped"].max() == 1


def test_missing_rows_are_listed():
    new = _side()
    new.verdicts = new.verdicts[new.verdicts["method"] != "croon"]
    exc, _ = _compare(_side(), new)
    assert len(exc) == 2
    assert set(exc["class"]) == {"missing_row"} and set(exc["new"]) == {"absent"}


def _write(side: tool.Side, folder: Path) -> Path:
    folder.mkdir()
    for name in tool.TABLES:
        getattr(side, name).to_parquet(folder / f"{name}.parquet", index=False)
    (folder / "meta.json").write_text(json.dumps({"numpy": np.__version__}))
    return folder


def test_compare_writes_the_report_and_honours_the_allow_list(tmp_path, capsys):
    new = _side()
    _set(new.verdicts, {"replication": 1, "method": "croon"}, status="flagged")
    old_dir, new_dir = _write(_side(), tmp_path / "old"), _write(new, tmp_path / "new")
    assert tool.compare_dirs(old_dir, new_dir, tmp_path / "r1") == 1
    assert "NOT EQUIVALENT" in capsys.readouterr().out
    for name in ("exceptions.csv", "summary.csv", "versions.csv", "report.txt"):
        assert (tmp_path / "r1" / name).is_file()
    allow = tmp_path / "allow.csv"
    allow.write_text("corpus,method,rule,note\nc,croon,1,known: R at the bound\n")
    assert tool.compare_dirs(old_dir, new_dir, tmp_path / "r2", allow) == 0
    exc = pd.read_csv(tmp_path / "r2" / "exceptions.csv", keep_default_na=False)
    assert exc["listed"].tolist() == [True] and exc["note"].iloc[0] == "known: R at the bound"
    assert "numpy" in (tmp_path / "r2" / "report.txt").read_text()


def test_fjk_corpus_is_every_balanced_g30_cell(tmp_path):
    corpora = sys.modules["equivalence_corpora"]
    cfg = corpora.derive_config(ROOT, "fjk2018_balanced_g30", quick=True, n_jobs=1)
    path = tmp_path / "fjk.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cut = load_config(path)
    full = load_config(ROOT / "configs" / "fjk2018.yaml")
    want = {sc.key for sc in full.scenarios if sc.balanced and sc.n_groups == 30}
    assert len(want) == 12 and {sc.key for sc in cut.scenarios} == want
    clark = corpora.derive_config(ROOT, "clark2020_row16", quick=False, n_jobs=1)
    assert clark["grid"] == {"sigma2_nu": [9]} and clark["replications"] == 1000


def test_crosscheck_pins_match_the_crosscheck_tool():
    corpora = sys.modules["equivalence_corpora"]
    cc = _load("crosscheck_r")
    assert corpora.CROSSCHECK_SEED == cc.ROOT_SEED
    assert list(corpora.CROSSCHECK_DESIGNS.items()) == list(cc.DESIGNS.items())
    assert corpora.CROSSCHECK_METHODS == cc.METHODS


def test_worker_refuses_a_package_from_elsewhere(tmp_path):
    (tmp_path / "plan.json").write_text(json.dumps({"source": str(tmp_path), "corpora": []}))
    with pytest.raises(tool.ToolError, match="imported from"):
        tool.collect(tmp_path)


def test_run_quick_twice_on_this_tree_gives_no_exception(tmp_path, capsys):
    for side in ("a", "b"):
        assert tool.main(["run", "--source", str(ROOT), "--out", str(tmp_path / side),
                          "--quick"]) == 0
    assert tool.compare_dirs(tmp_path / "a", tmp_path / "b", tmp_path / "report") == 0
    assert "0 violations (0 listed, 0 unlisted), 0 notes: EQUIVALENT" in capsys.readouterr().out
    exc = pd.read_csv(tmp_path / "report" / "exceptions.csv")
    assert exc.empty
    summary = pd.read_csv(tmp_path / "report" / "summary.csv", dtype={"rule": str})
    rule3 = summary[summary["rule"] == "3"].groupby("corpus")["checked"].sum()
    assert set(rule3.index) == set(tool.corpora.CORPORA) and (rule3 > 0).all()
    rule2 = summary[summary["rule"] == "2"]
    assert {"factor_score", "gate:lavaan_cfa", "tspa"} <= set(rule2["method"])
    meta = json.loads((tmp_path / "a" / "meta.json").read_text())
    assert Path(meta["package_path"]) == ROOT / "micromacro_sim"
