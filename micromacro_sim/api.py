"""Fit micro-macro models to one dataset (a user's table or a simulated draw)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .dataset import Dataset
from .errors import DataError
from .estimators import SE_TYPES, FitResult, available, get_estimator, registry
from .userdata import prepare

__all__ = ["default_methods", "fit_dataset", "fit_frame", "results_table"]


def default_methods() -> list[str]:
    """Every registered method that works on real data (all but the simulation oracle)."""
    return [m for m in available() if not registry()[m].needs_truth]


def fit_dataset(data: Dataset, methods: Sequence[str] | None = None) -> list[FitResult]:
    """Fit each method to ``data`` (unknown names raise :class:`DataError`)."""
    names = list(methods) if methods else default_methods()
    for m in names:
        if m not in registry():
            raise DataError(f"method: unknown method {m!r} (known: {', '.join(available())})")
    return [get_estimator(m).fit(data) for m in names]


def results_table(results: Sequence[FitResult]) -> pd.DataFrame:
    """Long table: method, term, estimate, se, se_HC0..se_HC3, converged, admissible, reason."""
    rows = []
    for r in results:
        for i, term in enumerate(r.terms):
            row = {"method": r.method, "term": term, "estimate": r.params[i]}
            for t in SE_TYPES:
                row["se" if t == "classical" else f"se_{t}"] = r.se(t)[i]
            row.update(converged=r.converged, admissible=r.admissible, reason=r.reason)
            rows.append(row)
    out = pd.DataFrame(rows)
    num = ["estimate", "se", *(f"se_{t}" for t in SE_TYPES if t != "classical")]
    out[num] = out[num].astype(float).where(np.isfinite(out[num].astype(float)))
    return out


def fit_frame(
    frame: pd.DataFrame,
    *,
    group: str,
    x: str | Sequence[str],
    y: str,
    z: str | Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, tuple[str, ...]]:
    """Prepare a long DataFrame and fit ``methods``; returns (results table, notes)."""
    prep = prepare(frame, group=group, x=x, y=y, z=z)
    results, notes = [], list(prep.notes)
    for r in fit_dataset(prep.data, methods):
        if r.reason.startswith("not applicable"):
            notes.append(f"{r.method} skipped: {r.reason.removeprefix('not applicable: ')}")
        else:
            results.append(r)
    if not results:
        raise DataError("method: no requested method applies to this dataset ("
                        + "; ".join(notes) + ")")
    return results_table(results), tuple(notes)
