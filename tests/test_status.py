"""The closed status vocabulary: documented, derived consistently, never silent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from micromacro_sim.core.results import BatchResult, FitResult
from micromacro_sim.core.status import (
    ERROR_REASONS,
    NOT_APPLICABLE_REASONS,
    REASON_TEXT,
    Reason,
    Status,
    derive_status,
    flag,
    no_flags,
)

DOC = Path(__file__).resolve().parents[1] / "docs" / "status.md"


def test_every_reason_has_text_and_is_documented():
    doc = DOC.read_text()
    assert set(REASON_TEXT) == set(Reason)
    for r in Reason:
        assert f"| `{r.value}` |" in doc, r
    for s in Status:
        assert f"| `{s.value}` |" in doc, s


@pytest.mark.parametrize("code", list(Reason))
def test_status_follows_the_code(code):
    st = derive_status(True, False, True, (flag(code),))
    if code in NOT_APPLICABLE_REASONS:
        assert st is Status.NOT_APPLICABLE
    elif code in ERROR_REASONS:
        assert st is Status.ERROR
    else:
        assert st is Status.FLAGGED


def test_nan_is_never_admissible():
    res = FitResult(method="m", terms=("a", "b"), params=np.array([1.0, np.nan]), bse={})
    assert not res.admissible and res.status is Status.FLAGGED
    assert res.reason_code == "non_finite"


def test_not_converged_always_carries_a_flag():
    res = FitResult(method="m", terms=("a",), params=np.array([1.0]), bse={}, converged=False)
    assert res.reason_code == "not_converged" and res.status is Status.FLAGGED


def test_inadmissible_without_reason_is_refused():
    with pytest.raises(ValueError, match="reason"):
        FitResult(method="m", terms=("a",), params=np.array([1.0]), bse={}, admissible=False)


def test_batch_normalises_like_one_fit():
    params = np.array([[1.0], [np.nan], [2.0]])
    flags = no_flags(3)
    res = BatchResult(method="m", terms=("a",), params=params, bse={},
                      df_resid=np.full(3, np.nan), converged=np.array([True, True, False]),
                      admissible=np.ones(3, bool), flags=flags, two_step=False, engine="fast")
    assert list(res.status) == ["ok", "flagged", "flagged"]
    assert list(res.reason_code) == ["", "non_finite", "not_converged"]
    assert list(res.admissible) == [True, False, True]
    one = res.result(1)
    assert one.reason_code == "non_finite" and not one.admissible
