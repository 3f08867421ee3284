"""``micromacro advise``: population fit and mapping, design, ranking, determinism, bad input."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import micromacro_sim
from micromacro_sim.api.advise import Advice, advise
from micromacro_sim.api.advise_design import Cell, build_config, grid_levels, roster
from micromacro_sim.api.advise_population import Population, Value, fit_population
from micromacro_sim.api.advise_rank import rank_methods
from micromacro_sim.api.userdata import prepare
from micromacro_sim.cli.main import main
from micromacro_sim.design.config import MethodSpec
from micromacro_sim.design.scenario import Scenario
from micromacro_sim.generate.dgp import generate
from micromacro_sim.generate.seeding import replication_rng
from micromacro_sim.run.configure import load_config, parse_config

TEAMS = Path(__file__).resolve().parents[1] / "docs" / "example_teams.csv"
TEAM_ARGS = ["--group", "team", "--member", "member", "--x", "climate", "--z", "tenure",
             "--y", "performance"]
FAST = "unadjusted,croon,sem_2level"


def _generated(seed: int, **params) -> pd.DataFrame:
    """One dataset of the package's generator as a user's long table (group ids as text)."""
    sc = Scenario.from_params(params)
    frame = generate(sc, replication_rng(seed, sc, 0)).to_frame().drop(columns="xi")
    frame["group"] = [f"g{g:03d}" for g in frame["group"]]
    return frame


# ---------------------------------------------------------------------------- end to end
def test_example_teams_names_a_method_with_reasons_and_a_valid_config(tmp_path, capsys):
    out = tmp_path / "adv"
    t0 = time.perf_counter()
    rc = main(["advise", str(TEAMS), *TEAM_ARGS, "--replications", "100", "--output", str(out),
               "--quiet"])
    seconds = time.perf_counter() - t0
    assert rc == 0
    assert seconds < 120, seconds
    cfg = load_config(out / "design.yaml")  # what `micromacro run` reads
    assert cfg.replications == 100 and cfg.seed == 20261208
    assert len(cfg.scenarios) == 12 and "true" in [m.label for m in cfg.methods]
    assert cfg.scenarios[0].n_groups == 80 and not cfg.scenarios[0].balanced
    md = (out / "advice.md").read_text()
    assert "sem_2level" in md and "maximum-likelihood estimator of exactly" in md
    assert "**Use `" in md
    rec = md.split("## 4. Recommendation")[1].split("## 5.")[0]
    assert rec.count("\n- ") >= 2  # the reasons
    assert "## 5. The fit of your data" in md and "micromacro fit example_teams.csv" in md
    stdout = capsys.readouterr().out
    assert "Use `" in stdout and "on your data" in stdout
    ranking = pd.read_csv(out / "ranking.csv")
    assert "true" in set(ranking["method"]) and ranking["eligible"].any()
    assert (out / "run" / "manifest.json").is_file()


def test_unadjusted_not_recommended_when_group_means_are_unreliable():
    params = dict(n_groups=100, group_size=5, icc=1 / 6, r_zxi=0.3, beta_xi=0.3)
    assert Scenario.from_params(params).reliability == pytest.approx(0.5)
    frame = _generated(11, **params)
    adv = advise(frame, group="group", member="member", x="x", z="z", y="y",
                 replications=50, methods=FAST)
    assert isinstance(adv, Advice)
    verdict = adv.ranking.verdicts["unadjusted"]
    assert not verdict.eligible
    assert any("coverage" in r for r in verdict.reasons)
    assert any("biased" in c for c in verdict.caveats)
    assert adv.ranking.choice != "unadjusted" and adv.recommended != "unadjusted"
    line = next(ln for ln in adv.text.splitlines() if ln.strip().startswith("unadjusted:"))
    assert "not eligible" in line and "coverage" in line and "biased" in line
    fitted = next(c for c in adv.cells if c.fitted)
    assert 0.35 < fitted.reliability < 0.65


def test_known_parameters_are_recovered_in_the_config_within_two_se():
    truth = dict(n_groups=150, group_size={"uniform": [4, 10]}, icc=0.2, r_zxi=0.3, beta0=0.5,
                 beta_z=0.4, beta_xi=0.3, sigma2_eps=0.35, var_xi=2.5)
    # one fixed draw; over 100 draws of this design the errors over the delta-method SEs
    # have mean ~0 and SD ~1 for every value (|z| > 2 in 1-6% of draws)
    frame = _generated(3, **truth)
    frame["x"] = frame["x"] + 5.0  # other units: the mapping standardises x and Z
    frame["z"] = 3.0 * frame["z"] + 10.0
    adv = advise(frame, group="group", x="x", z="z", y="y", replications=10,
                 methods="unadjusted")
    pop, fixed, grid = adv.population, adv.config["fixed"], adv.config["grid"]
    assert pop.source == "sem_2level"
    expect = {  # generator values: Var(xi) = Var(Z) = 1, slopes per SD
        "icc": (0.2, pop["icc"].value), "beta_xi": (0.3 * np.sqrt(2.5), pop["beta_xi"].value),
        "r_zxi:z": (0.3, fixed["r_zxi"]), "beta_z:z": (0.4, fixed["beta_z"]),
        "beta0": (0.5, fixed["beta0"]), "sigma2_eps": (0.35, fixed["sigma2_eps"]),
    }
    for key, (true, got) in expect.items():
        assert abs(got - true) <= 2 * pop[key].se, (key, got, true, pop[key].se)
    assert round(pop["icc"].value, 4) in [round(v, 4) for v in grid["icc"]]
    assert fixed["var_xi"] == 1.0 and fixed["n_groups"] == 150
    assert sorted(fixed["group_size"]) == fixed["group_size"]
    assert len(fixed["group_size"]) == 150 and "missing_mcar" not in fixed
    assert pop["raw_b_xi"].value == pytest.approx(
        micromacro_sim.fit(frame, group="group", x="x", z="z", y="y",
                           method="sem_2level")["sem_2level"].params["x"], rel=1e-6)


@pytest.mark.parametrize("member", [True, False])
def test_shuffled_rows_give_identical_advice_and_config_bytes(tmp_path, member):
    frame = pd.read_csv(TEAMS, dtype={"team": str, "member": str})
    args = TEAM_ARGS if member else [a for a in TEAM_ARGS if a not in ("--member", "member")]
    texts = []
    for name, rows in (("a", frame), ("b", frame.sample(frac=1.0, random_state=7))):
        folder = tmp_path / name
        folder.mkdir()
        rows.to_csv(folder / "teams.csv", index=False)
        rc = main(["advise", str(folder / "teams.csv"), *args, "--replications", "20",
                   "--methods", FAST, "--output", str(folder / "out"), "--quiet"])
        assert rc == 0
        texts.append([(folder / "out" / f).read_bytes()
                      for f in ("advice.md", "design.yaml", "ranking.csv")])
    assert texts[0] == texts[1]


def test_shuffled_rows_give_bitwise_identical_population_and_data():
    from micromacro_sim.api.advise import _inputs

    frame = pd.read_csv(TEAMS, dtype={"team": str, "member": str})
    got = []
    for rows in (frame, frame.sample(frac=1.0, random_state=11)):
        inp = _inputs(rows, "team", "climate", "tenure", "performance", None)
        got.append((inp.data.x.tobytes(), inp.data.xbar.tobytes(),
                    [(v.key, v.value, v.se) for v in fit_population(inp.data).values]))
    assert got[0] == got[1]


@pytest.mark.parametrize("data, change, field", [
    ("nope.csv", {}, "DATA"),
    (None, {"--x": "climat"}, "climat"),
    (None, {"--z": "tenure,nope"}, "nope"),
    (None, {"--x": "climate,tenure"}, "x"),
    (None, {"--methods": "croon,zzz"}, "methods"),
])
def test_bad_input_one_line_exit_2_no_folder(tmp_path, capsys, data, change, field):
    args = list(TEAM_ARGS)
    for opt, value in change.items():
        if opt in args:
            args[args.index(opt) + 1] = value
        else:
            args += [opt, value]
    out = tmp_path / "out"
    path = str(tmp_path / data) if data else str(TEAMS)
    rc = main(["advise", path, *args, "--replications", "10", "--output", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {field}"), err
    assert not out.exists()


# ---------------------------------------------------------------------------- the parts
def test_mapping_standardises_and_matches_sem_2level():
    frame = pd.read_csv(TEAMS, dtype={"team": str})
    data = prepare(frame, group="team", member="member", x="climate", z="tenure",
                   y="performance").data
    pop = fit_population(data)
    fit = micromacro_sim.fit(frame, group="team", member="member", x="climate", z="tenure",
                             y="performance", method="sem_2level")["sem_2level"]
    assert pop["raw_b_xi"].value == pytest.approx(fit.params["climate"], rel=1e-8)
    assert pop["raw_b_xi"].se == pytest.approx(fit.bse["climate"], rel=1e-4)
    assert pop["raw_b_z:tenure"].se == pytest.approx(fit.bse["tenure"], rel=1e-4)
    v, sw = pop["var_xi_x"].value, pop["sigma2_w"].value
    assert pop["icc"].value == pytest.approx(v / (v + sw))
    assert pop["beta_xi"].value == pytest.approx(pop["raw_b_xi"].value * np.sqrt(v))
    sd = pop["sd_z:tenure"].value
    assert sd == pytest.approx(np.std(data.z[:, 0]))
    assert pop["beta_z:tenure"].value == pytest.approx(pop["raw_b_z:tenure"].value * sd)
    assert pop["beta0"].value == pytest.approx(
        pop["raw_b0"].value + pop["raw_b_xi"].value * pop["mean_x"].value
        + pop["raw_b_z:tenure"].value * pop["mean_z:tenure"].value)
    icc = pop["icc"]
    assert 0 < icc.lower < icc.value < icc.upper < 1


def test_moment_fallback_when_the_ml_fit_is_unavailable(monkeypatch):
    from micromacro_sim.api import advise_population

    frame = pd.read_csv(TEAMS, dtype={"team": str})
    data = prepare(frame, group="team", x="climate", z="tenure", y="performance").data
    ml = fit_population(data)
    monkeypatch.setattr(advise_population, "_ml", lambda d: "the sem_2level fit is flagged")
    mom = fit_population(data)
    assert mom.source == "moments" and "moment estimates" in mom.notes[0]
    for key in ("icc", "beta_xi", "beta_z:tenure", "r_zxi:tenure", "sigma2_eps"):
        assert mom[key].value == pytest.approx(ml[key].value, abs=1.5 * ml[key].se)
    assert mom["icc"].lower < mom["icc"].value < mom["icc"].upper
    assert np.isfinite(mom["beta_xi"].lower)


def _user(rows: list[tuple[str, str]]) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    groups = sorted({g for g, _ in rows})
    z = dict(zip(groups, rng.normal(size=len(groups)), strict=True))
    y = dict(zip(groups, rng.normal(size=len(groups)), strict=True))
    return pd.DataFrame({"g": [g for g, _ in rows], "m": [m for _, m in rows],
                         "x": rng.normal(size=len(rows)), "z": [z[g] for g, _ in rows],
                         "y": [y[g] for g, _ in rows]})


def test_roster_rule_absent_members_only_with_integer_member_ids():
    rows = [(g, str(m)) for g in ("a", "b", "c") for m in range(4)]
    rows = [r for r in rows if r != ("a", "2")] + [("d", "0"), ("d", "1"), ("d", "5")]
    frame = _user(rows)
    with_ids = roster(prepare(frame, group="g", member="m", x="x", z="z", y="y").data)
    # a: 0, 1, 3 -> roster 4 (one absent); d: 0, 1, 5 -> roster 6 (three absent)
    assert with_ids.sizes == (4, 4, 4, 6)
    assert with_ids.missing_rate == pytest.approx(1 - 14 / 18, abs=1e-4)
    assert "absent" in with_ids.rule
    without = roster(prepare(frame, group="g", x="x", z="z", y="y").data)
    assert without.sizes == (3, 3, 4, 4) and without.missing_rate == 0.0
    frame["m"] = "p" + frame["m"]
    text_ids = roster(prepare(frame, group="g", member="m", x="x", z="z", y="y").data)
    assert text_ids.missing_rate == 0.0 and "not integers" in text_ids.rule
    raw = build_config(_population((0.1, 0.2, 0.3), (0.1, 0.3, 0.5)), with_ids,
                       [MethodSpec("croon", "croon")], seed=1, replications=10)
    assert raw["fixed"]["missing_mcar"] == with_ids.missing_rate
    assert parse_config(raw).scenarios[0].absent_members


def test_several_z_map_to_per_z_values_and_one_r_zz():
    sc = Scenario.from_params(dict(n_groups=120, group_size=6, icc=0.25, n_z=2, r_zz=0.2,
                                   r_zxi=[0.3, 0.1], beta_z=[0.3, -0.2]))
    frame = generate(sc, replication_rng(2, sc, 0)).to_frame()
    data = prepare(frame, group="group", x="x", z=["z1", "z2"], y="y").data
    pop = fit_population(data)
    corr = np.corrcoef(data.z, rowvar=False)[0, 1]
    assert pop["r_zz"].value == pytest.approx(corr)
    ros = roster(data)
    raw = build_config(pop, ros, [MethodSpec("croon", "croon")], seed=1, replications=10)
    fixed = raw["fixed"]
    assert fixed["n_z"] == 2 and len(fixed["r_zxi"]) == 2 and len(fixed["beta_z"]) == 2
    assert fixed["group_size"] == 6
    cell = parse_config(raw).scenarios[0]
    assert cell.n_z == 2 and cell.r_zz == pytest.approx(round(corr, 4), abs=1e-4)


def _population(icc: tuple[float, float, float], b: tuple[float, float, float]) -> Population:
    vals = (Value("icc", icc[1], 0.1, icc[0], icc[2]), Value("beta_xi", b[1], 0.1, b[0], b[2]),
            Value("beta_z:z", 0.3), Value("beta0", 0.1), Value("r_zxi:z", 0.2),
            Value("sigma2_eps", 0.5))
    return Population("sem_2level", vals, ("z",))


def test_grid_truncates_interval_ends_and_config_parses():
    pop = _population((0.001, 0.05, 0.2), (-0.05, 0.1, 0.25))
    levels = grid_levels(pop)
    assert levels == {"icc": [0.01, 0.05, 0.2], "beta_xi": [0.0, 0.1, 0.25]}
    ros = roster(prepare(_user([(g, str(m)) for g in "abcd" for m in range(3)]), group="g",
                         member="m", x="x", z="z", y="y").data)
    raw = build_config(pop, ros, [MethodSpec("true", "true"), MethodSpec("croon", "croon")],
                       seed=5, replications=10)
    cfg = parse_config(raw)
    assert len(cfg.scenarios) == 9 and cfg.seed == 5
    negative = grid_levels(_population((0.1, 0.2, 0.3), (-0.5, -0.3, -0.1)))["beta_xi"]
    assert negative == [-0.5, -0.3, -0.1, 0.0]


def _cells() -> list[Cell]:
    out = []
    for icc in (0.1, 0.2, 0.3):
        for b in (0.0, 0.15, 0.3, 0.45):
            corner = icc != 0.2 and b not in (0.0, 0.3)
            out.append(Cell(f"{icc}-{b}", "", icc, b, 0.5, icc == 0.2 and b == 0.3, b == 0.0,
                            corner))
    return out


def _perf(spec: dict[str, dict[str, float]], cells: list[Cell]) -> pd.DataFrame:
    rows = []
    for method, m in spec.items():
        for c in cells:
            for term in ("xi", "z"):
                cover = m.get("cover_corner", m["cover"]) if c.corner else m["cover"]
                reject = m["type1"] if c.null else 0.9
                rows.append({"scenario": c.key, "method": method, "term": term, "scale": "x",
                             "k": 100.0, "n_reps": 100, "bias": m.get("bias", 0.0),
                             "bias_mcse": 0.01, "pct_bias": 100 * m.get("bias", 0.0) / 0.3,
                             "rmse": m["rmse"], "rmse_mcse": 0.002, "cover": cover,
                             "cover_mcse": 0.02, "reject": reject, "reject_mcse": 0.02})
    return pd.DataFrame(rows)


def test_rank_rule_eligibility_ties_corners_and_least_bad():
    cells = _cells()
    perf = _perf({
        "good": {"cover": 0.95, "type1": 0.05, "rmse": 0.100, "cover_corner": 0.5},
        "close": {"cover": 0.94, "type1": 0.06, "rmse": 0.103},
        "slow": {"cover": 0.95, "type1": 0.05, "rmse": 0.120},
        "biased": {"cover": 0.60, "type1": 0.05, "rmse": 0.090, "bias": -0.1},
        "liberal": {"cover": 0.95, "type1": 0.15, "rmse": 0.080},
    }, cells)
    rk = rank_methods(perf, cells, ["good", "close", "slow", "biased", "liberal"], {"z": "z"})
    assert rk.recommended == "good" and rk.tied == ("close",) and not rk.clear
    assert "smallest RMSE" in rk.reasons[1] and "not clear-cut" in rk.reasons[2]
    assert "close (RMSE 0.1030" in rk.reasons[2]
    assert not rk.verdicts["biased"].eligible and "coverage" in rk.verdicts["biased"].reasons[0]
    assert any("biased" in c for c in rk.verdicts["biased"].caveats)
    assert "Type I error" in rk.verdicts["liberal"].reasons[0]
    assert list(rk.table["method"][:3]) == ["good", "close", "slow"]
    alone = rank_methods(perf, cells, ["biased", "liberal"], {"z": "z"})
    assert alone.recommended is None and alone.least_bad == "liberal"
    assert "least bad" in alone.reasons[0]


def test_python_export():
    assert micromacro_sim.advise is advise
    from micromacro_sim.api import Advice as Exported

    assert Exported is Advice
