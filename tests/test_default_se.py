"""Every method has a default SE type, and the bare measures (``cover``, ``reject``,
``modse``) use it everywhere: summaries, ``plan``, ``power``, adaptive targets (recorded in
the manifest and kept on resume) and every figure and table of a report (issue 25, 3)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from micromacro_sim.core.errors import ConfigError
from micromacro_sim.core.results import SE_COLUMNS, SE_TYPES
from micromacro_sim.design.config import MethodSpec
from micromacro_sim.design.measures import indicators, parse_measure
from micromacro_sim.estimators import contract, registry
from micromacro_sim.estimators.base import Estimator
from micromacro_sim.planning.plan import parse_targets, plan_table
from micromacro_sim.planning.power import parse_target, solve_power
from micromacro_sim.run.configure import parse_config
from micromacro_sim.run.runner import run
from micromacro_sim.run.storage import read_table
from micromacro_sim.summaries.default_se import DEFAULT_SE_MEASURES, default_se_types
from micromacro_sim.summaries.summarize import summarize_run

METHODS = ["true", "unadjusted", "croon", "sem", "sem_2level", "sam"]
EXPECTED = {"true": "HC3", "unadjusted": "HC3", "croon": "HC2", "sem": "classical",
            "sem_2level": "classical", "sam": "classical"}
RAW = {"name": "default-se", "seed": 3, "replications": 12, "chunk_size": 12,
       "methods": METHODS, "admissibility": {"policy": "flag", "gate": "none"},
       "fixed": {"n_groups": 40, "group_size": 5, "r_zxi": 0.3},
       "grid": {"icc": [0.2, 0.4]}}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("default_se") / "run"
    run(parse_config(RAW), run_dir=folder, progress=False)
    return folder


@pytest.fixture(scope="module")
def summary(run_dir):
    return summarize_run(run_dir)


# ---------------------------------------------------------------------------- the classes
def test_every_method_declares_its_default():
    for name, cls in registry().items():
        want = "HC2" if name == "croon" else ("HC3" if cls.two_step else "classical")
        assert cls.default_se == want, name
        contract.check_default_se(cls)


class _BadDefault(Estimator):
    name = "bad_default"
    description = "declares an SE type that does not exist"
    default_se = "HC9"


def test_the_contract_refuses_an_unknown_default():
    with pytest.raises(contract.ContractFailure) as err:
        contract.check_default_se(_BadDefault)
    msg = str(err.value)
    assert "default_se is 'HC9'" in msg and "classical, HC0" in msg and "\n" not in msg
    results = {r.check: r for r in contract.run_contract(_BadDefault)}
    assert not results["constructor"].passed and "HC9" in results["constructor"].detail


# ---------------------------------------------------------------------------- summaries
def test_bare_columns_are_the_default_type(summary):
    perf = summary.performance
    assert set(perf["method"]) == set(METHODS)
    for _, row in perf.iterrows():
        t = EXPECTED[row["method"]]
        assert row["se_type"] == t
        for m in DEFAULT_SE_MEASURES:
            for tail in ("", "_mcse"):
                if f"{m}_{t}{tail}" in perf.columns:
                    a, b = row[f"{m}{tail}"], row[f"{m}_{t}{tail}"]
                    assert a == b or (np.isnan(a) and np.isnan(b)), (row["method"], m, tail)
        # every method has coverage and rejection under the bare names
        assert np.isfinite(row["cover"]) and np.isfinite(row["reject"])
        assert np.isfinite(row["modse"])


def test_an_absent_plugin_falls_back_and_never_fails(run_dir):
    manifest = json.loads((run_dir / "manifest.json").read_text())
    est = read_table(run_dir, "estimates")
    odd = {**manifest, "result_identity": {"methods": ["no_such_module:Gone"]},
           "config": {}, "methods": ["no_such_module:Gone"]}
    est = est.assign(method=est["method"].replace({"sem": "no_such_module:Gone",
                                                    "croon": "unlisted"}))
    types = default_se_types(odd, est)
    assert types["no_such_module:Gone"] == "classical"  # one-step rows
    assert types["unlisted"] == "HC3"  # a two-step method not in the manifest
    assert types["true"] == "HC3"


# ---------------------------------------------------------------------------- measures
def test_bare_measure_names_mean_the_default():
    m = parse_measure("cover", "f")
    assert m.label == "cover" and m.se_for("HC2") == "HC2"
    assert parse_measure("cover_classical", "f").se_for("HC3") == "classical"
    assert parse_measure("cover", "f", "HC1").se_for("HC3") == "HC1"
    assert parse_measure("bias", "f", "HC1") == parse_measure("bias", "f")
    with pytest.raises(ConfigError, match="^se-type: expected default or one of"):
        parse_measure("cover", "f", "HC7")


def test_plan_uses_each_methods_default(run_dir):
    cfg = parse_config(RAW)
    est = read_table(run_dir, "estimates")
    table = plan_table(cfg, est, parse_targets("cover=0.05,modelse=0.01,bias=0.05"))
    cover = table[(table["measure"] == "cover") & (table["term"] == "xi")]
    assert dict(zip(cover["method"], cover["se_type"], strict=True)) == {
        m: EXPECTED[m] for m in METHODS if m in set(cover["method"])}
    assert set(cover["method"]) == set(METHODS)
    assert (table.loc[table["measure"] == "bias", "se_type"] == "").all()
    ok = est[(est["status"] == "ok") & (est["term"] == "xi")]
    for _, row in cover.iterrows():
        g = ok[ok["method"] == row["method"]]
        g = g[g["scenario"] == row["scenario"]]
        c, _ = indicators(g["estimate"], g[SE_COLUMNS[EXPECTED[row["method"]]]],
                          g["df_resid"], 0.3, 0.05)
        assert row["pilot_estimate"] == pytest.approx(c.mean())
    fixed = plan_table(cfg, est, parse_targets("cover=0.05", se_type="classical"))
    assert (fixed["se_type"] == "classical").all()
    explicit = plan_table(cfg, est, parse_targets("cover_HC1=0.05"))
    two = explicit[explicit["method"].isin(["true", "croon"])]
    assert (two["se_type"] == "HC1").all() and (two["measure"] == "cover_HC1").all()


def test_power_uses_each_methods_default():
    target = parse_target("power=0.8")
    assert target.se_for(MethodSpec("c", "croon")) == "HC2"
    assert target.se_for(MethodSpec("s", "sem")) == "classical"
    assert parse_target("power=0.8", "HC0").se_for(MethodSpec("c", "croon")) == "HC0"
    raw = {**RAW, "methods": ["croon"], "grid": {}, "fixed": {**RAW["fixed"], "icc": 0.3}}
    (sol,) = solve_power(parse_config(raw), target="power=0.5", search_range="10:40",
                         steps=1, block=10, confirm=0)
    assert sol.se_type == "HC2"
    assert (sol.evaluations["se_type"] == "HC2").all()


# ---------------------------------------------------------------------------- adaptive
def _adaptive(targets=None):
    raw = {**RAW, "methods": ["unadjusted", "sem"], "grid": {},
           "fixed": {**RAW["fixed"], "icc": 0.3},
           "replications": {"target_mcse": targets or {"bias": 0.2, "cover": 0.2,
                                                       "reject_HC1": 0.2},
                            "min": 10, "max": 40, "block": 10}}
    return parse_config(raw)


def _record(folder):
    return json.loads((folder / "manifest.json").read_text())["adaptive"]


def test_adaptive_records_the_type_of_each_target(tmp_path):
    folder = tmp_path / "ad"
    run(_adaptive(), run_dir=folder, progress=False)
    rec = _record(folder)
    assert rec["se_types"] == {"cover": {"unadjusted": "HC3", "sem": "classical"},
                               "reject_HC1": {"unadjusted": "HC1", "sem": "HC1"}}
    assert all(c["finished"] for c in rec["cells"].values())


def _rewrite(folder, change):
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest["adaptive"])
    path.write_text(json.dumps(manifest))


def test_a_resumed_folder_keeps_the_recorded_type(tmp_path):
    folder = tmp_path / "ad"
    run(_adaptive(), run_dir=folder, progress=False)
    # as if an earlier version had used classical SEs for the bare name
    _rewrite(folder, lambda a: a["se_types"]["cover"].update(unadjusted="classical"))
    run(_adaptive({"bias": 0.2, "cover": 0.15, "reject_HC1": 0.2}), run_dir=folder,
        progress=False)
    assert _record(folder)["se_types"]["cover"] == {"unadjusted": "classical",
                                                    "sem": "classical"}


def test_a_folder_without_the_record_keeps_classical(tmp_path):
    folder = tmp_path / "old"
    run(_adaptive(), run_dir=folder, progress=False)
    _rewrite(folder, lambda a: a.pop("se_types"))  # written before the record existed
    run(_adaptive(), run_dir=folder, progress=False)
    assert _record(folder)["se_types"] == {"cover": {"unadjusted": "classical",
                                                     "sem": "classical"},
                                           "reject_HC1": {"unadjusted": "HC1", "sem": "HC1"}}


# ---------------------------------------------------------------------------- figures
def _finite(artist) -> bool:
    """Whether a drawn artist holds at least one finite data point (or visible text)."""
    from matplotlib.collections import LineCollection, PathCollection
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch, StepPatch
    from matplotlib.text import Text

    if isinstance(artist, Line2D):
        return bool(np.isfinite(np.asarray(artist.get_xydata(), float)).all(axis=1).any())
    if isinstance(artist, LineCollection):
        return any(np.asarray(s).size and np.isfinite(np.asarray(s, float)).all()
                   for s in artist.get_segments())
    if isinstance(artist, PathCollection):
        return bool(np.isfinite(np.asarray(artist.get_offsets(), float)).all(axis=1).any())
    if isinstance(artist, StepPatch):
        return bool(np.isfinite(np.asarray(artist.get_data().values, float)).any())
    if isinstance(artist, Patch):
        return bool(np.isfinite(artist.get_path().vertices).all(axis=1).any())
    if isinstance(artist, Text):
        return bool(artist.get_text()) and bool(np.isfinite(artist.get_position()).all())
    return False


def _per_method(where) -> dict[str, int]:
    """Method -> the drawn artists of a figure or panel tagged with it that hold finite
    data."""
    counts: dict[str, int] = {}
    for a in where.findobj(lambda a: str(a.get_gid() or "").startswith("method:")):
        if a.get_visible() and _finite(a):
            m = a.get_gid().split(":", 1)[1]
            counts[m] = counts.get(m, 0) + 1
    return counts


def _rate_panels(fig) -> list:
    """The panels of coverage or rejection by each method's default SE type."""
    return [ax for ax in fig.axes if "default SE" in ax.get_title()
            or ax.get_ylabel() in ("coverage (default SE)", "rejection (default SE)")]


@pytest.fixture
def drawn(monkeypatch):
    """Every figure saved while the fixture is active."""
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    figs: list = []
    original = Figure.savefig

    def keep(self, *args, **kwargs):
        figs.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    return figs


@pytest.mark.parametrize("se_type", [None, "HC3"])
def test_every_method_with_estimates_is_in_every_figure(run_dir, summary, drawn, tmp_path,
                                                        se_type):
    from micromacro_sim.reporting.report_figures import draw_figures

    est = read_table(run_dir, "estimates")
    figs = draw_figures(summary, est, summary.scenarios, tmp_path, alpha=0.05,
                        include_flagged=False, se_type=se_type, published={},
                        terms=["xi"])
    assert {"bias:xi", "est:xi", "cover:xi", "zip:xi", "reject:xi", "nested:xi"} <= set(figs)
    assert len(drawn) == len(figs)
    xi = est[(est["term"] == "xi") & (est["status"] == "ok") & np.isfinite(est["estimate"])]
    with_estimates = set(xi["method"])
    assert with_estimates == set(METHODS)
    for (key, fig_info), fig in zip(figs.items(), drawn, strict=True):
        counts = _per_method(fig)
        # an explicit HC3 shows no intervals of the one-step methods (they have none),
        # yet their rows are titled
        need = with_estimates if se_type is None or not key.startswith("zip") else {
            m for m in with_estimates if EXPECTED[m] != "classical"}
        missing = sorted(m for m in need if counts.get(m, 0) == 0)
        assert not missing, f"{key} ({fig_info.path.name}) draws nothing of {missing}"
        if key.startswith("zip"):  # a titled row per method, intervals in both cells
            titles = [ax.get_title() for ax in fig.axes]
            for m in with_estimates:
                assert sum(t.startswith(f"{m} (") for t in titles) == 2, (m, titles)
                assert counts.get(m, 0) == 2 or m not in need, (m, counts)
            if se_type is None:
                assert any(t.startswith("sem (model SE): coverage") for t in titles)
        panels = _rate_panels(fig)
        if se_type is None and key.split(":")[0] in ("cover", "reject", "nested"):
            assert len(panels) == (2 if key.startswith("nested") else 1), key
        assert se_type is None or not panels
        for ax in panels:  # each method's default SE: every method in the panel
            assert set(_per_method(ax)) == with_estimates, (key, ax.get_title())


def test_tables_name_the_default_type(summary):
    from micromacro_sim.reporting.report_tables import accuracy_table, rate_table
    from micromacro_sim.reporting.summary_text import format_summary

    perf = summary.performance
    cover = rate_table(perf, "cover", 0.05)
    assert list(cover.columns[:8]) == ["scenario", "method", "term", "true", "K",
                                       "default SE", "default", "band"]
    labels = dict(zip(cover["method"], cover["default SE"], strict=False))
    assert labels == {"true": "HC3", "unadjusted": "HC3", "croon": "HC2", "sem": "model",
                      "sem_2level": "model", "sam": "model"}
    assert (cover["default"] != "").all()
    assert "default" not in rate_table(perf, "cover", 0.05, "HC3").columns
    acc = accuracy_table(perf)
    assert (acc["modSE"] != "").all() and set(acc["SE"]) == {"HC3", "HC2", "model"}
    text = format_summary(summary, width=200)
    table = text.split("Reliability")[0]
    assert " SE " in table and " model " in table and "cover HC3" not in table
    assert "cover HC3" in format_summary(summary, width=200, se_type="HC3")


def test_every_se_type_is_known():
    assert set(SE_COLUMNS) == set(SE_TYPES)
    frame = pd.DataFrame({"method": ["a"], "se_type": ["HC3"]})
    from micromacro_sim.reporting.se_types import check_se_type, method_se_types

    assert method_se_types(frame) == {"a": "HC3"}
    assert check_se_type("default") is None and check_se_type("HC2") == "HC2"
    with pytest.raises(ConfigError, match="^se_type: expected default"):
        check_se_type("robust")


def test_report_tables_and_the_cli_choice(run_dir, tmp_path):
    import argparse

    from micromacro_sim.reporting.report import add_parser, write_report

    text = write_report(run_dir, tmp_path / "d", fmt="md", plots=False).read_text()
    assert "| default SE | default | band | classical | HC0 | HC1 | HC2 | HC3 |" in text
    assert "sem: model" in text
    old = write_report(run_dir, tmp_path / "h", fmt="md", plots=False, se_type="HC3")
    assert "default SE" not in old.read_text()
    with pytest.raises(ConfigError, match="^se_type: expected default or one of"):
        write_report(run_dir, tmp_path / "x", plots=False, se_type="robust")
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    assert parser.parse_args(["report", "r"]).se_type is None
    assert parser.parse_args(["report", "r", "--se-type", "classical"]).se_type == "classical"
