"""Scenario labels name every factor a grid varies, so no two cells of a run share one."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from micromacro_sim.run.configure import load_config, parse_config

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted((ROOT / "configs").glob("**/*.yaml")) + sorted(
    (ROOT / "micromacro_sim" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_configs_have_unique_labels(path):
    cfg = load_config(path)
    labels = [row["label"] for row in cfg.scenario_rows()]
    assert len(set(labels)) == len(labels) == len(cfg.scenarios)


def test_fjk2018_has_72_labels_naming_beta_z_and_beta_xi():
    cfg = load_config(ROOT / "configs" / "fjk2018.yaml")
    labels = [row["label"] for row in cfg.scenario_rows()]
    assert len(set(labels)) == 72
    # a grid factor is named even at its default level
    assert all(" bz=" in lab and " bxi=" in lab for lab in labels)


def test_a_field_without_a_label_spec_is_named_when_it_varies(monkeypatch):
    import micromacro_sim.design.scenario as scenario_mod
    from micromacro_sim.design.fields import field

    sc = scenario_mod.Scenario.from_params({"n_groups": 10, "group_size": 5, "icc": 0.2,
                                            "r_zxi": 0.3, "sigma2_eps": 0.5})
    bare = [dataclasses.replace(f, label=None) if f.name == "sigma2_eps" else f
            for f in scenario_mod.FIELDS]
    monkeypatch.setattr(scenario_mod, "FIELDS", tuple(bare))
    assert field("sigma2_eps").label is not None  # the table itself is untouched
    assert sc.label() == "G=10 n=5 ICC=0.2 r=0.3 sigma2_eps=0.5"
    # sigma2_nu is shown through the ICC label, never twice
    assert "sigma2_nu" not in sc.label(shown=("sigma2_nu",))


def test_non_default_factors_appear_and_grid_levels_differ():
    raw = {"name": "t", "seed": 1, "replications": 1, "methods": ["unadjusted"],
           "fixed": {"n_groups": 10, "group_size": 5, "icc": 0.2, "r_zxi": 0.3,
                     "sigma2_eps": 0.5},
           "grid": {"var_xi": [1.0, 2.0], "beta0": [0.3, 0.0], "r_zz": [0.0]}}
    cfg = parse_config(raw)
    labels = [row["label"] for row in cfg.scenario_rows()]
    assert len(set(labels)) == 4
    assert all("s2e=0.5" in lab and "rzz=0" in lab for lab in labels)
    assert labels[0] == "G=10 n=5 ICC=0.2 r=0.3 rzz=0 b0=0.3 s2e=0.5 vxi=1"


def test_labels_stay_unique_beyond_their_rounding():
    raw = {"name": "t", "seed": 1, "replications": 1, "methods": ["unadjusted"],
           "fixed": {"n_groups": 10, "group_size": 5, "r_zxi": 0.3},
           "grid": {"icc": [0.1, 0.10001, 0.3]}}
    rows = parse_config(raw).scenario_rows()
    labels = [r["label"] for r in rows]
    assert len(set(labels)) == 3
    assert labels[2] == "G=10 n=5 ICC=0.3 r=0.3"  # unaffected
    assert labels[0] == f"G=10 n=5 ICC=0.1 r=0.3 [{rows[0]['scenario'][:6]}]"
