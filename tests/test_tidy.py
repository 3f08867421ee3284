"""Tidy outputs (summary_long, export), typed design factors, terminal width, Mplus table."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from micromacro_sim.design.groups import GroupSizes
from micromacro_sim.reporting.mplus import mplus_table
from micromacro_sim.reporting.terminal import number_format, render_table
from micromacro_sim.run.configure import parse_config
from micromacro_sim.run.runner import run
from micromacro_sim.summaries.factors import factor_columns, sizes_from_label, typed_scenarios
from micromacro_sim.summaries.summarize import summarize_run

CONFIG = {
    "name": "tiny-tidy",
    "seed": 5,
    "replications": 12,
    "methods": ["unadjusted"],
    "admissibility": {"policy": "flag", "gate": "none"},
    "fixed": {"n_groups": 20, "r_zxi": 0.3},
    "grid": {"group_size": [5, {"uniform": [4, 8]}], "icc": [0.1, 0.3]},
}
FACTORS = ["group_size_kind", "group_size_mean", "group_size_min", "group_size_max",
           "group_size_label", "icc"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tidy")
    run(parse_config(CONFIG), run_dir=path, progress=False)
    return path


def _cli(*args, columns=100):
    env = {**os.environ, "COLUMNS": str(columns)}
    return subprocess.run([sys.executable, "-m", "micromacro_sim.cli", *args], env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def summarized(run_dir):
    proc = _cli("summarize", str(run_dir))
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("spec", [7, [5, 30], [3, 4, 9], {"uniform": [5, 15]}])
def test_size_labels_read_back(spec):
    gs = GroupSizes.parse(spec)
    assert sizes_from_label(gs.label()) == gs


def test_design_factors_come_from_the_varying_fields(run_dir):
    scen = pd.read_parquet(run_dir / "scenarios.parquet")
    # icc and sigma2_nu both vary, but sigma2_nu is given through icc: icc is the factor
    assert factor_columns(scen) == FACTORS
    typed = typed_scenarios(scen)
    assert "group_size" not in typed.columns
    kinds = dict(zip(typed["group_size_label"], typed["group_size_kind"], strict=True))
    assert kinds == {"n=5": "balanced", "n=U(4,8)": "uniform"}
    u = typed[typed["group_size_kind"] == "uniform"].iloc[0]
    assert (u["group_size_mean"], u["group_size_min"], u["group_size_max"]) == (6.0, 4, 8)


def test_summary_long_matches_the_wide_table(run_dir, summarized):
    wide = pd.read_parquet(run_dir / "summary.parquet")
    long = pd.read_parquet(run_dir / "summary_long.parquet")
    assert set(FACTORS) <= set(wide.columns)
    cols = ["scenario", "label", "cell", *FACTORS, "method", "term", "theta", "k", "measure",
            "se_type", "estimate", "mcse"]
    assert list(long.columns) == cols
    assert long["group_size_mean"].dtype == np.float64
    assert long["group_size_min"].dtype == "Int64" and long["icc"].dtype == np.float64
    # each long value is the wide table's (here: HC3 coverage and percent bias)
    w = wide.set_index(["scenario", "method", "term"])
    cov = long[(long["measure"] == "cover") & (long["se_type"] == "HC3")]
    for r in cov.itertuples():
        assert r.estimate == w.loc[(r.scenario, r.method, r.term), "cover_HC3"]
        assert r.mcse == w.loc[(r.scenario, r.method, r.term), "cover_HC3_mcse"]
    pb = long[long["measure"] == "pct_bias"]
    assert pb["se_type"].isna().all() and len(pb) == len(wide)
    csv = pd.read_csv(run_dir / "summary_long.csv")
    assert len(csv) == len(long) and csv["group_size_mean"].dtype == np.float64


def test_summary_long_reads_in_polars_and_duckdb(run_dir, summarized):
    pl = pytest.importorskip("polars")
    duckdb = pytest.importorskip("duckdb")
    for ext in ("parquet", "csv"):
        path = str(run_dir / f"summary_long.{ext}")
        frame = pl.read_parquet(path) if ext == "parquet" else pl.read_csv(path)
        assert frame.schema["group_size_mean"] == pl.Float64
        assert frame.schema["group_size_min"].is_integer()
        assert frame.schema["icc"] == pl.Float64
        reader = "read_parquet" if ext == "parquet" else "read_csv_auto"
        types = dict(duckdb.sql(f"DESCRIBE SELECT * FROM {reader}('{path}')").fetchall()
                     [i][:2] for i in range(len(frame.columns)))
        assert types["group_size_mean"] == "DOUBLE" and types["icc"] == "DOUBLE"
        assert "INT" in types["group_size_max"]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_joins_estimates_and_scenarios(run_dir, tmp_path, fmt):
    out = tmp_path / f"est.{fmt}"
    proc = _cli("export", str(run_dir), "--format", fmt, "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    frame = pd.read_parquet(out) if fmt == "parquet" else pd.read_csv(out)
    # 4 cells x 12 replications x 1 method x 3 terms
    assert len(frame) == 4 * 12 * 3
    for col in ("icc", "group_size_mean", "estimate", "se_HC3", "status", "reason_code",
                "true_value"):
        assert col in frame.columns
    assert frame["group_size_mean"].dtype == np.float64
    xi = frame[frame["term"] == "xi"]
    assert (xi["true_value"] == xi["beta_xi"]).all()
    for name in ("polars", "duckdb"):
        mod = pytest.importorskip(name)
        if name == "polars":
            pf = mod.read_parquet(out) if fmt == "parquet" else mod.read_csv(out)
            assert pf.height == len(frame) and pf.schema["icc"] == mod.Float64
        else:
            reader = "read_parquet" if fmt == "parquet" else "read_csv_auto"
            n = mod.sql(f"SELECT count(*) FROM {reader}('{out}') WHERE term = 'xi'").fetchall()
            assert n[0][0] == len(xi)


def test_export_bad_format_is_one_line(run_dir, tmp_path):
    proc = _cli("export", str(tmp_path), "--format", "csv")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "manifest.json missing" in proc.stderr


@pytest.mark.parametrize("style", ["table", "mplus"])
def test_printed_lines_fit_100_columns(run_dir, style):
    proc = _cli("summarize", str(run_dir), "--style", style, "--mcse")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) > 20
    assert max(len(line) for line in lines) <= 100


def test_selection_and_formats(run_dir, summarized):
    proc = _cli("summarize", str(run_dir), "--measures", "cover,k", "--terms", "xi")
    assert proc.returncode == 0, proc.stderr
    perf = proc.stdout.split("Reliability")[0]
    assert "cover HC3" not in perf and "%bias" not in perf and " z " not in perf
    extra = _cli("summarize", str(run_dir), "--measures", "cover", "--se-type", "HC0")
    assert extra.returncode == 0 and "cover HC0" in extra.stdout  # beside the default
    s = summarize_run(run_dir)
    r = s.performance[s.performance["term"] == "xi"].iloc[0]
    assert f"{r['cover']:.3f}" in perf  # the bare name: the method's default SE type
    assert number_format("cover_HC3") == number_format("reject") == ".3f"
    bad = _cli("summarize", str(run_dir), "--methods", "nope")
    assert bad.returncode == 2 and "available: unadjusted" in bad.stderr


def test_render_table_splits_wide_tables():
    frame = pd.DataFrame({"scenario": ["a long scenario label"] * 3, "method": ["m"] * 3,
                          **{f"measure_{i}": np.linspace(0, 1, 3) for i in range(20)}})
    text = render_table(frame, width=60)
    assert max(len(line) for line in text.splitlines()) <= 60
    blocks = text.split("\n\n")
    assert len(blocks) > 2
    for block in blocks:  # the identifying column is repeated in every block
        assert block.startswith("scenario") and block.count("a long scenario label") == 3
    assert "measure_19" in text


def test_mplus_checks_follow_muthen_muthen(run_dir):
    s = summarize_run(run_dir)
    t = mplus_table(s, se_type="classical", focal="xi")
    p = s.performance
    assert np.allclose(t["Std. Dev."], p["empse"]) and np.allclose(t["M.S.E."], p["mse"])
    xi = t[t["term"] == "xi"]
    rel = (xi["Average"] - xi["Population"]) / xi["Population"]
    assert (xi["flag_param_bias"] == (rel.abs() >= 0.10)).all()
    se_bias = (xi["S.E. Average"] - xi["Std. Dev."]) / xi["Std. Dev."]
    assert (xi["flag_se_bias_focal"] == (se_bias.abs() >= 0.05)).all()
    assert (xi["flag_power"] == (xi["% Sig Coeff"] < 0.80)).all()
    z = t[t["term"] == "z"]
    assert not z["flag_se_bias_focal"].any() and not z["flag_power"].any()
    c = t["95% Cover"]
    assert (t["flag_cover"] == ((c < 0.91) | (c > 0.98))).all()


def test_default_summary_slopes_mcse_for_bias_and_coverage_and_a_legend(run_dir, summarized):
    from micromacro_sim.reporting.summary_text import format_summary
    from micromacro_sim.summaries.summarize import summarize_run

    s = summarize_run(run_dir)
    text = format_summary(s, width=200)
    table = text.split("Reliability")[0]
    assert " xi " in table and " intercept " not in table  # slopes by default
    assert "%bias bias in % of true" in text and "(x): Monte Carlo SE" in text
    assert "Intercepts left out (--terms to choose)" in text
    # MCSEs in parentheses on %bias and cover only (not on mean, empse, rmse)
    import re

    mcse = re.compile(r"-?\d+\.\d+ \(\d+\.\d+\)")  # a value and its MCSE
    header = next(ln for ln in table.splitlines() if "%bias" in ln)
    first = table.splitlines()[table.splitlines().index(header) + 2]
    assert len(mcse.findall(first)) == 2  # %bias, cover; not mean, empse, rmse
    bare = format_summary(s, width=200, mcse=False)
    assert "(x): Monte Carlo SE" not in bare and not mcse.search(bare)
    every = format_summary(s, width=200, terms=["intercept", "xi"], mcse=True)
    assert " intercept " in every and "Intercepts left out" not in every
