"""The ``bayes`` method in the estimator contract: options, its random stream (a function of
the data and the seed alone), intervals in a run, convergence flags, unbalanced data."""

from __future__ import annotations

import numpy as np
import pytest

import micromacro_sim as mm
from micromacro_sim.core.errors import ConfigError
from micromacro_sim.design.scenario import Scenario
from micromacro_sim.estimators import get_estimator
from micromacro_sim.generate.dataset import Dataset
from micromacro_sim.generate.dgp import generate
from micromacro_sim.summaries.summarize import summarize_run

QUICK = {"warmup": 100, "draws": 200}


def _data(seed: int = 1, **extra) -> Dataset:
    params = {"n_groups": 30, "group_size": 6, "icc": 0.2, "r_zxi": 0.3, **extra}
    return generate(Scenario.from_params(params), np.random.default_rng(seed))


def test_same_data_same_draws_whatever_the_row_order():
    d = _data()
    est = get_estimator("bayes", **QUICK)
    a = est.fit(d)
    # members within each group in another order (a Dataset keeps groups sorted)
    perm = np.lexsort((np.random.default_rng(5).random(len(d.x)), d.group))
    assert not np.array_equal(perm, np.arange(len(d.x)))
    shuffled = Dataset(group=d.group[perm], x=d.x[perm], y=d.y, z=d.z, xi=d.xi,
                       x_names=d.x_names, z_names=d.z_names)
    b = est.fit(shuffled)
    assert np.array_equal(a.params, b.params) and np.array_equal(a.ci, b.ci)
    c = get_estimator("bayes", seed=1, **QUICK).fit(d)  # another seed: other draws
    assert not np.array_equal(a.params, c.params)
    assert np.allclose(a.params, c.params, atol=4 * a.se())


def test_result_carries_the_posterior_sd_and_interval():
    d = _data(2, n_groups=60)
    r = get_estimator("bayes").fit(d)
    assert r.ok, r.reason
    assert r.ci_level == 0.95 and r.ci.shape == (3, 2)
    assert np.all(r.ci[:, 0] < r.params) and np.all(r.params < r.ci[:, 1])
    # a roughly normal posterior: the interval spans about 2 x 1.96 posterior SDs
    width = (r.ci[:, 1] - r.ci[:, 0]) / (2 * 1.959964 * r.se())
    assert np.all(np.abs(width - 1) < 0.15)
    assert np.array_equal(r.conf_int(0.05), r.ci)


def test_short_chains_are_flagged_not_hidden():
    r = get_estimator("bayes", warmup=0, draws=100).fit(_data(3, icc=0.02))
    assert r.status.value == "flagged" and r.reason_code == "mcmc_not_converged"
    assert "R-hat" in r.reason and np.all(np.isfinite(r.params))


@pytest.mark.parametrize("extra", [{"group_size": {"poisson": 6, "min": 1}},
                                   {"missing_mcar": 0.3}, {"n_z": 2, "beta_z": [0.2, 0.1]}])
def test_unbalanced_and_absent_members(extra):
    r = get_estimator("bayes", **QUICK).fit(_data(4, **extra))
    assert np.all(np.isfinite(r.params)) and np.all(np.isfinite(r.ci))


def test_bad_options_are_refused():
    for bad in ({"chains": 1}, {"point": "mode"}, {"coef_var": 0.0}, {"level": 1.5}):
        with pytest.raises(ValueError, match="option"):
            get_estimator("bayes", **bad)


def test_a_run_stores_intervals_and_scores_coverage_by_them(tmp_path):
    cfg = {"name": "bayes_small", "seed": 4, "replications": 12,
           "methods": ["unadjusted", {"bayes": {"method": "bayes", **QUICK}}],
           "admissibility": {"policy": "flag", "gate": "none"},
           "fixed": {"n_groups": 30, "group_size": 6, "icc": 0.2, "r_zxi": 0.3}}
    sim = mm.simulate(cfg, output=tmp_path / "run")
    est = sim.estimates
    rows = est[est["method"] == "bayes"]
    assert np.allclose(rows["ci_level"], 0.95) and rows["ci_low"].notna().all()
    perf = summarize_run(sim.run_dir, include_flagged=True).performance
    b = perf[perf["method"] == "bayes"]
    assert np.allclose(b["cover"], b["cover_ci"]) and (b["scale"] == "x").all()
    with pytest.raises(ConfigError, match="alpha: 0.1 does not match the 0.95 intervals"):
        summarize_run(sim.run_dir, alpha=0.1)
