"""A method that reports its own intervals (a credible interval): the estimates carry
``ci_low``, ``ci_high`` and ``ci_level``; summaries, plan and adaptive targets take the
bare coverage and rejection from them, and refuse another alpha in one line."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import micromacro_sim as mm
from micromacro_sim.core.errors import ConfigError
from micromacro_sim.design.measures import indicators, interval_limits, parse_measure
from micromacro_sim.summaries.summarize import summarize_run

PLUGIN = '''
import dataclasses
import numpy as np
from micromacro_sim.estimators.unadjusted import Unadjusted


class Narrow(Unadjusted):
    """The group-mean regression with est +- 1 SE reported as its own 68% interval."""

    name = "narrow"
    batch_designs = ()

    def fit(self, data):
        res = super().fit(data)
        se = res.se("classical")
        ci = np.column_stack([res.params - se, res.params + se])
        return dataclasses.replace(res, ci=ci, ci_level=0.6826894921370859)
'''

LEVEL = 0.6826894921370859
ALPHA = 1 - LEVEL


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    import micromacro_sim.estimators as est_pkg
    from micromacro_sim.estimators import plugins

    folder = tmp_path_factory.mktemp("plugin")
    (folder / "interval_plugin.py").write_text(PLUGIN)
    sys.path.insert(0, str(folder))
    est_pkg._REGISTRY = None
    plugins.entry_points.cache_clear()
    cfg = {"name": "intervals", "seed": 3, "replications": 120,
           "methods": ["unadjusted", "interval_plugin:Narrow"],
           "admissibility": {"policy": "flag", "gate": "none"},
           "fixed": {"n_groups": 40, "group_size": 5, "icc": 0.3, "r_zxi": 0.3}}
    out = tmp_path_factory.mktemp("run") / "r"
    sim = mm.simulate(cfg, output=out)
    yield sim
    sys.path.remove(str(folder))
    sys.modules.pop("interval_plugin", None)
    est_pkg._REGISTRY = None


def test_estimates_carry_the_intervals(run):
    est = run.estimates
    own = est[est["method"] == "interval_plugin:Narrow"]
    other = est[est["method"] == "unadjusted"]
    assert np.allclose(own["ci_level"], LEVEL)
    assert np.allclose(own["ci_high"] - own["estimate"], own["se"])
    assert other[["ci_low", "ci_high", "ci_level"]].isna().all().all()


def test_bare_rates_come_from_the_intervals(run):
    perf = summarize_run(run.run_dir, alpha=ALPHA).performance
    own = perf[perf["method"] == "interval_plugin:Narrow"]
    assert np.allclose(own["cover"], own["cover_ci"])
    assert np.allclose(own["reject"], own["reject_ci"])
    assert (own["ci_level"] == LEVEL).all()
    # the SE-based rate at this alpha uses t critical values, not exactly 1: they differ
    assert not np.allclose(own["cover"], own["cover_classical"])
    plain = perf[perf["method"] == "unadjusted"]
    assert np.allclose(plain["cover"], plain["cover_HC3"]) and plain["ci_level"].isna().all()
    est = run.estimates
    rows = est[(est["method"] == "interval_plugin:Narrow") & (est["term"] == "xi")]
    theta = float(own.loc[own["term"] == "xi", "theta"].iloc[0])
    cover, reject = indicators(rows["estimate"], rows["se"], rows["df_resid"], theta, ALPHA,
                               (rows["ci_low"], rows["ci_high"]))
    assert cover.mean() == pytest.approx(float(own.loc[own["term"] == "xi", "cover"].iloc[0]))


def test_another_alpha_is_refused_in_one_line(run):
    with pytest.raises(ConfigError, match=r"alpha: 0.05 does not match the 0.682689 intervals"):
        summarize_run(run.run_dir, alpha=0.05)
    est = run.estimates
    rows = est[est["method"] == "interval_plugin:Narrow"]
    with pytest.raises(ConfigError, match="alpha"):
        interval_limits(rows, parse_measure("cover", "t"), 0.05, "narrow")
    # an explicit SE type or a non-rate measure never uses the intervals
    assert interval_limits(rows, parse_measure("cover_HC3", "t"), 0.05, "narrow") is None
    assert interval_limits(rows, parse_measure("bias", "t"), 0.05, "narrow") is None
    assert interval_limits(rows, parse_measure("cover", "t"), ALPHA, "narrow") is not None
