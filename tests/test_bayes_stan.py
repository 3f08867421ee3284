"""The Gibbs sampler of method ``bayes`` against Stan (NUTS) on the committed datasets.

tests/fixtures/bayes/<case>.json holds a dataset drawn by the package's generator and the
priors (with the data-based tau2 scale); stan_<case>.csv rstan's posterior mean and SD of
every parameter with their MCSEs (tools/make_bayes_fixtures.py, tools/r/bayes_stan.R).
For each case and reported parameter the two means differ by at most 4 combined MCSEs,
and so do the two SDs; every MCSE is below 5% of the posterior SD. Doubling the tau2
prior's scale must break the agreement on the small-G, low-ICC cases.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from micromacro_sim.models.bayes_gibbs import (
    GibbsData,
    GibbsPriors,
    gibbs,
    param_names,
    posterior_summary,
)

FIX = Path(__file__).parent / "fixtures" / "bayes"
CASES = sorted(p.stem for p in FIX.glob("*.json"))
#: Our sampler's settings: 16 chains of 2500 draws (40000) after 300 warm-up iterations.
SETTINGS = dict(chains=16, warmup=300, draws=2500)
#: Cases where the tau2 prior matters most (G 20 and 30, ICC .05).
PRIOR_CASES = ("g20_icc05", "g30_icc05_mcar")
Z_MAX = 4.0
MCSE_MAX = 0.05


def _record(name: str) -> dict:
    with open(FIX / f"{name}.json") as f:
        return json.load(f)


def _data(name: str) -> GibbsData:
    r = _record(name)
    return GibbsData.from_long(r["group"], r["x"], r["z"], r["y"])


def _stan(name: str) -> pd.DataFrame:
    df = pd.read_csv(FIX / f"stan_{name}.csv", skipinitialspace=True)
    df["param"] = df["param"].str.replace(r"_z\[(\d+)\]", r"_z\1", regex=True)
    return df.set_index("param")


def _reported(q: int) -> list[str]:
    return [p for p in param_names(q) if not p.startswith("gamma")]


def _summaries(names: tuple[str, ...], priors: GibbsPriors) -> dict[str, dict]:
    """Our posterior summaries (mean as the estimate), sampling cases of equal G and q
    together; each case's stream comes from its own seed, so grouping does not matter."""
    out: dict[str, dict] = {}
    by_shape: dict[tuple[int, int], list[str]] = {}
    for name in names:
        d = _data(name)
        by_shape.setdefault((d.n_groups, d.q), []).append(name)
    for group in by_shape.values():
        data = GibbsData.stack([_data(n) for n in group])
        seeds = [np.random.SeedSequence([2026, _record(n)["seed"]]) for n in group]
        s = posterior_summary(gibbs(data, priors, seeds=seeds, **SETTINGS), point="mean")
        for i, name in enumerate(group):
            out[name] = {k: dict(zip(param_names(data.q), v[i], strict=True))
                         for k, v in s.items()}
    return out


@cache
def ours() -> dict[str, dict]:
    return _summaries(tuple(CASES), GibbsPriors())


def _z_scores(s: dict, stan: pd.DataFrame, q: int) -> dict[str, tuple[float, float]]:
    """Standardized differences of the posterior mean and SD, per reported parameter."""
    out = {}
    for p in _reported(q):
        zm = (s["estimate"][p] - stan.loc[p, "mean"]) / np.hypot(s["mcse_mean"][p],
                                                                  stan.loc[p, "mcse_mean"])
        zs = (s["sd"][p] - stan.loc[p, "sd"]) / np.hypot(s["mcse_sd"][p], stan.loc[p, "mcse_sd"])
        out[p] = (float(zm), float(zs))
    return out


def test_fixtures_hold_the_cases_the_design_asks_for() -> None:
    assert len(CASES) >= 10
    shapes = [(_data(n).n_groups, _data(n).q, bool(np.ptp(_data(n).n[0]))) for n in CASES]
    assert {g for g, _, _ in shapes} == {20, 30, 50, 100}
    assert {q for _, q, _ in shapes} == {1, 2}
    assert {u for _, _, u in shapes} == {False, True}
    assert min(_data(n).n.min() for n in CASES) == 1  # groups of one member
    iccs = {_record(n)["params"]["icc"] for n in CASES}
    assert min(iccs) == 0.05 and max(iccs) == 0.2


@pytest.mark.parametrize("name", CASES)
def test_fixture_is_consistent(name: str) -> None:
    r, d, stan = _record(name), _data(name), _stan(name)
    np.testing.assert_array_equal(d.n[0], r["n"])
    np.testing.assert_allclose(d.xsum[0], r["xsum"], rtol=1e-12)
    assert d.ssw[0] == pytest.approx(r["ssw"], rel=1e-12)
    assert r["priors"]["tau2_scale"] == pytest.approx(GibbsPriors().tau2_scale(d)[0], rel=1e-12)
    assert list(stan.index) == list(param_names(d.q))
    assert (stan["divergent"] == 0).all()
    assert (stan["rhat"] < 1.01).all()
    assert (stan["chains"] * stan["draws"] >= 20000).all()


@pytest.mark.parametrize("name", CASES)
def test_posterior_mean_and_sd_agree_with_stan(name: str) -> None:
    s, stan, q = ours()[name], _stan(name), _data(name).q
    for p in _reported(q):
        for src, sd, mm, ms in ((
                "ours", s["sd"][p], s["mcse_mean"][p], s["mcse_sd"][p]),
                ("stan", stan.loc[p, "sd"], stan.loc[p, "mcse_mean"], stan.loc[p, "mcse_sd"])):
            assert mm < MCSE_MAX * sd and ms < MCSE_MAX * sd, f"{name} {p}: {src} MCSE"
    bad = {p: z for p, z in _z_scores(s, stan, q).items() if max(map(abs, z)) > Z_MAX}
    assert not bad, f"{name}: standardized differences (mean, sd) {bad}"


def test_doubling_the_tau2_prior_scale_is_detected() -> None:
    doubled = _summaries(PRIOR_CASES, GibbsPriors(tau2_guess_factor=2.0))
    worst = {}
    for name in PRIOR_CASES:
        z = _z_scores(doubled[name], _stan(name), _data(name).q)
        worst[name] = max(max(map(abs, v)) for v in z.values())
    assert max(worst.values()) > Z_MAX, worst
