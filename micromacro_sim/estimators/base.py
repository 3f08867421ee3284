"""Estimator interface, the immutable fit result, and the second-step OLS.

An estimator's constructor only stores options; ``fit(data)`` returns a
:class:`FitResult`. Two-step methods subclass :class:`TwoStepEstimator` and only
compute group scores; the OLS of y on [1, Z, scores] with every SE type is shared.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np

from ..batch import Batch
from ..dataset import Dataset

__all__ = [
    "ENGINES",
    "SE_TYPES",
    "BatchResult",
    "BatchScores",
    "ols_batch",
    "Estimator",
    "FitResult",
    "NotApplicable",
    "Scores",
    "TwoStepEstimator",
    "ols",
]

#: Standard-error types every two-step method reports ("classical" is the OLS one).
SE_TYPES: tuple[str, ...] = ("classical", "HC0", "HC1", "HC2", "HC3")


#: Engines: ``fast`` (batch implementations over all replications at once),
#: ``reference`` (one dataset at a time through the library path) or ``auto`` (fast
#: where a method has a batch implementation for the design, reference otherwise).
ENGINES: tuple[str, ...] = ("auto", "fast", "reference")


class NotApplicable(Exception):
    """The method cannot be used on this dataset (for example it needs balanced groups)."""


def _frozen_array(a: Any) -> np.ndarray:
    arr = np.array(a, dtype=float, copy=True)
    arr.setflags(write=False)
    return arr


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
        Standard errors per SE type (keys from :data:`SE_TYPES`; one-step models
        only have ``classical``, their model-based SE).
    df_resid : float or None
        Residual degrees of freedom for t-based inference; None means normal-based.
    converged : bool
        The optimizer (if any) reported and passed convergence checks.
    admissible : bool
        The solution is proper (positive variances, positive definite matrices, and it
        agrees with a closed form where one exists).
    reason : str
        Why the fit is flagged; empty when converged and admissible.
    two_step : bool
        Scores estimated first, then treated as known: SEs ignore first-step
        uncertainty.
    extras : mapping
        Method-specific details (group scores, variance components, ...).
    """

    method: str
    terms: tuple[str, ...]
    params: np.ndarray
    bse: Mapping[str, np.ndarray]
    df_resid: float | None = None
    converged: bool = True
    admissible: bool = True
    reason: str = ""
    two_step: bool = False
    extras: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", _frozen_array(self.params))
        object.__setattr__(
            self, "bse", MappingProxyType({k: _frozen_array(v) for k, v in self.bse.items()})
        )
        object.__setattr__(self, "extras", MappingProxyType(dict(self.extras)))
        if self.params.shape != (len(self.terms),):
            raise ValueError("params must have one value per term")

    @property
    def ok(self) -> bool:
        """Converged, admissible and with finite estimates."""
        return self.converged and self.admissible and bool(np.all(np.isfinite(self.params)))

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
        """(k, 2) confidence limits."""
        half = self.critical_value(alpha) * self.se(cov_type)
        return np.column_stack([self.params - half, self.params + half])

    def pvalues(self, cov_type: str = "classical") -> np.ndarray:
        """Two-sided p-values of H0: coefficient = 0."""
        from scipy import stats

        t = np.abs(self.params / self.se(cov_type))
        if self.df_resid is None:
            return 2 * stats.norm.sf(t)
        return 2 * stats.t.sf(t, self.df_resid)

    @classmethod
    def failed(
        cls,
        method: str,
        terms: tuple[str, ...],
        reason: str,
        *,
        converged: bool = False,
        two_step: bool = False,
    ) -> FitResult:
        """A result without estimates, recording why."""
        nan = np.full(len(terms), np.nan)
        return cls(
            method=method,
            terms=terms,
            params=nan,
            bse={},
            converged=converged,
            admissible=False,
            reason=reason,
            two_step=two_step,
        )


def ols(y: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray], float]:
    """OLS with classical and HC0-HC3 standard errors (statsmodels).

    Returns
    -------
    params, bse, df_resid
    """
    import statsmodels.api as sm

    res = sm.OLS(np.asarray(y, dtype=float), np.asarray(X, dtype=float)).fit()
    bse = {
        "classical": np.asarray(res.bse),
        "HC0": np.asarray(res.HC0_se),
        "HC1": np.asarray(res.HC1_se),
        "HC2": np.asarray(res.HC2_se),
        "HC3": np.asarray(res.HC3_se),
    }
    return np.asarray(res.params), bse, float(res.df_resid)


def ols_batch(
    y: np.ndarray, X: np.ndarray
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """OLS of many replications at once, with classical and HC0-HC3 SEs.

    Parameters
    ----------
    y : ndarray (R, G)
    X : ndarray (R, G, k)

    Returns
    -------
    params : ndarray (R, k)
    bse : dict of SE type -> ndarray (R, k)
    df_resid : ndarray (R,)

    Notes
    -----
    HC0 is White's sandwich, HC1 = HC0 G / (G - k), HC2 weights squared residuals by
    1 / (1 - h), HC3 by 1 / (1 - h)^2, with h the hat values; the definitions of
    statsmodels and R ``sandwich::vcovHC`` (checked in the tests to 1e-10).
    """
    R, G, k = X.shape
    Xt = X.transpose(0, 2, 1)
    inv = np.linalg.inv(Xt @ X)
    params = (inv @ (Xt @ y[:, :, None]))[:, :, 0]
    e = y - (X @ params[:, :, None])[:, :, 0]
    df = G - k
    s2 = (e * e).sum(axis=1) / df
    bse = {"classical": np.sqrt(s2[:, None] * np.diagonal(inv, axis1=1, axis2=2))}
    XA = X @ inv  # (R, G, k): row g is x_g' (X'X)^-1
    h = np.einsum("rgk,rgk->rg", XA, X)
    XA2 = XA * XA
    e2 = e * e
    with np.errstate(divide="ignore", invalid="ignore"):
        weights = {"HC0": e2, "HC2": e2 / (1 - h), "HC3": e2 / (1 - h) ** 2}
    for name, w in weights.items():
        # diag of (X'X)^-1 X' W X (X'X)^-1 = column sums of w_g (x_g' (X'X)^-1)^2
        bse[name] = np.sqrt(np.einsum("rg,rgk->rk", w, XA2))
    bse["HC1"] = bse["HC0"] * np.sqrt(G / df)
    return params, {t: bse[t] for t in SE_TYPES}, np.full(R, float(df))


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
    reason : ndarray of str (R,)
    two_step : bool
    engine : str
        ``fast`` (batch implementation) or ``reference`` (one fit per dataset).
    """

    method: str
    terms: tuple[str, ...]
    params: np.ndarray
    bse: Mapping[str, np.ndarray]
    df_resid: np.ndarray
    converged: np.ndarray
    admissible: np.ndarray
    reason: np.ndarray
    two_step: bool
    engine: str

    @classmethod
    def from_results(cls, results: list[FitResult], terms: tuple[str, ...], method: str,
                     two_step: bool) -> BatchResult:
        """Stack per-dataset results of the reference path."""
        k = len(terms)
        nan = np.full(k, np.nan)
        return cls(
            method=method,
            terms=terms,
            params=np.stack([r.params for r in results]),
            bse={t: np.stack([r.bse.get(t, nan) for r in results]) for t in SE_TYPES},
            df_resid=np.array([np.nan if r.df_resid is None else r.df_resid for r in results]),
            converged=np.array([r.converged for r in results]),
            admissible=np.array([r.admissible for r in results]),
            reason=np.array([r.reason for r in results], dtype=object),
            two_step=two_step,
            engine="reference",
        )

    def result(self, r: int) -> FitResult:
        """Replication ``r`` as a :class:`FitResult`."""
        bse = {t: v[r] for t, v in self.bse.items() if np.any(np.isfinite(v[r]))}
        df = self.df_resid[r]
        return FitResult(
            method=self.method, terms=self.terms, params=self.params[r], bse=bse,
            df_resid=None if np.isnan(df) else float(df), converged=bool(self.converged[r]),
            admissible=bool(self.admissible[r]), reason=str(self.reason[r]),
            two_step=self.two_step,
        )


@dataclass(frozen=True, eq=False)
class BatchScores:
    """First-step output of a two-step method for every replication of a batch.

    Attributes
    ----------
    values : ndarray (R, G)
    converged, admissible : ndarray of bool (R,)
    reason : ndarray of str (R,)
    """

    values: np.ndarray
    converged: np.ndarray
    admissible: np.ndarray
    reason: np.ndarray

    @classmethod
    def ok(cls, values: np.ndarray) -> BatchScores:
        """Scores with no failure."""
        R = values.shape[0]
        return cls(values, np.ones(R, bool), np.ones(R, bool), np.full(R, "", dtype=object))


class Estimator(ABC):
    """Base class of every method.

    Subclasses set :attr:`name` (the registry id) and :attr:`options` (option names
    and defaults). The constructor validates and stores options; nothing else.

    Parameters
    ----------
    label : str, optional
        Name used in results (defaults to :attr:`name`); lets one method appear twice
        with different options.
    **options
        Method options, see the subclass's :attr:`options`.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    options: ClassVar[Mapping[str, Any]] = MappingProxyType({})
    needs_balanced: ClassVar[bool] = False
    needs_truth: ClassVar[bool] = False
    two_step: ClassVar[bool] = False
    max_x: ClassVar[int | None] = 1

    def __init__(self, *, label: str | None = None, **options: Any) -> None:
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ValueError(
                f"{unknown[0]}: unknown option of method {self.name!r} "
                f"(known: {', '.join(self.options) or 'none'})"
            )
        self.label = label or self.name
        self.params = {**self.options, **options}

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({opts})"

    def check_applicable(self, data: Dataset) -> None:
        """Raise :class:`NotApplicable` when the method cannot use ``data``."""
        if self.needs_truth and data.xi is None:
            raise NotApplicable("needs the true xi (simulation only)")
        if self.needs_balanced and not data.balanced:
            raise NotApplicable("needs balanced groups")
        if self.max_x is not None and data.n_x > self.max_x:
            raise NotApplicable(f"supports at most {self.max_x} x variable(s)")

    def fit(self, data: Dataset) -> FitResult:
        """Fit to one dataset; failures become a flagged result, never an exception.

        Exceptions of the numerical code are recorded as reason ``error: ...``;
        :class:`NotApplicable` as ``not applicable: ...``.
        """
        try:
            self.check_applicable(data)
            return self._fit(data)
        except NotApplicable as exc:
            return FitResult.failed(
                self.label, data.terms, f"not applicable: {exc}", two_step=self.two_step
            )
        except (np.linalg.LinAlgError, ValueError, FloatingPointError, ArithmeticError) as exc:
            return FitResult.failed(
                self.label, data.terms, f"error: {type(exc).__name__}: {exc}",
                two_step=self.two_step,
            )

    @abstractmethod
    def _fit(self, data: Dataset) -> FitResult:
        """Method-specific fit (may raise; :meth:`fit` records failures)."""

    @classmethod
    def has_batch(cls, balanced: bool) -> bool:
        """Whether the method has a batch implementation for this kind of design."""
        return False

    def _fit_batch(self, batch: Batch) -> BatchResult:
        raise NotImplementedError

    def _one_step_batch(self, batch: Batch, params: np.ndarray, se: np.ndarray,
                        converged: np.ndarray, admissible: np.ndarray, reason: np.ndarray,
                        fallback: np.ndarray) -> BatchResult:
        """Assemble a one-step model's batch result (model-based SEs, normal inference).

        Replications marked in ``fallback`` (rare: degenerate data, near a bound) are fitted
        one at a time by the reference path and merged in, so verdicts match it exactly.
        """
        params, se = params.copy(), se.copy()
        converged, admissible = converged.copy(), admissible.copy()
        reason = np.array(reason, dtype=object)
        for r in np.flatnonzero(fallback):
            res = self.fit(batch.datasets[r])
            params[r], se[r] = res.params, res.se()
            converged[r], admissible[r], reason[r] = res.converged, res.admissible, res.reason
        R, k = params.shape
        bse = {t: np.full((R, k), np.nan) for t in SE_TYPES}
        bse["classical"] = se
        return BatchResult(
            method=self.label, terms=batch.terms, params=params, bse=bse,
            df_resid=np.full(R, np.nan), converged=converged, admissible=admissible,
            reason=reason, two_step=False, engine="fast",
        )

    def fit_batch(self, batch: Batch, engine: str = "auto") -> BatchResult:
        """Fit every replication of ``batch``.

        ``engine="reference"`` loops :meth:`fit` over the datasets; ``fast`` and
        ``auto`` use the batch implementation when :meth:`has_batch` says there is one
        (``fast`` without one raises ``ValueError``).
        """
        if engine not in ENGINES:
            raise ValueError(f"engine: expected one of {ENGINES}, got {engine!r}")
        native = engine != "reference" and self.has_batch(batch.balanced)
        if engine == "fast" and not native:
            raise ValueError(f"engine: method {self.name!r} has no fast implementation for "
                             f"{'balanced' if batch.balanced else 'unbalanced'} designs")
        if native:
            return self._fit_batch(batch)
        results = [self.fit(d) for d in batch.datasets]
        return BatchResult.from_results(results, batch.terms, self.label, self.two_step)


@dataclass(frozen=True)
class Scores:
    """First-step output of a two-step method.

    Attributes
    ----------
    values : ndarray (G,) or (G, p)
        Group scores that replace xi in the second step.
    converged, admissible, reason
        Status of the first step (see :class:`FitResult`).
    extras : dict
        Details of the first step (variance components, loadings, ...).
    """

    values: np.ndarray
    converged: bool = True
    admissible: bool = True
    reason: str = ""
    extras: Mapping[str, Any] = field(default_factory=dict)


class TwoStepEstimator(Estimator):
    """A method that scores each group, then runs OLS of y on [1, Z, scores].

    When the first step is inadmissible the second step still runs on its scores (so
    the estimate is recorded) but the result is flagged; when there are no usable
    scores (NaN) the result has no estimates.
    """

    two_step = True
    #: Designs for which :meth:`scores_batch` exists: () none, ("balanced",) or
    #: ("balanced", "unbalanced").
    batch_designs: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def scores(self, data: Dataset) -> Scores:
        """Group scores of ``data`` (may raise; see :meth:`Estimator.fit`)."""

    def scores_batch(self, batch: Batch) -> BatchScores:
        """Group scores of every replication (batch implementation; optional)."""
        raise NotImplementedError

    @classmethod
    def has_batch(cls, balanced: bool) -> bool:
        return ("balanced" if balanced else "unbalanced") in cls.batch_designs

    def _fit_batch(self, batch: Batch) -> BatchResult:
        return _two_step_batch(self, batch)

    def _fit(self, data: Dataset) -> FitResult:
        sc = self.scores(data)
        values = np.asarray(sc.values, dtype=float)
        X = data.design(values) if np.all(np.isfinite(values)) else None
        if X is None:  # the first step's reason already says why, if it has one
            problem = "" if sc.reason else "non-finite scores"
        elif data.n_groups <= X.shape[1]:
            problem = f"too few groups for the second step (G={data.n_groups}, k={X.shape[1]})"
        elif np.linalg.matrix_rank(X) < X.shape[1]:
            problem = "rank-deficient second-step design (constant or collinear scores)"
        else:
            problem = ""
        if X is None or problem:
            return FitResult(
                method=self.label, terms=data.terms, params=np.full(len(data.terms), np.nan),
                bse={}, converged=sc.converged, admissible=False,
                reason=_join(sc.reason, problem), two_step=True, extras=sc.extras,
            )
        with np.errstate(divide="ignore", invalid="ignore"):
            params, bse, df = ols(data.y, X)
        bad_se = [t for t, v in bse.items() if not np.all(np.isfinite(v))]
        problem = (f"non-finite {', '.join(bad_se)} standard errors (a leverage of 1)"
                   if bad_se else "")
        return FitResult(
            method=self.label,
            terms=data.terms,
            params=params,
            bse=bse,
            df_resid=df,
            converged=sc.converged,
            admissible=sc.admissible and not problem,
            reason=_join(sc.reason, problem),
            two_step=True,
            extras={**sc.extras, "scores": values},
        )


def _two_step_batch(self: TwoStepEstimator, batch: Batch) -> BatchResult:
    sc = self.scores_batch(batch)
    R = batch.n_reps
    values = np.asarray(sc.values, dtype=float)
    finite = np.all(np.isfinite(values), axis=1)
    X = batch.design(np.where(finite[:, None], values, 0.0))
    k = X.shape[2]
    problem = np.full(R, "", dtype=object)
    problem[~finite & (sc.reason == "")] = "non-finite scores"
    if batch.n_groups <= k:
        problem[finite] = f"too few groups for the second step (G={batch.n_groups}, k={k})"
    else:
        # rank deficiency: the smallest singular value relative to the largest
        sv = np.linalg.svd(X, compute_uv=False)
        tol = sv[:, :1] * max(X.shape[1:]) * np.finfo(float).eps
        deficient = finite & np.any(sv <= tol, axis=1)
        problem[deficient] = "rank-deficient second-step design (constant or collinear scores)"
    usable = finite & (problem == "")
    params = np.full((R, k), np.nan)
    bse = {t: np.full((R, k), np.nan) for t in SE_TYPES}
    df = np.full(R, np.nan)
    if usable.any():
        p, b, d = ols_batch(batch.y[usable], X[usable])
        params[usable], df[usable] = p, d
        for t in SE_TYPES:
            bse[t][usable] = b[t]
        bad = usable & ~np.all(np.isfinite(np.concatenate([bse[t] for t in SE_TYPES], axis=1)),
                               axis=1)
        for r in np.flatnonzero(bad):
            types = [t for t in SE_TYPES if not np.all(np.isfinite(bse[t][r]))]
            problem[r] = f"non-finite {', '.join(types)} standard errors (a leverage of 1)"
    reason = np.array([_join(a, b) for a, b in zip(sc.reason, problem, strict=True)],
                      dtype=object)
    return BatchResult(
        method=self.label, terms=batch.terms, params=params, bse=bse, df_resid=df,
        converged=np.asarray(sc.converged, bool),
        admissible=np.asarray(sc.admissible, bool) & (problem == ""),
        reason=reason, two_step=True, engine="fast",
    )


def _join(*reasons: str) -> str:
    """Several failure reasons in one field; the first-step reason comes first."""
    return "; ".join(r for r in reasons if r)
