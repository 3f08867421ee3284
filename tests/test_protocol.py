"""``micromacro protocol``: the ADEMP-PreReg protocol answered from a config, nothing invented."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

import micromacro_sim
from micromacro_sim.cli.main import main
from micromacro_sim.core.results import SE_TYPES
from micromacro_sim.design.estimands import estimands
from micromacro_sim.design.measures import method_se_type
from micromacro_sim.estimators import method_class
from micromacro_sim.reporting.protocol import PLAN_NEEDS, protocol
from micromacro_sim.reporting.protocol_sections import estimand_table
from micromacro_sim.run.configure import load_config, parse_config

ROOT = Path(__file__).resolve().parents[1]
CLARK = ROOT / "configs" / "clark2020.yaml"
TINY = {
    "name": "tiny", "seed": 7, "replications": 500, "methods": ["unadjusted", "croon"],
    "admissibility": {"policy": "flag", "gate": "none"},
    "fixed": {"n_groups": 30, "group_size": 5, "icc": 0.2, "r_zxi": 0.3},
}
AIMS = "Compare the bias of croon's adjusted group means with the unadjusted ones."
OPEN = "### Questions the config leaves open"


def _cell(text: str) -> str:
    """A Markdown table cell as plain text (the renderer's escapes undone)."""
    return html.unescape(re.sub(r"\\(.)", r"\1", text.strip()))


def _table(text: str, heading: str) -> list[dict[str, str]]:
    """The rows of the first pipe table after ``heading`` (a line of the Markdown)."""
    lines = text.splitlines()
    start = lines.index(heading)
    rows: list[list[str]] = []
    for line in lines[start + 1:]:
        if line.startswith("#"):
            break
        if line.startswith("|"):
            rows.append([_cell(c) for c in re.split(r"(?<!\\)\|", line)[1:-1]])
        elif rows:
            break
    assert rows, f"no table under {heading!r}"
    return [dict(zip(rows[0], r, strict=True)) for r in rows[2:]]


def _write(tmp_path: Path, cfg: dict, name: str = "c.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return p


@pytest.fixture(scope="module")
def clark() -> str:
    return protocol(CLARK)


def test_clark2020_has_the_ademp_parts_and_the_grid(clark):
    for part in ("Aims", "Data-generating mechanisms", "Estimands and targets", "Methods",
                 "Performance measures", "Not answered by the config"):
        assert f"\n## {part}\n" in clark
    factors = _table(clark, "### What will be the different factors of the data-generating "
                            "mechanism?")
    assert [(r["factor"], r["values"]) for r in factors] == [("sigma2_nu", "9, 1")]
    assert "2 (sigma2_nu) = 2 condition(s)." in _cell(clark)
    fixed = {r["parameter"]: r["value"] for r in _table(
        clark, "### If possible, provide specific factor values for the DGM as well as "
               "additional simulation settings.")}
    assert fixed["n_groups"] == "100" and fixed["sigma2_eps"] == "0.35"


def test_clark2020_lists_every_method_with_its_default_se(clark):
    cfg = load_config(CLARK)
    rows = _table(clark, "### How many and which methods will be included and which "
                         "quantities will be extracted?")
    assert [r["label"] for r in rows] == [m.label for m in cfg.methods]
    for r, spec in zip(rows, cfg.methods, strict=True):
        cls = method_class(spec.method)
        assert r["default SE"] == method_se_type(cls.default_se, cls.two_step), r
        assert (r["scale"], r["origin"]) == (cls.scale, cls.origin)
    blup = next(r for r in rows if r["label"] == "blup")
    assert "reml = true (default)" in blup["options"]
    extracted = clark.split("### Quantities extracted from each fit")[1].split("\n## ")[0]
    assert all(t in extracted for t in SE_TYPES)  # the tuple, however long it grows


def _check_estimands(text: str, cfg, sc) -> list[dict[str, str]]:
    label = next(r["label"] for r in cfg.scenario_rows() if r["scenario"] == sc.key)
    rows = _table(text, f"### Estimands in {label}")
    assert [r["method"] for r in rows] == [m.label for m in cfg.methods]
    est = estimands(sc)
    for r in rows:
        for term in sc.terms:
            want = est.value(term, r["scale"], r["origin"])
            assert float(r[term]) == pytest.approx(want, rel=1e-5, abs=1e-9), (r, term)
    return rows


def test_clark2020_estimands_are_the_design_estimands(clark):
    cfg = load_config(CLARK)
    _check_estimands(clark, cfg, cfg.scenarios[1])


def test_estimands_follow_each_method_scale_and_origin(tmp_path):
    """Unequal loadings: the x scale (mean loading), the marker scale (first loading) and
    the latent scale differ, so a method scored on the wrong scale shows."""
    raw = {**TINY, "methods": ["true", "unadjusted", "factor_score", "croon"],
           "fixed": {**TINY["fixed"], "group_size": 4, "loadings": [1.0, 0.5]}}
    cfg = parse_config(raw)
    text = protocol(cfg)
    rows = {r["method"]: float(r["xi"]) for r in _check_estimands(text, cfg, cfg.scenarios[0])}
    assert rows["true"] == pytest.approx(0.3)
    assert rows["factor_score"] == pytest.approx(0.3)  # first loading 1
    assert rows["unadjusted"] == pytest.approx(0.3 / 0.75, rel=1e-5)  # mean loading .75
    table = estimand_table(cfg, cfg.scenarios[0])
    assert table.set_index("method").loc["croon", "xi"] == pytest.approx(0.4)


def test_clark2020_lists_what_it_cannot_answer(clark):
    questions = [r["question"] for r in _table(clark, OPEN)]
    assert "What is the aim of the simulation study?" in questions
    assert any("number of replications" in q for q in questions)
    assert "Who are the current and future project contributors?" in questions
    aims = clark.split("### What is the aim of the simulation study?")[1].split("###")[0]
    assert "Not answered by the config" in aims
    reps = clark.split("### How many simulation repetitions")[1].split("###")[0]
    assert "1000 replications per condition" in reps and "0.0069" in reps  # sqrt(.95*.05/R)


def test_meta_answers_and_changes_no_key_and_no_identity(tmp_path, capsys):
    with_meta = {**TINY, "replications": 3, "fixed": {**TINY["fixed"], "n_groups": 10},
                 "meta": {"aims": AIMS, "authors": ["A. Author", "B. Author"]}}
    plain = {k: v for k, v in with_meta.items() if k != "meta"}
    a, b = parse_config(with_meta), parse_config(plain)
    assert [sc.key for sc in a.scenarios] == [sc.key for sc in b.scenarios]
    assert a.result_identity() == b.result_identity() and a.result_hash == b.result_hash
    assert a.meta == {"aims": AIMS, "authors": "A. Author; B. Author"} and b.meta == {}
    text = protocol(a)
    assert AIMS in _cell(text) and "A. Author; B. Author" in text
    assert "What is the aim of the simulation study?" not in [
        r["question"] for r in _table(text, OPEN)]
    # micromacro run accepts it, and a run without meta resumes the same folder
    out = tmp_path / "out"
    assert main(["run", str(_write(tmp_path, {**with_meta, "output": str(out)})),
                 "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["result_hash"] == b.result_hash
    assert main(["run", str(_write(tmp_path, {**plain, "output": str(out)}, "p.yaml")),
                 "--quiet"]) == 0
    assert "already complete" in capsys.readouterr().out


@pytest.mark.parametrize(("meta", "start"), [
    ({"aim": "x"}, "error: meta.aim: unknown key"),
    ("just text", "error: meta: expected a mapping"),
    ({"aims": ""}, "error: meta.aims: expected a text"),
    ({"authors": ["A", 3]}, "error: meta.authors: expected a text"),
])
def test_bad_meta_is_one_line(tmp_path, capsys, meta, start):
    out = tmp_path / "p.md"
    rc = main(["protocol", str(_write(tmp_path, {**TINY, "meta": meta})), "--output", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith(start), err
    assert not out.exists()
    if meta == {"aim": "x"}:
        assert err.endswith("did you mean 'aims'?")


def test_plan_justifies_the_replications(tmp_path, capsys):
    from micromacro_sim.planning.plan import PLAN_COLUMNS

    assert set(PLAN_NEEDS) <= set(PLAN_COLUMNS)
    cfg = _write(tmp_path, TINY)
    plan = tmp_path / "plan.csv"
    assert main(["plan", str(cfg), "--pilot", "20", "--target-mcse", "bias=0.05,cover=0.01",
                 "--output", str(plan)]) == 0
    capsys.readouterr()
    out = tmp_path / "protocol.md"
    assert main(["protocol", str(cfg), "--plan", str(plan), "--output", str(out)]) == 0
    text = out.read_text()
    rows = _table(text, "### How many simulation repetitions will be used for each condition?")
    table = pd.read_csv(plan)
    assert [r["measure"] for r in rows] == ["bias", "cover"]
    for r in rows:
        need = int(table.loc[table["measure"] == r["measure"], "reps_needed"].max())
        assert int(r["needed"]) == need
        assert r["500 meet it"] == ("yes" if 500 >= need else "no")
    assert not any("number of replications" in r["question"] for r in _table(text, OPEN))


def test_html_format(tmp_path):
    page = protocol(CLARK, fmt="html")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert '<h2 id="aims">Aims</h2>' in page and "<table" in page and "sigma2_nu" in page
    out = tmp_path / "p.html"
    assert main(["protocol", str(CLARK), "--format", "html", "--output", str(out)]) == 0
    assert out.read_text().startswith("<!DOCTYPE html>")


@pytest.mark.parametrize(("case", "start"), [
    ("missing config", "error: config: cannot read"),
    ("invalid config", "error: seed:"),
    ("plan without its columns", "error: plan:"),
    ("missing plan", "error: plan: cannot read"),
    ("plan of another config", "error: plan: none of its rows"),
    ("output over the config", "error: output:"),
])
def test_bad_input_exit_2_one_line_nothing_written(tmp_path, capsys, case, start):
    cfg = _write(tmp_path, TINY)
    out = tmp_path / "p.md"
    plan = tmp_path / "plan.csv"
    argv = ["protocol", str(cfg), "--output", str(out)]
    if case == "missing config":
        argv[1] = str(tmp_path / "nope.yaml")
    elif case == "invalid config":
        _write(tmp_path, {**TINY, "seed": "x"})
    elif case == "output over the config":
        argv[-1] = str(cfg)
    elif case != "missing plan":
        cols = "a,b\n1,2\n" if case == "plan without its columns" else (
            ",".join(PLAN_NEEDS) + "\n0123456789abcdef,x,croon,xi,bias,0.01,20,100,200\n")
        plan.write_text(cols)
    if "plan" in case:
        argv += ["--plan", str(plan)]
    before = cfg.read_text()
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith(start), err
    assert not out.exists() and cfg.read_text() == before


def test_cli_prints_the_clark2020_protocol(capsys):
    assert main(["protocol", str(CLARK)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# Simulation-study protocol: clark2020")
    assert micromacro_sim.protocol is protocol


def test_docs_list_every_meta_key():
    from micromacro_sim.design.config import META_KEYS

    doc = (ROOT / "docs" / "protocol.md").read_text()
    rows = dict(re.findall(r"^\| `(\w+)` \| (.+) \|$", doc, flags=re.M))
    assert rows == META_KEYS
