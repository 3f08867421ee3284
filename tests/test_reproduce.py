"""``micromacro reproduce``: studies, published data files, verdicts and tables."""

from __future__ import annotations

import argparse
import math

import numpy as np
import pandas as pd
import pytest

from micromacro_sim.config import load_config
from micromacro_sim.reproduce import Reproduction, clark2020, cv2007, fjk2018, studies
from micromacro_sim.reproduce._common import (
    PUBLISHED_COLUMNS,
    compare,
    packaged_config,
    published,
    verdict,
)
from micromacro_sim.reproduce.cli import add_parser

TERMS = ["intercept", "z", "xi"]


# ------------------------------------------------------------------ registry and data files
def test_registry_lists_every_study_with_a_loadable_config():
    found = studies()
    assert list(found) == ["clark2020", "cv2007", "fjk2018"]
    for name, mod in found.items():
        assert mod.NAME == name and mod.DESCRIPTION
        cfg = load_config(packaged_config(mod.CONFIG))
        assert cfg.name == name


def test_fjk_config_has_the_design():
    cfg = load_config(packaged_config(fjk2018.CONFIG))
    assert cfg.replications == 1000
    assert [m.method for m in cfg.methods] == ["unadjusted", "croon"]
    assert cfg.policy.mode == "flag" and cfg.policy.gate == "none"
    assert {sc.beta_xi for sc in cfg.scenarios} == {0.0, 0.15, 0.3}
    assert any(sc.beta_z == (0.0,) and sc.beta_xi == 0.3 for sc in cfg.scenarios)
    assert {sc.group_size.balanced for sc in cfg.scenarios} == {True, False}


@pytest.mark.parametrize("study", ["clark2020", "cv2007"])
def test_published_files_have_the_columns(study):
    pub = published(study)
    assert tuple(pub.columns) == PUBLISHED_COLUMNS
    assert (pub["study"] == study).all()
    assert pub["source"].str.len().gt(10).all()
    assert np.isfinite(pub["value"]).all()


def test_clark_published_bias_is_the_mean_of_the_saved_estimates():
    """Independent truth: the study's own per-replication estimates (1000 each)."""
    pub = published("clark2020")
    est = clark2020.seed_estimates()
    mean = est.groupby(["method", "term"])["estimate"].mean()
    sd = est.groupby(["method", "term"])["estimate"].std()
    rows = pub[(pub["table"] == "percent_bias") & (pub["cell"] == "row16")]
    assert len(rows) == 21
    for r in rows.itertuples():
        # printed to 3 decimals
        assert 100 * (mean[(r.method, r.term)] / 0.3 - 1) == pytest.approx(r.value, abs=6e-4)
    for r in pub[pub["table"] == "empirical_sd"].itertuples():
        assert sd[(r.method, r.term)] == pytest.approx(r.value, abs=6e-4)


# ------------------------------------------------------------------ verdict logic
def test_compare_uses_the_se_of_the_difference():
    c = compare(10.0, 3.0, 2.0, 4.0)
    assert c["difference"] == 8.0
    assert c["se_difference"] == 5.0
    assert c["z"] == pytest.approx(1.6)
    assert c["verdict"] == "agrees"
    assert compare(0.0, 1.0, 2.5)["verdict"] == "borderline"
    assert compare(0.0, 1.0, -3.01)["verdict"] == "differs"
    assert compare(0.0, 1.0, 3.0)["verdict"] == "borderline"  # boundary included
    # rounding: only the excess over half a printed unit counts
    assert compare(0.0, 0.1, 0.35, rounding=0.05)["z"] == pytest.approx(-3.0)
    assert compare(0.0, 0.1, 0.04, rounding=0.05)["z"] == 0.0
    assert verdict(math.nan) == "no estimate"
    assert verdict(2.5, agree=3, differ=3) == "agrees"
    assert verdict(3.5, agree=3, differ=3) == "differs"


def _perf(rows):
    return pd.DataFrame(
        [dict(method=m, term=t, k=k, pct_bias=b, pct_bias_mcse=s, median_bias=0.0, theta=0.3)
         for m, t, k, b, s in rows]
    )


def test_percent_bias_verdict_on_constructed_inputs():
    pub = published("clark2020")
    k = 250  # mcse_pub = mcse * sqrt(250/1000) = mcse / 2
    se_diff = math.sqrt(1 + 0.25)
    perf = _perf([
        ("unadjusted", "xi", k, -49.877 + 1.5 * se_diff, 1.0, ),
        ("unadjusted", "z", k, 14.494 - 2.5 * se_diff, 1.0),
        ("true", "xi", k, 0.513 + 4.0 * se_diff, 1.0),
        ("croon", "xi", k, 7.992, 1.0),
        ("sam", "xi", k, 0.0, 1.0),
    ])
    t = clark2020.percent_bias_table(perf, pub, "row16").set_index(["method", "term"])
    assert t.loc[("unadjusted", "xi"), "mcse_published"] == pytest.approx(0.5)
    assert t.loc[("unadjusted", "xi"), "z"] == pytest.approx(1.5, abs=1e-3)
    assert t.loc[("unadjusted", "xi"), "verdict"] == "agrees"
    assert t.loc[("unadjusted", "z"), "verdict"] == "borderline"
    assert t.loc[("true", "xi"), "verdict"] == "differs"
    # the published "CV Adj" row is shown as published but never judged
    assert t.loc[("croon", "xi"), "published_label"] == "CV Adj"
    assert t.loc[("croon", "xi"), "published"] == 7.992
    assert t.loc[("croon", "xi"), "verdict"] == clark2020.NOT_COMPARABLE
    assert t.loc[("sam", "xi"), "verdict"] == "no published value"
    # the published value comes from the data frame it is given
    edited = pub.copy()
    edited.loc[(edited["method"] == "true") & (edited["term"] == "xi")
               & (edited["table"] == "percent_bias"), "value"] = perf.loc[2, "pct_bias"]
    t2 = clark2020.percent_bias_table(perf, edited, "row16").set_index(["method", "term"])
    assert t2.loc[("true", "xi"), "verdict"] == "agrees"


def _rejection(method, term, test, rates, **extra):
    return [dict(method=method, term=term, test=test, n_groups=50, group_size="10", icc=0.1,
                 beta_z=0.3, beta_xi=i, **{f"reject_{s}": r for s, r in zip(
                     ["classical", "HC0", "HC1", "HC2", "HC3"], rate, strict=True)},
                 **{f"reject_{s}_mcse": 0.005 for s in ["classical", "HC0", "HC1", "HC2", "HC3"]})
            for i, rate in enumerate(rates)]


def test_fjk_conclusions_on_constructed_rates():
    nominal = [(0.05,) * 5, (0.05,) * 5]
    rows = (
        _rejection("unadjusted", "xi", "Type I", nominal)
        + _rejection("croon", "xi", "Type I", nominal)
        + _rejection("unadjusted", "z", "Type I", nominal)
        + _rejection("croon", "z", "Type I", [(0.10,) * 5, (0.05,) * 5])
        + _rejection("unadjusted", "xi", "power", [(0.5, 0.6, 0.55, 0.52, 0.45)] * 2)
        + _rejection("croon", "xi", "power", [(0.4, 0.5, 0.45, 0.42, 0.35)] * 2)
    )
    c = fjk2018.conclusions(pd.DataFrame(rows)).set_index("claim")["holds"]
    assert c["adjusted means give no Type I error advantage"] == "yes"
    assert c["adjusted means have less power"] == "yes"
    assert c["robust (HC) standard errors add power"] == "partly"  # HC3 loses power
    assert c["recommendation: group means with robust SEs (for testing xi)"] == "yes"
    # croon better on Type I for Z: the first claim fails there
    rows2 = [r for r in rows if not (r["method"] == "unadjusted" and r["term"] == "z")]
    rows2 += _rejection("unadjusted", "z", "Type I", [(0.12,) * 5, (0.11,) * 5])
    c2 = fjk2018.conclusions(pd.DataFrame(rows2)).set_index("claim")["holds"]
    assert c2["adjusted means give no Type I error advantage"] == "partly"


# ------------------------------------------------------------------ small runs
@pytest.fixture(scope="module")
def clark(tmp_path_factory):
    return clark2020.reproduce(tmp_path_factory.mktemp("clark") / "run", replications=20,
                               n_jobs=1, engine="auto")


def test_clark2020_tables(clark):
    assert isinstance(clark, Reproduction)
    assert list(clark.tables) == ["percent_bias", "distribution", "scores", "reliability",
                                  "empirical_sd", "performance", "failures", "redraws"]
    cfg = load_config(packaged_config(clark2020.CONFIG))
    labels = [m.label for m in cfg.methods]
    b = clark.tables["percent_bias"]
    row16 = b[b["cell"] == "row16"]
    assert len(row16) == 3 * len(labels) and set(row16["method"]) == set(labels)
    rel = b[b["cell"] == "reliable"]
    assert list(rel["method"]) == ["unadjusted"] * 3 and list(rel["term"]) == TERMS
    # published values are the data file's
    pub = published("clark2020")
    for r in b[b["published"].notna()].itertuples():
        hit = pub[(pub["table"] == "percent_bias") & (pub["cell"] == r.cell)
                  & (pub["method"] == r.method) & (pub["term"] == r.term)]
        assert r.published == float(hit["value"].iloc[0])
    assert b["published"].notna().sum() == 21 + 3
    assert (b["k"] == 20).all()
    assert np.allclose(b["mcse_published"].dropna(), b["mcse"][b["mcse_published"].notna()]
                       * math.sqrt(20 / 1000))
    croon = row16[row16["method"] == "croon"]
    assert (croon["published_label"] == "CV Adj").all()
    assert (croon["verdict"] == clark2020.NOT_COMPARABLE).all()
    assert any("CV Adj" in n and "true xi" in n and "divides by N" in n for n in clark.notes)
    assert any("sqrt(K/1000)" in n for n in clark.notes)

    d = clark.tables["distribution"]
    assert len(d) == 7 * 3 and (d["k_published"] == 1000).all()
    assert d["ks_p"].between(0, 1).all()
    assert (d.loc[d["method"] == "croon", "note"] == clark2020.NOT_COMPARABLE).all()

    s = clark.tables["scores"].set_index(["method", "source"])
    for m in clark2020.SCORE_METHODS:
        assert s.loc[(m, "this run"), "n"] == 20 * 100
        assert (m, "published") in s.index
    # true scores are N(0, 1) draws: 2000 of them (SD of the SD about .016)
    assert s.loc[("true", "this run"), "sd"] == pytest.approx(1.0, abs=0.08)
    # unadjusted scores: Var(xbar) = 1 + 9/10
    assert s.loc[("unadjusted", "this run"), "sd"] == pytest.approx(math.sqrt(1.9), abs=0.1)
    assert s.loc[("croon", "published"), "published_label"] == "CV Adj"

    r = clark.tables["reliability"].set_index(["cell", "statistic"])
    assert r.loc[("row16", "alpha_std_mean"), "published"] == 0.52
    assert r.loc[("reliable", "alpha_std_mean"), "published"] == 0.91
    assert r.loc[("row16", "alpha_std_mean"), "reliability_theory"] == pytest.approx(1 / 1.9)
    e = clark.tables["empirical_sd"].set_index("method")
    assert e.loc["sem", "published"] == 0.126 and math.isnan(e.loc["blup", "published"])

    f = clark.tables["failures"]
    assert len(f) == 2 * len(labels)  # every cell and method, zeros included
    assert {"n_flagged", "flag_rate", "n_inadmissible"} <= set(f.columns)
    assert len(clark.tables["redraws"]) == 2
    assert {"redraw_rate", "redraws"} <= set(clark.tables["redraws"].columns)
    p = clark.tables["performance"]
    assert {"becover_classical", "median_bias", "trimmed_bias"} <= set(p.columns)
    text = clark.format()
    assert "== percent_bias ==" in text and "CV Adj" in text


CV_REPS = 10


@pytest.fixture(scope="module")
def cv_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("cv")
    return out, cv2007.reproduce(out / "run", replications=CV_REPS, n_jobs=1)


def test_cv2007_tables(cv_out):
    _, rep = cv_out
    lim = rep.tables["unadjusted_limits"]
    assert len(lim) == 16 * 3
    # closed forms of SPEC section 5, independently of Scenario.unadjusted_limit
    for r in lim.itertuples():
        lam, rho = r.reliability, r.r_zxi
        want = {"intercept": 0.3, "xi": 0.3 * lam * (1 - rho**2) / (1 - lam * rho**2),
                "z": 0.3 + 0.3 * rho * (1 - lam) / (1 - lam * rho**2)}[r.term]
        assert r.limit == pytest.approx(want, rel=1e-12)
        assert r.verdict in ("agrees", "differs")
    row16 = lim[(lim["n_groups"] == 100) & (lim["group_size"] == "10")
                & (lim["icc"].round(3) == 0.1) & (lim["r_zxi"] == 0.3)].set_index("term")
    assert row16.loc["xi", "limit_pct_bias"] == pytest.approx(-49.7, abs=0.05)
    assert row16.loc["z", "limit_pct_bias"] == pytest.approx(14.9, abs=0.05)
    assert (rep.tables["blup_reference"]["role"] == "reference only").all()
    assert "verdict" not in rep.tables["blup_reference"].columns
    t = rep.tables["row16"].set_index(["method", "term"])
    pub = published("cv2007")
    assert len(t) == 6
    for p in pub.itertuples():
        assert t.loc[(p.method, p.term), "published"] == p.value
    ina = rep.tables["croon_inadmissible"]
    assert len(ina) == 16 and ina["n_reps"].eq(CV_REPS).all()
    assert ina["flag_rate"].between(0, 1).all()


SMALL_FJK = """
name: fjk2018
seed: 2018
replications: 1000
methods: [unadjusted, croon]
admissibility: {policy: flag, gate: none}
fixed: {r_zxi: 0.3, n_groups: 30, icc: 0.1}
grid:
  group_size: [10, {uniform: [5, 15]}]
  beta_z: [0.0, 0.3]
  beta_xi: [0.0, 0.3]
"""


def test_fjk2018_tables(tmp_path, monkeypatch):
    """A reduced grid of the fjk2018 design (the full one has 72 cells)."""
    from micromacro_sim.reproduce import _common

    small = tmp_path / "fjk2018.yaml"
    small.write_text(SMALL_FJK)
    monkeypatch.setattr(_common, "packaged_config", lambda name: small)
    rep = fjk2018.reproduce(tmp_path / "run", replications=10, n_jobs=1)
    c = rep.tables["conclusions"]
    assert len(c) == 4 and set(c["holds"]) <= {"yes", "no", "partly"}
    assert c["evidence"].str.contains(r"\d\.\d{3}").all()
    rj = rep.tables["rejection"]
    for se in ["classical", "HC0", "HC1", "HC2", "HC3"]:
        assert {f"reject_{se}", f"reject_{se}_mcse"} <= set(rj.columns)
        assert {f"cover_{se}", f"cover_{se}_mcse"} <= set(rep.tables["coverage"].columns)
    assert (rj.loc[rj["theta"] == 0, "test"] == "Type I").all()
    assert (rj.loc[rj["theta"] != 0, "test"] == "power").all()
    assert len(rj) == 8 * 2 * 2
    assert len(rep.tables["failures"]) == 8 * 2


def test_cli_list_and_run(cv_out, capsys):
    out, _ = cv_out
    parser = argparse.ArgumentParser(prog="micromacro")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["reproduce", "list"])
    assert args.func(args) == 0
    listing = capsys.readouterr().out
    for name in ("clark2020", "cv2007", "fjk2018"):
        assert name in listing
    # the fixture's run folder is complete: the command resumes it (nothing to simulate)
    args = parser.parse_args(["reproduce", "cv2007", "--replications", str(CV_REPS),
                              "--n-jobs", "1", "--output", str(out)])
    assert args.func(args) == 0
    assert "== row16 ==" in capsys.readouterr().out
    for name in ("unadjusted_limits", "row16", "croon_inadmissible", "failures", "redraws"):
        assert (out / f"{name}.csv").is_file()
    assert (out / "run" / "manifest.json").is_file()
    frame = pd.read_csv(out / "row16.csv")
    assert len(frame) == 6


# ------------------------------------------------------------------ slow: the CV table
@pytest.mark.slow
def test_cv2007_full_run_matches_limits_and_row16(tmp_path):
    rep = cv2007.reproduce(tmp_path / "run", replications=1000, n_jobs=2)
    lim = rep.tables["unadjusted_limits"]
    # 48 cell-terms at 3 MCSE: about a 12% chance of one excursion by chance alone with a
    # fresh seed; with the shipped seed every one is inside.
    assert (lim["verdict"] == "agrees").all(), lim[lim["verdict"] != "agrees"]
    t = rep.tables["row16"].set_index(["method", "term"])
    for term in TERMS:
        assert t.loc[("unadjusted", term), "verdict"] != "differs"
        assert abs(t.loc[("unadjusted", term), "z"]) <= 3


def test_study_names_match_modules_without_importing_them():
    from micromacro_sim.reproduce import studies, study_names

    assert study_names() == list(studies())
