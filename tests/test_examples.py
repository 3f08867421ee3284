"""Every example study in configs/examples runs (tiny replications) and summarizes."""

from __future__ import annotations

from pathlib import Path

import pytest

from micromacro_sim.run.configure import load_config
from micromacro_sim.run.runner import run
from micromacro_sim.summaries.summarize import summarize_run

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "configs" / "examples").glob("*.yaml"))
FACTORS = {  # example -> the factor fields it varies or sets
    "constructs": {"n_x", "r_xixi"},
    "nonnormal": {"xi_skew", "xi_kurtosis", "nu_skew", "nu_kurtosis", "e_kurtosis"},
    "ordinal": {"categories", "thresholds"},
    "loadings": {"loadings", "member_variances"},
    "missing": {"missing_mcar", "missing_mar"},
    "heteroscedastic": {"e_het"},
    "group_sizes": {"group_size"},  # poisson and choice
    "combined": {"n_x", "categories", "missing_mar", "e_het"},
}


def test_every_factor_has_an_example():
    assert {p.stem for p in EXAMPLES} == set(FACTORS)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs_and_summarizes(path, tmp_path):
    cfg = load_config(path, replications=2)
    assert cfg.description and "Expected" in cfg.description
    given = set(cfg.raw.get("fixed", {})) | set(cfg.raw.get("grid", {}))
    assert FACTORS[path.stem] <= given
    assert len({sc.label() for sc in cfg.scenarios}) == len(cfg.scenarios)
    run(cfg, run_dir=tmp_path / "run", progress=False)
    perf = summarize_run(tmp_path / "run").performance
    terms = {t for sc in cfg.scenarios for t in sc.terms}
    assert set(perf["term"]) == terms and perf["theta"].notna().all()
