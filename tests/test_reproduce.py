"""``micromacro reproduce``: studies, published data files, verdicts and tables."""

from __future__ import annotations

import argparse
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from micromacro_sim.reproduce import Reproduction, clark2020, cv2007, fjk2018, studies
from micromacro_sim.reproduce import _distributions as dist
from micromacro_sim.reproduce import _verdicts as v
from micromacro_sim.reproduce._common import PUBLISHED_COLUMNS, packaged_config, published
from micromacro_sim.reproduce.cli import add_parser
from micromacro_sim.run.configure import load_config

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
    assert {sc.beta_xi for sc in cfg.scenarios} == {(0.0,), (0.15,), (0.3,)}
    assert any(sc.beta_z == (0.0,) and sc.beta_xi == (0.3,) for sc in cfg.scenarios)
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
@pytest.mark.parametrize(("diff", "se", "want"), [
    (0.5, 0.5, v.AGREES),         # d <= h = 1, d + h = 1.5 <= 5
    (-1.0, 2.0, v.AGREES),        # sign does not matter; d + h = 5 <= 5 (boundary included)
    (3.0, 1.0, v.SMALL),          # d > h = 2, d + h = 5 <= 5: significant, within the margin
    (0.0, 3.0, v.INCONCLUSIVE),   # h = 6 > m: cannot resolve a difference of 5
    (4.0, 1.0, v.INCONCLUSIVE),   # d - h = 2 <= 5 < d + h = 6: straddles the margin
    (7.0, 1.0, v.INCONCLUSIVE),   # d - h = 5: not beyond the margin (boundary)
    (7.01, 1.0, v.DISAGREES),     # d - h > 5
    (-200.0, 66.0, v.DISAGREES),  # a huge SE still resolves a huge difference
    (math.nan, 1.0, v.NO_ESTIMATE),
    (1.0, math.nan, v.NO_ESTIMATE),
])
def test_rule_reaches_every_verdict(diff, se, want):
    assert v.rule(diff, se, 5.0) == want


def test_rule_critical_value():
    assert v.rule(2.5, 1.0, 5.0) == v.SMALL
    assert v.rule(2.5, 1.0, 5.0, z_crit=3.0) == v.INCONCLUSIVE
    assert v.rule(2.0, 0.8, 5.0) == v.SMALL
    assert v.rule(2.0, 0.8, 5.0, z_crit=3.0) == v.AGREES


def test_judge_combines_both_mcses():
    c = v.judge(10.0, 3.0, 2.0, 4.0, 15.0)
    assert c["diff"] == 8.0 and c["se_diff"] == 5.0
    assert c["verdict"] == v.INCONCLUSIVE  # d + h = 18 > 15
    assert v.judge(10.0, 3.0, 2.0, 4.0, 18.0)["verdict"] == v.AGREES
    # this run's MCSE alone (h = 6) would call it a small difference
    assert v.judge(10.0, 3.0, 2.0, 0.0, 15.0)["verdict"] == v.SMALL
    # an unknown reference MCSE (NaN) leaves this run's alone
    assert v.judge(10.0, 3.0, 2.0, math.nan, 18.0)["se_diff"] == 3.0
    # an analytic reference: 0
    assert v.judge(1.0, 0.5, 0.0, 0.0, 5.0) == {"diff": 1.0, "se_diff": 0.5, "verdict": v.AGREES}
    # rounding: only the excess over half a printed unit counts
    assert v.judge(0.0, 0.1, 0.35, math.nan, 5.0, rounding=0.05)["diff"] == pytest.approx(-0.3)
    assert v.judge(0.0, 0.1, 0.04, math.nan, 5.0, rounding=0.05)["diff"] == 0.0


def test_factor_score_xi_is_inconclusive_not_agrees():
    """Issue 12: this run's MCSE (65.6) alone gave z = -0.97, 'agrees'; Clark's own MCSE
    from his saved estimates is 6.8 and the margin 5 points: the comparison cannot resolve."""
    est = clark2020.seed_estimates()
    fs = est.loc[(est["method"] == "factor_score") & (est["term"] == "xi"), "estimate"]
    pct, mcse_pub = dist.pct_mean_mcse(fs.to_numpy(), 0.3)
    assert pct == pytest.approx(11.968, abs=6e-4)
    assert mcse_pub == pytest.approx(6.8, abs=0.05)
    c = v.judge(-77.97, 65.65, 11.968, mcse_pub, v.PCT_MARGIN.value)
    assert c["se_diff"] == pytest.approx(math.hypot(65.65, mcse_pub))
    assert c["verdict"] == v.INCONCLUSIVE
    # even a run as precise as Clark's cannot resolve the 5-point margin (h = 19) ...
    assert v.judge(11.968, mcse_pub, 11.968, mcse_pub, 5.0)["verdict"] == v.INCONCLUSIVE
    # ... but it resolves a 40-point difference
    assert v.judge(51.968, mcse_pub, 11.968, mcse_pub, 5.0)["verdict"] == v.DISAGREES


def test_margins_are_stated():
    for m in (v.PCT_MARGIN, v.EMPSE_MARGIN, v.ALPHA_MARGIN, v.RATE_MARGIN):
        text = m.describe()
        assert m.measure in text and m.basis in text and "margin" in text
    assert v.EMPSE_MARGIN.absolute(0.049) == pytest.approx(0.0049)
    assert v.PCT_MARGIN.absolute(-50.0) == 5.0
    note = v.rule_note()
    for word in ("agrees", "small difference", "inconclusive", "disagrees", "sqrt(mcse^2"):
        assert word in note


# ------------------------------------------------------------------ robust location, bootstrap
def test_bootstrap_mcse_is_seeded_and_matches_theory():
    x = np.random.default_rng(1).standard_normal(2000)
    r1 = v.robust_location(x, key="a")
    assert r1 == v.robust_location(x, key="a")  # deterministic
    assert r1["median_mcse"] != v.robust_location(x, key="b")["median_mcse"]
    # large-sample SEs of a normal sample: median 1.2533/sqrt(n); 10% trimmed mean
    # 1/sqrt(n * 0.943) (asymptotic efficiency .943); the bootstrap SE of a median converges
    # slowly (relative error of order n^-1/4), hence the wider tolerance
    n = x.size
    assert r1["median_mcse"] == pytest.approx(math.sqrt(math.pi / 2 / n), rel=0.25)
    assert r1["trimmed_mcse"] == pytest.approx(1 / math.sqrt(0.943 * n), rel=0.1)
    assert r1["median"] == float(np.median(x))
    assert math.isnan(v.bootstrap_mcse(x[:1], np.median, key="a"))


def _long(method, term, values):
    return pd.DataFrame({"method": method, "term": term, "estimate": values})


def test_distribution_and_robust_tables_on_constructed_samples():
    rng = np.random.default_rng(7)
    normal = 0.3 + 0.05 * rng.standard_normal(400)
    tail = 0.3 + 0.05 * rng.standard_t(2, 400)
    theirs = pd.concat([_long("a", "xi", normal), _long("b", "xi", tail)])
    ours = pd.concat([_long("a", "xi", normal[::-1] + 0.0),
                      _long("b", "xi", 0.3 + 0.05 * rng.standard_t(2, 300) + 0.06)])
    d = dist.distribution_table(ours, theirs, label="study")
    assert list(d["source"]) == ["this run", "study"] * 2
    assert list(d["k"]) == [400, 400, 300, 400]
    a = d.iloc[0]
    assert a["ks_D"] == 0.0 and a["ks_p"] == 1.0 and math.isnan(d.iloc[1]["ks_D"])
    assert a["q50"] == pytest.approx(np.quantile(normal, 0.5))
    assert d.iloc[2]["ks_p"] == pytest.approx(
        stats.ks_2samp(ours.loc[ours["method"] == "b", "estimate"], tail).pvalue)
    assert dist.heavy_tailed(ours, theirs) == [("b", "xi")]
    r = dist.robust_table(ours, theirs, {"xi": 0.3}, key="t")
    assert list(r["stat"]) == ["median", "trim10"] and set(r["method"]) == {"b"}
    med = r.iloc[0]
    assert med["published"] == pytest.approx(100 * (np.median(tail) / 0.3 - 1))
    # the shift of .06 is 20 points of percent bias: beyond the 5-point margin
    assert (r["verdict"] == v.DISAGREES).all()
    same = dist.robust_table(theirs, theirs, {"xi": 0.3}, pairs=[("a", "xi")], key="t")
    assert (same["diff"] == 0).all() and (same["verdict"] == v.AGREES).all()
    assert (same["mcse_pub"] > 0).all()


def _perf(rows):
    return pd.DataFrame(
        [dict(method=m, term=t, k=k, pct_bias=b, pct_bias_mcse=s, theta=0.3)
         for m, t, k, b, s in rows]
    )


def _seed(method, term, pct, mcse, k=1000):
    """Saved estimates whose percent bias and its MCSE are exactly ``pct`` and ``mcse``."""
    z = np.random.default_rng(3).standard_normal(k)
    z = (z - z.mean()) / z.std(ddof=1)
    sd = mcse * math.sqrt(k) * 0.3 / 100
    return _long(method, term, 0.3 * (1 + pct / 100) + sd * z)


def test_percent_bias_verdict_on_constructed_inputs():
    pub = published("clark2020")
    k = 250
    seed = pd.concat([_seed("unadjusted", "xi", -49.877, 0.5),
                      _seed("unadjusted", "z", 14.494, 0.5),
                      _seed("true", "xi", 0.513, 0.5), _seed("blup", "xi", -1.828, 3.0),
                      _seed("croon", "xi", 7.992, 0.5)])
    se = math.hypot(1.0, 0.5)
    perf = _perf([
        ("unadjusted", "xi", k, -49.877 + 1.5 * se, 1.0),  # agrees
        ("unadjusted", "z", k, 14.494 - 2.2 * se, 1.0),    # small difference
        ("true", "xi", k, 0.513 + 12.0, 1.0),              # disagrees
        ("blup", "xi", k, -1.828, 1.0),                    # combined MCSE 3.2: inconclusive
        ("croon", "xi", k, 7.992, 1.0),
        ("sam", "xi", k, 0.0, 1.0),
        ("sem", "xi", k, 4.744, 1.0),                      # no saved estimates here
    ])
    t = clark2020.percent_bias_table(perf, pub, "row16", seed=seed).set_index(["method", "term"])
    assert t.loc[("unadjusted", "xi"), "mcse_pub"] == pytest.approx(0.5)
    assert t.loc[("unadjusted", "xi"), "se_diff"] == pytest.approx(se)
    assert t.loc[("unadjusted", "xi"), "verdict"] == v.AGREES
    assert t.loc[("unadjusted", "z"), "verdict"] == v.SMALL
    assert t.loc[("true", "xi"), "verdict"] == v.DISAGREES
    assert t.loc[("blup", "xi"), "verdict"] == v.INCONCLUSIVE
    assert math.isnan(t.loc[("sem", "xi"), "mcse_pub"])
    assert t.loc[("sem", "xi"), "se_diff"] == 1.0 and t.loc[("sem", "xi"), "verdict"] == v.AGREES
    # the published "CV Adj" row is shown as published but never judged
    assert t.loc[("croon", "xi"), "published"] == 7.992
    assert t.loc[("croon", "xi"), "verdict"] == clark2020.NOT_COMPARABLE
    assert t.loc[("sam", "xi"), "verdict"] == clark2020.NOT_PUBLISHED
    # the published value comes from the data frame it is given
    edited = pub.copy()
    edited.loc[(edited["method"] == "true") & (edited["term"] == "xi")
               & (edited["table"] == "percent_bias"), "value"] = perf.loc[2, "pct_bias"]
    t2 = clark2020.percent_bias_table(perf, edited, "row16", seed=seed)
    assert t2.set_index(["method", "term"]).loc[("true", "xi"), "verdict"] == v.AGREES


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


def test_fjk_nominal_verdicts_on_constructed_rates():
    k = 1000  # MCSE sqrt(max(P(1-P), .0475)/K): at .05, .0069 (h = .0138)
    rej = pd.DataFrame([dict(method="unadjusted", term="xi", test=t, k=k, reject_classical=r)
                        for t, r in [("Type I", 0.05), ("Type I", 0.062), ("Type I", 0.07),
                                     ("Type I", 0.10), ("power", 0.9)]])
    cov = pd.DataFrame([dict(method="unadjusted", term="xi", test="Type I", k=k,
                             cover_classical=c) for c in (0.95, 0.80)]
                       + [dict(method="unadjusted", term="xi", test="Type I", k=5,
                               cover_classical=1.0)])
    t = fjk2018.nominal_table(rej, cov).set_index("measure")
    one = t.loc["Type I"]
    assert one["cells"] == 4 and one["se"] == "classical"  # the power row is not a Type I cell
    # .05 agrees; .062 (d = .012, h = .015) and .07 (d = .02, h = .016) reach past the
    # band's edge: inconclusive; .10 (d = .05, h = .019) is significantly beyond it
    assert (one["agrees"], one["inconclusive"], one["disagrees"]) == (1, 2, 1)
    assert one["mean"] == pytest.approx((0.05 + 0.062 + 0.07 + 0.10) / 4)
    c = t.loc["coverage"]
    # 1.0 in 5 replications: MCSE at .95 (.097), not 0: inconclusive, not disagrees
    assert (c["agrees"], c["disagrees"], c["inconclusive"]) == (1, 1, 1)
    rej2 = rej.assign(reject_classical=[0.05, 0.0555, 0.05, 0.05, 0.9], k=100000)
    assert fjk2018.nominal_table(rej2, cov).set_index("measure").loc["Type I", "small"] == 1


# ------------------------------------------------------------------ small runs
@pytest.fixture(scope="module")
def clark(tmp_path_factory):
    return clark2020.reproduce(tmp_path_factory.mktemp("clark") / "run", replications=20,
                               n_jobs=1, engine="auto")


MY_TABLES = ("percent_bias", "percent_bias_reliable", "distribution", "robust", "reliability",
             "empirical_sd")


def _widths(text):
    """Widest line of each table's block in a formatted reproduction."""
    out, name = {}, None
    for line in text.splitlines():
        if line.startswith("== "):
            name = line.strip("= ")
        elif line == "Notes:":
            name = None
        elif name:
            out[name] = max(out.get(name, 0), len(line))
    return out


def test_clark2020_tables(clark):
    assert isinstance(clark, Reproduction)
    assert list(clark.tables) == ["percent_bias", "percent_bias_reliable", "distribution",
                                  "robust", "scores", "reliability", "empirical_sd",
                                  "performance", "failures", "redraws"]
    cfg = load_config(packaged_config(clark2020.CONFIG))
    labels = [m.label for m in cfg.methods]
    b = clark.tables["percent_bias"]
    assert len(b) == 3 * len(labels) and set(b["method"]) == set(labels)
    rel = clark.tables["percent_bias_reliable"]
    assert list(rel["method"]) == ["unadjusted"] * 3 and list(rel["term"]) == TERMS
    assert rel["mcse_pub"].isna().all() and (rel["se_diff"] == rel["mcse"]).all()
    # published values are the data file's
    pub = published("clark2020")
    for cell, frame in (("row16", b), ("reliable", rel)):
        for r in frame[frame["published"].notna()].itertuples():
            hit = pub[(pub["table"] == "percent_bias") & (pub["cell"] == cell)
                      & (pub["method"] == r.method) & (pub["term"] == r.term)]
            assert r.published == float(hit["value"].iloc[0])
    assert b["published"].notna().sum() == 21
    assert (b["k"] == 20).all()
    # the published MCSE comes from the saved estimates, not from this run
    seed = clark2020.seed_estimates()
    for r in b[b["published"].notna()].itertuples():
        x = seed.loc[(seed["method"] == r.method) & (seed["term"] == r.term), "estimate"]
        assert r.mcse_pub == pytest.approx(100 * x.std() / math.sqrt(1000) / 0.3)
        assert r.se_diff == pytest.approx(math.hypot(r.mcse, r.mcse_pub))
    verdicts = {v.AGREES, v.SMALL, v.INCONCLUSIVE, v.DISAGREES, v.NO_ESTIMATE}
    assert set(b["verdict"]) <= verdicts | {clark2020.NOT_COMPARABLE, clark2020.NOT_PUBLISHED}
    fs = b.set_index(["method", "term"]).loc[("factor_score", "xi")]
    assert fs["verdict"] != v.AGREES  # 20 replications cannot resolve 5 points
    croon = b[b["method"] == "croon"]
    assert (croon["verdict"] == clark2020.NOT_COMPARABLE).all()
    assert any("CV Adj" in n and "true xi" in n and "divides by N" in n for n in clark.notes)
    assert any("near-zero loading" in n and "6.8" in n and "gate 'lavaan_cfa'" in n
               for n in clark.notes)
    assert any("'inconclusive'" in n and "sqrt(mcse^2 + mcse_pub^2)" in n for n in clark.notes)
    assert any("margin 5 percentage points" in n for n in clark.notes)

    d = clark.tables["distribution"]
    assert len(d) == 2 * 7 * 3 and list(d["source"][:2]) == ["run", "Clark"]
    assert (d.loc[d["source"] == "Clark", "k"] == 1000).all()
    assert d.loc[d["source"] == "run", "ks_p"].between(0, 1).all()
    # Clark's factor_score xi has an excess kurtosis of 80: always compared robustly
    rb = clark.tables["robust"]
    pairs = set(zip(rb["method"], rb["term"], strict=True))
    assert {("factor_score", "xi"), ("croon", "xi")} <= pairs
    assert (rb.loc[rb["method"] == "croon", "verdict"] == clark2020.NOT_COMPARABLE).all()
    fsr = rb[(rb["method"] == "factor_score") & (rb["term"] == "xi")].set_index("stat")
    x = seed.loc[(seed["method"] == "factor_score") & (seed["term"] == "xi"), "estimate"]
    assert fsr.loc["median", "published"] == pytest.approx(100 * (x.median() / 0.3 - 1))
    assert fsr.loc["trim10", "published"] == pytest.approx(
        100 * (stats.trim_mean(x, 0.1) / 0.3 - 1))
    assert (fsr["mcse_pub"] > 0).all() and (fsr["mcse"] > 0).all()

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
    assert r.loc[("row16", "alpha_std_mean"), "theory"] == pytest.approx(1 / 1.9)
    assert r.loc[("row16", "alpha_std_mean"), "verdict"] in verdicts
    e = clark.tables["empirical_sd"].set_index("method")
    assert e.loc["sem", "published"] == 0.126 and math.isnan(e.loc["blup", "published"])
    assert e.loc["sem", "margin"] == pytest.approx(0.0126)
    x = seed.loc[(seed["method"] == "sem") & (seed["term"] == "xi"), "estimate"]
    assert e.loc["sem", "mcse_pub"] == pytest.approx(x.std() / math.sqrt(2 * 999))

    f = clark.tables["failures"]
    assert len(f) == 2 * len(labels)  # every cell and method, zeros included
    assert {"n_flagged", "flag_rate", "n_inadmissible"} <= set(f.columns)
    assert len(clark.tables["redraws"]) == 2
    assert {"redraw_rate", "redraws"} <= set(clark.tables["redraws"].columns)
    p = clark.tables["performance"]
    assert {"becover_classical", "median_bias", "trimmed_bias"} <= set(p.columns)
    text = clark.format(width=100)
    assert "== percent_bias ==" in text and "margin 5 percentage points" in text
    widths = _widths(text)
    assert all(widths[t] <= 100 for t in MY_TABLES), widths


def test_reproduction_writes_captions(clark, tmp_path):
    clark.write(tmp_path)
    notes = (tmp_path / "notes.txt").read_text()
    assert notes.startswith("percent_bias: row 16; margin 5 percentage points")
    assert (tmp_path / "robust.csv").is_file()


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
        assert r.limit_pct == pytest.approx(100 * (want / 0.3 - 1), rel=1e-12, abs=1e-12)
        assert r.diff == pytest.approx(r.this_run - r.limit_pct)
        # the limit is exact: the verdict uses this run's MCSE alone, at 3 MCSE
        assert r.verdict == v.rule(r.diff, r.mcse, v.PCT_MARGIN.value, z_crit=3.0)
    row16 = lim[(lim["n_groups"] == 100) & (lim["group_size"] == "10")
                & (lim["icc"].round(3) == 0.1) & (lim["r_zxi"] == 0.3)].set_index("term")
    assert row16.loc["xi", "limit_pct"] == pytest.approx(-49.7, abs=0.05)
    assert row16.loc["z", "limit_pct"] == pytest.approx(14.9, abs=0.05)
    assert (rep.tables["blup_reference"]["role"] == "reference only").all()
    assert "verdict" not in rep.tables["blup_reference"].columns
    t = rep.tables["row16"].set_index(["method", "term"])
    pub = published("cv2007")
    assert len(t) == 6
    for p in pub.itertuples():
        assert t.loc[(p.method, p.term), "published"] == p.value
    # CV's MCSE is unknown: this run's alone
    assert (t["se_diff"] == t["mcse"]).all()
    assert any("MCSE is unknown" in c for c in rep.captions.values())
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


@pytest.fixture(scope="module")
def fjk(tmp_path_factory):
    """A reduced grid of the fjk2018 design (the full one has 72 cells)."""
    from micromacro_sim.reproduce import _common

    tmp = tmp_path_factory.mktemp("fjk")
    small = tmp / "fjk2018.yaml"
    small.write_text(SMALL_FJK)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_common, "packaged_config", lambda name: small)
        return fjk2018.reproduce(tmp / "run", replications=10, n_jobs=1)


def test_fjk2018_tables(fjk):
    rep = fjk
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
    nom = rep.tables["nominal"]
    assert len(nom) == 2 * 2 * 5 * 2 and set(nom["measure"]) == {"Type I", "coverage"}
    counts = nom[["agrees", "small", "inconclusive", "disagrees", "no_est"]].sum(axis=1)
    assert (counts == nom["cells"]).all()
    assert (nom.loc[nom["measure"] == "Type I", "cells"] == 4).all()
    assert any("Bradley" in n and "disagrees" in n for n in rep.notes)
    assert len(rep.tables["failures"]) == 8 * 2


def test_cli_list_and_run(cv_out, capsys, monkeypatch):
    out, _ = cv_out
    parser = argparse.ArgumentParser(prog="micromacro")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["reproduce", "list"])
    assert args.func(args) == 0
    listing = capsys.readouterr().out
    for name in ("clark2020", "cv2007", "fjk2018"):
        assert name in listing
    # the fixture's run folder is complete: the command resumes it (nothing to simulate)
    monkeypatch.setenv("COLUMNS", "100")
    args = parser.parse_args(["reproduce", "cv2007", "--replications", str(CV_REPS),
                              "--n-jobs", "1", "--output", str(out)])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "== row16 ==" in printed
    assert max(len(line) for line in printed.splitlines()) <= 100
    # the closing lines say where the figures are, and name them
    tail = " ".join(printed.split("\n\n")[-1].split())
    assert f"{out / 'figures'}: row16.png, unadjusted_limits.png" in tail
    assert f"micromacro report {out / 'run'}" in tail
    for name in ("row16", "unadjusted_limits"):
        _assert_png(out / "figures" / f"{name}.png")
    for name in ("unadjusted_limits", "row16", "croon_inadmissible", "failures", "redraws"):
        assert (out / f"{name}.csv").is_file()
    assert (out / "run" / "manifest.json").is_file()
    frame = pd.read_csv(out / "row16.csv")
    assert len(frame) == 6


# ------------------------------------------------------------------ window width and figures
def _assert_png(path):
    """A readable PNG no wider than the report's column."""
    from matplotlib import image

    from micromacro_sim.reporting.figures.common import DPI, MAX_WIDTH

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
    img = image.imread(path)
    assert img.ndim == 3 and 200 <= img.shape[1] <= MAX_WIDTH * DPI + 1, img.shape
    assert img.shape[0] >= 200
    assert img[..., :3].std() > 0.05  # something is drawn


@pytest.fixture(params=["clark2020", "cv2007", "fjk2018"])
def any_study(request, clark, cv_out, fjk):
    return {"clark2020": clark, "cv2007": cv_out[1], "fjk2018": fjk}[request.param]


@pytest.mark.parametrize("columns", [100, 72])
def test_reproduction_fits_the_window(any_study, monkeypatch, columns):
    monkeypatch.setenv("COLUMNS", str(columns))
    text = any_study.format()
    lines = text.splitlines()
    too_wide = [line for line in lines if len(line) > columns]
    assert not too_wide, too_wide[:3]
    for name in any_study.tables:
        assert f"== {name} ==" in lines
    # notes and captions are wrapped, not cut: every word of them is printed
    words = set(text.split())
    for note in [*any_study.notes, *any_study.captions.values()]:
        assert set(note.split()) <= words


def _headers(text, table):
    block = text.split(f"== {table} ==")[1].split("== ")[0]
    return [line.split() for line in block.splitlines() if line.startswith("method ")]


def test_wide_table_is_split_with_its_ids_repeated(clark):
    # at 100 columns the percent-bias comparison fits one block, verdict included
    (one,) = _headers(clark.format(width=100), "percent_bias")
    assert one[:2] == ["method", "term"] and "verdict" in one
    headers = _headers(clark.format(width=72), "percent_bias")
    assert len(headers) >= 2  # split into blocks, each naming the rows
    assert all(h[:2] == ["method", "term"] for h in headers)
    assert {"published", "this_run", "verdict"} <= {c for h in headers for c in h}


STUDY_FIGURES = {"clark2020": ["percent_bias", "robust", "reliability", "empirical_sd"],
                 "cv2007": ["row16", "unadjusted_limits"], "fjk2018": ["rates"]}


def test_every_study_draws_its_figures(any_study, tmp_path):
    paths = any_study.write_figures(tmp_path)
    assert [p.name for p in paths] == [f"{n}.png" for n in STUDY_FIGURES[any_study.study]]
    for p in paths:
        assert p.parent == tmp_path
        _assert_png(p)


def test_fjk_rate_rows_are_means_over_cells(fjk):
    from micromacro_sim.reproduce._figures import _rows

    rej = fjk.tables["rejection"]
    rows = _rows(rej, "Type I", ("classical", "HC3"))
    sel = rej[(rej["test"] == "Type I") & (rej["term"] == "xi") & (rej["method"] == "croon")]
    row = rows.set_index("label").loc["xi  croon  HC3"]
    assert row["mean"] == pytest.approx(sel["reject_HC3"].mean())
    assert row["mcse"] == pytest.approx(
        math.sqrt((sel["reject_HC3_mcse"] ** 2).sum()) / len(sel))
    assert sorted(row["cells"]) == sorted(sel["reject_HC3"])
    power = _rows(rej, "power", ("classical",))
    # power rows are split by the true value: beta_xi = .3 and beta_z = .3 here
    assert list(power["label"]) == ["xi=0.3  unadjusted  classical", "xi=0.3  croon  classical",
                                    "z=0.3  unadjusted  classical", "z=0.3  croon  classical"]


def test_published_plot_labels_rows_uniquely_and_reads_mcse_pub(tmp_path, monkeypatch):
    from micromacro_sim.reporting.figures import published as pubfig

    frame = pd.DataFrame({"method": ["a", "a", "b"], "term": "xi",
                          "stat": ["median", "trim10", "median"], "verdict": "agrees",
                          "published": [1.0, 2.0, 3.0], "mcse_pub": [0.5, 0.25, np.nan],
                          "this_run": [1.5, 2.5, 3.5], "mcse": 0.1})
    assert pubfig._unique_names(frame, ["method", "term"], None) == ["method", "term", "stat"]
    assert pubfig._unique_names(frame, ["method", "stat"], "term") == ["method", "stat"]
    seen = {}

    def spy(ax, sub, labels, cols, reference):
        seen.setdefault("labels", []).extend(labels)
        seen["mcse"] = cols["published_mcse"]
        return real(ax, sub, labels, cols, reference)

    real = pubfig._panel
    monkeypatch.setattr(pubfig, "_panel", spy)
    path = pubfig.plot_published(frame, tmp_path / "p.png", label_columns=("method", "term"))
    assert seen == {"labels": ["a xi median", "a xi trim10", "b xi median"], "mcse": "mcse_pub"}
    _assert_png(path)


# ------------------------------------------------------------------ slow: the CV table
@pytest.mark.slow
def test_cv2007_full_run_matches_limits_and_row16(tmp_path):
    rep = cv2007.reproduce(tmp_path / "run", replications=1000, n_jobs=2)
    lim = rep.tables["unadjusted_limits"]
    # 48 cell-terms at 3 MCSE: about a 12% chance of one excursion by chance alone with a
    # fresh seed; with the shipped seed every one is inside.
    assert (lim["verdict"] == v.AGREES).all(), lim[lim["verdict"] != v.AGREES]
    t = rep.tables["row16"].set_index(["method", "term"])
    for term in TERMS:
        assert t.loc[("unadjusted", term), "verdict"] == v.AGREES
        r = t.loc[("unadjusted", term)]
        assert abs(r["diff"]) <= 3 * r["se_diff"]


def test_study_names_match_modules_without_importing_them():
    from micromacro_sim.reproduce import studies, study_names

    assert study_names() == list(studies())
