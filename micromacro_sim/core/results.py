"""Result types: one fit (:class:`FitResult`), a batch of fits (:class:`BatchResult`),
and the first step of a two-step method (:class:`Scores`, :class:`BatchScores`).

All are immutable. Their verdicts are normalised on construction so that no result is
silently inadmissible: non-finite estimates are never admissible (flag ``non_finite``),
a non-converged fit always carries a flag, and an inadmissible fit without a flag is a
programming error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from micromacro_sim.core.status import (
    Flag,
    Reason,
    Status,
    derive_status,
    flag,
    flags_text,
    no_flags,
    primary_code,
)

__all__ = [
    "DEFAULT_SE",
    "MODEL_SE",
    "OLS_SE_TYPES",
    "SE_COLUMNS",
    "SE_TYPES",
    "BatchResult",
    "BatchScores",
    "FitResult",
    "Scores",
    "se_label",
]

#: Standard-error types of the second step's OLS, which every two-step method reports
#: ("classical" is the OLS one).
OLS_SE_TYPES: tuple[str, ...] = ("classical", "HC0", "HC1", "HC2", "HC3")

#: Every standard-error type (the closed set): the OLS ones and ``JK``, the delete-one-group
#: jackknife of the whole two-step estimator, both steps (a two-step method's option
#: ``se: jackknife``; NaN when not requested).
SE_TYPES: tuple[str, ...] = (*OLS_SE_TYPES, "JK")

#: Column of the estimates table holding each SE type.
SE_COLUMNS: dict[str, str] = {"classical": "se", **{t: f"se_{t}" for t in SE_TYPES[1:]}}

#: What a bare measure name (``cover``, ``reject``, ``modse``) uses: each method's own
#: default SE type (:attr:`~micromacro_sim.estimators.base.Estimator.default_se`).
DEFAULT_SE = "default"

#: How outputs name the ``classical`` slot of a one-step method: its model-based SE.
MODEL_SE = "model"


def se_label(se_type: str, two_step: bool) -> str:
    """The name outputs give an SE type: ``model`` for a one-step method's ``classical``
    slot (the model's own SE), the type itself otherwise."""
    return MODEL_SE if se_type == "classical" and not two_step else se_type


def _frozen_array(a: Any) -> np.ndarray:
    arr = np.array(a, dtype=float, copy=True)
    arr.setflags(write=False)
    return arr


def _normalised(converged: bool, admissible: bool, finite: bool,
                flags: tuple[Flag, ...]) -> tuple[bool, tuple[Flag, ...]]:
    """Admissible only when finite; every non-ok verdict carries a flag."""
    flags = tuple(flags)
    if not finite and admissible:
        admissible = False
        if not flags:
            flags = (flag(Reason.NON_FINITE),)
    if not converged and not flags:
        flags = (flag(Reason.NOT_CONVERGED),)
    if not admissible and not flags:
        raise ValueError("an inadmissible result needs a reason flag")
    return admissible, flags


@dataclass(frozen=True, eq=False)
class FitResult:
    """Immutable result of one fit.

    Attributes
    ----------
    method : str
        Label of the method that produced it.
    terms : tuple of str
        Term names, in the order of ``params``.
    params : ndarray
        Estimates (NaN when the fit produced none).
    bse : mapping of str to ndarray
        Standard errors per SE type (keys from :data:`SE_TYPES`; one-step models only
        have ``classical``, their model-based SE).
    df_resid : float or None
        Residual degrees of freedom for t-based inference; None means normal-based.
    converged : bool
        The optimizer (if any) reported and passed convergence checks.
    admissible : bool
        The solution is proper (positive variances, positive definite matrices, finite
        estimates, agreement with a closed form where one exists).
    flags : tuple of Flag
        Reason codes with their text; empty when the fit is ``ok``.
    two_step : bool
        Scores estimated first, then treated as known: SEs ignore first-step uncertainty.
    extras : mapping
        Method-specific details (group scores, variance components, ...).
    ci : ndarray (k, 2) or None
        An interval the method reports itself (a Bayesian method's equal-tailed credible
        interval), at level ``ci_level``; summaries use it for coverage and rejection.
    ci_level : float or None
        Level of ``ci`` (0.95 for a 95% interval).
    """

    method: str
    terms: tuple[str, ...]
    params: np.ndarray
    bse: Mapping[str, np.ndarray]
    df_resid: float | None = None
    converged: bool = True
    admissible: bool = True
    flags: tuple[Flag, ...] = ()
    two_step: bool = False
    extras: Mapping[str, Any] = field(default_factory=dict)
    ci: np.ndarray | None = None
    ci_level: float | None = None

    def __post_init__(self) -> None:
        if self.ci is not None:
            object.__setattr__(self, "ci", _frozen_array(self.ci))
            if self.ci.shape != (len(self.terms), 2) or self.ci_level is None:
                raise ValueError("ci must be (k, 2) with its ci_level")
        object.__setattr__(self, "params", _frozen_array(self.params))
        object.__setattr__(
            self, "bse", MappingProxyType({k: _frozen_array(v) for k, v in self.bse.items()})
        )
        object.__setattr__(self, "extras", MappingProxyType(dict(self.extras)))
        if self.params.shape != (len(self.terms),):
            raise ValueError("params must have one value per term")
        adm, flags = _normalised(self.converged, self.admissible,
                                 bool(np.all(np.isfinite(self.params))), self.flags)
        object.__setattr__(self, "admissible", adm)
        object.__setattr__(self, "flags", flags)

    @property
    def reason(self) -> str:
        """Human text of every flag ("" when ok)."""
        return flags_text(self.flags)

    @property
    def reason_code(self) -> str:
        """Code of the first flag ("" when ok)."""
        return primary_code(self.flags)

    @property
    def status(self) -> Status:
        """``ok``, ``flagged``, ``not_applicable`` or ``error``."""
        return derive_status(self.converged, self.admissible,
                             bool(np.all(np.isfinite(self.params))), self.flags)

    @property
    def ok(self) -> bool:
        """Converged, admissible, with finite estimates and no flag."""
        return self.status is Status.OK

    def se(self, cov_type: str = "classical") -> np.ndarray:
        """Standard errors of one type (NaN where the method does not provide it)."""
        if cov_type not in SE_TYPES:
            raise ValueError(f"cov_type: unknown SE type {cov_type!r} (known: {SE_TYPES})")
        return self.bse.get(cov_type, np.full(len(self.terms), np.nan))

    def critical_value(self, alpha: float = 0.05) -> float:
        """Two-sided critical value: t with ``df_resid`` df, or normal."""
        from scipy import stats  # lazy: scipy.stats costs most of the start-up time

        if self.df_resid is None:
            return float(stats.norm.ppf(1 - alpha / 2))
        return float(stats.t.ppf(1 - alpha / 2, self.df_resid))

    def conf_int(self, alpha: float = 0.05, cov_type: str = "classical") -> np.ndarray:
        """(k, 2) confidence limits (the method's own interval when it reports one at
        level 1 - ``alpha``)."""
        if self.ci is not None and self.ci_level is not None \
                and abs(1 - alpha - self.ci_level) < 1e-12:
            return self.ci.copy()
        half = self.critical_value(alpha) * self.se(cov_type)
        return np.column_stack([self.params - half, self.params + half])

    def tvalues(self, cov_type: str = "classical") -> np.ndarray:
        """Estimates over their standard errors."""
        return self.params / self.se(cov_type)

    def pvalues(self, cov_type: str = "classical") -> np.ndarray:
        """Two-sided p-values of H0: coefficient = 0."""
        from scipy import stats

        t = np.abs(self.tvalues(cov_type))
        if self.df_resid is None:
            return 2 * stats.norm.sf(t)
        return 2 * stats.t.sf(t, self.df_resid)

    @classmethod
    def failed(cls, method: str, terms: tuple[str, ...], flags: Flag | tuple[Flag, ...], *,
               converged: bool = False, two_step: bool = False,
               extras: Mapping[str, Any] | None = None) -> FitResult:
        """A result without estimates, recording why."""
        return cls(
            method=method, terms=terms, params=np.full(len(terms), np.nan), bse={},
            converged=converged, admissible=False,
            flags=(flags,) if isinstance(flags, Flag) else tuple(flags), two_step=two_step,
            extras=extras or {},
        )


def _normalise_batch(params: np.ndarray, converged: np.ndarray, admissible: np.ndarray,
                     flags: np.ndarray, fallback: np.ndarray | None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_normalised` per replication (rows left to the fallback are placeholders)."""
    finite = np.all(np.isfinite(params), axis=1)
    admissible = np.asarray(admissible, bool).copy()
    flags = np.asarray(flags, dtype=object).copy()
    todo = ~finite | ~np.asarray(converged, bool) | ~admissible
    if fallback is not None:
        todo &= ~np.asarray(fallback, bool)
    for r in np.flatnonzero(todo):
        admissible[r], flags[r] = _normalised(bool(converged[r]), bool(admissible[r]),
                                              bool(finite[r]), flags[r])
    return admissible, flags


@dataclass(frozen=True, eq=False)
class BatchResult:
    """Results of one method on every replication of a batch (arrays over R).

    Attributes
    ----------
    method : str
    terms : tuple of str
    params : ndarray (R, k)
    bse : dict of SE type -> ndarray (R, k)
    df_resid : ndarray (R,)
        NaN where inference is normal-based.
    converged, admissible : ndarray of bool (R,)
    flags : ndarray of object (R,)
        Each entry a tuple of :class:`~micromacro_sim.core.status.Flag`.
    two_step : bool
    engine : str
        ``fast`` (batch implementation) or ``reference`` (one fit per dataset).
    fallback : ndarray of bool (R,) or None
        Replications the batch path leaves to the reference path (resolved by
        :meth:`~micromacro_sim.estimators.base.Estimator.fit_batch`).
    ci : ndarray (R, k, 2) or None
        The method's own intervals (see :class:`FitResult`), at level ``ci_level``.
    ci_level : float or None
    """

    method: str
    terms: tuple[str, ...]
    params: np.ndarray
    bse: Mapping[str, np.ndarray]
    df_resid: np.ndarray
    converged: np.ndarray
    admissible: np.ndarray
    flags: np.ndarray
    two_step: bool
    engine: str
    fallback: np.ndarray | None = None
    ci: np.ndarray | None = None
    ci_level: float | None = None

    def __post_init__(self) -> None:
        adm, flags = _normalise_batch(self.params, self.converged, self.admissible, self.flags,
                                      self.fallback)
        object.__setattr__(self, "admissible", adm)
        object.__setattr__(self, "flags", flags)

    @property
    def reason(self) -> np.ndarray:
        """Human text per replication."""
        return np.array([flags_text(f) for f in self.flags], dtype=object)

    @property
    def reason_code(self) -> np.ndarray:
        """First flag's code per replication."""
        return np.array([primary_code(f) for f in self.flags], dtype=object)

    @property
    def status(self) -> np.ndarray:
        """Status value per replication."""
        finite = np.all(np.isfinite(self.params), axis=1)
        return np.array([derive_status(bool(c), bool(a), bool(f), fl).value for c, a, f, fl
                         in zip(self.converged, self.admissible, finite, self.flags,
                                strict=True)], dtype=object)

    @classmethod
    def from_results(cls, results: list[FitResult], terms: tuple[str, ...], method: str,
                     two_step: bool, engine: str = "reference") -> BatchResult:
        """Stack per-dataset results of the reference path."""
        k = len(terms)
        nan = np.full(k, np.nan)
        flags = no_flags(len(results))
        for i, r in enumerate(results):
            flags[i] = r.flags
        levels = {r.ci_level for r in results if r.ci is not None}
        ci = None
        if levels:
            ci = np.stack([r.ci if r.ci is not None else np.full((k, 2), np.nan)
                           for r in results])
        return cls(
            method=method, terms=terms, params=np.stack([r.params for r in results]),
            bse={t: np.stack([r.bse.get(t, nan) for r in results]) for t in SE_TYPES},
            df_resid=np.array([np.nan if r.df_resid is None else r.df_resid for r in results]),
            converged=np.array([r.converged for r in results]),
            admissible=np.array([r.admissible for r in results]),
            flags=flags, two_step=two_step, engine=engine,
            ci=ci, ci_level=max(levels) if levels else None,
        )

    def result(self, r: int) -> FitResult:
        """Replication ``r`` as a :class:`FitResult`."""
        bse = {t: v[r] for t, v in self.bse.items() if np.any(np.isfinite(v[r]))}
        df = self.df_resid[r]
        return FitResult(
            method=self.method, terms=self.terms, params=self.params[r], bse=bse,
            df_resid=None if np.isnan(df) else float(df), converged=bool(self.converged[r]),
            admissible=bool(self.admissible[r]), flags=tuple(self.flags[r]),
            two_step=self.two_step,
            ci=None if self.ci is None else self.ci[r], ci_level=self.ci_level,
        )


@dataclass(frozen=True)
class Scores:
    """First-step output of a two-step method for one dataset.

    Attributes
    ----------
    values : ndarray (G,) or (G, p)
        Group scores that replace xi in the second step.
    converged, admissible : bool
    flags : tuple of Flag
    extras : dict
        Details of the first step (variance components, loadings, ...).
    """

    values: np.ndarray
    converged: bool = True
    admissible: bool = True
    flags: tuple[Flag, ...] = ()
    extras: Mapping[str, Any] = field(default_factory=dict)

    @property
    def reason(self) -> str:
        """Human text of the flags."""
        return flags_text(self.flags)


@dataclass(frozen=True, eq=False)
class BatchScores:
    """First-step output of a two-step method for every replication of a batch.

    Attributes
    ----------
    values : ndarray (R, G)
    converged, admissible : ndarray of bool (R,)
    flags : ndarray of object (R,)
        Each entry a tuple of flags.
    fallback : ndarray of bool (R,) or None
        Replications whose scores the reference first step must supply (resolved by
        :class:`~micromacro_sim.estimators.base.TwoStepEstimator`).
    """

    values: np.ndarray
    converged: np.ndarray
    admissible: np.ndarray
    flags: np.ndarray
    fallback: np.ndarray | None = None

    @classmethod
    def ok(cls, values: np.ndarray, fallback: np.ndarray | None = None) -> BatchScores:
        """Scores with no failure."""
        R = values.shape[0]
        return cls(values, np.ones(R, bool), np.ones(R, bool), no_flags(R), fallback)
