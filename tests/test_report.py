"""Run reports: both formats, embedded figures, key tables, partial-run banner, plot checks."""

from __future__ import annotations

import argparse
import base64
import io
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("matplotlib")

import matplotlib.image as mpimg  # noqa: E402

from micromacro_sim.core.errors import ConfigError
from micromacro_sim.reporting.plots import acceptance_band, short_labels
from micromacro_sim.reporting.report import add_parser, write_report
from micromacro_sim.run.configure import parse_config
from micromacro_sim.run.runner import run
from micromacro_sim.summaries.summarize import summarize_run

CONFIG = {
    "name": "tiny-report",
    "seed": 3,
    "replications": 20,
    "chunk_size": 10,
    "methods": ["true", "unadjusted"],
    "admissibility": {"policy": "flag", "gate": "none"},
    "fixed": {"n_groups": 30, "group_size": 5, "r_zxi": 0.3},
    "grid": {"icc": [0.1, 0.3]},
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Tables(HTMLParser):
    """Every <table> of a page as a list of rows of cell texts (stdlib only)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _table(text: str, column: str) -> pd.DataFrame:
    parser = _Tables()
    parser.feed(text)
    for rows in parser.tables:
        if rows and column in rows[0]:
            return pd.DataFrame(rows[1:], columns=rows[0])
    raise AssertionError(f"no table with column {column!r}")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("run")
    run(parse_config(CONFIG), run_dir=path, progress=False)
    return path


@pytest.fixture(scope="module")
def html_report(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("html")
    return write_report(run_dir, out, fmt="html")


def _valid_png(data: bytes) -> np.ndarray:
    assert data.startswith(PNG_MAGIC)
    img = mpimg.imread(io.BytesIO(data), format="png")
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    # not a blank canvas: a drawn figure has many distinct colours
    assert len(np.unique(img.reshape(-1, img.shape[2]), axis=0)) > 20
    return img


def test_html_is_self_contained_with_valid_images(html_report):
    assert html_report.name == "report.html" and html_report.is_file()
    # nothing but the report is left beside it (figures were drawn in a temporary folder)
    assert [p.name for p in html_report.parent.iterdir()] == ["report.html"]
    text = html_report.read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    alts = re.findall(r'<img alt="([^"]+)"', text)
    for term in ("z", "xi"):  # every slope term has every figure family
        for fig in ("Percent bias of", "Coverage of", "Zip plot of",
                    "Type I error and power of", "Nested-loop plot of"):
            assert f"{fig} {term}" in alts
        assert f"Estimates of {term} per replication" in alts
    assert "Failed fits per scenario and method" not in alts  # nothing failed
    assert len(images) == len(alts) == 12
    for b64 in images:
        _valid_png(base64.b64decode(b64))
    assert not re.search(r'src="(?!data:)', text)  # no external file referenced


def test_html_holds_facts_and_key_tables(html_report, run_dir):
    text = html_report.read_text()
    for heading in ("Scenarios", "Percent bias", "Coverage per SE type",
                    "Rejection rate per SE type", "Failures and their handling",
                    "Fit status counts", "Reliability and redraws"):
        assert re.search(rf'<h3 id="[a-z0-9-]+">{heading}</h3>', text)
    # a table of contents whose every link has its target
    assert '<nav class="toc"' in text
    targets = set(re.findall(r'id="([^"]+)"', text))
    links = re.findall(r'href="#([^"]+)"', text)
    assert len(links) >= 10 and set(links) <= targets
    # no fit failed: the failure report says so in one line; the counts table is folded
    failures = text.split(">Failures and their handling</h3>", 1)[1].split("<h3", 1)[0]
    assert "No failures in 4 scenario x method cells" in failures
    assert "policy: flag (gate none" in failures and "excluded" in failures
    counts_part = text.split(">Fit status counts</h3>", 1)[1].split("<h3", 1)[0]
    assert "<details>" in counts_part
    for fact in ("tiny-report", "<td>3</td>", "20 configured, 20 finished", "engine",
                 "numpy", "policy flag"):
        assert fact in text
    for se in ("classical", "HC0", "HC1", "HC2", "HC3"):
        assert f"<th>{se}</th>" in text
    assert "PARTIAL RUN" not in text
    # numbers in the tables are the summary's, formatted: percent bias (mcse) of xi
    perf = summarize_run(run_dir).performance
    r = perf[(perf["method"] == "unadjusted") & (perf["term"] == "xi")].iloc[0]
    assert f"{r['pct_bias']:.2f} ({r['pct_bias_mcse']:.2f})" in text
    assert f"{r['cover_HC3']:.3f} ({r['cover_HC3_mcse']:.3f})" in text
    # zero flag and redraw rates are reported, not left out
    flags = _table(text, "inadmissible")
    assert len(flags) == 4 and (flags["share not ok"] == "0.000").all()
    assert (flags["reasons"] == "none").all()
    ds = _table(text, "redraw rate")
    assert len(ds) == 2 and (ds["redraw rate"] == "0.000").all()
    # reliability: the scenario's true reliability of a group mean, n ICC / (1 + (n-1) ICC)
    lam = 5 * 0.1 / (1 + 4 * 0.1)
    assert float(ds["reliability (true)"].iloc[0]) == pytest.approx(lam, abs=5e-4)
    # alpha and ICC(1) columns are the summary's means
    d = summarize_run(run_dir).datasets
    assert ds["alpha std (mean)"].tolist() == [f"{v:.3f}" for v in d["alpha_std_mean"]]
    assert ds["ICC(1) (mean)"].tolist() == [f"{v:.3f}" for v in d["icc1_mean"]]


def test_markdown_with_png_files(run_dir, tmp_path):
    path = write_report(run_dir, tmp_path / "md", fmt="md", terms=["xi"])
    assert path.name == "report.md"
    text = path.read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(links) == 6  # the figures of xi: bias, estimates, coverage, zip, rejection, nested
    for link in links:
        png = path.parent / link
        assert png.is_file()
        _valid_png(png.read_bytes())
    assert "### Percent bias" in text and "| band | classical | HC0 | HC1 | HC2 | HC3 |" in text
    assert "PARTIAL RUN" not in text


def test_partial_run_banner(tmp_path):
    part = tmp_path / "part"
    run(parse_config(CONFIG), run_dir=part, progress=False, max_tasks=1)
    assert summarize_run(part).partial
    html = write_report(part, tmp_path / "h", plots=False).read_text()
    assert 'id="partial-run"' in html and "PARTIAL RUN: 10 of 40 replications" in html
    assert "1 of 2 scenarios have none yet" in html
    scen = _table(html, "finished")
    assert scen["finished"].tolist() == ["10", "0"]
    md = write_report(part, tmp_path / "m", fmt="md", plots=False).read_text()
    assert md.splitlines()[2].startswith("> **PARTIAL RUN")


def test_tables_only_and_bad_format(run_dir, tmp_path):
    path = write_report(run_dir, tmp_path, plots=False)
    assert "data:image/png" not in path.read_text()
    with pytest.raises(ConfigError, match="format"):
        write_report(run_dir, tmp_path, fmt="pdf")


def test_missing_run_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="manifest.json missing"):
        write_report(tmp_path, tmp_path / "out")


def test_cli_parser(run_dir, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["report", str(run_dir), "--output", str(tmp_path),
                              "--format", "md", "--no-plots"])
    assert args.func(args) == 0
    assert (tmp_path / "report.md").is_file()
    assert "report.md" in capsys.readouterr().out


def test_acceptance_band_closed_form():
    # 95% coverage with K = 1000: .95 +/- 2 sqrt(.95 .05 / 1000) = .95 +/- .013784
    lo, hi = acceptance_band(0.95, 1000)
    assert lo == pytest.approx(0.95 - 0.0137840488, abs=1e-9)
    assert hi == pytest.approx(0.95 + 0.0137840488, abs=1e-9)


def test_short_labels_drop_shared_words():
    assert short_labels(["G=30 n=5 ICC=0.1", "G=30 n=5 ICC=0.3"]) == ["ICC=0.1", "ICC=0.3"]
    assert short_labels(["G=30 n=5"]) == ["G=30 n=5"]
    assert short_labels(["a b", "a b"]) == ["a b", "a b"]


def test_missing_matplotlib_says_how_to_install_it(run_dir, tmp_path, monkeypatch):
    import sys

    from micromacro_sim.core.errors import MicroMacroError
    from micromacro_sim.reporting.plots import require_matplotlib

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if not installed
    with pytest.raises(MicroMacroError, match=r"not installed .*pip install matplotlib$"):
        require_matplotlib()
    with pytest.raises(MicroMacroError, match="plots"):
        write_report(run_dir, tmp_path)
    assert not (tmp_path / "report.html").exists()
    # tables only still works without it
    assert write_report(run_dir, tmp_path, plots=False).is_file()


_BROWSER_CHECK_HEAD = """<script>window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message || e.type)), true);
</script>"""
_BROWSER_CHECK_BODY = """<script>window.addEventListener('load', () => {
  const imgs = [...document.images];
  const out = {n: imgs.length, errors: window.__errors,
               natural: imgs.map(i => i.complete ? i.naturalWidth : 0),
               shown: imgs.map(i => i.getBoundingClientRect().width)};
  const pre = document.createElement('pre'); pre.id = 'browser-check';
  pre.textContent = JSON.stringify(out); document.body.appendChild(pre);
});</script>"""


def _chromium():
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name) or (f"/usr/bin/{name}" if __import__("os").path.exists(
            f"/usr/bin/{name}") else None)
        if path:
            return path
    return None


def test_report_loads_in_headless_chromium(html_report, tmp_path):
    """The page loads without errors, every image decodes and is shown near its own size."""
    import json
    import subprocess

    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium found")
    text = html_report.read_text()
    page = tmp_path / "page.html"
    page.write_text(text.replace("<head>", "<head>" + _BROWSER_CHECK_HEAD, 1)
                    .replace("</body>", _BROWSER_CHECK_BODY + "</body>", 1))
    proc = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000",
         "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    m = re.search(r'<pre id="browser-check">(.*?)</pre>', proc.stdout, re.S)
    assert m, proc.stderr[-2000:]
    import html as _html

    check = json.loads(_html.unescape(m.group(1)))
    n_images = len(re.findall(r"<img ", text))
    assert check["errors"] == []
    assert check["n"] == n_images == 12
    assert all(w > 100 for w in check["natural"])  # every image decoded
    # shown at (nearly) the size it was drawn for: text stays readable
    assert all(s >= 0.85 * min(w, 1200) for s, w in zip(check["shown"], check["natural"],
                                                         strict=True))
