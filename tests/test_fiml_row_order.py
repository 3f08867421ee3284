"""Row order never changes a FIML result: a user's rows, shuffled within and across groups.

With a member column the rows are ordered by group label and member label
(:mod:`micromacro_sim.api.userdata`), so the member-position layout, and with it every
wide-format fit on unequal groups and absent members, is the same whatever the order of the
rows in the file (except with ``row_order_is_member``, where the row order is the member
order by definition).
"""

from __future__ import annotations

import numpy as np

import micromacro_sim as mm
from micromacro_sim.design.scenario import Scenario
from micromacro_sim.generate.dgp import generate

METHODS = ["sem", "zcond_score", "factor_score", "sam", "blup_hetvar"]
ARGS = dict(group="group", x="x", y="y", z="z", member="member")


def _frame():
    sc = Scenario.from_params(dict(n_groups=80, group_size=6, icc=0.3, r_zxi=0.3,
                                   missing_mcar=0.2))
    d = generate(sc, np.random.default_rng(11))
    f = d.to_frame()
    f["group"] = "team-" + f["group"].astype(str)
    f["member"] = "m" + f["member"].astype(str)
    return f


def test_shuffled_rows_give_the_same_bits():
    f = _frame()
    ref = mm.fit(f, **ARGS, method=METHODS)
    for name in METHODS:
        assert ref[name].status.value in ("ok", "flagged"), name
    assert all(ref[name].status.value == "ok" for name in ("sem", "zcond_score"))
    for seed in (1, 2):
        shuffled = mm.fit(f.sample(frac=1.0, random_state=seed), **ARGS, method=METHODS)
        for name in METHODS:
            np.testing.assert_array_equal(shuffled[name].params, ref[name].params)
            np.testing.assert_array_equal(shuffled[name].bse, ref[name].bse)


def test_row_order_is_member_makes_the_order_the_layout():
    f = _frame().sort_values(["group", "member"])
    plain = mm.fit(f, **ARGS, method="sem")
    by_rows = mm.fit(f.drop(columns="member"), group="group", x="x", y="y", z="z",
                     row_order_is_member=True, method="sem")
    # the absent members shift the later ones to the left: another layout, other numbers
    assert not np.allclose(by_rows["sem"].params, plain["sem"].params)
