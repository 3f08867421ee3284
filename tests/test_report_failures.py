"""The report's failure report and layout: one line when nothing failed, per-reason shares
and a heatmap when something did, the handling rule, redraws; figures before the folded
tables."""

from __future__ import annotations

import base64
import re
from types import SimpleNamespace

import pandas as pd
import pytest

pytest.importorskip("matplotlib")

from micromacro_sim.reporting.failures import failure_counts, failure_table  # noqa: E402
from micromacro_sim.reporting.report import write_report  # noqa: E402
from micromacro_sim.run.configure import parse_config  # noqa: E402
from micromacro_sim.run.runner import run  # noqa: E402
from micromacro_sim.summaries.summarize import summarize_run  # noqa: E402
from tests.test_report import _table, _valid_png  # noqa: E402

#: Nothing fails: OLS on group means of balanced groups.
CLEAN = {
    "name": "clean-report", "seed": 3, "replications": 10, "chunk_size": 10,
    "methods": ["true", "unadjusted"],
    "admissibility": {"policy": "flag", "gate": "none"},
    "fixed": {"group_size": 5, "r_zxi": 0.3, "icc": 0.2},
    "grid": {"n_groups": [30, 40]},
}
#: Few, small groups with a low ICC: croon and zcond_score are often inadmissible.
FAILING = {
    "name": "failing-report", "seed": 7, "replications": 20, "chunk_size": 20,
    "methods": ["true", "unadjusted", "croon", "zcond_score"],
    "admissibility": {"policy": "flag", "gate": "none"},
    "fixed": {"n_groups": 12, "group_size": 3, "r_zxi": 0.3},
    "grid": {"icc": [0.02, 0.3]},
}
HEATMAP = "Failed fits per scenario and method"


@pytest.fixture(scope="module")
def clean_html(tmp_path_factory):
    path = tmp_path_factory.mktemp("clean")
    run(parse_config(CLEAN), run_dir=path / "run", progress=False)
    return write_report(path / "run", path / "report", terms=["xi"]).read_text()


@pytest.fixture(scope="module")
def failing_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("failing") / "run"
    run(parse_config(FAILING), run_dir=path, progress=False)
    return path


@pytest.fixture(scope="module")
def failing_html(failing_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("failing_report")
    return write_report(failing_run, out, terms=["xi"]).read_text()


def _part(text: str, title: str) -> str:
    return text.split(f">{title}</h3>", 1)[1].split("<h3", 1)[0]


def _alts(text: str) -> list[str]:
    return re.findall(r'<img alt="([^"]+)"', text)


def test_no_failures_is_one_line_without_heatmap(clean_html):
    part = _part(clean_html, "Failures and their handling")
    lines = re.findall(r"<p>([^<]*)</p>", part)
    assert lines[0].startswith("No failures in 4 scenario x method cells:")
    # the handling rule is stated even when nothing failed
    assert "Admissibility policy: flag (gate none)" in lines[1]
    assert "Flagged fits are excluded from the performance measures" in lines[1]
    assert "--include-flagged" in lines[1]
    assert "<table" not in part and "<img" not in part
    assert HEATMAP not in _alts(clean_html)
    assert "Reason codes" not in clean_html


def test_failures_show_shares_by_reason_and_a_heatmap(failing_html, failing_run):
    summary = summarize_run(failing_run)
    flags = summary.flags
    assert (flags["n_flagged"] > 0).any()  # the config does make methods fail
    part = _part(failing_html, "Failures and their handling")
    n_bad = int((flags["n_flagged"] > 0).sum())
    assert f"Failures in {n_bad} of {len(flags)} scenario x method cells" in part
    assert "By method, fits not ok:" in part
    table = _table(failing_html, "by reason code")
    assert len(table) == n_bad  # only the cells with a failure
    cells = summary.datasets.set_index("scenario")["cell"]
    for r in flags[flags["n_flagged"] > 0].itertuples():
        row = table[(table["scenario"] == cells[r.scenario]) & (table["method"] == r.method)]
        assert len(row) == 1
        row = row.iloc[0]
        assert row["any failure"] == f"{100 * r.n_flagged / r.n_reps:.1f}% ({r.n_flagged})"
        for code, n in re.findall(r"(\S+) \((\d+)\)", r.reasons):
            assert f"{code} {100 * int(n) / r.n_reps:.1f}% ({n})" in row["by reason code"]
    for col in ("flagged", "not converged", "inadmissible", "not applicable", "error",
                "redrawn", "redraws"):
        assert col in table.columns
    reasons = _table(failing_html, "reason code")
    assert "negative_variance" in set(reasons["reason code"])
    assert "negative variance" in set(reasons["meaning"])
    # the heatmap: in the failure report, a valid image
    assert HEATMAP in _alts(part)
    m = re.search(rf'<img alt="{HEATMAP}" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', part)
    _valid_png(base64.b64decode(m.group(1)))


@pytest.mark.parametrize("which", ["clean_html", "failing_html"])
def test_figures_come_before_the_folded_tables(which, request):
    text = request.getfixturevalue(which)
    first_img, first_fold = text.index("<img"), text.index("<details>")
    assert first_img < first_fold
    # every folded table is in the tables part, after the last figure
    tables = text.index('<h2 id="tables">')
    assert text.rindex("<img") < tables < first_fold
    assert re.search(r"<details><summary>[^<]+\(\d+ rows; show the table\)</summary>", text)
    # each figure section links to its table at the end
    assert 'href="#table-percent-bias"' in text


def test_markdown_has_the_tables_after_the_figures(failing_run, tmp_path):
    text = write_report(failing_run, tmp_path, fmt="md", terms=["xi"]).read_text()
    assert "<details>" not in text
    assert text.index("## Tables") > text.rindex("![")
    assert "### Failures and their handling" in text and f"![{HEATMAP}]" in text
    assert text.index("### Failures and their handling") < text.index("### Percent bias")
    assert "| by reason code |" in text


def test_tables_only_report_keeps_the_failure_report(failing_run, tmp_path):
    text = write_report(failing_run, tmp_path, plots=False).read_text()
    assert "<img" not in text
    part = _part(text, "Failures and their handling")
    assert "Failures in" in part and "Flagged fits are excluded" in part
    assert _table(text, "by reason code").shape[0] > 0
    # with --include-flagged the handling rule says so
    text = write_report(failing_run, tmp_path / "incl", plots=False,
                        include_flagged=True).read_text()
    part = _part(text, "Failures and their handling")
    assert "Flagged fits that have estimates are included" in part


def test_redraws_and_the_redraw_rule(tmp_path):
    cfg = {**FAILING, "name": "redraw-report", "replications": 10, "chunk_size": 10,
           "methods": ["unadjusted"],
           "admissibility": {"policy": "redraw", "gate": "cfa", "max_redraws": 3}}
    run(parse_config(cfg), run_dir=tmp_path / "run", progress=False)
    ds = summarize_run(tmp_path / "run").datasets
    assert ds["redraws"].sum() > 0
    text = write_report(tmp_path / "run", tmp_path / "r", plots=False).read_text()
    part = _part(text, "Failures and their handling")
    assert "Admissibility policy: redraw (gate cfa, max_redraws 3)" in part
    redrawn, reps = int(ds["reps_redrawn"].sum()), int(ds["n_reps"].sum())
    assert f"Datasets redrawn in {redrawn} of {reps} replications" in part
    assert f"{int(ds['redraws'].sum())} extra datasets drawn" in part
    table = _table(text, "by reason code")
    first = ds.iloc[0]
    row = table[table["scenario"] == first["cell"]].iloc[0]
    assert row["redraws"] == str(int(first["redraws"]))


def test_counts_are_exclusive():
    """Fits without estimates are recorded as not converged and inadmissible; the report
    counts them once, as not applicable or error."""
    flags = pd.DataFrame({
        "scenario": ["a", "a"], "method": ["m1", "m2"], "n_reps": [10, 10],
        "n_flagged": [6, 0], "n_not_converged": [5, 0], "n_inadmissible": [6, 0],
        "n_not_applicable": [2, 0], "n_error": [1, 0],
        "reasons": ["needs_balanced (2); not_converged (2); numerical_error (1); boundary (1)",
                    ""]})
    datasets = pd.DataFrame({"scenario": ["a"], "cell": ["G=30"], "n_reps": [10],
                             "reps_redrawn": [0], "redraws": [0], "gate_failed_kept": [0]})
    c = failure_counts(SimpleNamespace(flags=flags, datasets=datasets)).iloc[0]
    assert (c.failed, c.flagged, c.not_converged, c.inadmissible) == (6, 3, 2, 1)
    assert (c.not_applicable, c.error) == (2, 1)
    table = failure_table(failure_counts(SimpleNamespace(flags=flags, datasets=datasets)))
    assert len(table) == 1 and table.iloc[0]["not applicable"] == "20.0% (2)"
    assert "needs_balanced 20.0% (2)" in table.iloc[0]["by reason code"]
