"""Readable bias figures: robust axes with off-scale markers when a method blows up, median
bias on request (``report --bias median``), and the per-replication estimate plot.

The exploding method is a plug-in written to a temporary folder: group means of x as
scores, shrunk 100-fold in the cells with 21 groups (so its slope there is about 100
times too large), the same as ``unadjusted`` elsewhere.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from micromacro_sim.core.errors import ConfigError  # noqa: E402
from micromacro_sim.reporting.figures import bias as bias_fig  # noqa: E402
from micromacro_sim.reporting.figures import estimates as est_fig  # noqa: E402
from micromacro_sim.reporting.figures import nested_loop  # noqa: E402
from micromacro_sim.reporting.figures.offscale import (  # noqa: E402
    robust_limits,
    typical_extent,
    value_text,
)
from micromacro_sim.reporting.report import add_parser, write_report  # noqa: E402
from micromacro_sim.run.configure import parse_config  # noqa: E402
from micromacro_sim.run.runner import run  # noqa: E402
from micromacro_sim.run.storage import read_table  # noqa: E402
from micromacro_sim.summaries.summarize import summarize_run  # noqa: E402

MODULE = "report_explode_plugin"
PLUGIN = '''
import numpy as np

from micromacro_sim.estimators import Scores, TwoStepEstimator


class Explodes(TwoStepEstimator):
    """Group means of x; 100 times smaller in the cells with 21 groups."""

    name = "explodes"

    def scores(self, data):
        x = data.x[:, 0]
        values = np.asarray([x[a:a + n].mean() for a, n in zip(data.starts, data.sizes)])
        if data.n_groups == 21:
            values = values / 100.0
        return Scores(values=values[:, None])
'''
CONFIG = {
    "name": "exploding", "seed": 3, "replications": 12, "chunk_size": 12,
    "backend": "sequential",
    "methods": ["true", "unadjusted", {"explodes": {"method": f"{MODULE}:Explodes"}}],
    "admissibility": {"policy": "flag", "gate": "none"},
    "fixed": {"group_size": 5, "r_zxi": 0.3, "icc": 0.2},
    "grid": {"n_groups": [20, 21, 40]},
}


@pytest.fixture(scope="module")
def exploding_run(tmp_path_factory):
    where = tmp_path_factory.mktemp("plugin")
    (where / f"{MODULE}.py").write_text(PLUGIN)
    sys.modules.pop(MODULE, None)
    sys.path.insert(0, str(where))
    try:
        path = tmp_path_factory.mktemp("exploding") / "run"
        run(parse_config(CONFIG), run_dir=path, progress=False)
    finally:
        sys.path.remove(str(where))
        sys.modules.pop(MODULE, None)
    return path


@pytest.fixture
def drawn(monkeypatch):
    """The figures the bias, nested-loop and estimate modules draw, before closing."""
    figs: list = []

    def keep(save):
        def wrapped(fig, plt, path):
            figs.append(fig)
            return save(fig, plt, path)
        return wrapped

    for mod in (bias_fig, nested_loop, est_fig):
        monkeypatch.setattr(mod, "save", keep(mod.save))
    return figs


def _points(fig) -> dict[str, np.ndarray]:
    """Method -> the x values of its drawn points (NaN where off the scale)."""
    out: dict[str, list] = {}
    for ax in fig.axes:
        for c in ax.containers:
            out.setdefault(c.get_label(), []).extend(c.lines[0].get_xdata())
    return {m: np.asarray(v, dtype=float) for m, v in out.items()}


def _offscale(ax, method: str):
    return [ln for ln in ax.get_lines() if ln.get_gid() == f"offscale:{method}"]


def test_an_exploding_method_keeps_the_others_visible(exploding_run, drawn, tmp_path):
    summary = summarize_run(exploding_run)
    perf = summary.performance[summary.performance["term"] == "xi"]
    blown = perf[(perf["method"] == "explodes") & (perf["cell"] == "G=21")].iloc[0]
    assert blown["pct_bias"] > 1000  # the method does explode in that cell
    tame = perf.drop(blown.name)
    lo = (tame["pct_bias"] - 2 * tame["pct_bias_mcse"]).min()
    hi = (tame["pct_bias"] + 2 * tame["pct_bias_mcse"]).max()
    span = hi - lo
    bias_fig.plot_percent_bias(summary, tmp_path / "b.png", term="xi")
    ax = drawn[-1].axes[0]
    x0, x1 = ax.get_xlim()
    # the axis is set by the other methods: within their range widened by half of it
    assert lo - 0.5 * span <= x0 <= min(lo, 0) and max(hi, 0) <= x1 <= hi + 0.5 * span
    assert x1 < blown["pct_bias"]
    marks = _offscale(ax, "explodes")
    assert len(marks) == 1 and marks[0].get_xdata()[0] <= x1
    assert value_text(blown["pct_bias"], "%") in [t.get_text() for t in ax.texts]
    assert not _offscale(ax, "unadjusted") and not _offscale(ax, "true")
    # the other points are drawn where they are; the exploding one only as the marker
    pts = _points(drawn[-1])
    assert np.allclose(np.sort(pts["true"]), np.sort(perf.loc[perf.method == "true",
                                                             "pct_bias"]))
    assert np.isnan(pts["explodes"]).sum() == 1


def test_nested_loop_marks_the_blow_up(exploding_run, drawn, tmp_path):
    summary = summarize_run(exploding_run)
    nested_loop.plot_nested_loop(summary, tmp_path / "n.png", term="xi",
                                 measures=("pct_bias", "rmse"))
    pct_ax = drawn[-1].axes[0]
    assert _offscale(pct_ax, "explodes")
    perf = summary.performance[summary.performance["term"] == "xi"]
    tame = perf[perf["method"] != "explodes"]["pct_bias"]
    assert pct_ax.get_ylim()[1] < 3 * tame.abs().max() + 50


def test_median_bias_flag_plots_the_medians(exploding_run, drawn, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["report", str(exploding_run), "--output", str(tmp_path),
                              "--format", "md", "--terms", "xi", "--bias", "median"])
    assert args.bias == "median" and args.func(args) == 0
    summary = summarize_run(exploding_run)
    perf = summary.performance[summary.performance["term"] == "xi"]
    bias_figs = [f for f in drawn if any(ax.containers for ax in f.axes)]
    pts = _points(bias_figs[0])
    for m, rows in perf.groupby("method"):
        want = np.sort(100 * rows["median_bias"] / rows["theta"])
        got = pts[m]
        got = np.sort(np.where(np.isfinite(got), got, want.max()))  # the off-scale one
        assert np.allclose(got, want), m
        mean = np.sort(rows["pct_bias"])
        assert not np.allclose(got, mean)
    assert "percent median bias" in bias_figs[0].axes[-1].get_xlabel()
    text = (tmp_path / "report.md").read_text()
    assert "### Percent median bias" in text
    r = perf[perf["method"] == "unadjusted"].iloc[0]
    assert f"{100 * r['median_bias'] / r['theta']:.2f} (" in text
    # default: the mean
    assert parser.parse_args(["report", str(exploding_run)]).bias == "mean"
    with pytest.raises(ConfigError, match="bias"):
        write_report(exploding_run, tmp_path / "x", bias="mode")


def test_estimate_plot_shows_the_tails(exploding_run, drawn, tmp_path):
    summary = summarize_run(exploding_run)
    est = read_table(exploding_run, "estimates")
    est_fig.plot_estimate_strips(est, summary, tmp_path / "e.png", term="xi")
    fig = drawn[-1]
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 3 and all(ax.get_yscale() == "symlog" for ax in axes)
    theta = summary.performance.set_index(["cell", "term"]).loc[("G=21", "xi"), "theta"]
    worst = est[(est["method"] == "explodes") & (est["term"] == "xi")
                & (est["scenario"] == summary.datasets.set_index("cell").loc["G=21",
                                                                           "scenario"])]
    err = worst["estimate"].to_numpy() - float(np.atleast_1d(theta)[0])
    ax = next(a for a in axes if a.get_title() == "G=21")
    lo, hi = ax.get_ylim()
    assert lo <= err.min() and err.max() <= hi  # every estimate is on the plot
    # the cells are chosen by how far their tails reach
    assert est_fig.estimate_cells(est, summary, "xi", n=1) == [
        summary.datasets.set_index("cell").loc["G=21", "scenario"]]


def test_robust_limits():
    rng = np.random.default_rng(1)
    tame = [rng.normal(-40, 5, 30), rng.normal(0, 5, 30), rng.normal(10, 5, 30)]
    assert robust_limits(tame) is None  # a real contrast is not cut
    blown = [*tame, np.r_[rng.normal(0, 5, 28), 7000.0, -2000.0]]
    lim = robust_limits(blown)
    assert lim is not None and lim.high < 200 and lim.low > -200
    assert lim.low < -40 - 15 and lim.cut == pytest.approx(10 * typical_extent(blown))
    # one method blowing up everywhere does not set the scale either
    lim = robust_limits([*tame, np.full(30, 5000.0)])
    assert lim is not None and lim.high < 200
    # a huge error bar runs off the axis instead of stretching it
    errs = [np.full(30, 4.0), np.full(30, 4.0), np.r_[np.full(29, 4.0), 900.0]]
    lim = robust_limits(tame, errs)
    assert lim is not None and lim.high < 200 and lim.cut > 100
    assert robust_limits(tame, [np.full(30, 4.0)] * 3) is None
