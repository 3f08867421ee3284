"""Checks of a scenario that involve several fields (run after every field is parsed).

Each check takes the parsed values (attribute name -> value) and raises a
:class:`~micromacro_sim.core.errors.ConfigError` naming one field and its value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from micromacro_sim.core.errors import ConfigError
from micromacro_sim.design.fleishman import FleishmanError, fleishman, intermediate_matrix

__all__ = ["CHECKS", "correlation", "het_extremes"]


def correlation(v: Mapping[str, Any]) -> np.ndarray:
    """Target correlation matrix of (Z_1..Z_q, xi_1..xi_p)."""
    q, p = v["n_z"], v["n_x"]
    c = np.full((q + p, q + p), v["r_zz"])
    c[q:, q:] = v["r_xixi"]
    r = np.asarray(v["r_zxi"], dtype=float).reshape(q, p)
    c[:q, q:] = r
    c[q:, :q] = r.T
    np.fill_diagonal(c, 1.0)
    return c


def _is_pd(c: np.ndarray) -> bool:
    try:
        np.linalg.cholesky(c)
    except np.linalg.LinAlgError:
        return False
    return True


def _check_correlation(v: Mapping[str, Any]) -> None:
    if _is_pd(correlation(v)):
        return
    form = [r[0] for r in v["r_zxi"]] if v["n_x"] == 1 else [list(r) for r in v["r_zxi"]]
    extra = f", r_xixi={v['r_xixi']!r}" if v["n_x"] > 1 else ""
    raise ConfigError(f"r_zxi: the correlation matrix of (Z, xi) is not positive definite "
                      f"(r_zxi={form!r}, r_zz={v['r_zz']!r}{extra})")


def _check_nonnormal(v: Mapping[str, Any]) -> None:
    for part in ("xi", "nu", "e"):
        skew, kurt = v[f"{part}_skew"], v[f"{part}_kurtosis"]
        try:
            fleishman(skew, kurt)
        except FleishmanError as exc:
            raise ConfigError(f"{part}_kurtosis: {kurt!r} with {part}_skew {skew!r}: "
                              f"{exc}") from None
    poly = fleishman(v["xi_skew"], v["xi_kurtosis"])
    if poly.is_identity:
        return
    polys = (fleishman(0.0, 0.0),) * v["n_z"] + (poly,) * v["n_x"]
    try:
        ok = _is_pd(intermediate_matrix(correlation(v), polys))
    except FleishmanError:
        ok = False
    if not ok:
        raise ConfigError(f"xi_skew: {v['xi_skew']!r} with xi_kurtosis {v['xi_kurtosis']!r} "
                          f"needs an intermediate correlation matrix of (Z, xi) that is not "
                          f"positive definite (Vale & Maurelli); lower the correlations")


def _check_ordinal(v: Mapping[str, Any]) -> None:
    if v["categories"] is None and v["thresholds"] != "symmetric":
        raise ConfigError(f"thresholds: {v['thresholds']!r} needs categories (absent: the "
                          f"members are continuous)")


def _check_missing(v: Mapping[str, Any]) -> None:
    mar = v["missing_mar"]
    if mar is not None and mar.on == "z" and v["n_z"] == 0:
        raise ConfigError(f"missing_mar.on: 'z' needs a Z (n_z = 0), got {mar.to_config()!r}")


def het_extremes(sizes: Any, n_groups: int) -> tuple[float, float]:
    """Smallest and largest designed group size (``poisson``: its 0.5% and 99.5% quantiles)."""
    if sizes.kind == "poisson":
        from scipy.stats import poisson

        lam = sizes.mean - sizes.value
        return (sizes.value + float(poisson.ppf(0.005, lam)),
                sizes.value + float(poisson.ppf(0.995, lam)))
    support, _ = sizes.distribution(n_groups)
    return float(support.min()), float(support.max())


def _check_het(v: Mapping[str, Any]) -> None:
    het = v["e_het"]
    if het is None:
        return
    if het.by == "z" and v["n_z"] == 0:
        raise ConfigError(f"e_het.by: 'z' needs a Z (n_z = 0), got {het.to_config()!r}")
    if het.by == "group_size":
        lo, hi = het_extremes(v["group_size"], v["n_groups"])
        if hi <= lo:
            raise ConfigError(f"e_het.by: 'group_size' needs group sizes that vary, got "
                              f"group_size {v['group_size'].label()}")


#: Every cross-field check, in order (the correlation first: later checks build on it).
CHECKS: tuple[Callable[[Mapping[str, Any]], None], ...] = (
    _check_correlation, _check_nonnormal, _check_ordinal, _check_missing, _check_het,
)
