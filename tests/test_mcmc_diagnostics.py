"""MCMC diagnostics against rstan 2.21 on committed draws (tests/fixtures/bayes/diag_*.csv,
written by tools/make_bayes_fixtures.py), their vectorization, and posterior summaries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from micromacro_sim.models import mcmc_diagnostics as md

FIX = Path(__file__).parent / "fixtures" / "bayes"
TOL = dict(rtol=1e-8, atol=1e-12)


def _series() -> dict[str, np.ndarray]:
    d = pd.read_csv(FIX / "diag_draws.csv")
    out = {}
    for name, e in d.groupby("series", sort=False):
        e = e.sort_values(["chain", "iter"])
        out[name] = e["value"].to_numpy().reshape(e["chain"].nunique(), -1)
    return out


SERIES = _series()
REF = pd.read_csv(FIX / "diag_rstan.csv", skipinitialspace=True).set_index("series")


@pytest.mark.parametrize("name", list(SERIES))
def test_matches_rstan(name: str) -> None:
    x, ref = SERIES[name], REF.loc[name]
    rs = md.RSTAN_RANK_OFFSET
    got = {
        "rhat": md.rhat(x, rank_offset=rs),
        "ess_bulk": md.ess_bulk(x, rank_offset=rs),
        "ess_tail": md.ess_tail(x),
        "ess_basic": md.ess_basic(x),
        "rhat_basic": md.rhat_basic(x),
        "mcse_mean": md.mcse_mean(x),
        "mcse_sd": md.mcse_sd(x),
        "rhat_blom": md.rhat(x),
        "ess_bulk_blom": md.ess_bulk(x),
    }
    for key, value in got.items():
        np.testing.assert_allclose(value, ref[key], err_msg=f"{name}: {key}", **TOL)


def test_fixture_covers_the_branches() -> None:
    lengths = {x.shape[1] // 2 for x in SERIES.values()}
    assert {499, 127} <= lengths  # split lengths that are not 2-3-5-smooth (M/N scaling)
    assert REF.loc["short_2x10", "ess_bulk"] == 10.0  # Geyer's sequence stops at once
    assert np.isnan(REF.loc["iid_1x100", "rhat_basic"])  # one chain: no between variance
    assert REF.loc["stuck_2x400", "rhat"] > 1.5


def test_vectorized_over_leading_axes() -> None:
    x = np.stack([SERIES["ar06_4x1000"][:, :400], SERIES["ties_4x250"][:, :200].repeat(2, 1),
                  SERIES["ar06_4x1000"][:, 600:]])
    x = np.stack([x, x[::-1]])  # (2, 3, 4, 400)
    for fn in (md.rhat, md.ess_bulk, md.ess_tail, md.mcse_mean, md.mcse_sd, md.ess_basic):
        whole = fn(x)
        assert whole.shape == (2, 3)
        for i in range(2):
            for j in range(3):
                np.testing.assert_allclose(whole[i, j], fn(x[i, j]), rtol=1e-12)


def test_constant_and_nonfinite_series_are_nan() -> None:
    x = np.zeros((2, 2, 50))
    x[1] = np.random.default_rng(0).standard_normal((2, 50))
    x[1, 0, 3] = np.inf
    for fn in (md.rhat, md.ess_bulk, md.ess_basic):
        assert np.isnan(fn(x)).all()


def test_stuck_chains_are_flagged() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 1000)) * 0.1 + np.array([[0.0], [0.3]])
    assert md.rhat(x) > 1.01
    assert md.rhat(rng.standard_normal((2, 1000))) < 1.01


def test_ess_of_independent_draws_is_about_their_number() -> None:
    x = np.random.default_rng(2).standard_normal((200, 4, 500))
    assert abs(np.median(md.ess_bulk(x)) / 2000 - 1) < 0.05
    assert abs(np.median(md.mcse_mean(x)) * np.sqrt(2000) - 1) < 0.05


def test_posterior_summary() -> None:
    rng = np.random.default_rng(3)
    draws = rng.normal(loc=[1.0, -2.0, 5.0], scale=[1.0, 0.5, 2.0], size=(4, 2, 800, 3))
    s = md.posterior_summary(draws, point="mean", level=0.9)
    assert set(s) == {"estimate", "sd", "ci_low", "ci_high", "rhat", "ess_bulk",
                      "mcse_mean", "mcse_sd"}
    assert all(v.shape == (4, 3) for v in s.values())
    flat = draws[1, :, :, 2].reshape(-1)
    np.testing.assert_allclose(s["estimate"][1, 2], flat.mean())
    np.testing.assert_allclose(s["sd"][1, 2], flat.std(ddof=1))
    np.testing.assert_allclose(s["ci_low"][1, 2], np.quantile(flat, 0.05))
    np.testing.assert_allclose(s["ci_high"][1, 2], np.quantile(flat, 0.95))
    np.testing.assert_allclose(s["rhat"][1, 2], md.rhat(draws[1, :, :, 2]))
    med = md.posterior_summary(draws)["estimate"]
    np.testing.assert_allclose(med[0, 0], np.median(draws[0, :, :, 0]))
    with pytest.raises(ValueError):
        md.posterior_summary(draws, point="mode")
