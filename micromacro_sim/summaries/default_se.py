"""The default SE type of each method of a run, and the bare measures that use it.

A bare ``cover``, ``reject``, ``modse`` ... of the performance table is the measure for
the method's default SE type (:attr:`~micromacro_sim.estimators.base.Estimator.default_se`),
named in the column ``se_type``: ``classical`` (the model SE) for a one-step method, ``HC3``
for the two-step methods, ``HC2`` for croon. A method that reports its own intervals (a
Bayesian method's credible intervals: ``ci_level`` in the estimates) takes the bare
``cover``, ``becover`` and ``reject`` from them (``ci_level`` names their level).
"""

from __future__ import annotations

import pandas as pd

from micromacro_sim.core.errors import ConfigError
from micromacro_sim.core.results import SE_COLUMNS
from micromacro_sim.design.config import MethodSpec, parse_methods
from micromacro_sim.design.measures import method_se_type

__all__ = ["DEFAULT_SE_MEASURES", "default_se_types", "with_default_se"]

#: Measures with one value per SE type ``T`` (``<measure>_T``) that also appear under
#: their bare name for the method's default SE type (with ``_mcse`` where they have one).
DEFAULT_SE_MEASURES = ("modse", "meanse", "relerr", "cover", "becover", "reject")
#: The bare measures a method's own intervals give, when it reports them.
INTERVAL_MEASURES = ("cover", "becover", "reject")


def _method_specs(manifest: dict) -> list[MethodSpec]:
    """The run's methods as specs (labels only when the manifest's list is unreadable)."""
    ident = manifest.get("result_identity") or {}
    for listed in (ident.get("methods"), (manifest.get("config") or {}).get("methods")):
        try:
            return list(parse_methods(listed))
        except ConfigError:
            continue
    return [MethodSpec(str(m), str(m)) for m in manifest.get("methods") or []]


def _looks_two_step(est: pd.DataFrame, method: str) -> bool:
    """Whether the rows of ``method`` come from a two-step method (its ``two_step``
    column, else whether it reported HC3 SEs)."""
    rows = est[est["method"] == method]
    if "two_step" in rows.columns:
        return bool(rows["two_step"].fillna(False).astype(bool).any())
    col = SE_COLUMNS["HC3"]
    return bool(col in rows.columns and rows[col].notna().any())


def default_se_types(manifest: dict, est: pd.DataFrame) -> dict[str, str]:
    """Method label -> the SE type of its bare measures: the class's ``default_se``
    (:func:`~micromacro_sim.estimators.method_class` of the manifest's method spec).

    A method whose class cannot be loaded (a plug-in not installed here) or declares no
    known type gets ``classical`` (its model SE) when one-step and ``HC3`` when two-step,
    judged from its estimates; a summary never fails on it.
    """
    from micromacro_sim.estimators import method_class

    out: dict[str, str] = {}
    for spec in _method_specs(manifest):
        try:
            cls = method_class(spec.method)
            declared, two_step = getattr(cls, "default_se", None), bool(cls.two_step)
        except Exception:  # noqa: BLE001 - any failure to load falls back, never stops
            declared, two_step = None, _looks_two_step(est, spec.label)
        out[spec.label] = method_se_type(declared, two_step)
    for method in dict.fromkeys(est["method"]):
        if method not in out:
            out[method] = method_se_type(None, _looks_two_step(est, method))
    return out


def with_default_se(perf: dict[str, float], se_type: str,
                    ci_level: float | None = None) -> dict[str, float | str]:
    """``perf`` with ``se_type`` and the bare SE-based measures of that type inserted
    after the point measures. A method with its own intervals (``ci_level`` given, and
    ``cover_ci`` in ``perf``) takes the bare ``cover``, ``becover`` and ``reject`` from
    them instead."""
    typed = (*(f"_{t}" for t in SE_COLUMNS), "_ci")
    point = {k: v for k, v in perf.items() if not any(t in k for t in typed)}
    bare: dict[str, float | str] = {"se_type": se_type,
                                    "ci_level": float("nan") if ci_level is None else ci_level}
    own = ci_level is not None and "cover_ci" in perf
    for m in DEFAULT_SE_MEASURES:
        source = "ci" if own and m in INTERVAL_MEASURES else se_type
        for tail in ("", "_mcse"):
            col = f"{m}_{source}{tail}"
            if col in perf:
                bare[f"{m}{tail}"] = perf[col]
    return {**point, **bare, **{k: v for k, v in perf.items() if k not in point}}
