"""The chunk's CFA memo returns exactly what a fresh fit returns; runs own their memo."""

from __future__ import annotations

import numpy as np

from micromacro_sim.design.policy import Policy
from micromacro_sim.design.scenario import Scenario
from micromacro_sim.estimators.admissibility import draw_many
from micromacro_sim.models import cfa
from tests.conftest import make_data


def test_memo_rows_equal_fresh_fits():
    wide = np.stack([make_data(seed=s, n_groups=40, group_size=5, icc=0.05).wide(0)
                     for s in range(12)])
    fresh = cfa.fit_cfa_batch(wide)
    memo = cfa.CFAMemo()
    cfa.fit_cfa_batch(wide[::2], memo)  # half of them now remembered
    mixed = cfa.fit_cfa_batch(wide, memo)  # remembered and new rows assembled together
    assert len(memo) == 12
    for f in cfa._FIELDS:
        a, b = getattr(fresh, f), getattr(mixed, f)
        assert a.dtype == b.dtype, f
        np.testing.assert_array_equal(a, b, err_msg=f)
    assert any(fresh.flags)  # the harsh design exercises the failure verdicts too
    one = cfa.fit_cfa(wide[3], memo)
    np.testing.assert_array_equal(one.loadings, fresh.loadings[3])


def test_gate_fills_the_chunk_memo_with_every_draw():
    sc = Scenario.from_params(dict(n_groups=30, group_size=5, icc=0.05, r_zxi=0.3))
    memo = cfa.CFAMemo()
    draws = draw_many(sc, 3, range(20), Policy(mode="redraw", gate="cfa"), memo=memo)
    attempts = sum(d.redraws + 1 for d in draws)
    assert attempts > 20 and len(memo) == attempts  # redraws happened, each fit remembered
    kept = np.stack([d.data.wide(0) for d in draws])
    before = len(memo)
    fits = cfa.fit_cfa_batch(kept, memo)
    assert len(memo) == before  # the kept datasets were all fitted by the gate
    assert fits.converged.all() and fits.admissible.all()
    # without a memo nothing is kept anywhere in the process
    assert not hasattr(cfa, "_CACHE")


def test_fiml_fits_of_the_gate_serve_factor_score():
    from micromacro_sim.estimators.factor_score import FactorScore
    from micromacro_sim.generate.batch import Batch
    from micromacro_sim.models.cfa_fiml import fit_cfa_fiml_batch

    sc = Scenario.from_params(dict(n_groups=40, group_size=6, icc=0.2, r_zxi=0.3,
                                   missing_mcar=0.2))
    memo = cfa.CFAMemo()
    draws = draw_many(sc, 3, range(10), Policy(mode="redraw", gate="cfa"), memo=memo)
    attempts = sum(d.redraws + 1 for d in draws)
    assert len(memo) == attempts  # the gate's FIML fits, one per draw
    with_memo = FactorScore().fit_batch(Batch.from_datasets([d.data for d in draws], memo))
    assert len(memo) == attempts  # factor_score fitted nothing new
    fresh = FactorScore().fit_batch(Batch.from_datasets([d.data for d in draws]))
    np.testing.assert_array_equal(with_memo.params, fresh.params)
    # remembered rows are the fresh fit's, field by field
    d = draws[0].data
    v, m = d.wide_positions(0)
    a = fit_cfa_fiml_batch(np.where(m, v, 0.0)[None], m[None])
    b = memo.fit_fiml(np.where(m, v, 0.0)[None], m[None], fit_cfa_fiml_batch)
    for f in cfa._FIELDS:
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)
