"""Which SE type the tables and figures of a run show, and how they name it.

By default (``se_type`` None) every method is shown with its default SE type
(:attr:`~micromacro_sim.estimators.base.Estimator.default_se`): the bare columns of the
performance table (``cover``, ``reject``, ``modse``) and its ``se_type`` column. Outputs
name a one-step method's ``classical`` slot ``model`` (its model-based SE). An explicit SE
type shows every method with that type, as ``cover_HC3`` does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from micromacro_sim.core.results import DEFAULT_SE, SE_TYPES, se_label
from micromacro_sim.design import measures

__all__ = ["check_se_type", "legend_labels", "measure_column", "method_se_labels",
           "method_se_types", "se_list", "se_note"]


def check_se_type(se_type: str | None, field: str = "se_type") -> str | None:
    """None for each method's default type (also for ``"default"``), else an SE type.

    Raises
    ------
    ConfigError
        One line naming ``field`` for anything else.
    """
    checked = measures.check_se_type(se_type, field)
    return None if checked == DEFAULT_SE else checked


def measure_column(measure: str, se_type: str | None) -> str:
    """The performance column of ``measure`` (``cover``, ``reject``, ``modse``, ...) for
    ``se_type``: the bare column (each method's default type) when None."""
    return measure if se_type is None else f"{measure}_{se_type}"


def method_se_types(perf: pd.DataFrame) -> dict[str, str]:
    """Method -> the SE type of its bare columns (``classical`` when not recorded)."""
    methods = list(dict.fromkeys(perf["method"]))
    if "se_type" not in perf.columns:
        return dict.fromkeys(methods, "classical")
    first = perf.drop_duplicates("method").set_index("method")["se_type"]
    return {m: str(first[m]) if isinstance(first[m], str) else "classical" for m in methods}


def _two_step(perf: pd.DataFrame, method: str) -> bool:
    """Whether ``method`` reported robust SEs (only two-step methods do)."""
    rows = perf[perf["method"] == method]
    cols = [f"modse_{t}" for t in SE_TYPES[1:] if f"modse_{t}" in rows.columns]
    return bool(cols) and bool(np.isfinite(rows[cols].to_numpy(dtype=float)).any())


def method_se_labels(perf: pd.DataFrame, se_type: str | None = None) -> dict[str, str]:
    """Method -> the name of the SE type shown for it: ``model`` for a one-step method's
    classical slot, the type otherwise (``se_type`` None: each method's default)."""
    types = method_se_types(perf)
    return {m: se_label(t if se_type is None else se_type, _two_step(perf, m))
            for m, t in types.items()}


def legend_labels(methods: Sequence[str], perf: pd.DataFrame,
                  se_type: str | None = None) -> list[str]:
    """``method (HC3 SE)`` per method: the legend of a figure of SE-based measures."""
    labels = method_se_labels(perf, se_type)
    return [f"{m} ({labels.get(m, 'classical')} SE)" for m in methods]


def se_list(perf: pd.DataFrame) -> str:
    """``true: HC3, croon: HC2, sem: model``: each method's default SE type."""
    return ", ".join(f"{m}: {t}" for m, t in method_se_labels(perf).items())


def se_note(perf: pd.DataFrame, se_type: str | None) -> str:
    """A caption's words for the SE type shown: the type, or each method's default."""
    if se_type is not None:
        return f"{se_type} SE"
    return f"each method's default SE: {se_list(perf)}"
